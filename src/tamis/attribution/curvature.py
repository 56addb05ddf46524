"""Damped Fisher preconditioners fitted by streaming over the store (Step 3).

With G (N x D) the stacked projected training gradients of a block (one layer, or the
whole model) and F = G^T G / N (the empirical Fisher; or, with ``fisher="true"`` / ``"ggn"``,
the same second moment of sampled-label / Gauss-Newton pseudo-gradients streamed from a
:class:`~tamis.attribution.fisher.FisherSource` instead of the store):

* ``lowrank`` (LoRIF): top-r eigenpairs (V, s^2) of F by a streaming randomized SVD over
  the factored store (Halko et al.: rank r + oversampling, power iterations; one pass per
  application of F, only chunk x D rows are ever materialised), then Woodbury::

      (F + lambda I)^-1 ~= (1/lambda) (I - V diag(s^2 / (s^2 + lambda)) V^T)

  held in O(D r) memory. With r = D this is exact. ``method="nystrom"`` replaces the
  power iterations by the single-pass Nystrom sketch of a PSD matrix (Tropp, Yurtsever,
  Udell & Cevher 2017, Alg. 3): one pass over the gradients, which matters when every pass
  recomputes them (the true Fisher).
* ``dense`` (LoGRA): the full D x D inverse (F + lambda I)^-1.
* ``identity``: no curvature (gradient dot / cosine).
* ``kfac`` / ``ekfac``: per-layer Kronecker factors A (x) S, with EK-FAC's corrected
  eigenvalues (:mod:`tamis.attribution.kronecker`); fitted from a Fisher source, never from
  the store.

Damping is absolute, or relative to the mean eigenvalue trace(F) / D.

Under torch.distributed (``torchrun``) every rank calls :func:`fit_curvature` with the same
arguments; each streams only its own shards of the store and the partial sums of every pass
(traces, F Omega, F Q, Q^T F Q, dense F) are all-reduced, so every rank holds the
single-process curvature up to float summation order. A Fisher source (true Fisher, GGN,
Kronecker kinds) is sharded by batch the same way (batch b on rank b mod W, its sampled
labels seeded by the global b).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tamis._io import atomic_path
from tamis._progress import track
from tamis.attribution.config import CurvatureConfig, to_dict
from tamis.attribution.distributed import (
    all_reduce_float,
    all_reduce_sum,
    distributed_stage,
    my_shards,
    process_group,
)
from tamis.attribution.errors import AttributionError, StoreError, StoreMismatchError
from tamis.attribution.kronecker import KRONECKER_KINDS, fit_kronecker, kronecker_apply
from tamis.attribution.store import FactorStore

_TENSOR_KEYS = ("eigvecs", "eigvals", "inverse", "projections", "basis_in", "basis_out",
                "kron_eigvals")


def needs_source(cfg: CurvatureConfig) -> bool:
    """True when fitting ``cfg`` recomputes gradients from the model and data.

    The true Fisher and the GGN always do; K-FAC / EK-FAC do for every Fisher (their
    factors need the layer activations and output-gradients, which the store does not keep).
    """
    return cfg.kind != "identity" and (cfg.fisher != "empirical" or cfg.kind in KRONECKER_KINDS)


def damping_for(cfg: CurvatureConfig, trace: float, dim: int) -> float:
    """Lambda of a block: absolute, or ``cfg.damping`` x its mean eigenvalue trace / D."""
    return cfg.damping if cfg.damping_mode == "absolute" else cfg.damping * trace / dim


@dataclass
class CurvatureBlock:
    """Preconditioner of one block of layers (concatenated in order)."""

    layers: list[str]
    dims: list[int]
    damping: float
    trace: float
    eigvecs: torch.Tensor | None = None  # (D, r), lowrank
    eigvals: torch.Tensor | None = None  # (r,), eigenvalues of F
    inverse: torch.Tensor | None = None  # (D, D), dense
    projections: torch.Tensor | None = None  # (N, r), H = G V, optional (lowrank)
    tail: float = 0.0  # isotropic level of the discarded spectrum (0 = the paper's form)
    basis_in: torch.Tensor | None = None  # (d1, d1) Q_A, kfac / ekfac
    basis_out: torch.Tensor | None = None  # (d2, d2) Q_S, kfac / ekfac
    kron_eigvals: torch.Tensor | None = None  # (d1, d2) l_A l_S^T (kfac) or corrected (ekfac)

    @property
    def shape(self) -> tuple[int, int] | None:
        """(d1, d2) of a Kronecker block (None for the other kinds)."""
        return None if self.kron_eigvals is None else tuple(self.kron_eigvals.shape)

    @property
    def dim(self) -> int:
        """D of the block."""
        return sum(self.dims)

    def apply(self, q: torch.Tensor, kind: str) -> torch.Tensor:
        """(F + lambda I)^-1 q for rows q (n, D) (identity for ``identity``)."""
        if kind == "identity":
            return q
        if kind == "dense":
            return q @ self.inverse.to(q.dtype)
        if kind in KRONECKER_KINDS:
            return kronecker_apply(q, self.basis_in, self.basis_out, self.kron_eigvals,
                                   self.damping)
        v = self.eigvecs.to(q.dtype)
        s2 = self.eigvals.to(q.dtype)
        coef = q @ v
        inside = (coef / (s2 + self.damping)) @ v.T
        return inside + (q - coef @ v.T) / (self.damping + self.tail)


@dataclass
class Curvature:
    """Block-diagonal preconditioner over the store's layers."""

    kind: str
    config: dict
    blocks: list[CurvatureBlock]
    store_id: str
    extra: dict = field(default_factory=dict)

    def precondition(self, grads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Apply the damped inverse to per-layer rows (n, D_l) (query side only)."""
        out = {}
        for block in self.blocks:
            q = torch.cat([grads[name] for name in block.layers], dim=1)
            parts = torch.split(block.apply(q, self.kind), block.dims, dim=1)
            out.update(zip(block.layers, parts))
        return out

    @property
    def memory_bytes(self) -> int:
        """Bytes held by the preconditioner's tensors (cached projections excluded)."""
        total = 0
        for b in self.blocks:
            for t in (b.eigvecs, b.eigvals, b.inverse, b.basis_in, b.basis_out,
                      b.kron_eigvals):
                if t is not None:
                    total += t.numel() * t.element_size()
        return total

    def save(self, path: str | Path) -> Path:
        """Write to a safetensors file (atomic), with the config and store identity."""
        path = Path(path)
        tensors, meta = {}, []
        for i, b in enumerate(self.blocks):
            for key in _TENSOR_KEYS:
                t = getattr(b, key)
                if t is not None:
                    tensors[f"{i}.{key}"] = t.contiguous()
            meta.append(
                {
                    "layers": b.layers,
                    "dims": b.dims,
                    "damping": b.damping,
                    "trace": b.trace,
                    "tail": b.tail,
                }
            )
        header = {
            "kind": self.kind,
            "config": json.dumps(self.config),
            "store_id": self.store_id,
            "blocks": json.dumps(meta),
            "extra": json.dumps(self.extra),
        }
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=header)
        return path

    @classmethod
    def load(cls, path: str | Path, store: FactorStore | None = None) -> Curvature:
        """Read a saved preconditioner; with ``store``, refuse one fitted on another store."""
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as fh:
                header = fh.metadata()
            tensors = load_file(str(path))
        except Exception as err:  # safetensors raises several types
            raise StoreError(f"cannot read curvature file {path}: {err}") from err
        blocks = []
        for i, m in enumerate(json.loads(header["blocks"])):
            blocks.append(
                CurvatureBlock(
                    m["layers"],
                    m["dims"],
                    m["damping"],
                    m["trace"],
                    tail=m.get("tail", 0.0),
                    **{key: tensors.get(f"{i}.{key}") for key in _TENSOR_KEYS},
                )
            )
        curv = cls(
            header["kind"],
            json.loads(header["config"]),
            blocks,
            header["store_id"],
            json.loads(header.get("extra", "{}")),
        )
        if store is not None and store_identity(store) != curv.store_id:
            raise StoreMismatchError(
                f"curvature {path} was fitted on another store than {store.path}"
            )
        return curv


