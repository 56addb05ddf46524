"""Score queries against the store: precondition the queries only, stream the training rows.

tau(q, i) = sum over layers of <q~_l, L_il R_il^T>_F, where q~ = (F + lambda I)^-1 q. The
training factors stay un-preconditioned (preconditioning would destroy their low rank).
Positive scores mean *helpful*: a step on example i lowers the query's loss.

Under torch.distributed every rank scores its own shards of the store; the score columns are
summed across ranks and the per-rank top-k merged, so every rank returns the full result.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from tamis._progress import track
from tamis.attribution.build import query_gradients
from tamis.attribution.config import ScoreConfig
from tamis.attribution.curvature import Curvature, store_identity
from tamis.attribution.distributed import (
    all_gather_objects,
    all_reduce_sum,
    distributed_stage,
    my_shards,
    process_group,
)
from tamis.attribution.errors import NonFiniteError, StoreMismatchError
from tamis.attribution.store import FactorStore, StoreChunk
from tamis.attribution.task import AttributionTask


@dataclass
class TopK:
    """Per-query best ``k`` scores and training indices, (n_queries, k) each."""

    values: torch.Tensor
    indices: torch.Tensor


@dataclass
class ScoreResult:
    """Scores of every query against every training example.

    Attributes:
        scores: (n_queries, N) matrix, or None when ``keep_scores`` was False.
        helpful: Top-k largest scores (most helpful training examples) per query.
        harmful: Top-k smallest scores (most harmful) per query.
        timings: Seconds spent loading rows (``load_s``) and computing (``compute_s``).

    """

    scores: torch.Tensor | None
    helpful: TopK
    harmful: TopK
    timings: dict = field(default_factory=dict)


def _merge(best: TopK | None, vals: torch.Tensor, start: int, k: int, largest: bool) -> TopK:
    idx = torch.arange(start, start + vals.shape[1]).expand(vals.shape[0], -1)
    if best is not None:
        vals = torch.cat([best.values, vals], dim=1)
        idx = torch.cat([best.indices, idx], dim=1)
    k = min(k, vals.shape[1])
    v, pos = torch.topk(vals, k, dim=1, largest=largest)
    return TopK(v, torch.gather(idx, 1, pos))


def _check_queries(queries: dict[str, torch.Tensor], store: FactorStore) -> int:
    names = store.layer_names
    if set(queries) != set(names):
        raise StoreMismatchError(
            f"query gradients cover layers {sorted(queries)}, store has {names}"
        )
    sizes = {q.shape[0] for q in queries.values()}
    if len(sizes) != 1:
        raise ValueError(f"query gradients disagree on the number of queries: {sizes}")
    for lay in store.layers:
        q = queries[lay["name"]]
        if q.dim() != 2 or q.shape[1] != lay["d1"] * lay["d2"]:
            raise ValueError(
                f"query gradients of {lay['name']!r} have shape {tuple(q.shape)}, "
                f"expected (n, {lay['d1'] * lay['d2']})"
            )
        if not torch.isfinite(q).all():
            raise NonFiniteError(f"non-finite query gradient at layer {lay['name']!r}")
    return sizes.pop()


def _chunk_scores(chunk: StoreChunk, qt: dict[str, torch.Tensor], kernel: str) -> torch.Tensor:
    """Scores (nq, n) of one chunk against dense preconditioned queries."""
    total = None
    for name, q in qt.items():
        item = chunk.layers[name]
        if kernel == "factored" and isinstance(item, tuple):
            left, right = item  # (n, d1, c), (n, d2, c)
            nq, (n, d1, c), d2 = q.shape[0], left.shape, right.shape[1]
            qr = q.reshape(nq * d1, d2) @ right.permute(1, 0, 2).reshape(d2, n * c)
            s = torch.einsum("qanc,nac->qn", qr.reshape(nq, d1, n, c), left)
        else:
            s = q @ chunk.dense(name).T
        total = s if total is None else total + s
    return total


class _SubspaceKernel:
    """Both sides factored: tau = beta <q, G_i> + sum_j (alpha_qj - beta c_qj) h_ij.

    With c_qj = v_j . q, alpha_qj = c_qj / (s_j^2 + lambda), beta = 1 / (lambda + tau) and
    h_ij = v_j . G_i cached at fit time, and <q, G_i> contracted factor against factor, a pair
    costs O(c c_q (d1 + d2) + r) instead of O(D).
    """

    def __init__(self, qfactors: dict, dense: dict, curvature: Curvature, dtype) -> None:
        if curvature.kind not in ("lowrank", "identity"):
            raise ValueError("the subspace kernel needs lowrank or identity curvature, "
                             f"not {curvature.kind!r}")
        self.qfactors = {k: (a.to(dtype), b.to(dtype)) for k, (a, b) in qfactors.items()}
        self.terms = []  # per block: (layers, beta, coefficient (nq, r) or None, H or None)
        for block in curvature.blocks:
            if curvature.kind == "identity":
                self.terms.append((block.layers, 1.0, None, None))
                continue
            if block.projections is None:
                raise ValueError(
                    "the subspace kernel needs CurvatureConfig(cache_projections=True)"
                )
            q = torch.cat([dense[name] for name in block.layers], dim=1)
            v, s2 = block.eigvecs.to(dtype), block.eigvals.to(dtype)
            coef = q @ v
            beta = 1.0 / (block.damping + block.tail)
            self.terms.append((block.layers, beta, coef / (s2 + block.damping) - beta * coef,
                               block.projections.to(dtype)))

    def __call__(self, chunk: StoreChunk) -> torch.Tensor:
        total = 0
        for layers, beta, coef, h in self.terms:
            for name in layers:
                qa, qb = self.qfactors[name]
                left, right = chunk.layers[name]
                total = total + beta * _factor_dot(qa, qb, left, right)
            if coef is not None:
                total = total + coef @ h[chunk.start : chunk.stop].T
        return total


def _factor_dot(
    qa: torch.Tensor, qb: torch.Tensor, left: torch.Tensor, right: torch.Tensor
) -> torch.Tensor:
    """<Qa_q Qb_q^T, L_i R_i^T>_F for all (q, i) as two GEMMs: O(nq n m k (d1 + d2))."""
    nq, d1, m = qa.shape
    n, _, k = left.shape
    d2 = qb.shape[1]
    p1 = qa.transpose(1, 2).reshape(nq * m, d1) @ left.permute(1, 0, 2).reshape(d1, n * k)
    p2 = qb.transpose(1, 2).reshape(nq * m, d2) @ right.permute(1, 0, 2).reshape(d2, n * k)
    if m == 1 and k == 1:
        return p1 * p2
    return torch.einsum("qmnk,qmnk->qn", p1.reshape(nq, m, n, k), p2.reshape(nq, m, n, k))


def _train_norms(chunk: StoreChunk) -> torch.Tensor:
    """Squared norms ||G_i||_F^2 of a chunk's training gradients, from factors when factored."""
    total = 0
    for item in chunk.layers.values():
        if isinstance(item, tuple):
            left, right = item
            total = total + ((left.transpose(1, 2) @ left) * (right.transpose(1, 2) @ right)).sum(
                (1, 2)
            )
        else:
            total = total + (item * item).sum((1, 2))
    return total


