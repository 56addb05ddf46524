"""Generative-model metrics on feature arrays: precision, recall, density, coverage, Frechet.

Pure functions, arrays in and dicts/floats out, with explicit ``real=`` / ``fake=`` keywords.
Ball membership uses ``<=`` (so identical sets give precision = recall = coverage = 1 and
density = 1), and each point's own k-NN radius excludes itself. Nothing builds an ``N x M``
matrix: k-NN searches go through faiss and the few ambiguous rows through faiss range search,
so N = 100,000 fits in memory (exact);
approximate faiss search takes over for millions.
"""

from __future__ import annotations

import numpy as np

from tamis.density._checks import as_features, check_k, check_same_dim
from tamis.density.knn import AUTO_EXACT_MAX, Method, build_index, knn


def knn_radii(
    features: object, k: int, *, method: Method = "exact", index: object | None = None
) -> np.ndarray:
    """Distance from each point to its ``k``-th nearest neighbour in its own set (self excluded).

    Args:
        features: ``(N, D)`` features.
        k: neighbour rank.
        method: k-NN method.
        index: optional prebuilt faiss index over ``features``.

    Returns:
        ``(N,)`` float32 radii.

    """
    dist, _ = knn(features, k, method=method, index=index)
    return dist[:, -1]


def ball_counts(
    queries: object,
    centers: object,
    radii: object,
    *,
    method: Method = "exact",
    candidates: int = 64,
    block: int = 512,
    index: object | None = None,
) -> np.ndarray:
    """Count, for each query, the balls ``B(center_i, radius_i)`` that contain it.

    ``method="exact"`` streams ``block x M`` squared-distance blocks (one pass, no ``N x M``
    matrix). ``"ivf"`` only checks the ``candidates`` approximate nearest centres of each query:
    a lower bound, for N too large for an exact pass.

    Args:
        queries: ``(M, D)`` points.
        centers: ``(N, D)`` ball centres.
        radii: ``(N,)`` ball radii (``<=`` counts as inside, up to float32 rounding).
        method: ``"exact"``, ``"ivf"`` or ``"auto"`` (exact up to 200,000 centres).
        candidates: nearest centres checked by the approximate method.
        block: centres per distance block (exact method).
        index: optional prebuilt faiss index over ``centers`` (approximate method).

    Returns:
        ``(M,)`` int64 counts.

    """
    q = as_features(queries, "queries")
    c = as_features(centers, "centers")
    check_same_dim(c, q, "centers", "queries")
    r = np.asarray(radii, dtype=np.float32).ravel()
    if r.shape[0] != c.shape[0]:
        raise ValueError(f"radii has {r.shape[0]} entries for {c.shape[0]} centers")
    if method == "auto":
        method = "exact" if c.shape[0] <= AUTO_EXACT_MAX else "ivf"
    if method != "exact":
        kk = min(candidates, c.shape[0])
        dist, idx = knn(c, kk, q, method=method, index=index)
        return (dist <= r[idx]).sum(axis=1).astype(np.int64)
    counts = np.zeros(q.shape[0], dtype=np.int64)
    for rows, u, cn, mask in _Blocks(c, q, block):
        np.less_equal(u, (r[rows] ** 2 - cn)[:, None], out=mask)
        counts += _column_counts(mask)
    return counts


class _Blocks:
    """Stream ``u = (1 - s)|q|^2 - 2 c.q`` over row blocks of centres ``c`` against queries ``q``.

    ``|c - q|^2 <= R^2`` (up to a float32 rounding slack ``s (|c|^2 + |q|^2)``) is then
    ``u <= R^2 - (1 - s)|c|^2``: one matrix product per block and no ``N x M`` matrix.
    Points are centred first, which shrinks rounding. Buffers are reused between blocks.
    """

    def __init__(self, c: np.ndarray, q: np.ndarray, block: int) -> None:
        mean = c.mean(axis=0, dtype=np.float64).astype(np.float32)
        self.ct = c - mean
        self.qt_t = np.ascontiguousarray((q - mean).T)
        self.keep = np.float32(1.0 - 8 * float(np.finfo(np.float32).eps))
        self.qn = (self.qt_t * self.qt_t).sum(0) * self.keep
        self.block = block

    def __iter__(self):  # noqa: ANN204
        rows_max = min(self.block, self.ct.shape[0])
        buf = np.empty((rows_max, self.qt_t.shape[1]), dtype=np.float32)
        mask = np.empty(buf.shape, dtype=bool)
        for s in range(0, self.ct.shape[0], self.block):
            cb = self.ct[s : s + self.block]
            u = buf[: cb.shape[0]]
            np.matmul(cb * np.float32(-2.0), self.qt_t, out=u)
            u += self.qn
            cn = (cb * cb).sum(1) * self.keep
            yield slice(s, s + cb.shape[0]), u, cn, mask[: cb.shape[0]]


def _column_counts(mask: np.ndarray) -> np.ndarray:
    """Per-column count of a boolean block (fast uint8 reduction)."""
    dtype = np.uint16 if mask.shape[0] < 65_536 else np.int64
    return mask.view(np.uint8).sum(axis=0, dtype=dtype)


