"""Rationale and rating metrics against hand-computed values and a brute-force reference."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from tamis.rationale.metrics import rating_scores, rationale_scores

A = ["a", "b"]


def _m(*rows):
    return np.array(rows, dtype=bool)


def test_by_hand():
    # review 0: L=4, review 1: L=2 -> 6 tokens
    pred = [_m([1, 1, 0, 0], [0, 0, 1, 0]), _m([1, 0], [0, 1])]
    gold = [_m([1, 0, 0, 0], [0, 0, 1, 1]), _m([0, 0], [1, 1])]
    s = rationale_scores(pred, gold, A)
    # aspect a: selected 3, tp 1, gold 1 -> P 33.3, R 100, F1 50; one selected token (review 1,
    # t0) is gold of b -> leakage 33.3
    assert math.isclose(s["a"]["sparsity"], 50.0)
    assert math.isclose(s["a"]["precision"], 100 / 3)
    assert math.isclose(s["a"]["recall"], 100.0)
    assert math.isclose(s["a"]["f1"], 50.0)
    assert math.isclose(s["a"]["leakage"], 100 / 3) and math.isclose(s["a"]["leak_b"], 100 / 3)
    # aspect b: selected 2, tp 2, gold 4 -> P 100, R 50, F1 66.7; leakage 0
    assert math.isclose(s["b"]["precision"], 100.0) and math.isclose(s["b"]["recall"], 50.0)
    assert math.isclose(s["b"]["f1"], 200 / 3) and s["b"]["leakage"] == 0.0
    assert math.isclose(s["_all"]["f1"], (50 + 200 / 3) / 2)
    # masks disjoint -> overlap 0; labels r0: a a - b ... -> a,a,none,b? r0 = [a, a, b, none]
    # changes: a->b, b->none = 2; r1 = [a, b]: 1 change -> mean 1.5
    assert s["_all"]["overlap"] == 0.0
    assert math.isclose(s["_all"]["switches"], 1.5)
    assert s["_all"]["n_reviews"] == 2.0


def test_empty_cases():
    s = rationale_scores([_m([0, 0], [0, 0])], [_m([0, 0], [1, 0])], A)
    assert s["a"]["precision"] == 0.0 and math.isnan(s["a"]["recall"]) and math.isnan(s["a"]["f1"])
    assert s["b"]["precision"] == 0.0 and s["b"]["recall"] == 0.0 and s["b"]["f1"] == 0.0
    s = rationale_scores([_m([1, 1], [1, 0])], [_m([0, 0], [0, 0])], A)
    assert math.isclose(s["_all"]["overlap"], 50.0)  # |a&b| = 1, |a|b| = 2


def test_shape_errors():
    import pytest

    with pytest.raises(ValueError, match="2 predicted masks but 1 gold"):
        rationale_scores([_m([1], [0])] * 2, [_m([1], [0])], A)
    with pytest.raises(ValueError, match="review 0"):
        rationale_scores([_m([1, 0], [0, 0])], [_m([1], [0])], A)
    with pytest.raises(ValueError, match="K=2"):
        rationale_scores([_m([1, 0])], [_m([1, 0])], A)


def _reference(pred, gold, k):
    """Token-by-token loops: the obviously-right micro averages."""
    out = []
    for a in range(k):
        sel = tp = g = n = 0
        for p, gg in zip(pred, gold):
            for t in range(p.shape[1]):
                n += 1
                sel += p[a, t]
                g += gg[a, t]
                tp += p[a, t] and gg[a, t]
        out.append((100 * sel / n, 100 * tp / sel if sel else 0.0,
                    100 * tp / g if g else math.nan))
    return out


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 3), st.lists(st.integers(1, 7), min_size=1, max_size=5),
       st.integers(0, 2**31 - 1))
def test_matches_reference(k, lengths, seed):
    rng = np.random.default_rng(seed)
    pred = [rng.random((k, n)) < 0.4 for n in lengths]
    gold = [rng.random((k, n)) < 0.3 for n in lengths]
    aspects = [f"x{i}" for i in range(k)]
    s = rationale_scores(pred, gold, aspects)
    for a, (sp, p, r) in zip(aspects, _reference(pred, gold, k)):
        assert math.isclose(s[a]["sparsity"], sp)
        assert math.isclose(s[a]["precision"], p)
        assert (math.isnan(r) and math.isnan(s[a]["recall"])) or math.isclose(s[a]["recall"], r)
        f1 = s[a]["f1"]
        assert math.isnan(f1) or 0.0 <= f1 <= 100.0
        assert 0.0 <= s[a]["leakage"] <= 100.0
    # a perfect prediction scores F1 = 100 wherever gold exists
    s = rationale_scores(gold, gold, aspects)
    for a in aspects:
        assert math.isnan(s[a]["f1"]) or math.isclose(s[a]["f1"], 100.0)


def test_rating_scores():
    pred = np.array([[0.7, 0.1], [0.3, 0.5], [0.55, 0.9]])
    target = np.array([[1.0, 0.0], [0.5, np.nan], [0.2, 1.0]])
    s = rating_scores(pred, target, A)
    assert math.isclose(s["a"]["mse"], (0.09 + 0.04 + 0.1225) / 3)
    # binarised: rows 0 (pos, pred pos: right) and 2 (neg, pred pos: wrong); row 1 left out
    assert math.isclose(s["a"]["accuracy"], 0.5)
    assert math.isclose(s["b"]["mse"], (0.01 + 0.01) / 2) and s["b"]["n"] == 2.0
    assert s["b"]["accuracy"] == 1.0
    assert math.isclose(s["_all"]["accuracy"], 0.75)
    s = rating_scores(pred[:, :1], np.full((3, 1), np.nan), ["a"])
    assert math.isnan(s["a"]["mse"]) and math.isnan(s["_all"]["mse"])