def store_identity(store: FactorStore) -> str:
    """A hash of the store's shard checksums and layout (what a curvature was fitted on)."""
    m = store.manifest
    payload = json.dumps([m["layers"], m["rank"], m["dtype"], [s["sha256"] for s in m["shards"]]])
    return hashlib.sha256(payload.encode()).hexdigest()


def _blocks(store: FactorStore, granularity: str) -> list[tuple[list[str], list[int]]]:
    layers = [(lay["name"], lay["d1"] * lay["d2"]) for lay in store.layers]
    if granularity == "model":
        return [([n for n, _ in layers], [d for _, d in layers])]
    return [([n], [d]) for n, d in layers]


class _Streamer:
    """One pass over the store (or a Fisher source) per call.

    Each pass applies a function to every block's rows.
    """

    def __init__(self, store: FactorStore, blocks, cfg: CurvatureConfig, dtype, progress: bool,
                 source=None, sharded: bool = True):
        self.store, self.blocks, self.cfg, self.dtype, self.progress = (
            store,
            blocks,
            cfg,
            dtype,
            progress,
        )
        self.source = source
        self.passes = 0
        # under torch.distributed each rank streams its own shards of the store, or its own
        # batches of a Fisher source
        self.shards = my_shards(len(store.manifest["shards"])) if sharded else None

    @property
    def num_examples(self) -> int:
        return self.store.num_examples if self.source is None else self.source.num_examples

    @property
    def partial(self) -> bool:
        """True when this rank saw only part of the rows: sums must be all-reduced."""
        return process_group()[1] > 1

    def run(self, fn, label: str) -> None:
        self.passes += 1
        if self.source is None:
            chunks = self.store.iter_chunks(self.cfg.chunk_size, self.dtype, shards=self.shards)
            total = self.store.num_chunks(self.cfg.chunk_size, self.shards)

            def rows(chunk, name):
                return chunk.dense(name)
        else:
            chunks = self.source.iter_chunks(self.dtype)
            total = self.source.num_batches
            label = f"{label} ({self.cfg.fisher} Fisher)"

            def rows(chunk, name):
                return chunk[name]

        for chunk in track(chunks, label, total, self.progress):
            for b, (names, _) in enumerate(self.blocks):
                fn(b, torch.cat([rows(chunk, name) for name in names], dim=1))


