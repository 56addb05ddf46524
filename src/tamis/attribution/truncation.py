"""Curvature-aware truncation of per-example gradients (the ``whitened`` factor metric).

The store keeps the best rank-c approximation of each per-example gradient G (d1 x d2).
"Best" in the plain Frobenius norm spends the c factors on the directions of largest
gradient energy, which are the directions of largest curvature, exactly the ones a
preconditioned score divides away. Influence scores are inner products in the metric of
the inverse curvature; under K-FAC, F^-1 ~= A^-1 (x) S^-1 and

    <Q, G>_{F^-1} ~= <A^-1/2 Q S^-1/2, A^-1/2 G S^-1/2>_F,

so the right truncation is the Frobenius-optimal rank-c approximation of the *whitened*
gradient G~ = M_A G M_S with M = (C + delta I)^(-1/2), mapped back to the gradient space:
L = M_A^-1 L~, R = M_S^-1 R~. The store format is unchanged (L R^T still approximates G and
is exact when rank(G) <= c); only which rank-c approximation is kept changes. M_A and M_S
come from the layer's input and output-gradient covariances (the empirical K-FAC factors of
the observed labels), accumulated in one extra pass over the training data before the build.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Whitening:
    """Whitening M = (C + delta I)^(-1/2) and its inverse for one side of one layer."""

    forward: torch.Tensor
    inverse: torch.Tensor

    def to(self, dtype: torch.dtype) -> Whitening:
        """The same whitening in another dtype."""
        return Whitening(self.forward.to(dtype), self.inverse.to(dtype))


def whitening(cov: torch.Tensor, damping: float) -> Whitening:
    """M = (C + delta I)^(-1/2), delta = ``damping`` x mean eigenvalue of C (C is PSD).

    Args:
        cov: A symmetric positive semi-definite covariance (d x d).
        damping: delta relative to the mean eigenvalue (> 0).

    Returns:
        :class:`Whitening` with ``forward`` = M and ``inverse`` = M^-1, both symmetric.

    Raises:
        ValueError: a non-square or non-finite covariance, or damping <= 0.

    """
    if cov.dim() != 2 or cov.shape[0] != cov.shape[1]:
        raise ValueError(f"covariance must be square, got {tuple(cov.shape)}")
    if not bool(torch.isfinite(cov).all()):
        raise ValueError("covariance has non-finite entries")
    if damping <= 0:
        raise ValueError(f"truncation damping must be > 0, got {damping}")
    vals, vecs = torch.linalg.eigh(((cov + cov.T) / 2).double())
    vals = vals.clamp_min(0)
    delta = damping * float(vals.mean())
    if delta <= 0:  # an all-zero side: whitening is the identity
        eye = torch.eye(cov.shape[0], dtype=cov.dtype)
        return Whitening(eye, eye.clone())
    root = (vals + delta).sqrt()
    fwd = (vecs / root) @ vecs.T
    inv = (vecs * root) @ vecs.T
    return Whitening(fwd.to(cov.dtype), inv.to(cov.dtype))


def covariance_sums(captured: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per layer: sum of a a^T and sum of b b^T over every token of a captured batch."""
    out = {}
    for name, cap in captured.items():
        a = cap.a.reshape(-1, cap.a.shape[-1])
        b = cap.b.reshape(-1, cap.b.shape[-1])
        out[name] = ((a.T @ a).cpu(), (b.T @ b).cpu())
    return out


def whitened_factors(a: torch.Tensor, b: torch.Tensor, rank: int, w_in: Whitening,
                     w_out: Whitening):
    """Rank-c factors of G = A^T B that are Frobenius-optimal for M_A G M_S (see module doc).

    Args:
        a: Projected inputs, (B, T, d1).
        b: Projected output-gradients, (B, T, d2).
        rank: c >= 1.
        w_in: Whitening of the input side (d1 x d1).
        w_out: Whitening of the output side (d2 x d2).

    Returns:
        :class:`~tamis.attribution.factors.Factors` with L R^T ~= G (exact when rank(G) <= c)
        and the fraction of the *whitened* energy kept.

    """
    from tamis.attribution.factors import Factors, low_rank_factors

    if a.shape[1] <= rank:  # exact either way
        return low_rank_factors(a, b, rank)
    f = low_rank_factors(a @ w_in.forward.to(a.dtype), b @ w_out.forward.to(b.dtype), rank)
    return Factors(w_in.inverse.to(a.dtype) @ f.left, w_out.inverse.to(b.dtype) @ f.right,
                   f.energy)
