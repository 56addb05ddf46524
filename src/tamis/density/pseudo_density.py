"""Pseudo density of reference samples: normalised inverse mean k-NN distance (paper §2.2).

For reference features ``f_1..f_N``, ``d_i`` is the mean Euclidean distance to the ``k`` nearest
other reference points. The pseudo density is ``rho_i = N * d_i^-n / sum_j d_j^-n`` (mean 1
over the reference set). Queries (e.g. generated samples) are scored with the same
normaliser, so a query with ``rho = 2`` sits twice as "densely" as the average real sample.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from tamis.density._checks import as_features, check_same_dim
from tamis.density.knn import Method, knn

ZeroPolicy = Literal["clamp", "raise"]


def knn_mean_distance(
    reference: object,
    k: int = 20,
    queries: object | None = None,
    *,
    method: Method = "exact",
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Mean distance to the ``k`` nearest reference points (self excluded if ``queries=None``).

    Args:
        reference: ``(N, D)`` reference features.
        k: neighbours averaged.
        queries: ``(M, D)`` features to score, or ``None`` to score the reference itself.
        method: k-NN search method, see :func:`tamis.density.knn.knn`.
        progress: optional callback with the number of queries done.

    Returns:
        ``(M,)`` float64 mean distances.

    """
    dist, _ = knn(reference, k, queries, method=method, progress=progress)
    return dist.astype(np.float64).mean(axis=1)


def _handle_zero(d: np.ndarray, on_zero: ZeroPolicy, what: str) -> np.ndarray:
    zero = d <= 0
    if not zero.any():
        return d
    if on_zero == "raise" or zero.all():
        raise ValueError(
            f"{int(zero.sum())} {what} have all k nearest neighbours at distance 0 (exact "
            "duplicates): their inverse distance is infinite. Deduplicate the features, raise "
            "k above the number of copies, or use on_zero='clamp'"
        )
    floor = float(d[~zero].min())
    warnings.warn(
        f"{int(zero.sum())} {what} have k duplicates at distance 0; their mean distance is "
        f"clamped to the smallest positive one ({floor:.4g}), i.e. the highest finite density",
        stacklevel=3,
    )
    return np.where(zero, floor, d)


def pseudo_density(
    features: object,
    k: int = 20,
    power: float = 1.0,
    *,
    method: Method = "exact",
    on_zero: ZeroPolicy = "clamp",
    progress: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Pseudo density of each reference sample, normalised to mean 1.

    Args:
        features: ``(N, D)`` reference features (e.g. of the real training images).
        k: nearest neighbours (self excluded); the paper's code uses 20.
        power: exponent ``n`` of ``(1/d)^n`` (the code uses 1); it never changes the ranking.
        method: ``"exact"``, ``"ivf"`` (approximate, for large N) or ``"auto"``.
        on_zero: what to do with points whose ``k`` neighbours are all exact duplicates
            (distance 0): ``"clamp"`` (default, warns; the distance becomes the smallest
            positive one) or ``"raise"``.
        progress: optional callback with the number of points done.

    Returns:
        ``(N,)`` float64 densities with mean 1.

    Raises:
        ValueError: on NaN/inf features, ``k >= N``, or duplicates with ``on_zero="raise"``.

    """
    return PseudoDensity(k=k, power=power, method=method, on_zero=on_zero).fit(
        features, progress=progress
    ).reference_density


@dataclass
class PseudoDensity:
    """Fitted pseudo density: scores reference points and any query with one normaliser.

    Attributes:
        k: nearest neighbours.
        power: exponent ``n`` of ``(1/d)^n``.
        method: k-NN search method.
        on_zero: duplicate handling, see :func:`pseudo_density`.

    """

    k: int = 20
    power: float = 1.0
    method: Method = "exact"
    on_zero: ZeroPolicy = "clamp"

    def fit(
        self, reference: object, progress: Callable[[int], None] | None = None
    ) -> PseudoDensity:
        """Compute the reference densities and keep the reference for later queries.

        Args:
            reference: ``(N, D)`` reference features.
            progress: optional callback with the number of points done.

        Returns:
            ``self``.

        """
        if not self.power > 0:
            raise ValueError(f"power must be > 0, got {self.power}")
        self.reference_ = as_features(reference, "reference")
        dist, _ = knn(self.reference_, self.k, method=self.method, progress=progress)
        self.knn_distances_ = dist
        d = dist.astype(np.float64).mean(axis=1)
        d = _handle_zero(d, self.on_zero, "reference points")
        raw = d ** (-self.power)
        self.normaliser_ = float(raw.mean())
        self.reference_density = raw / self.normaliser_
        return self

    def score(self, queries: object, progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Pseudo density of new points (k nearest *reference* points, nothing excluded).

        Args:
            queries: ``(M, D)`` features in the same space as the reference.
            progress: optional callback with the number of queries done.

        Returns:
            ``(M,)`` densities on the reference scale (reference mean is 1).

        """
        if not hasattr(self, "reference_"):
            raise RuntimeError("call fit(reference) before score(queries)")
        q = as_features(queries, "queries")
        check_same_dim(self.reference_, q, "reference", "queries")
        d = knn_mean_distance(self.reference_, self.k, q, method=self.method, progress=progress)
        d = _handle_zero(d, self.on_zero, "queries")
        return d ** (-self.power) / self.normaliser_

    def kth_neighbour_distance(self, k: int) -> np.ndarray:
        """Reference k-NN radii (self excluded) for ``k <= self.k``, reusable by :func:`prdc`.

        Returns:
            ``(N,)`` float32 distances to each reference point's ``k``-th neighbour.

        """
        if not hasattr(self, "knn_distances_"):
            raise RuntimeError("call fit(reference) first")
        if not 1 <= k <= self.k:
            raise ValueError(f"k must be within [1, {self.k}] (the k of this fit), got {k}")
        return self.knn_distances_[:, k - 1].copy()

    def threshold(self, percentile: float) -> float:
        """Density threshold tau at ``percentile`` (0-100) of the reference densities."""
        return threshold_from_percentile(self.reference_density, percentile)


def threshold_from_percentile(densities: object, percentile: float) -> float:
    """Threshold tau as a percentile (0-100) of reference pseudo densities.

    Raises:
        ValueError: if ``percentile`` is outside [0, 100] or ``densities`` is empty/non-finite.

    """
    arr = np.asarray(densities, dtype=np.float64).ravel()
    if arr.size == 0 or not np.isfinite(arr).all():
        raise ValueError("densities must be a non-empty array of finite values")
    if not 0.0 <= float(percentile) <= 100.0:
        raise ValueError(f"percentile must be within [0, 100], got {percentile}")
    return float(np.percentile(arr, percentile))


__all__ = [
    "PseudoDensity",
    "knn_mean_distance",
    "pseudo_density",
    "threshold_from_percentile",
]
