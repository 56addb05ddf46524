"""How good are attribution scores? LDS against retrained models, and tail-patch.

Sign convention (the engine's, see :mod:`tamis.attribution.task`): a score ``tau(q, i) > 0``
means training example ``i`` *helps* query ``q``: training on it *lowers* the query's loss
(raises its log-probability).

**Linear datamodeling score (LDS)** (paper notes section 6.1):

1. ``M`` random subsets ``S_m``, each exactly ``round(alpha * N)`` training examples
   (:func:`make_masks`, saved once with :func:`save_masks` and shared by every method).
2. One model per subset, trained by a retraining function the task supplies; its query
   losses ``y_m(q)`` are the ground truth, cached on disk under a key hashing the setting
   and the masks (:func:`ground_truth`), so every method is scored against the same numbers.
3. The prediction ``p_m(q) = sum_{i in S_m} tau(q, i)`` (:func:`lds_predictions`).
4. ``LDS(q) = Spearman(p(q), -y(q))`` when ``y`` is a loss (``target="loss"``), or
   ``Spearman(p(q), y(q))`` when ``y`` is a gain such as a log-probability
   (``target="gain"``): more helpful examples in the subset should mean lower loss.
5. The mean over queries with a percentile-bootstrap CI over queries (:func:`lds`).

**Tail-patch** (where retraining is too costly): from the final model, one small gradient
step on the ``k`` most helpful training examples of a query; the gain is the increase of the
query's log-probability, i.e. the *decrease* of the task's measurement. It is compared with
the same step on ``k`` random examples (:func:`tail_patch`, maths in
:func:`tail_patch_summary`).

The maths (:func:`make_masks`, :func:`lds_predictions`, :func:`lds_per_query`,
:func:`bootstrap_ci`, :func:`lds`, :func:`lds_difference`, :func:`tail_patch_summary`) is
pure: arrays in, arrays or dataclasses out, no I/O. The orchestration (:func:`ground_truth`,
:func:`tail_patch`) does the retraining, the caching and the model calls.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from scipy import stats
from torch import nn
from torch.func import functional_call
from torch.utils.data import TensorDataset, default_collate

from tamis._io import atomic_path
from tamis._progress import track
from tamis.attribution.data import dataset_length, iter_batches
from tamis.attribution.task import AttributionTask

Target = Literal["loss", "gain"]
RetrainFn = Callable[[np.ndarray, int], np.ndarray]
"""``retrain(mask, seed) -> (Q,)``: train on the examples where ``mask`` (bool, (N,)) is
True with ``seed``, return the query measurements (losses, or gains with ``target="gain"``)."""


# ------------------------------------------------------------------------------------------
# Pure maths
# ------------------------------------------------------------------------------------------
def make_masks(n_train: int, n_subsets: int, alpha: float = 0.5, seed: int = 0) -> np.ndarray:
    """``n_subsets`` random subsets of ``round(alpha * n_train)`` examples each, (M, N) bool.

    Every row holds exactly the same number of True entries (sampling without replacement),
    and the result depends only on the arguments.
    """
    if n_train < 1 or n_subsets < 1:
        raise ValueError(f"n_train and n_subsets must be >= 1, got {n_train}, {n_subsets}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    size = min(max(int(round(alpha * n_train)), 1), n_train)
    rng = np.random.default_rng(seed)
    masks = np.zeros((n_subsets, n_train), dtype=bool)
    for m in range(n_subsets):
        masks[m, rng.choice(n_train, size=size, replace=False)] = True
    return masks


def lds_predictions(scores: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Datamodel predictions ``p[m, q] = sum_{i in S_m} scores[q, i]``, shape (M, Q).

    Identical subsets get bit-identical predictions: the sums are computed once per distinct
    mask (a BLAS product may round two identical rows differently depending on where they
    sit, which would turn a tie into an arbitrary order and change the Spearman ranks).

    Args:
        scores: (Q, N) attribution scores, positive = helpful.
        masks: (M, N) subset membership (bool or 0/1).

    """
    scores, masks = np.asarray(scores, dtype=np.float64), np.asarray(masks, dtype=np.float64)
    if scores.ndim != 2 or masks.ndim != 2 or scores.shape[1] != masks.shape[1]:
        raise ValueError(f"scores (Q, N) and masks (M, N) disagree: {scores.shape}, {masks.shape}")
    distinct, inverse = np.unique(masks, axis=0, return_inverse=True)
    return (distinct @ scores.T)[inverse.reshape(-1)]


