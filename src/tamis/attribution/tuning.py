"""Tune the curvature (Fisher kind, rank r, damping) by LDS on a small retraining budget.

When the user can afford to retrain the model a few times, the best damping of a setting can
be measured instead of guessed (``docs/attribution.md``: on a MiniLM fine-tuned on 200
examples the best damping is 100x the default). :func:`tune` draws ``n_subsets`` random
halves of the training set, retrains on each through the user's ``retrain`` function (cached
and resumable by :func:`~tamis.attribution.evaluation.ground_truth`), fits each (Fisher, r)
curvature once, sweeps the damping over the fitted eigenpairs (the damping does not change
them), scores the queries and keeps the configuration of highest LDS. The choice is written
next to the store as ``tuning.json``; ``tamis attribute query --tuned`` uses it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tamis._io import write_text_atomic
from tamis._progress import track
from tamis.attribution.build import model_fingerprint, query_gradients
from tamis.attribution.config import CurvatureConfig, ScoreConfig
from tamis.attribution.curvature import Curvature, fit_curvature, store_identity
from tamis.attribution.data import dataset_length
from tamis.attribution.errors import AttributionError
from tamis.attribution.evaluation import ground_truth, lds, make_masks
from tamis.attribution.scoring import score_gradients
from tamis.attribution.store import FactorStore
from tamis.attribution.task import AttributionTask

TUNING_FILE = "tuning.json"
RetrainFn = Callable[[np.ndarray, int], np.ndarray]


@dataclass(frozen=True)
class TuneConfig:
    """The search space and the retraining budget of :func:`tune`.

    Attributes:
        dampings: relative dampings (x the mean eigenvalue trace(F)/D) to try; the default
            spans 1e-3 .. 1e3, the range of best dampings measured over ten settings.
        ranks: curvature ranks r to try (clipped to each layer's D; an r >= D is exact).
        fishers: Fisher kinds to try (``"empirical"``, ``"true"``).
        kinds: curvature kinds to try (``"lowrank"``, ``"ekfac"``, ``"kfac"``); ``ranks``
            apply to ``lowrank`` only. Each Kronecker fit is two (EK-FAC) or one (K-FAC)
            extra pass over the training data.
        n_subsets: retrained models (each on a random ``alpha`` fraction of the data);
            LDS needs at least 3.
        alpha: fraction of the training set in each subset.
        n_seeds: retraining seeds averaged per subset.
        seed: seed of the subsets.
        n_samples: sampled labels per example for ``fisher="true"``.

    """

    dampings: tuple[float, ...] = (0.001, 0.01, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0, 1000.0)
    ranks: tuple[int, ...] = (32, 128, 512)
    fishers: tuple[str, ...] = ("empirical", "true")
    kinds: tuple[str, ...] = ("lowrank", "ekfac")
    n_subsets: int = 20
    alpha: float = 0.5
    n_seeds: int = 1
    seed: int = 0
    n_samples: int = 1

    def __post_init__(self) -> None:
        if self.n_subsets < 3:
            raise ValueError(
                f"a tuning budget of {self.n_subsets} retrained subset(s) is too small for "
                "any LDS (a Spearman correlation over subsets): use n_subsets >= 3")
        if not self.dampings or any(not d > 0 for d in self.dampings):
            raise ValueError(f"dampings must be positive, got {self.dampings}")
        if not self.ranks or any(r < 1 for r in self.ranks):
            raise ValueError(f"ranks must be >= 1, got {self.ranks}")
        bad_kinds = [k for k in self.kinds if k not in ("lowrank", "ekfac", "kfac")]
        if bad_kinds or not self.kinds:
            raise ValueError(f"kinds must be among 'lowrank', 'ekfac', 'kfac', got {self.kinds}")
        bad = [f for f in self.fishers if f not in ("empirical", "true")]
        if bad or not self.fishers:
            raise ValueError(f"fishers must be 'empirical' and/or 'true', got {self.fishers}")
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must lie in (0, 1), got {self.alpha}")


@dataclass
class TuneResult:
    """What :func:`tune` measured: every configuration's LDS and the best one."""

    best: dict
    table: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-ready form (the content of ``tuning.json``)."""
        return {"best": self.best, "table": self.table, "config": self.config}

    def curvature_config(self, base: CurvatureConfig | None = None) -> CurvatureConfig:
        """The chosen curvature as a :class:`CurvatureConfig` (other fields from ``base``)."""
        b = base or CurvatureConfig()
        rank = self.best.get("rank") or b.rank
        return replace(b, kind=self.best.get("kind", "lowrank"), fisher=self.best["fisher"],
                       rank=rank, damping=self.best["damping"], damping_mode="relative")


def _with_damping(curv: Curvature, a: float) -> Curvature:
    return replace(curv, blocks=[replace(b, damping=a * b.trace / b.dim) for b in curv.blocks])


def tune(
    task: AttributionTask,
    model: nn.Module,
    train: Any,
    queries: Any,
    store: FactorStore,
    retrain: RetrainFn,
    config: TuneConfig | None = None,
    cache_dir: str | Path | None = None,
    setting: dict | None = None,
    collate_fn: Callable[[Sequence[Any]], Any] | None = None,
    progress: bool = True,
) -> TuneResult:
    """Pick the Fisher kind, rank and damping of highest LDS; write ``tuning.json``.

    Args:
        task: the attribution task.
        model: the trained model (the one the store was built from).
        train: the training set of the store (for ``fisher="true"``).
        queries: the query examples the LDS is measured on.
        store: the factor store (built on ``train``).
        retrain: ``retrain(mask, seed) -> (Q,)`` query losses of the model retrained on
            the examples where ``mask`` is true (the same training recipe).
        config: the search space and budget.
        cache_dir: where retrained results are cached (default: ``<store>/tuning-cache``).
        setting: what identifies the retraining recipe in the cache key (default: the
            model fingerprint, the store identity and the number of queries).
        collate_fn: collate function for non-tensor data sets.
        progress: show progress bars.

    Returns:
        A :class:`TuneResult`; ``best`` is the argmax of ``table`` by LDS.

    Raises:
        AttributionError: the retrained measurements do not match the queries.

    """
    from tamis.attribution.fisher import source_for

    cfg = config or TuneConfig()
    n = store.num_examples
    if dataset_length(train) != n:
        raise AttributionError(f"train has {dataset_length(train)} examples, the store {n}")
    n_q = dataset_length(queries)
    masks = make_masks(n, cfg.n_subsets, alpha=cfg.alpha, seed=cfg.seed)
    key = setting or {"model": model_fingerprint(model), "store": store_identity(store),
                      "n_queries": n_q}
    truth = ground_truth(retrain, masks, cache_dir or store.path / "tuning-cache", key,
                         n_seeds=cfg.n_seeds, progress=progress)
    if truth.shape != (cfg.n_subsets, n_q):
        raise AttributionError(f"retrain returned {truth.shape[1]} measurements per subset; "
                               f"expected one per query ({n_q})")
    table: list[dict] = []
    jobs = [(k, f, r) for k in cfg.kinds for f in cfg.fishers
            for r in (cfg.ranks if k == "lowrank" else (None,))]
    score_cfg = ScoreConfig(progress=False, top_k=1)
    grads = query_gradients(task, model, queries, store, score_cfg.batch_size, torch.float32,
                            collate_fn, False)
    for kind, fisher, r in track(jobs, "tuning: curvatures", len(jobs), progress):
        base = CurvatureConfig(kind=kind, rank=r or 1, fisher=fisher, n_samples=cfg.n_samples,
                               seed=cfg.seed)
        curv = fit_curvature(store, base, torch.float32, False,
                             source_for(base, task, model, train, store, collate_fn))
        for a in cfg.dampings:
            res = score_gradients(grads, store, _with_damping(curv, a), score_cfg,
                                  torch.float32)
            out = lds(res.scores.numpy().astype(np.float64), masks, truth, target="loss",
                      n_boot=200, seed=0)
            table.append({"kind": kind, "fisher": fisher, "rank": r, "damping": a,
                          "lds": out.mean, "ci": [out.ci_low, out.ci_high]})
    finite = [row for row in table if np.isfinite(row["lds"])]
    if not finite:
        raise AttributionError("no configuration gave a finite LDS (constant retrained "
                               "measurements?)")
    best = max(finite, key=lambda row: row["lds"])
    result = TuneResult(dict(best), table, asdict(cfg) | {"n_train": n, "n_queries": n_q})
    write_text_atomic(store.path / TUNING_FILE, json.dumps(result.to_dict(), indent=1) + "\n")
    return result


def load_tuning(store_path: str | Path) -> TuneResult:
    """The ``tuning.json`` written by :func:`tune` next to a store."""
    path = Path(store_path) / TUNING_FILE
    if not path.exists():
        raise AttributionError(f"no {TUNING_FILE} in {store_path}: run `tamis attribute tune`")
    try:
        data = json.loads(path.read_text())
        return TuneResult(data["best"], data.get("table", []), data.get("config", {}))
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise AttributionError(f"{path} is not a tuning file ({err})") from err
