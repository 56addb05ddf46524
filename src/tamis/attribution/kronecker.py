"""Kronecker-factored curvature (K-FAC and EK-FAC) over the factored store.

For one tracked layer with (projected) inputs a_t (d1) and output-gradients b_t (d2), the
per-example gradient is G_n = sum_t a_t b_t^T (d1 x d2) and its Fisher over the flattened
(row-major) gradient is F = E_n[vec(G_n) vec(G_n)^T] (D = d1 d2). K-FAC (Martens & Grosse
2015; Grosse & Martens 2016 for shared weights / tokens) approximates it by a Kronecker
product of two small covariances::

    F ~= A (x) S,    A = (1 / N_tokens) sum_{n,t} a a^T  (d1 x d1),
                     S = (1 / N) sum_{n,t} b b^T         (d2 x d2),

with eigenbases A = Q_A diag(l_A) Q_A^T, S = Q_S diag(l_S) Q_S^T. EK-FAC (George et al.
2018; Grosse et al. 2023, Kronfluence's default) keeps the Kronecker eigenbasis but replaces
the eigenvalues l_A l_S^T by the exact second moments of the gradients in that basis::

    Lambda_ij = E_n[(Q_A^T G_n Q_S)_ij^2],

the best diagonal in the basis (so trace(Lambda) = trace(F)). A query gradient Q (d1 x d2)
is preconditioned as ``Q_A ((Q_A^T Q Q_S) / (Lambda + lambda)) Q_S^T`` and scored against the
stored rank-c factors of every training gradient with the same factored kernel as LoRIF:
sum_c a_c^T (preconditioned Q) b_c. The training side is never recomputed.

The factors are fitted from a :class:`~tamis.attribution.fisher.FisherSource` (observed
labels for ``fisher="empirical"``, sampled labels for ``"true"``, the K Gauss-Newton rows for
``"ggn"``) in two passes over the data: covariances, then the eigenvalue correction (EK-FAC
only). Memory: d1^2 + d2^2 + d1 d2 numbers per layer; with identity projection this is
Kronfluence's EK-FAC over the unprojected layer.
"""

from __future__ import annotations

import torch

from tamis._progress import track
from tamis.attribution.config import CurvatureConfig
from tamis.attribution.distributed import all_reduce_float, all_reduce_sum, process_group
from tamis.attribution.errors import AttributionError, StoreError
from tamis.attribution.factors import dense_gradients
from tamis.attribution.store import FactorStore  # noqa: TC001

KRONECKER_KINDS = ("kfac", "ekfac")
_MAX_ELEMENTS = 1 << 24  # rotated-gradient elements per sub-batch of the correction pass


def _covariances(source, dtype: torch.dtype, progress: bool) -> tuple[dict, dict, int, int]:
    """Sums of a a^T and weighted b b^T per layer, the token count and the example count."""
    layers = source.store.layers
    acts = {lay["name"]: torch.zeros(lay["d1"], lay["d1"], dtype=dtype) for lay in layers}
    outs = {lay["name"]: torch.zeros(lay["d2"], lay["d2"], dtype=dtype) for lay in layers}
    tokens = examples = 0
    for items in track(source.iter_captures(dtype), "curvature: Kronecker factors",
                       source.num_batches, progress):
        first, _ = items[0]  # activations do not depend on the (pseudo-)label
        cap0 = next(iter(first.values()))
        examples += cap0.a.shape[0]
        tokens += cap0.a.shape[0] * cap0.a.shape[1]
        for name, cap in first.items():
            a = cap.a.reshape(-1, cap.a.shape[-1])
            acts[name] += (a.T @ a).cpu()
        for captured, weight in items:
            for name, cap in captured.items():
                b = cap.b.reshape(-1, cap.b.shape[-1])
                outs[name] += weight * (b.T @ b).cpu()
    if process_group()[1] > 1:  # each rank summed its own batches
        acts = {k: all_reduce_sum(v) for k, v in acts.items()}
        outs = {k: all_reduce_sum(v) for k, v in outs.items()}
        tokens, examples = (int(all_reduce_float(float(x))) for x in (tokens, examples))
    return acts, outs, tokens, examples


