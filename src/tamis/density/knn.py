"""k-nearest-neighbour search through faiss: exact (flat) or approximate (IVF) for large N.

All distances returned are Euclidean (not squared). faiss computes in float32, so distances
carry float32 rounding; squared distances are clipped at zero before the square root.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np

from tamis.density._checks import as_features, check_k, check_same_dim

Method = Literal["exact", "ivf", "auto"]
AUTO_EXACT_MAX = 200_000


def _faiss():  # noqa: ANN202 - imported lazily so the rest of tamis works without faiss
    try:
        import faiss
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "tamis.density needs faiss: install it with `pip install 'tamis[density]'` "
            "(the faiss-cpu wheel)"
        ) from err
    return faiss


def build_index(
    reference: np.ndarray, method: Method = "exact", nlist: int | None = None,
    nprobe: int = 8, seed: int = 0,
):  # noqa: ANN201 - returns a faiss index
    """Build a faiss index over ``reference`` (float32, C-contiguous, already validated).

    Args:
        reference: ``(N, D)`` float32 array.
        method: ``"exact"`` (``IndexFlatL2``), ``"ivf"`` (``IndexIVFFlat``, approximate) or
            ``"auto"`` (exact up to 200,000 points, IVF above).
        nlist: IVF cells; default ``8 * sqrt(N)`` (about sqrt(N) candidates per query).
        nprobe: IVF cells visited per query (recall/speed knob).
        seed: seed of the k-means training subsample.

    Returns:
        A faiss index holding ``reference``.

    """
    faiss = _faiss()
    n, d = reference.shape
    if method == "auto":
        method = "exact" if n <= AUTO_EXACT_MAX else "ivf"
    if method == "exact":
        index = faiss.IndexFlatL2(d)
    elif method == "ivf":
        nlist = nlist or max(1, int(8 * np.sqrt(n)))
        nlist = min(nlist, max(1, n // 39))
        quantizer = faiss.IndexFlatL2(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist)
        n_train = min(n, max(20 * nlist, 50_000))
        rng = np.random.default_rng(seed)
        sample = reference[np.sort(rng.choice(n, n_train, replace=False))]
        index.cp.niter = 10  # k-means iterations: cells only need to be roughly balanced
        index.cp.min_points_per_centroid = 1  # silence faiss' "too few points" warning
        index.train(sample)
        index.nprobe = min(nprobe, nlist)
    else:
        raise ValueError(f"method must be 'exact', 'ivf' or 'auto', got {method!r}")
    index.add(reference)
    return index


def knn(
    reference: object,
    k: int,
    queries: object | None = None,
    *,
    method: Method = "exact",
    nlist: int | None = None,
    nprobe: int = 8,
    batch_size: int = 16_384,
    progress: Callable[[int], None] | None = None,
    index: object | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Find the ``k`` nearest reference points of each query.

    With ``queries=None`` the reference set queries itself and each point's own entry is
    excluded (found by index, so exact duplicates of a point still count as neighbours at
    distance 0).

    Args:
        reference: ``(N, D)`` reference features.
        k: neighbours per query (``k < N`` when self is excluded, ``k <= N`` otherwise).
        queries: ``(M, D)`` query features, or ``None`` for a self-query without self.
        method: ``"exact"``, ``"ivf"`` (approximate) or ``"auto"``; see :func:`build_index`.
        nlist: IVF cells (approximate search only).
        nprobe: IVF cells visited per query (approximate search only).
        batch_size: queries per faiss call (bounds memory, drives ``progress``).
        progress: called with the number of queries finished after each batch.
        index: a faiss index already holding ``reference`` (from :func:`build_index`), reused
            instead of building one.

    Returns:
        ``(distances, indices)``, both ``(M, k)``, sorted by increasing Euclidean distance.

    Raises:
        ValueError: on non-2-D or non-finite input, mismatched dimensions, or ``k`` too large.

    """
    ref = as_features(reference, "reference")
    self_query = queries is None
    q = ref if self_query else as_features(queries, "queries")
    if not self_query:
        check_same_dim(ref, q, "reference", "queries")
    check_k(k, ref.shape[0], "the reference set", exclude_self=self_query)
    if index is None:
        index = build_index(ref, method, nlist=nlist, nprobe=nprobe)
    elif index.ntotal != ref.shape[0]:  # type: ignore[attr-defined]
        raise ValueError(f"index holds {index.ntotal} vectors, reference has {ref.shape[0]}")
    kk = k + 1 if self_query else k
    out_d = np.empty((q.shape[0], k), dtype=np.float32)
    out_i = np.empty((q.shape[0], k), dtype=np.int64)
    for start in range(0, q.shape[0], batch_size):
        stop = min(start + batch_size, q.shape[0])
        d2, idx = index.search(q[start:stop], kk)
        missing = (idx < 0).any(axis=1)
        if missing.any():  # IVF visited too few cells: redo those rows exactly
            flat = build_index(ref, "exact")
            d2[missing], idx[missing] = flat.search(q[start:stop][missing], kk)
        if self_query:
            d2, idx = _drop_self(d2, idx, np.arange(start, stop), k)
        out_d[start:stop] = np.sqrt(np.maximum(d2, 0.0))
        out_i[start:stop] = idx
        if progress is not None:
            progress(stop)
    return out_d, out_i


def _drop_self(
    d2: np.ndarray, idx: np.ndarray, rows: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row's own index from ``k + 1`` results (or the last one if absent)."""
    is_self = idx == rows[:, None]
    absent = ~is_self.any(axis=1)
    is_self[absent, -1] = True  # self not returned (ties at distance 0): drop the farthest
    first = np.cumsum(is_self, axis=1) == 1
    is_self &= first  # drop one entry only
    keep = np.argsort(is_self, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d2, keep, axis=1), np.take_along_axis(idx, keep, axis=1)