@distributed_stage("scoring")
def score_gradients(
    queries: dict,
    store: FactorStore,
    curvature: Curvature,
    config: ScoreConfig | None = None,
    dtype: torch.dtype = torch.float32,
) -> ScoreResult:
    """Score projected query gradients against ``store``.

    Args:
        queries: Per layer, dense rows (n_queries, d1 * d2) or exact factors (L, R) as
            returned by ``query_gradients(..., factors=True)`` (needed by ``subspace``).
        store: The training store.
        curvature: A preconditioner fitted on ``store``.
        config: Kernel, normalisation, top-k, chunking.
        dtype: Compute precision.

    """
    cfg = config or ScoreConfig()
    qfactors = None
    if all(isinstance(v, tuple) for v in queries.values()):
        qfactors = queries
        queries = {k: (a @ b.transpose(1, 2)).flatten(1) for k, (a, b) in queries.items()}
    nq = _check_queries(queries, store)
    if curvature.store_id != store_identity(store):
        raise StoreMismatchError(f"the curvature was fitted on another store than {store.path}")
    subspace = None
    if cfg.kernel == "subspace":
        if qfactors is None or store.rank is None:
            raise ValueError("the subspace kernel needs query factors and a factored store")
        subspace = _SubspaceKernel(qfactors, {k: v.to(dtype) for k, v in queries.items()},
                                   curvature, dtype)
    qt = curvature.precondition({k: v.to(dtype) for k, v in queries.items()})
    qt = {name: qt[name].reshape(nq, -1) for name in store.layer_names}
    qnorm = torch.sqrt(sum((q * q).sum(1) for q in qt.values())).clamp_min(1e-30)
    world = process_group()[1]
    shards = my_shards(len(store.manifest["shards"]))
    alloc = torch.zeros if world > 1 else torch.empty  # columns of other ranks stay 0
    scores = alloc(nq, store.num_examples, dtype=dtype) if cfg.keep_scores else None
    helpful = harmful = None
    timings = {"load_s": 0.0, "compute_s": 0.0}
    chunks = store.iter_chunks(cfg.chunk_size, dtype, timings=timings, shards=shards)
    for chunk in track(chunks, "score", store.num_chunks(cfg.chunk_size, shards), cfg.progress):
        t0 = time.perf_counter()
        s = subspace(chunk) if subspace is not None else _chunk_scores(chunk, qt, cfg.kernel)
        if cfg.normalize != "none":
            s = s / _train_norms(chunk).sqrt().clamp_min(1e-30)
            if cfg.normalize == "cosine":
                s = s / qnorm[:, None]
        if scores is not None:
            scores[:, chunk.start : chunk.stop] = s
        if cfg.top_k:
            helpful = _merge(helpful, s, chunk.start, cfg.top_k, largest=True)
            harmful = _merge(harmful, s, chunk.start, cfg.top_k, largest=False)
        timings["compute_s"] += time.perf_counter() - t0
    empty = TopK(torch.empty(nq, 0, dtype=dtype), torch.empty(nq, 0, dtype=torch.long))
    helpful, harmful = helpful or empty, harmful or empty
    if world > 1:  # merge the ranks' shards: every rank returns the full result
        if scores is not None:
            scores = all_reduce_sum(scores)
        helpful = _merge_ranks(helpful, cfg.top_k, largest=True)
        harmful = _merge_ranks(harmful, cfg.top_k, largest=False)
    return ScoreResult(scores, helpful, harmful, timings)


