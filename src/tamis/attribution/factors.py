"""Rank-c factors of each projected per-example gradient G = A^T B (paper Step 2).

With A = X P_in (T x d1) and B = dY P_out (T x d2), rank(G) <= min(T, d1, d2):

* T <= c: store A^T and B^T themselves (zero-padded to c columns); exact.
* T < min(d1, d2): thin QR of A^T and B^T, SVD of the small T x T core R1 R2^T; G is never
  formed.
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


def _from_svd(
    u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor, c: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    k = min(c, s.shape[-1])
    root = s[:, :k].clamp_min(0).sqrt()
    left = u[:, :, :k] * root[:, None, :]
    right = vh[:, :k, :].transpose(1, 2) * root[:, None, :]
    total = (s**2).sum(dim=1)
    kept = (s[:, :k] ** 2).sum(dim=1)
    energy = torch.where(total > 0, kept / total.clamp_min(torch.finfo(s.dtype).tiny), 1.0)
    return _pad(left, c), _pad(right, c), energy


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
        q1, r1 = torch.linalg.qr(a.transpose(1, 2))  # (B, d1, T), (B, T, T)
        q2, r2 = torch.linalg.qr(b.transpose(1, 2))
        u, s, vh = torch.linalg.svd(r1 @ r2.transpose(1, 2))
        left, right, energy = _from_svd(q1 @ u, s, vh @ q2.transpose(1, 2), rank)
        return Factors(left, right, energy)
    return _factors_from_gram(dense_gradients(a, b), rank)


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