def _eigh(m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (clamped at 0) and eigenvectors of a symmetric matrix, in float64."""
    vals, vecs = torch.linalg.eigh(((m + m.T) / 2).double())
    return vals.clamp_min(0), vecs


def _corrected_eigenvalues(source, bases: dict, dtype: torch.dtype, progress: bool) -> dict:
    """E_n[(Q_A^T G_n Q_S)^2] per layer, in one more pass (EK-FAC)."""
    acc = {name: torch.zeros(qa.shape[0], qs.shape[0], dtype=dtype)
           for name, (qa, qs) in bases.items()}
    for items in track(source.iter_captures(dtype), "curvature: eigenvalue correction",
                       source.num_batches, progress):
        for captured, weight in items:
            for name, cap in captured.items():
                qa, qs = bases[name]
                dev = cap.a.device
                a, b = cap.a @ qa.to(dev, dtype), cap.b @ qs.to(dev, dtype)  # rotate first
                step = max(1, _MAX_ELEMENTS // (qa.shape[0] * qs.shape[0]))
                for lo in range(0, a.shape[0], step):
                    g = dense_gradients(a[lo:lo + step], b[lo:lo + step])
                    acc[name] += weight * (g * g).sum(0).cpu()
    if process_group()[1] > 1:
        acc = {k: all_reduce_sum(v) for k, v in acc.items()}
    return acc


def fit_kronecker(store: FactorStore, cfg: CurvatureConfig, source, dtype: torch.dtype,
                  progress: bool) -> tuple[list, int]:
    """K-FAC or EK-FAC blocks (one per layer) of ``store``'s layers, from ``source``.

    Args:
        store: the factor store whose projected space the curvature lives in.
        cfg: the curvature configuration (``kind`` ``"kfac"`` or ``"ekfac"``).
        source: a :class:`~tamis.attribution.fisher.FisherSource` of the chosen Fisher.
        dtype: compute precision of the passes.
        progress: show progress bars.

    Returns:
        The blocks and the number of passes over the data.

    Raises:
        AttributionError: ``granularity="model"`` or a missing source.
        StoreError: a layer whose Fisher is zero under relative damping.

    """
    from tamis.attribution.curvature import CurvatureBlock, damping_for

    if cfg.granularity != "layer":
        raise AttributionError(
            f"{cfg.kind} is a per-layer curvature: use granularity='layer' "
            "(granularity='model' needs kind='lowrank' or 'dense')")
    if source is None:
        raise AttributionError(
            f"kind={cfg.kind!r} fits Kronecker factors from the layer activations and "
            "output-gradients, which the store does not keep: pass "
            "source=FisherSource(task, model, data, store, kind=...) or use Attributor.fit")
    acts, outs, tokens, examples = _covariances(source, dtype, progress)
    passes = 1
    bases, eigs = {}, {}
    for lay in store.layers:
        name = lay["name"]
        la, qa = _eigh(acts[name] / tokens)
        ls, qs = _eigh(outs[name] / examples)
        bases[name] = (qa, qs)
        eigs[name] = torch.outer(la, ls)
    if cfg.kind == "ekfac":
        corrected = _corrected_eigenvalues(source, bases, dtype, progress)
        passes += 1
        eigs = {name: (corrected[name] / examples).double() for name in eigs}
    blocks = []
    for lay in store.layers:
        name, d1, d2 = lay["name"], lay["d1"], lay["d2"]
        ev = eigs[name]
        trace = float(ev.sum())
        lam = damping_for(cfg, trace, ev.numel())
        if lam <= 0:
            raise StoreError(f"layer {name!r} has an all-zero Fisher; use absolute damping")
        qa, qs = bases[name]
        blocks.append(CurvatureBlock(
            [name], [d1 * d2], float(lam), trace, basis_in=qa.to(dtype).contiguous(),
            basis_out=qs.to(dtype).contiguous(), kron_eigvals=ev.to(dtype).contiguous()))
    return blocks, passes


def kronecker_apply(q: torch.Tensor, basis_in: torch.Tensor, basis_out: torch.Tensor,
                    eigvals: torch.Tensor, damping: float) -> torch.Tensor:
    """Q_A ((Q_A^T Q Q_S) / (Lambda + lambda)) Q_S^T for rows q (n, d1 d2)."""
    d1, d2 = eigvals.shape
    qa, qs = basis_in.to(q.dtype), basis_out.to(q.dtype)
    rot = qa.T @ q.reshape(-1, d1, d2) @ qs
    rot = rot / (eigvals.to(q.dtype) + damping)
    return (qa @ rot @ qs.T).reshape(q.shape[0], d1 * d2)
