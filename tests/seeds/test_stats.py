"""Seed statistics against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tamis.seeds.stats import (
    Observation,
    accuracy_spread,
    bootstrap_accuracy,
    bootstrap_difference_two_way,
    bootstrap_relative_gain,
    centroid_variance_explained,
    chi_square,
    entropy_bits,
    per_seed_change,
    placement_entropy,
    placement_heatmaps,
    seed_reliability,
    top_seeds,
    two_way_replicates,
)


def _obs(category, seed, outcomes, prompt_prefix="p"):
    return [Observation(category, seed, f"{prompt_prefix}{i}", c) for i, c in enumerate(outcomes)]


def test_reliability_top_and_failures_excluded():
    obs = _obs("count=2", 0, [True] * 8 + [False] * 2 + [None] * 3)
    obs += _obs("count=2", 1, [True] * 2 + [False] * 8)
    obs += _obs("count=2", 2, [True] * 8 + [False] * 2 + [True] * 2)  # 10/12
    rel = seed_reliability(obs)
    assert rel["count=2"][0] == {"correct": 8, "n": 10, "failures": 3, "accuracy": 0.8}
    assert rel["count=2"][2]["accuracy"] == pytest.approx(10 / 12)
    assert top_seeds(rel, 2) == {"count=2": [2, 0]}
    spread = accuracy_spread(rel)["count=2"]
    assert spread["range"] == pytest.approx(10 / 12 - 0.2)
    with pytest.raises(ValueError):
        top_seeds(rel, 0)


def test_chi_square_by_hand():
    obs = _obs("c", 0, [True] * 8 + [False] * 2) + _obs("c", 1, [True] * 2 + [False] * 8)
    r = chi_square(obs)["c"]
    # expected 5 in every cell: chi2 = 4 * 3^2 / 5 = 7.2; V = sqrt(7.2 / 20)
    assert r["chi2"] == pytest.approx(7.2) and r["dof"] == 1
    assert r["cramers_v"] == pytest.approx(math.sqrt(7.2 / 20))
    assert r["p"] == pytest.approx(math.erfc(math.sqrt(7.2 / 2)))  # chi2(1) survival
    flat = chi_square(_obs("c", 0, [True] * 3) + _obs("c", 1, [True] * 3))["c"]
    assert flat["p"] == 1.0 and flat["cramers_v"] == 0.0


def test_heatmaps_entropy_and_anova():
    obs = [
        Observation("c", 0, "a", True, ((0.1, 0.1),)),
        Observation("c", 0, "b", True, ((0.1, 0.2),)),
        Observation("c", 1, "a", True, ((0.9, 0.9),)),
        Observation("c", 1, "b", True, ((0.9, 0.8),)),
    ]
    maps = placement_heatmaps(obs, bins=2)
    assert maps[0].tolist() == [[2, 0], [0, 0]] and maps[1].tolist() == [[0, 0], [0, 2]]
    ent = placement_entropy(maps)
    assert ent["mean_per_seed"] == 0.0 and ent["pooled"] == pytest.approx(1.0)
    assert entropy_bits(np.array([1, 1, 1, 1])) == pytest.approx(2.0)
    var = centroid_variance_explained(obs)
    # x: groups {0.1, 0.1} and {0.9, 0.9}: all variance between seeds
    assert var["x"]["eta2"] == pytest.approx(1.0)
    # y: values 0.1, 0.2 | 0.9, 0.8; grand mean 0.5; SS_total = .16+.09+.16+.09 = .5;
    # SS_between = 2 * .35^2 * 2 = .49
    assert var["y"]["eta2"] == pytest.approx(0.49 / 0.5)


def test_bootstrap_point_and_gain():
    base = _obs("c", 0, [True, False, False, False]) + _obs("c", 1, [True, True, False, False])
    arm = _obs("c", 0, [True, True, False, True]) + _obs("c", 1, [True, True, True, False])
    b = bootstrap_accuracy(base, n_boot=200)
    assert b["accuracy"] == pytest.approx(3 / 8) and b["n_prompts"] == 4
    assert b["lo"] <= b["accuracy"] <= b["hi"]
    g = bootstrap_relative_gain(base, arm, n_boot=200)
    assert g["gain"] == pytest.approx((6 / 8 - 3 / 8) / (3 / 8))
    assert g["lo"] <= g["gain"] <= g["hi"]
    assert g["difference"] == pytest.approx(6 / 8 - 3 / 8)
    assert g["diff_lo"] <= g["difference"] <= g["diff_hi"]
    zero = _obs("c", 0, [False, False]) + _obs("c", 1, [False, False])
    z = bootstrap_relative_gain(zero, arm[:2] + arm[4:6], n_boot=200)
    assert z["difference"] == pytest.approx(1.0) and not np.isfinite(z["gain"])
    with pytest.raises(ValueError, match="share no judged prompt"):
        bootstrap_relative_gain(base, _obs("c", 0, [True], "q"))


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 3), st.integers(0, 2**16))
def test_two_way_replicates_equal_the_expanded_resample(n_p, n_s, n_b, seed):
    """Product weights == accuracy over the explicitly expanded (prompt, seed) resample."""
    rng = np.random.default_rng(seed)
    judged = rng.integers(1, 4, size=(n_p, n_s))
    cells = [np.stack([rng.integers(0, judged + 1), judged], -1).astype(float) for _ in "ba"]
    w_p = rng.multinomial(n_p, np.full(n_p, 1 / n_p), size=n_b).astype(float)
    w_s = rng.multinomial(n_s, np.full(n_s, 1 / n_s), size=n_b).astype(float)
    got = two_way_replicates(cells[0], cells[1], w_p, w_s)
    for r in range(n_b):
        ps = [p for p in range(n_p) for _ in range(int(w_p[r, p]))]
        ss = [s for s in range(n_s) for _ in range(int(w_s[r, s]))]
        for x, g in zip(cells, got):
            num = sum(x[p, s, 0] for p in ps for s in ss)
            den = sum(x[p, s, 1] for p in ps for s in ss)
            assert g[r] == pytest.approx(num / den)


def _seeded(acc_by_seed, prompts=12):
    """Outcome decided by the seed alone: seed s is right on the first acc * prompts prompts."""
    return [Observation("count=2", s, f"p{i}", i < round(a * prompts))
            for s, a in enumerate(acc_by_seed) for i in range(prompts)]


def test_two_way_difference_point_failures_and_width():
    base = _seeded([0.25, 0.5, 0.25, 0.5, 0.25, 0.5])
    arm = _seeded([0.75, 0.25, 0.75, 0.25, 0.75, 0.5])
    arm.append(Observation("count=2", 0, "p0", None))  # a failure changes nothing
    two = bootstrap_difference_two_way(base, arm, n_boot=2000)
    assert two["acc_base"] == pytest.approx(2.25 / 6) and two["acc_arm"] == pytest.approx(3.25 / 6)
    assert two["difference"] == pytest.approx(1 / 6)
    assert two["gain"] == pytest.approx(1 / 2.25)
    assert (two["n_prompts"], two["n_seeds"]) == (12, 6)
    assert two["lo"] < two["difference"] < two["hi"]
    # the seed decides the outcome here, so ignoring seed resampling understates the spread
    prompts_only = bootstrap_relative_gain(base, arm, n_boot=2000)
    assert two["hi"] - two["lo"] > prompts_only["diff_hi"] - prompts_only["diff_lo"]
    assert prompts_only["diff_lo"] > 0  # conditional on these six seeds the arm is ahead,
    assert two["lo"] < 0 < two["hi"]  # but with 3 of 6 seeds better and 2 worse, not for new ones
    with pytest.raises(ValueError, match="no judged"):
        bootstrap_difference_two_way(base, _obs("count=2", 99, [True], "q"))


def test_per_seed_change_by_hand():
    base = _seeded([0.25, 0.5, 0.75])
    arm = _seeded([0.5, 0.5, 0.5])  # pulls every seed to the middle: the regression signature
    ch = per_seed_change(base, arm)
    assert (ch["n_seeds"], ch["better"], ch["worse"]) == (3, 1, 1)
    assert ch["corr_with_base"] == pytest.approx(-1.0)
    assert ch["sd_arm"] == 0.0 and ch["sd_base"] == pytest.approx(np.std([0.25, 0.5, 0.75]))
    up = per_seed_change(base, _seeded([0.5, 0.75, 1.0]))  # every seed raised alike
    assert up["better"] == 3 and math.isnan(up["corr_with_base"])
    with pytest.raises(ValueError, match="no judged"):
        per_seed_change(base, _obs("count=2", 99, [True], "q"))
