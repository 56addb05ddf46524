"""Input validation shared by the density modules (errors name the problem)."""

from __future__ import annotations

import numpy as np


def as_features(x: object, name: str) -> np.ndarray:
    """Return ``x`` as a C-contiguous float32 ``(N, D)`` array, or raise naming ``name``.

    Raises:
        ValueError: if ``x`` is not 2-D, is empty, or holds NaN or infinite values.

    """
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()  # type: ignore[union-attr]
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D (N, D) feature array, got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {arr.shape})")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name} has {int(bad.sum())} row(s) with NaN or infinite features "
            f"(first at row {first}); drop or repair them before computing densities"
        )
    return arr


def check_same_dim(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    """Raise ``ValueError`` if two feature arrays have different widths."""
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"feature dimensions differ: {name_a} has D={a.shape[1]}, {name_b} has D={b.shape[1]}"
            " (were they made by the same extractor?)"
        )


def check_k(k: int, n: int, what: str, exclude_self: bool) -> None:
    """Raise ``ValueError`` unless ``1 <= k`` and there are enough neighbours for ``k``."""
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    limit = n - 1 if exclude_self else n
    if k > limit:
        extra = " (self excluded)" if exclude_self else ""
        raise ValueError(
            f"k={k} is too large for {what} with N={n} samples: at most {limit} neighbours"
            f"{extra}; use k < N"
        )