def _fisher_times(stream: _Streamer, basis: dict, n: int, label: str) -> dict:
    """F Q_b = G_b^T (G_b Q_b) / N for every block b in ``basis``, in one pass."""
    acc = {b: torch.zeros_like(q) for b, q in basis.items()}

    def step(b: int, g: torch.Tensor) -> None:
        if b in basis:
            acc[b] += g.T @ (g @ basis[b]) / n

    stream.run(step, label)
    return {b: all_reduce_sum(v) for b, v in acc.items()} if stream.partial else acc


def _projected_fisher(stream: _Streamer, basis: dict, n: int) -> dict:
    """Q_b^T F Q_b = (G_b Q_b)^T (G_b Q_b) / N for every block b in ``basis``, in one pass."""
    acc = {b: torch.zeros(q.shape[1], q.shape[1], dtype=q.dtype) for b, q in basis.items()}

    def step(b: int, g: torch.Tensor) -> None:
        if b in basis:
            z = g @ basis[b]
            acc[b] += z.T @ z / n

    stream.run(step, "curvature: projection")
    return {b: all_reduce_sum(v) for b, v in acc.items()} if stream.partial else acc


def _nystrom(sketch: torch.Tensor, omega: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenpairs of the Nystrom approximation of a PSD F from Y = F Omega.

    Tropp et al. 2017, Alg. 3: shift by nu, Cholesky of Omega^T Y_nu, SVD of Y_nu C^-1,
    unshift.
    """
    y = sketch.double()
    om = omega.double()
    nu = torch.finfo(sketch.dtype).eps * max(float(torch.linalg.matrix_norm(y)), 1e-300)
    y_nu = y + nu * om
    core = om.T @ y_nu
    core = (core + core.T) / 2
    chol, info = torch.linalg.cholesky_ex(core)
    if int(info) != 0:  # rank-deficient sketch (F of low rank): regularise harder
        core = core + 1e-10 * float(core.diagonal().abs().max()) * torch.eye(
            core.shape[0], dtype=core.dtype)
        chol = torch.linalg.cholesky(core)
    e = torch.linalg.solve_triangular(chol, y_nu.T, upper=False).T  # Y_nu C^-T
    u, sv, _ = torch.linalg.svd(e, full_matrices=False)
    vals = (sv**2 - nu).clamp_min(0)
    return vals.to(sketch.dtype), u.to(sketch.dtype)


@distributed_stage("the curvature fit")
def fit_curvature(
    store: FactorStore,
    config: CurvatureConfig | None = None,
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
    source=None,
) -> Curvature:
    """Fit the damped preconditioner of ``config.kind`` by streaming over ``store``.

    Args:
        store: the factor store (its layers define the blocks; its gradients are the
            empirical Fisher's).
        config: the curvature configuration.
        dtype: compute precision.
        progress: show progress bars.
        source: a :class:`~tamis.attribution.fisher.FisherSource` (required for
            ``config.fisher`` ``"true"`` or ``"ggn"``): the pseudo-gradients streamed
            instead of the stored ones.

    Returns:
        A :class:`Curvature`; ``extra["passes"]`` counts the passes over the store (or
        over the source: each one a forward and backward pass over the data).

    Raises:
        StoreError: a block with all-zero gradients under relative damping.
        AttributionError: a true-Fisher / GGN / Kronecker configuration without a source.

    """
    cfg = config or CurvatureConfig()
    if cfg.kind in KRONECKER_KINDS:
        if source is not None and source.kind != cfg.fisher:
            raise AttributionError(f"the source streams the {source.kind} Fisher, the "
                                   f"configuration asks for fisher={cfg.fisher!r}")
        blocks, passes = fit_kronecker(store, cfg, source, dtype, progress)
        extra = {"passes": passes, "fisher": cfg.fisher, "fisher_examples": source.num_examples}
        return Curvature(cfg.kind, to_dict(cfg), blocks, store_identity(store), extra)
    if cfg.kind == "identity":
        source = None
    elif cfg.fisher != "empirical" and source is None:
        raise AttributionError(
            f"fisher={cfg.fisher!r} recomputes gradients from the model and data: pass "
            "source=FisherSource(task, model, data, store, ...) or use Attributor.fit")
    if cfg.fisher == "empirical":
        source = None
    blocks = _blocks(store, cfg.granularity)
    stream = _Streamer(store, blocks, cfg, dtype, progress, source)
    n = stream.num_examples
    dims = [sum(d) for _, d in blocks]
    trace = [0.0] * len(blocks)
    eig: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(blocks)

    if cfg.kind == "identity":

        def add_trace(b, g):
            trace[b] += float((g * g).sum()) / n

        stream.run(add_trace, "curvature: trace")
        if stream.partial:
            trace = [all_reduce_float(t) for t in trace]
    else:
        exact = [
            cfg.kind == "dense" or cfg.method == "exact" or cfg.rank + cfg.oversample >= D
            for D in dims
        ]
        fisher = [torch.zeros(D, D, dtype=dtype) if ex else None for D, ex in zip(dims, exact)]
        gen = torch.Generator().manual_seed(cfg.seed)
        omega = [
            None
            if ex
            else torch.randn(D, cfg.rank + cfg.oversample, generator=gen, dtype=torch.float64).to(
                dtype
            )
            for D, ex in zip(dims, exact)
        ]
        if cfg.method == "nystrom":  # orthonormal test matrix (Tropp et al.)
            omega = [None if o is None else torch.linalg.qr(o.double()).Q.to(dtype)
                     for o in omega]
        sketch = [None if o is None else torch.zeros_like(o) for o in omega]

        def first_pass(b, g):
            trace[b] += float((g * g).sum()) / n
            if fisher[b] is not None:
                fisher[b] += g.T @ g / n
            else:
                sketch[b] += g.T @ (g @ omega[b]) / n

        stream.run(first_pass, "curvature: pass 1")
        if stream.partial:  # each rank summed its own shards
            trace = [all_reduce_float(t) for t in trace]
            fisher = [None if f is None else all_reduce_sum(f) for f in fisher]
            sketch = [None if k is None else all_reduce_sum(k) for k in sketch]
        for b, f in enumerate(fisher):
            if f is not None:
                vals, vecs = torch.linalg.eigh(f)
                eig[b] = (vals.flip(0).clamp_min(0), vecs.flip(1))
        todo = [b for b in range(len(blocks)) if not exact[b]]
        if todo and cfg.method == "nystrom":
            for b in todo:
                eig[b] = _nystrom(sketch[b], omega[b])
        elif todo:
            basis = {b: torch.linalg.qr(sketch[b]).Q for b in todo}
            for it in range(cfg.power_iters):
                applied = _fisher_times(stream, basis, n, f"curvature: power {it + 1}")
                basis = {b: torch.linalg.qr(applied[b]).Q for b in todo}
            small = _projected_fisher(stream, basis, n)
            for b in todo:
                vals, vecs = torch.linalg.eigh(small[b])
                eig[b] = (vals.flip(0).clamp_min(0), basis[b] @ vecs.flip(1))

    out = []
    for b, (names, bdims) in enumerate(blocks):
        D = dims[b]
        lam = damping_for(cfg, trace[b], D)
        if cfg.kind != "identity" and lam <= 0:
            raise StoreError(f"block {names} has all-zero gradients; use absolute damping")
        block = CurvatureBlock(names, bdims, float(lam), float(trace[b]))
        if cfg.kind == "lowrank":
            vals, vecs = eig[b]
            r = min(cfg.rank, D)
            block.eigvals, block.eigvecs = vals[:r].contiguous(), vecs[:, :r].contiguous()
            if cfg.tail == "isotropic" and r < D:
                block.tail = max(0.0, (trace[b] - float(vals[:r].sum())) / (D - r))
        elif cfg.kind == "dense":
            vals, vecs = eig[b]
            block.inverse = (vecs / (vals + lam)) @ vecs.T
        out.append(block)
    if cfg.kind == "lowrank" and cfg.cache_projections:
        store_stream = _Streamer(store, blocks, cfg, dtype, progress, sharded=False)
        _cache_projections(store_stream, out)
        stream.passes += store_stream.passes
    extra = {"passes": stream.passes, "fisher": cfg.fisher}
    if source is not None:
        extra["fisher_examples"] = n
    return Curvature(cfg.kind, to_dict(cfg), out, store_identity(store), extra)


def _cache_projections(stream: _Streamer, blocks: list[CurvatureBlock]) -> None:
    """H_b = G_b V_b for every block, in one more pass over the store."""
    n = stream.store.num_examples
    for block in blocks:
        block.projections = torch.empty(n, block.eigvecs.shape[1], dtype=block.eigvecs.dtype)
    row = {"at": 0}

    def step(b: int, g: torch.Tensor) -> None:
        blocks[b].projections[row["at"] : row["at"] + g.shape[0]] = g @ blocks[b].eigvecs
        if b == len(blocks) - 1:
            row["at"] += g.shape[0]

    stream.run(step, "curvature: cache projections")