def _merge_ranks(best: TopK, k: int, largest: bool) -> TopK:
    """The top-k over every rank's top-k (ties broken by the lower training index)."""
    parts = all_gather_objects((best.values, best.indices))
    vals = torch.cat([v for v, _ in parts], dim=1)
    idx = torch.cat([i for _, i in parts], dim=1)
    order = torch.argsort(idx, dim=1, stable=True)  # rank order must not decide ties
    vals, idx = torch.gather(vals, 1, order), torch.gather(idx, 1, order)
    k = min(k, vals.shape[1])
    v, pos = torch.topk(vals, k, dim=1, largest=largest)
    return TopK(v, torch.gather(idx, 1, pos))


def compute_scores(
    task: AttributionTask,
    model: nn.Module,
    queries: Any,
    store: FactorStore,
    curvature: Curvature,
    config: ScoreConfig | None = None,
    dtype: torch.dtype = torch.float32,
    collate_fn: Callable[[Sequence[Any]], Any] | None = None,
) -> ScoreResult:
    """Influence of every training example in ``store`` on every query in ``queries``.

    Raises:
        StoreMismatchError: if the model, layers or projection differ from the store's.

    """
    cfg = config or ScoreConfig()
    t0 = time.perf_counter()
    grads = query_gradients(task, model, queries, store, cfg.batch_size, dtype, collate_fn,
                            cfg.progress, factors=cfg.kernel == "subspace")
    t_query = time.perf_counter() - t0
    result = score_gradients(grads, store, curvature, cfg, dtype)
    result.timings["query_gradients_s"] = t_query
    return result


@distributed_stage("self-influence")
def self_influence(
    store: FactorStore,
    curvature: Curvature,
    chunk_size: int = 4096,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
) -> torch.Tensor:
    """tau(i, i) = g_i^T (F + lambda I)^-1 g_i for every training example, shape (N,)."""
    if curvature.store_id != store_identity(store):
        raise StoreMismatchError(f"the curvature was fitted on another store than {store.path}")
    world = process_group()[1]
    shards = my_shards(len(store.manifest["shards"]))
    out = (torch.zeros if world > 1 else torch.empty)(store.num_examples, dtype=dtype)
    chunks = store.iter_chunks(chunk_size, dtype, shards=shards)
    for chunk in track(chunks, "self-influence", store.num_chunks(chunk_size, shards), progress):
        total = torch.zeros(chunk.stop - chunk.start, dtype=dtype)
        for block in curvature.blocks:
            g = torch.cat([chunk.dense(name) for name in block.layers], dim=1)
            total += (block.apply(g, curvature.kind) * g).sum(1)
        out[chunk.start : chunk.stop] = total
    return all_reduce_sum(out) if world > 1 else out