def prdc(
    *,
    real: object,
    fake: object,
    k: int = 5,
    method: Method = "exact",
    block: int = 512,
    real_radii: np.ndarray | None = None,
) -> dict[str, float]:
    """Precision, recall (Kynkaanniemi et al.), density and coverage (Naeem et al.).

    With ``method="exact"`` the real x fake distances are streamed in ``block``-row blocks, one
    pass for all four metrics; the k-NN radii come from faiss. With ``"ivf"`` (or ``"auto"``
    past 200,000 points) radii and ball memberships use approximate faiss search: precision,
    recall and density become lower bounds, coverage stays exact up to the k-NN error.

    Args:
        real: ``(N, D)`` features of real samples.
        fake: ``(M, D)`` features of generated samples.
        k: neighbours defining each point's ball (the k-th neighbour distance, self excluded).
        method: ``"exact"``, ``"ivf"`` or ``"auto"``.
        block: real rows per distance block (memory ``~ 8 * block * M`` bytes).
        real_radii: the real k-NN radii if already known, e.g.
            ``PseudoDensity(k=20).fit(real).kth_neighbour_distance(k)``; saves one search.

    Returns:
        ``{"precision", "recall", "density", "coverage"}``.

    Raises:
        ValueError: on non-finite or mismatched features, or ``k`` too large for a set.

    """
    r = as_features(real, "real")
    f = as_features(fake, "fake")
    check_same_dim(r, f, "real", "fake")
    check_k(k, r.shape[0], "the real set", exclude_self=True)
    check_k(k, f.shape[0], "the fake set", exclude_self=True)
    n_real = r.shape[0]
    if method == "auto":
        method = "exact" if max(n_real, f.shape[0]) <= AUTO_EXACT_MAX else "ivf"
    idx_r = build_index(r, method)  # built once, reused by every search
    idx_f = build_index(f, method)
    if real_radii is None:
        r_real = knn_radii(r, k, method=method, index=idx_r)
    else:
        r_real = np.asarray(real_radii, dtype=np.float32).ravel()
        if r_real.shape[0] != n_real or not np.isfinite(r_real).all():
            raise ValueError(f"real_radii must hold {n_real} finite radii, got {r_real.shape}")
    r_fake = knn_radii(f, k, method=method, index=idx_f)
    if method == "exact":
        in_real_np = np.zeros(f.shape[0], dtype=np.int64)
        real_in_fake = np.zeros(n_real, dtype=bool)
        covered = np.zeros(n_real, dtype=bool)
        rf2 = (r_fake**2)[None, :]
        for rows, u, cn, mask in _Blocks(r, f, block):
            np.less_equal(u, (r_real[rows] ** 2 - cn)[:, None], out=mask)
            in_real_np += _column_counts(mask)
            covered[rows] = mask.any(axis=1)
            u -= rf2  # now |c - q|^2 - r_fake^2 - slack - (1 - s)|c|^2
            np.less_equal(u, -cn[:, None], out=mask)
            real_in_fake[rows] = mask.any(axis=1)
        recall = float(real_in_fake.mean())
        coverage = float(covered.mean())
    else:
        in_real_np = ball_counts(f, r, r_real, method=method, index=idx_r)
        recall = float((ball_counts(r, f, r_fake, method=method, index=idx_f) > 0).mean())
        nearest_fake, _ = knn(f, 1, r, method=method, index=idx_f)
        coverage = float((nearest_fake[:, 0] <= r_real).mean())
    return {
        "precision": float((in_real_np > 0).mean()),
        "recall": recall,
        "density": float(in_real_np.sum() / (k * f.shape[0])),
        "coverage": coverage,
    }


def precision_recall(*, real: object, fake: object, k: int = 3) -> dict[str, float]:
    """Improved precision and recall only (default ``k = 3`` as in the paper's evaluation)."""
    out = prdc(real=real, fake=fake, k=k)
    return {"precision": out["precision"], "recall": out["recall"]}


def density_coverage(
    *, real: object, fake: object, k: int = 5, method: Method = "exact"
) -> dict[str, float]:
    """Density and coverage only (default ``k = 5``)."""
    out = prdc(real=real, fake=fake, k=k, method=method)
    return {"density": out["density"], "coverage": out["coverage"]}


def _moments(x: np.ndarray, batch: int = 65_536) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance in float64, accumulated over row batches."""
    n, d = x.shape
    if n < 2:
        raise ValueError("the Frechet distance needs at least 2 samples per set")
    mean = np.zeros(d)
    for s in range(0, n, batch):
        mean += x[s : s + batch].astype(np.float64).sum(axis=0)
    mean /= n
    cov = np.zeros((d, d))
    for s in range(0, n, batch):
        c = x[s : s + batch].astype(np.float64) - mean
        cov += c.T @ c
    return mean, cov / (n - 1)


def frechet_distance(*, real: object, fake: object) -> float:
    """Frechet distance between Gaussians fitted to two feature sets.

    ``||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2))``; the trace of the matrix square
    root is computed from the eigenvalues of ``S_r^(1/2) S_f S_r^(1/2)`` (symmetric PSD), which
    is stable where ``scipy.linalg.sqrtm`` returns complex noise. Call it "FID" only with
    Inception features.

    Returns:
        The distance (>= 0, float).

    """
    r = as_features(real, "real")
    f = as_features(fake, "fake")
    check_same_dim(r, f, "real", "fake")
    mu_r, s_r = _moments(r)
    mu_f, s_f = _moments(f)
    w, v = np.linalg.eigh(s_r)
    root_r = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = root_r @ s_f @ root_r
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)).sum()
    fd = float(((mu_r - mu_f) ** 2).sum() + np.trace(s_r) + np.trace(s_f) - 2 * tr_sqrt)
    return max(fd, 0.0)
