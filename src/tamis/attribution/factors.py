"""Rank-c factors of each projected per-example gradient G = A^T B (paper Step 2).

With A = X P_in (T x d1) and B = dY P_out (T x d2), rank(G) <= min(T, d1, d2):

* T <= c: store A^T and B^T themselves (zero-padded to c columns); exact.
* T < min(d1, d2): the T x T token Gram matrices A A^T and B B^T (two batched ``eigh``);
  G is never formed.
* otherwise: form G (cheaper than the QR path) and take the top-c eigenpairs of its smaller
  Gram matrix (batched ``eigh``).

The truncated SVD G ~ U_c S_c V_c^T is stored as L = U_c S_c^(1/2), R = V_c S_c^(1/2), so
||G - L R^T||_F^2 equals the sum of the discarded squared singular values.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Factors:
    """Batched rank-c factors: L (B, d1, c), R (B, d2, c), and retained energy (B,)."""

    left: torch.Tensor
    right: torch.Tensor
    energy: torch.Tensor


def dense_gradients(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Projected per-example gradients G = A^T B, shape (B, d1, d2)."""
    return torch.einsum("bti,bto->bio", a, b)


def reconstruct(left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """L R^T for batched factors: (B, d1, c), (B, d2, c) -> (B, d1, d2)."""
    return left @ right.transpose(-1, -2)


def _pad(x: torch.Tensor, c: int) -> torch.Tensor:
    k = x.shape[-1]
    return x if k == c else torch.nn.functional.pad(x, (0, c - k))


def low_rank_factors(a: torch.Tensor, b: torch.Tensor, rank: int) -> Factors:
    """Best rank-``rank`` factors of G_i = A_i^T B_i for every example i.

    Args:
        a: Projected inputs, (B, T, d1).
        b: Projected output-gradients, (B, T, d2).
        rank: c >= 1.

    Returns:
        :class:`Factors` with L (B, d1, c), R (B, d2, c) and the fraction of ||G_i||_F^2
        kept (1 where exact or G_i = 0).

    """
    if a.dim() != 3 or b.dim() != 3 or a.shape[:2] != b.shape[:2]:
        raise ValueError(
            f"expected A (B,T,d1) and B (B,T,d2) with equal B, T; got "
            f"{tuple(a.shape)} and {tuple(b.shape)}"
        )
    if rank < 1:
        raise ValueError(f"rank c must be >= 1, got {rank}")
    n, t, d1 = a.shape
    d2 = b.shape[2]
    if t <= rank:
        ones = a.new_ones(n)
        return Factors(_pad(a.transpose(1, 2), rank), _pad(b.transpose(1, 2), rank), ones)
    if t < min(d1, d2):
        return _factors_from_tokens(a, b, rank)
    return _factors_from_gram(dense_gradients(a, b), rank)


def _factors_from_tokens(a: torch.Tensor, b: torch.Tensor, rank: int) -> Factors:
    """Top-c factors of G = A^T B through T x T token Gram matrices (T < d1, d2).

    With A A^T = W W^T (``eigh``, W = U_A Λ_A^(1/2)), G = Q W^T B for an orthonormal Q, so
    the singular values of G are the square roots of the eigenvalues of the T x T matrix
    M = W^T (B B^T) W and its right singular vectors are V = B^T W U_M Σ^(-1). Then
    L = G V_c Σ_c^(-1/2) = A^T (B V_c) Σ_c^(-1/2) and R = V_c Σ_c^(1/2), as in
    :func:`_factors_from_gram`. Two batched ``eigh`` of T x T matrices replace two QR
    decompositions and an SVD (about 1.7x faster on CPU for T = 128, d = 256); G is never
    formed and no inverse of A's spectrum is taken.
    """
    vals_a, vecs_a = torch.linalg.eigh(a @ a.transpose(1, 2))
    w = vecs_a * vals_a.clamp_min(0).sqrt()[:, None, :]
    m = w.transpose(1, 2) @ (b @ b.transpose(1, 2)) @ w
    vals, vecs = torch.linalg.eigh((m + m.transpose(1, 2)) / 2)  # ascending
    k = min(rank, vals.shape[1])
    top = vals.flip(1)[:, :k].clamp_min(0)
    sigma = top.sqrt()
    tiny = sigma <= sigma[:, :1] * (vals.shape[1] * torch.finfo(a.dtype).eps) ** 0.5
    safe = torch.where(tiny, torch.ones_like(sigma), sigma)
    v = b.transpose(1, 2) @ (w @ vecs.flip(2)[:, :, :k]) / safe[:, None, :]
    v = v * (~tiny)[:, None, :]
    left = (a.transpose(1, 2) @ (b @ v)) / safe.sqrt()[:, None, :]
    right = v * sigma.sqrt()[:, None, :]
    total = vals.clamp_min(0).sum(1)
    kept = (top * (~tiny)).sum(1)
    energy = torch.where(total > 0, kept / total.clamp_min(torch.finfo(a.dtype).tiny), 1.0)
    return Factors(_pad(left, rank), _pad(right, rank), energy.clamp(0, 1))


def _factors_from_gram(g: torch.Tensor, rank: int) -> Factors:
    """Top-c factors of G (B, d1, d2) from the eigenpairs of its smaller Gram matrix.

    With V_c the top-c eigenvectors of G^T G (right singular vectors), G V_c V_c^T is the best
    rank-c approximation; L = G V_c S_c^(-1/2), R = V_c S_c^(1/2). Batched ``eigh`` is about
    twice as fast as batched ``svd`` for these small matrices.
    """
    flip = g.shape[1] < g.shape[2]
    if flip:  # work with the smaller side as the "right" one
        g = g.transpose(1, 2)
    vals, vecs = torch.linalg.eigh(g.transpose(1, 2) @ g)  # ascending
    k = min(rank, vals.shape[1])
    top = vals.flip(1)[:, :k].clamp_min(0)
    v = vecs.flip(2)[:, :, :k]
    sigma = top.sqrt()
    safe = torch.where(sigma > 0, sigma, torch.ones_like(sigma))
    left = (g @ v) / safe.sqrt()[:, None, :] * (sigma > 0)[:, None, :]
    right = v * sigma.sqrt()[:, None, :]
    total = vals.clamp_min(0).sum(1)
    energy = torch.where(total > 0, top.sum(1) / total.clamp_min(torch.finfo(g.dtype).tiny), 1.0)
    if flip:
        left, right = right, left
    return Factors(_pad(left, rank), _pad(right, rank), energy)
