"""Rationale and rating metrics (paper note §7.2); pure functions, arrays in, dict out.

Every rationale quantity is **micro-averaged over tokens** of the annotated reviews and given
in **percent** (0-100), as in the rationalization literature (S, P, R, F1):

- sparsity ``S = 100 * sum|m_k| / sum L``;
- precision ``P = 100 * sum|m_k & g_k| / sum|m_k|`` (0 when nothing is selected);
- recall ``R = 100 * sum|m_k & g_k| / sum|g_k|`` (NaN when no gold token exists);
- ``F1 = 2PR / (P + R)`` (0 when ``P + R = 0``, NaN when R is NaN);
- leakage ``= 100 * sum|m_k & (OR_{l != k} g_l)| / sum|m_k|``: the share of aspect k's
  selection that is another aspect's gold rationale (lower is better); ``leak_<l>`` per other
  aspect is the precision of ``m_k`` against ``g_l``.

``"_all"`` holds the macro averages over aspects, plus ``overlap`` (mean over aspect pairs of
the Jaccard index of their masks, pooled over tokens, percent), ``switches`` (mean number of
label changes per review, the label of a token being its first selecting aspect or "none")
and ``n_reviews``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import combinations

import numpy as np

__all__ = ["rating_scores", "rationale_scores"]


def _div(a: float, b: float, empty: float) -> float:
    return 100.0 * a / b if b > 0 else empty


def _f1(p: float, r: float) -> float:
    if math.isnan(p) or math.isnan(r):
        return math.nan
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def _stack(pred: Sequence[np.ndarray], gold: Sequence[np.ndarray],
           k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if len(pred) != len(gold):
        raise ValueError(f"{len(pred)} predicted masks but {len(gold)} gold masks")
    ps, gs, ids = [], [], []
    for i, (p, g) in enumerate(zip(pred, gold)):
        p, g = np.asarray(p, dtype=bool), np.asarray(g, dtype=bool)
        if p.ndim != 2 or p.shape != g.shape or p.shape[0] != k:
            raise ValueError(f"review {i}: predicted mask {p.shape} and gold mask {g.shape} "
                             f"must both be (K={k}, L)")
        ps.append(p)
        gs.append(g)
        ids.append(np.full(p.shape[1], i))
    if not ps:
        return np.zeros((k, 0), bool), np.zeros((k, 0), bool), np.zeros(0, int)
    return np.concatenate(ps, axis=1), np.concatenate(gs, axis=1), np.concatenate(ids)


def rationale_scores(pred: Sequence[np.ndarray], gold: Sequence[np.ndarray],
                     aspects: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per-aspect sparsity, precision, recall, F1 and leakage of predicted rationales.

    Args:
        pred: per review a ``(K, L_i)`` boolean predicted mask.
        gold: per review a ``(K, L_i)`` boolean gold mask (same shapes).
        aspects: the K aspect names (the rows' order).

    Returns:
        ``{aspect: {"sparsity", "precision", "recall", "f1", "leakage", "leak_<other>"...},
        "_all": {macro averages, "overlap", "switches", "n_reviews"}}`` (percent, see the
        module docstring).

    Raises:
        ValueError: mismatched counts or shapes.

    """
    aspects = list(aspects)
    k = len(aspects)
    if k == 0:
        raise ValueError("rationale_scores needs at least one aspect")
    m, g, ids = _stack(pred, gold, k)
    total = m.shape[1]
    out: dict[str, dict[str, float]] = {}
    for a_i, a in enumerate(aspects):
        sel = float(m[a_i].sum())
        tp = float((m[a_i] & g[a_i]).sum())
        p = _div(tp, sel, 0.0)
        r = _div(tp, float(g[a_i].sum()), math.nan)
        others = np.zeros(total, bool)
        row = {"sparsity": _div(sel, total, math.nan), "precision": p, "recall": r,
               "f1": _f1(p, r)}
        for b_i, b in enumerate(aspects):
            if b_i != a_i:
                others |= g[b_i]
                row[f"leak_{b}"] = _div(float((m[a_i] & g[b_i]).sum()), sel, 0.0)
        row["leakage"] = _div(float((m[a_i] & others).sum()), sel, 0.0) if k > 1 else 0.0
        out[a] = row
    keys = ("sparsity", "precision", "recall", "f1", "leakage")
    overall = {key: float(np.mean([out[a][key] for a in aspects])) for key in keys}
    pairs = list(combinations(range(k), 2))
    jac = []
    for a_i, b_i in pairs:
        union = float((m[a_i] | m[b_i]).sum())
        jac.append(_div(float((m[a_i] & m[b_i]).sum()), union, 0.0))
    overall["overlap"] = float(np.mean(jac)) if jac else 0.0
    overall["switches"] = _switches(m, ids, len(pred))
    overall["n_reviews"] = float(len(pred))
    out["_all"] = overall
    return out


def _switches(m: np.ndarray, ids: np.ndarray, n: int) -> float:
    """Mean number of label changes per review (label = first selecting aspect, or none)."""
    if n == 0:
        return 0.0
    k = m.shape[0]
    labels = np.where(m.any(axis=0), m.argmax(axis=0), k)
    same_review = ids[1:] == ids[:-1]
    changes = (labels[1:] != labels[:-1]) & same_review
    return float(changes.sum()) / n


def rating_scores(pred: np.ndarray, target: np.ndarray,
                  aspects: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per-aspect MSE and binarised accuracy of predicted ratings.

    Accuracy follows the binary Beer protocol: targets ``>= 0.6`` are positive, ``<= 0.4``
    negative, the others are left out; a prediction is positive when ``>= 0.5``. NaN targets
    are ignored everywhere; a statistic with no usable target is NaN.

    Args:
        pred: ``(N, K)`` predicted ratings.
        target: ``(N, K)`` true ratings in ``[0, 1]`` (NaN = missing).
        aspects: the K aspect names.

    Returns:
        ``{aspect: {"mse", "accuracy", "n"}, "_all": {"mse", "accuracy"}}`` (macro averages,
        NaN aspects skipped).

    Raises:
        ValueError: shapes that differ or do not match ``aspects``.

    """
    aspects = list(aspects)
    pred = np.asarray(pred, dtype=float)
    target = np.asarray(target, dtype=float)
    if pred.ndim != 2 or pred.shape != target.shape or pred.shape[1] != len(aspects):
        raise ValueError(f"predictions {pred.shape} and targets {target.shape} must both be "
                         f"(N, K={len(aspects)})")
    out: dict[str, dict[str, float]] = {}
    for j, a in enumerate(aspects):
        ok = ~np.isnan(target[:, j])
        t, p = target[ok, j], pred[ok, j]
        mse = float(np.mean((p - t) ** 2)) if ok.any() else math.nan
        binary = (t >= 0.6) | (t <= 0.4)
        acc = (float(np.mean((p[binary] >= 0.5) == (t[binary] >= 0.6)))
               if binary.any() else math.nan)
        out[a] = {"mse": mse, "accuracy": acc, "n": float(ok.sum())}
    out["_all"] = {key: float(np.nanmean([out[a][key] for a in aspects]))
                   if any(not math.isnan(out[a][key]) for a in aspects) else math.nan
                   for key in ("mse", "accuracy")}
    return out
