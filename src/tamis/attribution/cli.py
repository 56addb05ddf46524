"""``tamis attribute build|query|tune|info|verify`` over the same engine as the Python API."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from tamis.attribution.build import build_store
from tamis.attribution.config import (
    BuildConfig,
    CurvatureConfig,
    ScoreConfig,
    to_dict,
)
from tamis.attribution.curvature import Curvature, fit_curvature
from tamis.attribution.distributed import process_group
from tamis.attribution.errors import AttributionError, DistributedError
from tamis.attribution.examples import load_factory
from tamis.attribution.presets import (
    DEFAULT_METHOD,
    curvature_kind_for,
    factors_with_dtype,
    preset,
)
from tamis.attribution.scoring import compute_scores
from tamis.attribution.store import FactorStore

app = typer.Typer(
    help="LoRIF training-data attribution (build a store, then query it).", no_args_is_help=True
)
console = Console()
DEFAULT_TASK = "tamis.attribution.examples:fashion_cnn"
TASK_HELP = "Task factory, module:function or file.py:function, returning a TaskBundle."


def _bundle(task: str, cache_dir: Path, data_dir: Path | None, hf: dict | None = None):
    if hf and hf.get("model"):
        from tamis.attribution.hf import hf_bundle

        if not hf.get("data"):
            raise ValueError("--model needs --data FILE.jsonl (the training texts)")
        return hf_bundle(**hf)
    return load_factory(task)(cache_dir=cache_dir, data_dir=data_dir)


MODEL_HELP = ("Local transformers model folder (AutoModelForCausalLM or "
              "AutoModelForSequenceClassification); replaces --task.")
DATA_HELP = ("Training JSONL for --model: 'text' or 'prompt'/'completion' (causal LM), "
             "'text'/'label' (classifier).")
# the transformers options shared by build, fit and query
MODEL_OPT = typer.Option(None, help=MODEL_HELP)
KIND_OPT = typer.Option(None, "--kind", help="lm | cls for --model (default: its config).")
TRUNCATE_OPT = typer.Option(False, help="Cut texts longer than the model's context.")
WINDOW_OPT = typer.Option(
    None, help="Causal LM: split texts longer than N tokens into windows overlapping by one "
    "token (memory bounded by N); a text's score is the sum of its windows'. Give the same "
    "N to build, fit and query.")


def _fail(err: Exception) -> None:
    console.print(f"[red]error:[/] {err}", soft_wrap=True)
    raise typer.Exit(code=2)


@app.command()
def build(
    store: Path = typer.Option(..., help="Store folder (resumed if a partial build is there)."),
    task: str = typer.Option(DEFAULT_TASK, help=TASK_HELP),
    cache_dir: Path = typer.Option(Path(".tamis-cache"), help="Where the task caches its model."),
    data_dir: Path | None = typer.Option(None, help="Data folder passed to the task."),
    model: Path | None = MODEL_OPT,
    data: Path | None = typer.Option(None, help=DATA_HELP),
    model_kind: str | None = KIND_OPT,
    layers: str | None = typer.Option(
        None, help="Regular expression on module names to track (--model; default: every "
        "Linear / Conv1D but lm_head)."),
    truncate: bool = TRUNCATE_OPT,
    window: int | None = WINDOW_OPT,
    method: str = typer.Option(
        DEFAULT_METHOD, help="Preset the store is built for: ekfac (default) | kfac | lorif "
        "(the paper's: 64 x 64, c = 1) | logra (dense) | grad_dot | grad_cos. Options "
        "given below override it; `query --curvature auto` uses its curvature."),
    d1: int | None = typer.Option(None, help="Projected input dimension per layer [preset]."),
    d2: int | None = typer.Option(None, help="Projected output-gradient dimension [preset]."),
    identity_up_to: int | None = typer.Option(
        None, help="Keep layer sides of at most this size unprojected [preset: 1024 for "
        "ekfac/kfac, none otherwise; 0 = project every side]."),
    seed: int = typer.Option(0, help="Projection seed."),
    projection: str = typer.Option("gaussian", help="gaussian | rademacher | identity."),
    clip: bool = typer.Option(True, help="Clip d1/d2 to small layers instead of failing."),
    rank_c: int | None = typer.Option(
        None, help="Rank c of the stored factors, used as given [preset: 16, at most 4096 "
        "numbers per layer, for ekfac/kfac; 1 otherwise]."),
    truncation: str = typer.Option(
        "frobenius", help="frobenius | whitened (keep the rank-c part that matters under "
        "the K-FAC metric; one extra pass)."),
    dense: bool = typer.Option(False, help="Store dense d1 x d2 gradients (LoGRA baseline)."),
    dtype: str = typer.Option(
        None, help="float16 | bfloat16 | float32 | float64 | int8 (block-quantised) "
        "[default: the method's; int8 for ekfac/kfac, float16 otherwise]."),
    batch_size: int = typer.Option(64, help="Examples per forward/backward pass."),
    shard_size: int = typer.Option(4096, help="Examples per shard file."),
    overwrite: bool = typer.Option(False, help="Replace an incompatible store at --store."),
) -> None:
    """Capture per-example projected gradients of the training set into a store.

    Scale out with torchrun: ``torchrun --nproc-per-node 4 -m tamis.cli attribute build ...``
    (gloo on CPU, nccl on GPU); each rank writes its share of the shards.
    """
    _init_distributed()
    try:
        p = preset("logra" if dense else method)
        proj = replace(p.projection, seed=seed, kind=projection, clip_to_layer=clip,
                       **({"d1": d1} if d1 is not None else {}),
                       **({"d2": d2} if d2 is not None else {}))
        if identity_up_to is not None:
            proj = replace(proj, identity_up_to=identity_up_to or None)
        factors = replace(factors_with_dtype(p.factors, dtype), truncation=truncation)
        if rank_c is not None and not factors.dense:
            factors = replace(factors, rank=rank_c, max_numbers=None)
        b = _bundle(task, cache_dir, data_dir, _hf(model, data, None, model_kind, layers, truncate,
                                                      window))
        s = build_store(
            b.task,
            b.model,
            b.train,
            store,
            proj,
            factors,
            BuildConfig(batch_size=batch_size, shard_size=shard_size),
            overwrite=overwrite,
            preset="logra" if dense else method,
        )
    except (AttributionError, DistributedError, ValueError, FileNotFoundError) as err:
        _fail(err)
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_rank() == 0:
        _print_info(s)


def _hf(model, data, queries, kind, layers, truncate, window=None) -> dict | None:
    if model is None:
        return None
    return {"model": str(model), "data": None if data is None else str(data),
            "queries": None if queries is None else str(queries), "kind": kind,
            "pattern": layers, "truncate": truncate, "window": window}


def _init_distributed() -> None:
    """Join the torchrun process group when launched with WORLD_SIZE > 1."""
    import os

    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        import atexit

        def _leave() -> None:  # every rank waits for the others, then tears down cleanly
            if dist.is_initialized():
                try:
                    dist.barrier()
                except RuntimeError:  # a rank already died: its error was reported
                    pass
                dist.destroy_process_group()

        atexit.register(_leave)


DAMPING_HELP = ("Damping lambda (relative: x mean eigenvalue). Default: 1, or for ekfac/kfac "
                "with a training horizon (--lr-sum, or the training_horizon.json StoreCallback "
                "leaves in the store) the horizon rule 1 / (S * rho).")
LR_SUM_HELP = ("Sum of the training learning rate over the optimizer steps (the training "
               "horizon S); written into the store as training_horizon.json. Without it: "
               "the store's file, else a --model folder's trainer_state.json.")


def _with_horizon(store: FactorStore, cfg: CurvatureConfig, bundle, damping: float | None,
                  lr_sum: float | None, tuned: bool) -> CurvatureConfig:
    """``cfg`` with the training-horizon damping where it applies (ekfac/kfac, no --damping)."""
    from tamis.attribution.horizon import (
        TrainingHorizon,
        horizon_from_trainer_state,
        horizon_rule_applies,
        read_horizon,
        with_horizon_damping,
        write_horizon,
    )

    horizon = TrainingHorizon(lr_sum) if lr_sum is not None else read_horizon(store.path)
    if horizon is None and bundle.info.get("lr_sum"):  # a task that knows its training run
        horizon = TrainingHorizon(bundle.info["lr_sum"])
    if horizon is None and bundle.info.get("model_path"):  # a Trainer's output folder
        horizon = horizon_from_trainer_state(bundle.info["model_path"])
    if lr_sum is not None and process_group()[0] == 0:
        write_horizon(store.path, horizon)
    if damping is not None or tuned:
        return cfg
    if horizon is None and horizon_rule_applies(cfg):
        console.print("[yellow]no training horizon: the preset's damping applies (measured up "
                      "to 0.11 LDS below the horizon rule); pass --lr-sum (the sum of the "
                      "learning rate over the optimizer steps) or --model <Trainer folder>.")
    return with_horizon_damping(cfg, horizon, bundle.task, bundle.train)[0]


def _curvature_for(store: FactorStore, cfg: CurvatureConfig, bundle=None) -> Curvature:
    key = hashlib.sha256(json.dumps(to_dict(cfg), sort_keys=True).encode()).hexdigest()[:12]
    path = store.path / f"curvature-{cfg.kind}-{key}.safetensors"
    if path.exists():
        return Curvature.load(path, store)
    from tamis.attribution.fisher import source_for

    source = None if bundle is None else source_for(cfg, bundle.task, bundle.model,
                                                    bundle.train, store)
    curvature = fit_curvature(store, cfg, source=source)
    if process_group()[0] == 0:
        curvature.save(path)
    return curvature


def _curvature_config(s: FactorStore, curvature: str, rank_r: int, damping: float,
                      damping_mode: str, granularity: str, fisher: str, n_samples: int,
                      tuned: bool) -> CurvatureConfig:
    kind = curvature if curvature != "auto" else curvature_kind_for(s.manifest)
    cfg = CurvatureConfig(kind=kind, rank=rank_r, damping=damping, damping_mode=damping_mode,
                          granularity=granularity, fisher=fisher, n_samples=n_samples)
    if tuned:
        from tamis.attribution.tuning import load_tuning

        cfg = load_tuning(s.path).curvature_config(cfg)
    return cfg


@app.command()
def fit(
    store: Path = typer.Option(..., help="Store folder built by `tamis attribute build`."),
    task: str = typer.Option(DEFAULT_TASK, help=TASK_HELP),
    cache_dir: Path = typer.Option(Path(".tamis-cache"), help="Where the task caches its model."),
    data_dir: Path | None = typer.Option(None, help="Data folder passed to the task."),
    model: Path | None = MODEL_OPT,
    data: Path | None = typer.Option(None, help=DATA_HELP + " The store's training data."),
    model_kind: str | None = KIND_OPT,
    layers: str | None = typer.Option(None, help="The --layers the store was built with."),
    truncate: bool = TRUNCATE_OPT,
    window: int | None = WINDOW_OPT,
    curvature: str = typer.Option("auto", help="auto (the store's preset) | lowrank | dense | "
                                  "identity | ekfac | kfac."),
    rank_r: int = typer.Option(256, help="Curvature rank r (lowrank; clipped to D)."),
    damping: float | None = typer.Option(None, help=DAMPING_HELP),
    lr_sum: float | None = typer.Option(None, help=LR_SUM_HELP),
    damping_mode: str = typer.Option("relative", help="relative | absolute."),
    granularity: str = typer.Option("layer", help="layer | model."),
    fisher: str = typer.Option("empirical", help="empirical | true | ggn."),
    n_samples: int = typer.Option(1, help="Sampled labels per example (--fisher true)."),
    tuned: bool = typer.Option(False, help="Use the configuration `tune` chose."),
) -> None:
    """Fit and save the curvature next to the store (``query`` with the same options reuses it).

    Under torchrun each rank streams its own shards (or data batches) and the sums are
    all-reduced; rank 0 writes the file.
    """
    _init_distributed()
    try:
        s = FactorStore.open(store)
        cfg = _curvature_config(s, curvature, rank_r, 1.0 if damping is None else damping,
                                damping_mode, granularity, fisher, n_samples, tuned)
        b = _bundle(task, cache_dir, data_dir, _hf(model, data, None, model_kind, layers,
                                                    truncate, window))
        cfg = _with_horizon(s, cfg, b, damping, lr_sum, tuned)
        curv = _curvature_for(s, cfg, b)
    except (AttributionError, DistributedError, ValueError, FileNotFoundError) as err:
        _fail(err)
    if process_group()[0] == 0:
        console.print(f"{curv.kind} curvature ({cfg.fisher} Fisher, damping {cfg.damping:.3g} "
                      f"x mean eigenvalue, {len(curv.blocks)} "
                      f"block(s), {curv.memory_bytes / 2**20:.2f} MiB, "
                      f"{curv.extra.get('passes')} pass(es)) saved in {s.path}")


@app.command()
def query(
    store: Path = typer.Option(..., help="Store folder built by `tamis attribute build`."),
    out: Path = typer.Option(
        Path("scores.npz"), help="Output .npz (scores, top-k, self-influence)."
    ),
    task: str = typer.Option(DEFAULT_TASK, help=TASK_HELP),
    cache_dir: Path = typer.Option(Path(".tamis-cache"), help="Where the task caches its model."),
    data_dir: Path | None = typer.Option(None, help="Data folder passed to the task."),
    model: Path | None = MODEL_OPT,
    data: Path | None = typer.Option(None, help=DATA_HELP + " The store's training data."),
    queries: Path | None = typer.Option(None, help="Query JSONL for --model (default: --data)."),
    model_kind: str | None = KIND_OPT,
    layers: str | None = typer.Option(None, help="The --layers the store was built with."),
    truncate: bool = TRUNCATE_OPT,
    window: int | None = WINDOW_OPT,
    curvature: str = typer.Option(
        "auto", help="auto (the store's preset: ekfac, lowrank for lorif, dense for logra, "
        "...) | lowrank | dense | identity | ekfac | kfac (Kronecker: extra passes over the "
        "task's training data)."),
    rank_r: int = typer.Option(256, help="Curvature rank r (lowrank; clipped to D)."),
    damping: float | None = typer.Option(None, help=DAMPING_HELP),
    lr_sum: float | None = typer.Option(None, help=LR_SUM_HELP),
    damping_mode: str = typer.Option("relative", help="relative (x mean eigenvalue) | absolute."),
    granularity: str = typer.Option("layer", help="layer | model."),
    fisher: str = typer.Option(
        "empirical", help="empirical (stored gradients) | true (sampled labels) | ggn (exact)."
    ),
    n_samples: int = typer.Option(1, help="Sampled labels per example (--fisher true)."),
    tuned: bool = typer.Option(
        False, help="Use the Fisher kind, rank and damping `tamis attribute tune` chose."
    ),
    normalize: str = typer.Option("none", help="none | cosine | train_unit."),
    top_k: int = typer.Option(10, help="Most helpful / harmful examples kept per query."),
    self_scores: bool = typer.Option(False, help="Also compute self-influence of every example."),
) -> None:
    """Score the task's queries against a store; write scores and top-k to ``--out``.

    Scale out with torchrun (``torchrun --nproc-per-node 2 -m tamis.cli attribute query
    ...``): each rank fits the curvature and scores its own shards of the store; the sums
    and top-k are merged across ranks and rank 0 writes ``--out``.
    """
    from tamis.attribution.scoring import self_influence

    _init_distributed()
    try:
        s = FactorStore.open(store)
        cfg = _curvature_config(s, curvature, rank_r, 1.0 if damping is None else damping,
                                damping_mode, granularity, fisher, n_samples, tuned)
        b = _bundle(task, cache_dir, data_dir,
                    _hf(model, data, queries, model_kind, layers, truncate, window))
        cfg = _with_horizon(s, cfg, b, damping, lr_sum, tuned)
        if "texts" in b.info and len(b.train) != s.num_examples:
            raise ValueError(
                f"the store holds {s.num_examples} rows but --data gives {len(b.train)} "
                f"({'windows' if window else 'texts'}): give query the --data, --truncate "
                "and --window the store was built with")
        curv = _curvature_for(s, cfg, b)
        result = compute_scores(
            b.task, b.model, b.queries, s, curv, ScoreConfig(normalize=normalize, top_k=top_k)
        )
        arrays = {
            "scores": result.scores.numpy(),
            "helpful_indices": result.helpful.indices.numpy(),
            "helpful_scores": result.helpful.values.numpy(),
            "harmful_indices": result.harmful.indices.numpy(),
            "harmful_scores": result.harmful.values.numpy(),
        }
        if b.info.get("window") is not None:
            arrays = _records_from_windows(result.scores, b.info, top_k)
        if self_scores:
            if b.info.get("window") is not None:
                raise ValueError("--self-scores is per store row; with --window a text's "
                                 "self-influence is not the sum of its windows'")
            arrays["self_influence"] = self_influence(s, curv).numpy()
    except (AttributionError, DistributedError, ValueError, FileNotFoundError) as err:
        _fail(err)
    if process_group()[0] != 0:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(out)
    console.print(
        f"{arrays['scores'].shape[0]} queries x {arrays['scores'].shape[1]} training "
        f"examples -> [bold]{out}[/] (load {result.timings['load_s']:.2f} s, "
        f"compute {result.timings['compute_s']:.2f} s)"
    )
    if "texts" in b.info:
        _print_texts(b.info, arrays, out.with_suffix(".top.jsonl"))
        return
    for q in range(min(3, arrays["scores"].shape[0])):
        console.print(
            f"query {q}: most helpful {arrays['helpful_indices'][q][:5].tolist()}, "
            f"most harmful {arrays['harmful_indices'][q][:5].tolist()}"
        )


def _records_from_windows(scores, info: dict, top_k: int) -> dict:
    """Window scores summed per text on both axes, with the top-k recomputed per text."""
    import torch

    from tamis.attribution.hf import sum_windows

    per_text = sum_windows(scores, info["groups"], info["query_groups"])
    k = min(top_k, per_text.shape[1])
    best, worst = per_text.topk(k, dim=1), (-per_text).topk(k, dim=1)
    return {"scores": per_text.numpy(), "window_scores": scores.numpy(),
            "helpful_indices": best.indices.numpy(), "helpful_scores": best.values.numpy(),
            "harmful_indices": worst.indices.numpy(),
            "harmful_scores": torch.neg(worst.values).numpy()}


def _print_texts(info: dict, arrays: dict, path: Path) -> None:
    """A rich table of the top training texts per query, and the same as JSONL."""
    from tamis._io import write_text_atomic

    def short(text: str, n: int = 70) -> str:
        text = " ".join(text.split())
        return text if len(text) <= n else text[: n - 1] + "…"

    texts, lines = info["texts"], []
    table = Table(title="most helpful (+) and harmful (-) training texts per query")
    for col in ("query", "", "score", "training text"):
        table.add_column(col)
    for q, query_text in enumerate(info["query_texts"]):
        rec = {"query": q, "text": query_text, "helpful": [], "harmful": []}
        first = True
        for side, sign in (("helpful", "+"), ("harmful", "-")):
            pairs = zip(arrays[f"{side}_indices"][q], arrays[f"{side}_scores"][q], strict=True)
            for rank, (j, v) in enumerate(pairs):
                rec[side].append({"index": int(j), "score": float(v), "text": texts[j]})
                if q < 5 and rank < 3:
                    table.add_row(short(query_text, 30) if first else "", sign,
                                  f"{float(v):.3g}", short(texts[j]))
                    first = False
        lines.append(json.dumps(rec, ensure_ascii=False))
    console.print(table)
    write_text_atomic(path, "\n".join(lines) + "\n")
    console.print(f"top-k texts of {len(lines)} queries -> [bold]{path}[/]")


def _print_info(s: FactorStore) -> None:
    table = Table(title=f"store {s.path} ({s.manifest['kind']}, c={s.rank}, {s.dtype})")
    for col in ("layer", "d1", "d2", "c", "numbers/example", "energy kept"):
        table.add_column(col)
    energy = s.energy()
    for lay in s.layers:
        table.add_row(
            lay["name"],
            str(lay["d1"]),
            str(lay["d2"]),
            str(lay["rank"]),
            str(lay["length"]),
            f"{energy.get(lay['name'], float('nan')):.4f}",
        )
    console.print(table)
    console.print(
        f"N = {s.num_examples}, {s.bytes_per_example:.1f} bytes/example on disk, "
        f"{s.disk_bytes / 2**20:.2f} MiB in {len(s.manifest['shards'])} shard(s)"
    )


@app.command()
def tune(
    store: Path = typer.Option(..., help="Store folder built by `tamis attribute build`."),
    task: str = typer.Option(DEFAULT_TASK, help=TASK_HELP + " It must provide `retrain`."),
    cache_dir: Path = typer.Option(Path(".tamis-cache"), help="Where the task caches its model."),
    data_dir: Path | None = typer.Option(None, help="Data folder passed to the task."),
    subsets: int = typer.Option(20, help="Retrained models (random halves); >= 3."),
    dampings: str = typer.Option("0.001,0.01,0.1,0.3,1,3,10,100,1000",
                                 help="Relative dampings to try."),
    ranks: str = typer.Option("32,128,512", help="Curvature ranks r to try."),
    fishers: str = typer.Option("empirical,true", help="Fisher kinds to try."),
    kinds: str = typer.Option(
        "auto", help="Curvature kinds to try (lowrank, ekfac, kfac; r applies to lowrank). "
        "auto: ekfac,kfac for a store built for a Kronecker preset (its unprojected layers "
        "are too large for a rank-r SVD), lowrank,ekfac otherwise."),
) -> None:
    """Pick the curvature kind, Fisher, rank and damping of highest LDS; write tuning.json."""
    from tamis.attribution.tuning import TuneConfig
    from tamis.attribution.tuning import tune as run_tune

    try:
        s = FactorStore.open(store)
        if kinds == "auto":
            kronecker = curvature_kind_for(s.manifest) in ("ekfac", "kfac")
            kinds = "ekfac,kfac" if kronecker else "lowrank,ekfac"
        cfg = TuneConfig(
            dampings=tuple(float(x) for x in dampings.split(",")),
            ranks=tuple(int(x) for x in ranks.split(",")),
            fishers=tuple(x.strip() for x in fishers.split(",")),
            kinds=tuple(x.strip() for x in kinds.split(",")),
            n_subsets=subsets,
        )
        b = _bundle(task, cache_dir, data_dir)
        if b.retrain is None:
            raise AttributionError(
                f"the task {task} gives no retrain function (TaskBundle.retrain): tuning "
                "measures LDS against retrained models"
            )
        res = run_tune(b.task, b.model, b.train, b.queries, s, b.retrain, cfg)
    except (AttributionError, DistributedError, ValueError, FileNotFoundError) as err:
        _fail(err)
    table = Table(title=f"tuning on {subsets} retrained subsets (LDS of the query loss)")
    for col in ("curvature", "Fisher", "r", "damping", "LDS", "95% CI"):
        table.add_column(col)
    for row in sorted(res.table, key=lambda r: -r["lds"] if np.isfinite(r["lds"]) else 1)[:10]:
        table.add_row(row.get("kind", "lowrank"), row["fisher"], str(row["rank"] or "-"),
                      f"{row['damping']:g}",
                      f"{row['lds']:.3f}", f"{row['ci'][0]:.3f} .. {row['ci'][1]:.3f}")
    console.print(table)
    b_ = res.best
    console.print(f"best: {b_.get('kind', 'lowrank')} fisher={b_['fisher']} r={b_['rank']} "
                  f"damping={b_['damping']:g} "
                  f"(LDS {b_['lds']:.3f}) -> {store / 'tuning.json'}; use `query --tuned`")


@app.command()
def info(store: Path = typer.Option(..., help="Store folder.")) -> None:
    """Describe a store: layers, dims, rank, energy kept, bytes per example."""
    try:
        _print_info(FactorStore.open(store, verify=False, allow_incomplete=True))
    except AttributionError as err:
        _fail(err)


@app.command()
def verify(store: Path = typer.Option(..., help="Store folder.")) -> None:
    """Check every shard's size and SHA-256 checksum."""
    try:
        s = FactorStore.open(store, verify=True, allow_incomplete=True)
    except AttributionError as err:
        _fail(err)
    console.print(f"[green]ok[/]: {len(s.manifest['shards'])} shard(s) verified")


try:  # the evaluation harness registers itself when present
    from tamis.attribution.evaluation_cli import evaluate

    app.command()(evaluate)
except ModuleNotFoundError as _err:  # pragma: no cover
    if _err.name != "tamis.attribution.evaluation_cli":
        raise