def lds_per_query(
    scores: np.ndarray,
    masks: np.ndarray,
    truth: np.ndarray,
    target: Target = "loss",
) -> np.ndarray:
    """Spearman correlation per query between predictions and the (signed) ground truth.

    Args:
        scores: (Q, N) attribution scores, positive = helpful (lowers the query's loss).
        masks: (M, N) subsets.
        truth: (M, Q) measurement of each query after training on each subset.
        target: ``"loss"`` (correlate with ``-truth``) or ``"gain"`` (with ``truth``).

    Returns:
        (Q,) Spearman rho; NaN where either side is constant over subsets.

    """
    if target not in ("loss", "gain"):
        raise ValueError(f"target must be 'loss' or 'gain', got {target!r}")
    pred = lds_predictions(scores, masks)
    truth = np.asarray(truth, dtype=np.float64)
    if truth.shape != pred.shape:
        raise ValueError(f"ground truth has shape {truth.shape}, expected (M, Q) = {pred.shape}")
    if truth.shape[0] < 3:
        raise ValueError(f"LDS needs at least 3 subsets, got {truth.shape[0]}")
    signed = -truth if target == "loss" else truth
    out = np.full(pred.shape[1], np.nan)
    for q in range(pred.shape[1]):
        a, b = pred[:, q], signed[:, q]
        if np.ptp(a) == 0 or np.ptp(b) == 0 or not (np.isfinite(a).all() and np.isfinite(b).all()):
            continue
        out[q] = stats.spearmanr(a, b).statistic
    return out


