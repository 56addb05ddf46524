"""Orchestration of the store build: data -> hooks -> rank-c factors -> shards on disk."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tamis._progress import track
from tamis.attribution.capture import GradientCapture, resolve_layers
from tamis.attribution.config import BuildConfig, FactorConfig, ProjectionConfig, to_dict
from tamis.attribution.data import dataset_length, iter_batches
from tamis.attribution.distributed import (
    all_reduce_sum,
    barrier,
    distributed_stage,
    my_shards,
    process_group,
)
from tamis.attribution.errors import NonFiniteError
from tamis.attribution.factors import dense_gradients, low_rank_factors
from tamis.attribution.store import (
    FORMAT,
    METRIC_FILE,
    VERSION,
    FactorStore,
    StoreWriter,
    row_layout,
    to_numpy,
)
from tamis.attribution.task import AttributionTask
from tamis.attribution.truncation import (
    Whitening,
    covariance_sums,
    whitened_factors,
    whitening,
)

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 over every parameter's name, shape, dtype and bytes."""
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        t = p.detach().cpu().contiguous()
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


@contextmanager
def eval_mode(model: nn.Module):
    """Put the model in eval mode (no dropout, frozen batch statistics) and restore it."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def rows_from_capture(
    captured: dict, layout: list[dict], metric: dict | None = None
) -> tuple[torch.Tensor, dict]:
    """Per-example store rows (B, row_length) and summed retained energy per layer.

    ``metric`` maps a layer name to its (input, output) :class:`Whitening` for the
    ``"whitened"`` truncation; layers missing from it use the Frobenius truncation.
    """
    parts, energy = [], {}
    for lay in layout:
        cap = captured[lay["name"]]
        if metric and lay["name"] in metric:  # the whitening matrices live on the CPU
            cap = type(cap)(cap.a.cpu(), cap.b.cpu())
        if lay["rank"] is None:
            parts.append(dense_gradients(cap.a, cap.b).reshape(cap.a.shape[0], -1))
            energy[lay["name"]] = float(cap.a.shape[0])
        else:
            if metric and lay["name"] in metric:
                f = whitened_factors(cap.a, cap.b, lay["rank"], *metric[lay["name"]])
            else:
                f = low_rank_factors(cap.a, cap.b, lay["rank"])
            parts += [f.left.reshape(f.left.shape[0], -1), f.right.reshape(f.right.shape[0], -1)]
            energy[lay["name"]] = float(f.energy.sum())
    return torch.cat([p.cpu() for p in parts], dim=1), energy


def _capture_at(capture: GradientCapture, task: AttributionTask, batch: Any, offset: int) -> dict:
    try:
        return capture.capture(task.compute_train_loss, batch)
    except NonFiniteError as err:
        raise NonFiniteError(f"{err} (the batch starts at example {offset})") from err


def projection_header(projection: ProjectionConfig) -> dict:
    """The projection part of a manifest (what must match between store and query)."""
    return to_dict(projection)


@distributed_stage("the store build")
def build_store(
    task: AttributionTask,
    model: nn.Module,
    dataset: Any,
    path: str | Path,
    projection: ProjectionConfig | None = None,
    factors: FactorConfig | None = None,
    build: BuildConfig | None = None,
    collate_fn: Callable[[Sequence[Any]], Any] | None = None,
    overwrite: bool = False,
    preset: str | None = None,
) -> FactorStore:
    """Capture per-example projected gradients of ``dataset`` and write them to ``path``.

    The build is resumable: rerunning it with the same model, data size and configs skips
    the shards already on disk. A folder holding a different store is refused unless
    ``overwrite``. Under ``torch.distributed`` (e.g. ``torchrun``; gloo on CPU, nccl on GPU)
    every rank calls this with the same arguments and writes every ``world_size``-th shard;
    rank 0 merges the manifest. The result is identical to a single-process build.

    Args:
        task: Supplies per-example training losses and the tracked modules.
        model: The trained model (put in eval mode during capture).
        dataset: Map-style data (``TensorDataset``, a list, any object with len and indexing).
        path: Store folder.
        projection: Two-sided projection (d1, d2, seed).
        factors: Rank c (``None`` = dense LoGRA store) and on-disk dtype.
        build: Batch and shard sizes, compute precision, progress bars.
        collate_fn: Builds a batch from a list of examples (default: torch's default_collate).
        overwrite: Replace an incompatible store already at ``path``.
        preset: The method preset the store was built for (recorded in the manifest, so
            ``tamis attribute query --curvature auto`` picks that method's curvature).

    Returns:
        The complete :class:`FactorStore`.

    """
    projection = projection or ProjectionConfig()
    factors = factors or FactorConfig()
    build = build or BuildConfig()
    n = dataset_length(dataset)
    specs_by_name = resolve_layers(model, task.tracked_modules(model), projection)
    specs = list(specs_by_name.values())
    rank = factors.rank
    capture = GradientCapture(model, specs_by_name, projection, _DTYPES[build.compute_dtype])
    with eval_mode(model):  # one probe batch tells which layers have no sequence axis
        probe = next(
            iter_batches(dataset, 0, min(n, build.batch_size), build.batch_size, collate_fn)
        )
        _capture_at(capture, task, probe, 0)
    layout = row_layout(specs, rank, frozenset(k for k, v in capture.flat_input.items() if v),
                        factors.max_numbers)
    header = {
        "format": FORMAT,
        "version": VERSION,
        "kind": "dense" if rank is None else "lorif",
        "rank": rank,
        "dtype": factors.dtype,
        "num_examples": n,
        "shard_size": build.shard_size,
        "row_length": layout[-1]["offset"] + layout[-1]["length"],
        "layers": layout,
        "projection": projection_header(projection),
        "model_fingerprint": model_fingerprint(model),
    }
    if preset is not None:
        header["preset"] = preset
    if factors.truncation != "frobenius":  # absent for the default: old stores stay valid
        header["truncation"] = {"kind": factors.truncation, "damping": factors.truncation_damping}
    rank_id, world = process_group()
    if rank_id == 0:
        writer = StoreWriter(Path(path), header, overwrite=overwrite)
    barrier()
    if rank_id != 0:
        writer = StoreWriter(Path(path), header, overwrite=False, process_rank=rank_id)
    if writer.manifest.get("complete"):
        return FactorStore(writer.path, writer.manifest)
    starts = list(range(0, n, build.shard_size))
    todo = [i for i in my_shards(len(starts)) if i not in writer.done]
    metric = None
    if factors.truncation == "whitened":
        metric = _truncation_metric(writer.path, task, capture, dataset, layout, factors, build,
                                    collate_fn, starts, rank_id)
    label = f"build {header['kind']} store" + (f" (rank {rank_id}/{world})" if world > 1 else "")
    with eval_mode(model):
        for index in track(todo, label, len(todo), build.progress):
            start, stop = starts[index], min(starts[index] + build.shard_size, n)
            rows, energy = [], {s.name: 0.0 for s in specs}
            batches = iter_batches(dataset, start, stop, build.batch_size, collate_fn)
            for i, batch in enumerate(batches):
                captured = _capture_at(capture, task, batch, start + i * build.batch_size)
                r, e = rows_from_capture(captured, layout, metric)
                rows.append(to_numpy(r, factors.dtype))
                for k, v in e.items():
                    energy[k] += v
            block = np.concatenate(rows)
            if block.shape[0] != stop - start:
                raise ValueError(
                    f"the data set yielded {block.shape[0]} examples for [{start}, {stop}); "
                    "the task's losses must have one entry per example"
                )
            writer.write_shard(index, start, block, energy)
    barrier()
    if rank_id == 0:
        writer.finish(len(starts))
    barrier()
    return FactorStore.open(path, verify=False)


def _truncation_metric(
    path: Path, task: AttributionTask, capture: GradientCapture, dataset: Any,
    layout: list[dict], factors: FactorConfig, build: BuildConfig,
    collate_fn: Callable[[Sequence[Any]], Any] | None, starts: list[int], rank_id: int,
) -> dict[str, tuple[Whitening, Whitening]]:
    """Whitening per truncated layer from the covariances of one pass over the data.

    Written once to ``METRIC_FILE`` in the store folder (atomic), so a resumed build reuses
    the same metric. Under torch.distributed each rank sums its shards and the sums are
    all-reduced, so every rank holds the same metric as a single-process build.
    """
    from safetensors.torch import load_file, save_file

    from tamis._io import atomic_path

    names = [lay["name"] for lay in layout if lay["rank"] is not None]
    file = path / METRIC_FILE
    if file.exists():
        try:
            t = load_file(str(file))
            covs = {n: (t[f"{n}.in"], t[f"{n}.out"]) for n in names}
        except Exception as err:  # corrupted or foreign file: name it, never guess
            raise ValueError(f"cannot read the truncation metric {file}: {err}; delete it "
                             "to recompute") from err
    else:
        sums = {lay["name"]: [torch.zeros(lay["d1"], lay["d1"], dtype=torch.float64),
                              torch.zeros(lay["d2"], lay["d2"], dtype=torch.float64)]
                for lay in layout if lay["rank"] is not None}
        n = dataset_length(dataset)
        mine = my_shards(len(starts))
        with eval_mode(capture.model):
            for index in track(mine, "truncation metric (covariances)", len(mine),
                               build.progress):
                start, stop = starts[index], min(starts[index] + build.shard_size, n)
                for i, batch in enumerate(iter_batches(dataset, start, stop, build.batch_size,
                                                       collate_fn)):
                    captured = _capture_at(capture, task, batch, start + i * build.batch_size)
                    for name, (ca, cb) in covariance_sums(captured).items():
                        if name in sums:
                            sums[name][0] += ca.double()
                            sums[name][1] += cb.double()
        covs = {}
        for name in names:
            ca, cb = sums[name]
            covs[name] = (all_reduce_sum(ca), all_reduce_sum(cb))
        if rank_id == 0:
            flat = {f"{k}.{side}": v[j].contiguous() for k, v in covs.items()
                    for j, side in enumerate(("in", "out"))}
            with atomic_path(file, suffix=".safetensors") as tmp:
                save_file(flat, str(tmp))
    dtype = _DTYPES[build.compute_dtype]
    return {name: (whitening(ca, factors.truncation_damping).to(dtype),
                   whitening(cb, factors.truncation_damping).to(dtype))
            for name, (ca, cb) in covs.items()}


def query_gradients(
    task: AttributionTask,
    model: nn.Module,
    queries: Any,
    store: FactorStore,
    batch_size: int = 64,
    dtype: torch.dtype = torch.float32,
    collate_fn: Callable[[Sequence[Any]], Any] | None = None,
    progress: bool = True,
    factors: bool = False,
) -> dict[str, torch.Tensor] | dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Projected query-measurement gradients per layer, never truncated.

    Returns:
        Per layer, dense rows (n_queries, d1 * d2); or with ``factors``, exact factors
        (L (n_queries, d1, k), R (n_queries, d2, k)) with L R^T = G and k = min(T, d1, d2).

    Raises:
        StoreMismatchError: if the model, layers or projection differ from the store's.

    """
    projection = ProjectionConfig(**store.manifest["projection"])
    specs_by_name = resolve_layers(model, task.tracked_modules(model), projection)
    store.check_compatible(
        model_fingerprint(model), list(specs_by_name.values()), projection_header(projection)
    )
    n = dataset_length(queries)
    capture = GradientCapture(model, specs_by_name, projection, dtype)
    out: dict[str, list] = {name: [] for name in specs_by_name}
    batches = iter_batches(queries, 0, n, batch_size, collate_fn)
    with eval_mode(model):
        for batch in track(batches, "query gradients", -(-n // batch_size), progress):
            for name, cap in capture.capture(task.compute_measurement, batch).items():
                if factors:
                    k = min(cap.a.shape[1], cap.a.shape[2], cap.b.shape[2])
                    f = low_rank_factors(cap.a, cap.b, k)
                    out[name].append((f.left.cpu(), f.right.cpu()))
                else:
                    out[name].append(
                        dense_gradients(cap.a, cap.b).reshape(cap.a.shape[0], -1).cpu())
    if not factors:
        return {name: torch.cat(parts) for name, parts in out.items()}
    result = {}
    for name, parts in out.items():
        k = max(left.shape[2] for left, _ in parts)
        pad = [(torch.nn.functional.pad(a, (0, k - a.shape[2])),
                torch.nn.functional.pad(b, (0, k - b.shape[2]))) for a, b in parts]
        result[name] = (torch.cat([a for a, _ in pad]), torch.cat([b for _, b in pad]))
    return result
