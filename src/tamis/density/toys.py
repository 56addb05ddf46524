"""2-D toy data with a known density (imbalanced Gaussian mixture plus a ring)."""

from __future__ import annotations

import numpy as np
from scipy import stats


def _mixture(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    n_modes = 12
    angles = np.linspace(0, 2 * np.pi, n_modes, endpoint=False)
    means = np.stack([3 * np.cos(angles), 3 * np.sin(angles)], axis=1)
    weights = rng.dirichlet(np.full(n_modes, 1.0))
    scales = rng.uniform(0.1, 0.5, n_modes)
    return means, weights, scales


def mixture_density(x: np.ndarray, seed: int = 0, ring_weight: float = 0.2) -> np.ndarray:
    """Evaluate the true density of :func:`gaussian_mixture` (same ``seed``) at ``x`` (N, 2)."""
    means, weights, scales = _mixture(seed)
    p = np.zeros(x.shape[0])
    for m, w, s in zip(means, weights, scales, strict=True):
        p += (1 - ring_weight) * w * stats.multivariate_normal(m, s**2 * np.eye(2)).pdf(x)
    r = np.linalg.norm(x, axis=1)
    ring = stats.norm(5.5, 0.15).pdf(r) / (2 * np.pi * np.maximum(r, 1e-9))
    return p + ring_weight * ring


def gaussian_mixture(
    n: int, seed: int = 0, ring_weight: float = 0.2
) -> tuple[np.ndarray, np.ndarray]:
    """Sample an imbalanced 12-mode Gaussian mixture plus a thin ring, with the true density.

    Args:
        n: number of points.
        seed: fixes the mixture (weights, widths) and the draw.
        ring_weight: probability mass of the ring (radius 5.5).

    Returns:
        ``(x, density)``: points ``(n, 2)`` float32 and their true density ``(n,)``.

    """
    means, weights, scales = _mixture(seed)
    rng = np.random.default_rng(seed + 1)
    on_ring = rng.random(n) < ring_weight
    comp = rng.choice(len(weights), size=n, p=weights)
    x = means[comp] + rng.normal(size=(n, 2)) * scales[comp, None]
    theta = rng.uniform(0, 2 * np.pi, n)
    r = rng.normal(5.5, 0.15, n)
    ring = np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)
    x = np.where(on_ring[:, None], ring, x)
    return x.astype(np.float32), mixture_density(x, seed, ring_weight)