def bootstrap_ci(
    values: np.ndarray, n_boot: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile-bootstrap CI of the mean of ``values`` (NaNs dropped), resampling entries."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    if v.size == 1:
        return float(v[0]), float(v[0])
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    return float(lo), float(hi)


@dataclass
class LDSResult:
    """LDS of one set of scores.

    Attributes:
        mean: Mean Spearman rho over queries (NaN queries dropped).
        ci_low: Lower end of the bootstrap CI of the mean.
        ci_high: Upper end of the bootstrap CI of the mean.
        level: Confidence level of the CI.
        per_query: (Q,) rho per query.
        n_queries: Queries with a defined rho.
        n_subsets: M.

    """

    mean: float
    ci_low: float
    ci_high: float
    level: float
    per_query: np.ndarray
    n_queries: int
    n_subsets: int

    def to_dict(self, per_query: bool = False) -> dict:
        """Return a JSON-ready dict (``per_query`` included on request)."""
        d = {k: v for k, v in asdict(self).items() if k != "per_query"}
        if per_query:
            d["per_query"] = [None if not np.isfinite(x) else float(x) for x in self.per_query]
        return d


def lds(
    scores: np.ndarray,
    masks: np.ndarray,
    truth: np.ndarray,
    target: Target = "loss",
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> LDSResult:
    """Linear datamodeling score: mean per-query Spearman rho with a bootstrap CI.

    Args:
        scores: (Q, N) attribution scores, positive = helpful.
        masks: (M, N) subsets used to train the ground-truth models.
        truth: (M, Q) query losses (``target="loss"``) or gains (``"gain"``) per subset.
        target: What ``truth`` measures; see :func:`lds_per_query`.
        n_boot: Bootstrap resamples over queries.
        level: CI level.
        seed: Bootstrap seed.

    """
    rho = lds_per_query(scores, masks, truth, target)
    finite = rho[np.isfinite(rho)]
    mean = float(finite.mean()) if finite.size else float("nan")
    lo, hi = bootstrap_ci(rho, n_boot, level, seed)
    return LDSResult(mean, lo, hi, level, rho, int(finite.size), int(np.asarray(masks).shape[0]))


def lds_difference(
    a: LDSResult | np.ndarray,
    b: LDSResult | np.ndarray,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> dict:
    """Paired LDS difference ``a - b`` over the queries both define, with a bootstrap CI.

    Two methods scored on the same queries share each query's difficulty, so the CI of the
    per-query difference is much narrower than the two separate CIs suggest: it says whether
    ``a`` is ahead of ``b`` (CI above 0), behind it, or tied with it.

    Args:
        a: An :class:`LDSResult`, or its (Q,) per-query rho.
        b: The same for the method compared against (same queries, same order).
        n_boot: Bootstrap resamples over queries.
        level: CI level.
        seed: Bootstrap seed.

    Returns:
        ``{"diff", "lo", "hi", "level", "n_queries", "wins"}``: the mean difference, its CI,
        the queries used, and the fraction of them where ``a`` is higher.

    Raises:
        ValueError: The per-query arrays differ in length, or no query is finite in both.

    """
    ra = np.asarray(a.per_query if isinstance(a, LDSResult) else a, dtype=np.float64)
    rb = np.asarray(b.per_query if isinstance(b, LDSResult) else b, dtype=np.float64)
    if ra.shape != rb.shape or ra.ndim != 1:
        raise ValueError(f"per-query LDS of a and b must be (Q,) arrays of the same queries, "
                         f"got shapes {ra.shape} and {rb.shape}")
    both = np.isfinite(ra) & np.isfinite(rb)
    if not both.any():
        raise ValueError("no query has a finite LDS under both methods")
    d = ra[both] - rb[both]
    lo, hi = bootstrap_ci(d, n_boot, level, seed)
    return {"diff": float(d.mean()), "lo": lo, "hi": hi, "level": level,
            "n_queries": int(both.sum()), "wins": float((d > 0).mean())}


@dataclass
class TailPatchResult:
    """Tail-patch gains per query.

    Attributes:
        gain_top: (Q,) log-probability gain after a step on the top-k examples.
        gain_random: (Q,) mean gain after a step on k random examples.
        mean_top: Mean of ``gain_top``.
        mean_random: Mean of ``gain_random``.
        mean_diff: Mean of ``gain_top - gain_random``.
        ci_low: Lower bootstrap CI end of ``mean_diff``.
        ci_high: Upper bootstrap CI end of ``mean_diff``.
        win_rate: Fraction of queries where the top-k step beats the random one.
        k: Examples per step.
        lr: Step size.
        timings: Seconds spent (``total_s``).

    """

    gain_top: np.ndarray
    gain_random: np.ndarray
    mean_top: float
    mean_random: float
    mean_diff: float
    ci_low: float
    ci_high: float
    win_rate: float
    k: int = 0
    lr: float = 0.0
    timings: dict = field(default_factory=dict)

    def to_dict(self, per_query: bool = False) -> dict:
        """Return a JSON-ready dict (per-query gains included on request)."""
        d = {k: v for k, v in asdict(self).items() if k not in ("gain_top", "gain_random")}
        if per_query:
            d["gain_top"] = self.gain_top.tolist()
            d["gain_random"] = self.gain_random.tolist()
        return d


def tail_patch_summary(
    gain_top: np.ndarray,
    gain_random: np.ndarray,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> TailPatchResult:
    """Summarise per-query tail-patch gains (top-k versus random), bootstrap CI over queries."""
    top, rnd = np.asarray(gain_top, np.float64), np.asarray(gain_random, np.float64)
    if top.shape != rnd.shape or top.ndim != 1:
        raise ValueError(f"gains must be two (Q,) arrays, got {top.shape}, {rnd.shape}")
    diff = top - rnd
    lo, hi = bootstrap_ci(diff, n_boot, level, seed)
    return TailPatchResult(
        top,
        rnd,
        float(np.nanmean(top)),
        float(np.nanmean(rnd)),
        float(np.nanmean(diff)),
        lo,
        hi,
        float(np.mean(diff > 0)),
    )


# ------------------------------------------------------------------------------------------
# Orchestration: masks and ground truth on disk
# ------------------------------------------------------------------------------------------
def _save_npy_atomic(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, array)


def save_masks(path: str | Path, masks: np.ndarray) -> Path:
    """Write masks (M, N) as a bool ``.npy`` file, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _save_npy_atomic(path, np.asarray(masks, dtype=bool))
    return path


def load_masks(path: str | Path) -> np.ndarray:
    """Read masks written by :func:`save_masks`; (M, N) bool."""
    masks = np.load(Path(path))
    if masks.ndim != 2:
        raise ValueError(f"masks in {path} must be 2-D (M, N), got shape {masks.shape}")
    return masks.astype(bool)


def ground_truth_key(setting: dict, masks: np.ndarray, n_seeds: int = 1) -> str:
    """SHA-256 of the setting (JSON, sorted keys), the seeds per subset and the masks' bits."""
    h = hashlib.sha256()
    h.update(json.dumps(setting, sort_keys=True, default=str).encode())
    h.update(f"|seeds={n_seeds}|shape={tuple(masks.shape)}|".encode())
    h.update(np.packbits(np.asarray(masks, dtype=bool), axis=None).tobytes())
    return h.hexdigest()


def ground_truth(
    retrain: RetrainFn,
    masks: np.ndarray,
    cache_dir: str | Path,
    setting: dict,
    n_seeds: int = 1,
    progress: bool = True,
    reverse: bool = False,
) -> np.ndarray:
    """Query measurements of models retrained on every subset, cached and resumable.

    Subset ``m`` is trained ``n_seeds`` times with seeds ``m * n_seeds + s`` and its
    measurements averaged. Each subset's result is written to
    ``cache_dir/gt-<key[:16]>/subset-<m>.npy`` as soon as it is done (so an interrupted run
    resumes), where the key hashes ``setting`` (everything that changes the models: data,
    architecture, optimiser, epochs, queries) and the masks. A second call with the same
    key only reads files; any change to the setting or the masks starts a new folder.
    ``reverse=True`` walks the subsets from the last one: a second process started that way
    on the same cache fills it from the other end, so two workers split the retraining
    (a subset finished by either is read, not retrained).

    Returns:
        (M, Q) ground truth, float64.

    """
    masks = np.asarray(masks, dtype=bool)
    key = ground_truth_key(setting, masks, n_seeds)
    folder = Path(cache_dir) / f"gt-{key[:16]}"
    final = folder / "ground_truth.npy"
    if final.exists():
        return np.load(final)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"key": key, "setting": setting, "n_seeds": n_seeds, "shape": list(masks.shape)}
    (folder / "setting.json").write_text(json.dumps(meta, indent=1, sort_keys=True, default=str))
    if not (folder / "masks.npy").exists():
        save_masks(folder / "masks.npy", masks)
    rows: dict[int, np.ndarray] = {}
    order = range(masks.shape[0] - 1, -1, -1) if reverse else range(masks.shape[0])
    for m in track(order, "retrain subsets", masks.shape[0], progress):
        path = folder / f"subset-{m:04d}.npy"
        if path.exists():
            rows[m] = np.load(path)
            continue
        outs = [
            np.asarray(retrain(masks[m], m * n_seeds + s), dtype=np.float64) for s in range(n_seeds)
        ]
        row = np.mean(outs, axis=0)
        if row.ndim != 1 or not np.isfinite(row).all():
            raise ValueError(f"retraining subset {m} returned {row.shape} with non-finite values")
        _save_npy_atomic(path, row)
        rows[m] = row
    truth = np.stack([rows[m] for m in range(masks.shape[0])])
    _save_npy_atomic(final, truth)
    return truth


# ------------------------------------------------------------------------------------------
# Orchestration: tail-patch
# ------------------------------------------------------------------------------------------
def _gather(dataset: Any, indices: Sequence[int], collate_fn: Callable | None) -> Any:
    idx = [int(i) for i in indices]
    if isinstance(dataset, TensorDataset) and collate_fn is None:
        return tuple(t[idx] for t in dataset.tensors)
    if isinstance(dataset, torch.Tensor) and collate_fn is None:
        return dataset[idx]
    return (collate_fn or default_collate)([dataset[i] for i in idx])


def tail_patch(
    task: AttributionTask,
    model: nn.Module,
    train: Any,
    queries: Any,
    top_indices: np.ndarray,
    k: int = 10,
    lr: float = 1e-2,
    n_random: int = 5,
    seed: int = 0,
    collate_fn: Callable[[Sequence[Any]], Any] | None = None,
    n_boot: int = 2000,
    progress: bool = True,
) -> TailPatchResult:
    """Tail-patch evaluation: one SGD step on each query's top-k helpful examples.

    For query ``q`` the model's parameters ``theta`` move to
    ``theta - lr * grad(mean_{i in top_k(q)} loss_i)``; the gain is
    ``measurement(q; theta) - measurement(q; theta')`` (the measurement is a loss, so the
    gain is the increase of the query's log-probability when the measurement is its
    negative log-likelihood). The same step on ``k`` random training examples, averaged
    over ``n_random`` draws, is the reference. The model itself is never modified.

    Args:
        task: Supplies the training loss and the query measurement.
        model: The final model.
        train: Map-style training data (same order as the scores' columns).
        queries: Map-style query data.
        top_indices: (Q, >= k) training indices per query, most helpful first
            (e.g. ``ScoreResult.helpful.indices``).
        k: Examples per step.
        lr: Step size of the single SGD step.
        n_random: Random draws of ``k`` examples per query for the reference.
        seed: Seed of the random draws.
        collate_fn: Builds a batch from a list of examples.
        n_boot: Bootstrap resamples for the CI of the mean difference.
        progress: Show a progress bar.

    """
    top_indices = np.asarray(top_indices)
    n_train, n_q = dataset_length(train), dataset_length(queries)
    if top_indices.ndim != 2 or top_indices.shape[0] != n_q or top_indices.shape[1] < k:
        raise ValueError(f"top_indices must be (Q={n_q}, >= k={k}), got {top_indices.shape}")
    if not 1 <= k <= n_train:
        raise ValueError(f"k must lie in [1, {n_train}], got {k}")
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = {n: b.detach() for n, b in model.named_buffers()}
    names = [n for n, p in model.named_parameters() if p.requires_grad]

    def measurement(batch: Any, state: dict) -> float:
        with torch.no_grad():
            return float(task.compute_measurement(batch, _Bound(model, state)).sum())

    def step_gain(batch_q: Any, base: float, indices: np.ndarray) -> float:
        live = {n: params[n].clone().requires_grad_(True) for n in names}
        state = {**params, **live, **buffers}
        loss = task.compute_train_loss(_gather(train, indices, collate_fn), _Bound(model, state))
        grads = torch.autograd.grad(loss.mean(), [live[n] for n in names], allow_unused=True)
        moved = dict(params)
        for n, g in zip(names, grads, strict=True):
            if g is not None:
                moved[n] = params[n] - lr * g
        return base - measurement(batch_q, {**moved, **buffers})

    was_training = model.training
    model.eval()
    gain_top, gain_rnd = np.zeros(n_q), np.zeros(n_q)
    try:
        batches = iter_batches(queries, 0, n_q, 1, collate_fn)
        for q, batch_q in track(enumerate(batches), "tail-patch", n_q, progress):
            base = measurement(batch_q, {**params, **buffers})
            gain_top[q] = step_gain(batch_q, base, top_indices[q, :k])
            gain_rnd[q] = np.mean(
                [
                    step_gain(batch_q, base, rng.choice(n_train, k, replace=False))
                    for _ in range(n_random)
                ]
            )
    finally:
        model.train(was_training)
    result = tail_patch_summary(gain_top, gain_rnd, n_boot=n_boot, seed=seed)
    result.k, result.lr = k, lr
    result.timings = {"total_s": time.perf_counter() - t0}
    return result


class _Bound(nn.Module):
    """``model`` evaluated with a given parameter/buffer dict (via ``functional_call``)."""

    def __init__(self, model: nn.Module, state: dict) -> None:
        super().__init__()
        object.__setattr__(self, "_model", model)
        object.__setattr__(self, "_state", state)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Call the wrapped model with the bound state."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return functional_call(self._model, self._state, args, kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(object.__getattribute__(self, "_model"), name)
