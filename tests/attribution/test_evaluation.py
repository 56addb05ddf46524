"""LDS and tail-patch: hand-computed values, the sign convention, caching, fuzzing, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import typer
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import TensorDataset
from typer.testing import CliRunner

from attribution.testable_tasks import ClassificationTask
from tamis.attribution import Attributor, BuildConfig, ProjectionConfig, ScoreConfig
from tamis.attribution.evaluation import (
    bootstrap_ci,
    ground_truth,
    ground_truth_key,
    lds,
    lds_difference,
    lds_per_query,
    lds_predictions,
    load_masks,
    make_masks,
    save_masks,
    tail_patch,
    tail_patch_summary,
)
from tamis.attribution.evaluation_cli import evaluate


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny models: thread start-up dominates, and the CI machine is shared
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --- masks -------------------------------------------------------------------------------
def test_masks_fixed_size_deterministic_and_round_trip(tmp_path):
    masks = make_masks(101, 7, alpha=0.5, seed=3)
    assert masks.shape == (7, 101) and masks.dtype == bool
    assert (masks.sum(1) == 50).all()  # round(50.5) = 50, banker's rounding
    assert np.array_equal(masks, make_masks(101, 7, alpha=0.5, seed=3))
    assert not np.array_equal(masks, make_masks(101, 7, alpha=0.5, seed=4))
    assert np.array_equal(load_masks(save_masks(tmp_path / "m.npy", masks)), masks)
    with pytest.raises(ValueError, match="alpha"):
        make_masks(10, 3, alpha=1.0)


# --- LDS against a hand-computed value ----------------------------------------------------
def test_lds_hand_computed():
    scores = np.array([[1.0, 2.0, 3.0, 4.0]])  # one query, N = 4
    masks = np.array(
        [[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1], [1, 0, 0, 1], [1, 0, 1, 0]], dtype=bool
    )
    pred = lds_predictions(scores, masks)[:, 0]
    assert pred.tolist() == [3.0, 5.0, 7.0, 5.0, 4.0]
    # losses chosen so that -loss ranks are [1, 3, 5, 2, 4] vs prediction ranks
    # [1, 3.5, 5, 3.5, 2]: rho = pearson of the ranks. By hand: deviations from the mean
    # rank 3 are [-2, .5, 2, .5, -1] and [-2, 0, 2, -1, 1], so rho = 6.5 / sqrt(9.5 * 10)
    losses = np.array([[5.0], [3.0], [1.0], [4.0], [2.0]])
    rp = np.array([1, 3.5, 5, 3.5, 2])
    rt = np.array([1, 3, 5, 2, 4])
    expected = np.corrcoef(rp, rt)[0, 1]
    assert expected == pytest.approx(6.5 / np.sqrt(95.0))
    res = lds(scores, masks, losses)
    assert res.mean == pytest.approx(expected) and res.n_queries == 1 and res.n_subsets == 5
    # a gain target flips the sign; a perfectly anti-monotone loss gives rho = 1
    assert lds(scores, masks, losses, target="gain").mean == pytest.approx(-expected)
    perfect = -np.array([[3.0], [5.0], [7.0], [5.0], [4.0]])
    assert lds(scores, masks, perfect).mean == pytest.approx(1.0)


def test_lds_constant_query_is_nan_and_dropped():
    scores = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    masks = make_masks(3, 6, seed=1)
    truth = np.random.default_rng(0).normal(size=(6, 2))
    rho = lds_per_query(scores, masks, truth)
    assert np.isnan(rho[1])
    assert lds(scores, masks, truth).n_queries == 1


def test_lds_difference_by_hand_and_paired():
    a = np.array([0.5, 0.2, np.nan, 0.9])
    b = np.array([0.4, 0.3, 0.1, 0.6])
    out = lds_difference(a, b, n_boot=500)
    # query 2 is undefined under a, so it is left out: diffs 0.1, -0.1, 0.3
    assert out["n_queries"] == 3 and out["diff"] == pytest.approx(0.1)
    assert out["wins"] == pytest.approx(2 / 3) and out["lo"] <= 0.1 <= out["hi"]
    # paired: a shared per-query difficulty cancels, so a constant lead has a zero-width CI
    # even though the two separate CIs overlap almost entirely
    rng = np.random.default_rng(0)
    base = rng.uniform(-0.5, 0.9, size=200)
    res = lds_difference(base + 0.01, base)
    assert res["diff"] == pytest.approx(0.01)
    assert res["lo"] == pytest.approx(0.01) and res["hi"] == pytest.approx(0.01)
    lo_a, hi_a = bootstrap_ci(base + 0.01)
    lo_b, hi_b = bootstrap_ci(base)
    assert lo_a < hi_b and lo_b < hi_a


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(-1, 1), st.floats(-1, 1)), min_size=1, max_size=30))
def test_lds_difference_is_antisymmetric_and_its_ci_holds_the_mean(pairs):
    a, b = (np.array(x) for x in zip(*pairs))
    ab, ba = lds_difference(a, b, n_boot=200), lds_difference(b, a, n_boot=200)
    assert ab["diff"] == pytest.approx(-ba["diff"], abs=1e-12)
    assert ab["n_queries"] == len(pairs)
    assert ab["lo"] - 1e-12 <= ab["diff"] <= ab["hi"] + 1e-12


def test_lds_difference_accepts_results_and_names_bad_input():
    scores = np.random.default_rng(1).normal(size=(4, 6))
    masks = make_masks(6, 8, seed=2)
    truth = np.random.default_rng(3).normal(size=(8, 4))
    ra, rb = lds(scores, masks, truth), lds(-scores, masks, truth)
    out = lds_difference(ra, rb)
    assert out["diff"] == pytest.approx(ra.mean - rb.mean)
    with pytest.raises(ValueError, match="same queries"):
        lds_difference(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="no query"):
        lds_difference(np.array([np.nan]), np.array([0.2]))


def test_lds_shape_errors():
    with pytest.raises(ValueError, match="disagree"):
        lds_predictions(np.zeros((2, 3)), np.zeros((4, 5)))
    with pytest.raises(ValueError, match="ground truth"):
        lds(np.zeros((2, 3)), np.ones((4, 3)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="target"):
        lds(np.zeros((2, 3)), np.ones((4, 3)), np.zeros((4, 2)), target="prob")


# --- hypothesis fuzz ----------------------------------------------------------------------
def test_identical_masks_get_identical_predictions():
    # found by hypothesis: subsets 6 and 8 are the same mask; a BLAS product rounded their sums
    # differently, so scaling the scores by 3 reordered a tie and changed the LDS
    rng = np.random.default_rng(2888)
    scores, masks = rng.normal(size=(4, 10)), rng.random((9, 10)) < 0.5
    assert (masks[6] == masks[8]).all()
    for scale in (1.0, 3.0):
        pred = lds_predictions(scale * scores, masks)
        assert (pred[6] == pred[8]).all()
    truth = rng.normal(size=(9, 4))
    np.testing.assert_allclose(lds_per_query(3 * scores, masks, truth),
                               lds_per_query(scores, masks, truth), atol=1e-12)


@example(q=4, n=10, m=9, seed=2888, scale=3.0)
@settings(max_examples=60, deadline=None)
@given(
    q=st.integers(1, 4),
    n=st.integers(2, 12),
    m=st.integers(3, 10),
    seed=st.integers(0, 10**6),
    scale=st.floats(1e-3, 1e3),
)
def test_lds_fuzz_invariances(q, n, m, seed, scale):
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=(q, n))
    masks = rng.random((m, n)) < 0.5
    truth = rng.normal(size=(m, q))
    rho = lds_per_query(scores, masks, truth)
    finite = np.isfinite(rho)
    assert (np.abs(rho[finite]) <= 1 + 1e-12).all()
    # invariant to positive scaling of scores and to a monotone map of the ground truth
    np.testing.assert_allclose(
        lds_per_query(scale * scores, masks, truth)[finite], rho[finite], atol=1e-9
    )
    np.testing.assert_allclose(
        lds_per_query(scores, masks, np.exp(truth))[finite], rho[finite], atol=1e-9
    )
    # flipping the scores' sign flips rho; so does switching loss <-> gain
    np.testing.assert_allclose(
        lds_per_query(-scores, masks, truth)[finite], -rho[finite], atol=1e-9
    )
    np.testing.assert_allclose(
        lds_per_query(scores, masks, truth, "gain")[finite], -rho[finite], atol=1e-9
    )
    lo, hi = bootstrap_ci(rho, n_boot=200, seed=seed)
    if finite.any():
        assert lo <= hi and lo >= -1 - 1e-12 and hi <= 1 + 1e-12


def test_bootstrap_ci_brackets_the_mean_and_shrinks():
    rng = np.random.default_rng(0)
    small, big = rng.normal(0.3, 1, 20), rng.normal(0.3, 1, 2000)
    lo_s, hi_s = bootstrap_ci(small)
    lo_b, hi_b = bootstrap_ci(big)
    assert lo_s < small.mean() < hi_s and lo_b < big.mean() < hi_b
    assert hi_b - lo_b < (hi_s - lo_s) / 3


# --- ground truth cache -------------------------------------------------------------------
def test_ground_truth_cached_keyed_and_resumable(tmp_path):
    masks = make_masks(10, 5, seed=0)
    calls = []

    def retrain(mask, seed):
        calls.append(seed)
        return np.array([mask[:5].sum(), mask.sum() + 0.1 * seed])

    setting = {"name": "toy", "epochs": 1}
    truth = ground_truth(retrain, masks, tmp_path, setting, progress=False)
    assert truth.shape == (5, 2) and calls == [0, 1, 2, 3, 4]
    again = ground_truth(retrain, masks, tmp_path, setting, progress=False)
    assert np.array_equal(truth, again) and len(calls) == 5  # read from the cache
    key = ground_truth_key(setting, masks)
    assert key != ground_truth_key({"name": "toy", "epochs": 2}, masks)
    assert key != ground_truth_key(setting, make_masks(10, 5, seed=1))

    # an interrupted run resumes after its last finished subset
    calls.clear()

    def flaky(mask, seed):
        if seed == 3:
            raise RuntimeError("killed")
        return retrain(mask, seed)

    with pytest.raises(RuntimeError):
        ground_truth(flaky, masks, tmp_path, {"name": "other"}, progress=False)
    calls.clear()
    ground_truth(retrain, masks, tmp_path, {"name": "other"}, progress=False)
    assert calls == [3, 4]


def test_ground_truth_averages_seeds(tmp_path):
    masks = make_masks(6, 3, seed=0)
    truth = ground_truth(
        lambda mask, seed: np.array([float(seed)]), masks, tmp_path, {}, n_seeds=2, progress=False
    )
    assert truth[:, 0].tolist() == [0.5, 2.5, 4.5]


# --- the sign convention on a toy with a known answer -------------------------------------
def _toy(seed: int = 0):
    """Logistic regression; the query is class 1 at x*; half of the training points sit near
    x* with label 1 (they help the query), the other half near x* with label 0 (they hurt)."""
    g = torch.Generator().manual_seed(seed)
    x_star = torch.tensor([2.0, -1.0, 0.5])
    n = 40
    x = x_star + 0.7 * torch.randn(n, 3, generator=g)
    y = torch.tensor([1] * (n // 2) + [0] * (n // 2))
    far = torch.randn(30, 3, generator=g) * 2 - x_star
    x = torch.cat([x, far]).double()
    y = torch.cat([y, (far[:, 0] > 0).long()])
    queries = TensorDataset(x_star[None].double(), torch.tensor([1]))
    return TensorDataset(x, y), queries


def _fit(x, y, seed=0, steps=150):
    torch.manual_seed(seed)
    model = nn.Linear(3, 2).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.5, weight_decay=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model


def test_sign_convention_on_a_known_toy(tmp_path):
    train, queries = _toy()
    x, y = train.tensors
    model, task = _fit(x, y), ClassificationTask()
    att = Attributor(
        task,
        model,
        tmp_path / "store",
        method="grad_dot",
        projection=ProjectionConfig(kind="identity"),
        dtype="float64",
        build=BuildConfig(progress=False, compute_dtype="float64"),
        compute_dtype=torch.float64,
    )
    scores = att.fit(train).score(queries, ScoreConfig(progress=False)).scores.numpy()
    # known answer: the same-label neighbours help (positive), the flipped ones hurt
    assert (scores[0, :20] > 0).mean() > 0.9 and (scores[0, 20:40] < 0).mean() > 0.9

    def retrain(mask, seed):
        m = torch.from_numpy(mask)
        return task.compute_measurement(queries.tensors, _fit(x[m], y[m], seed)).detach().numpy()

    masks = make_masks(len(train), 12, seed=0)
    truth = ground_truth(retrain, masks, tmp_path / "gt", {"toy": 1}, progress=False)
    good = lds(scores, masks, truth)
    assert good.mean > 0.6  # higher score = helps = lowers the query loss
    assert lds(-scores, masks, truth).mean == pytest.approx(-good.mean)

    # tail-patch: a step on the top-k helpful examples raises the query's log-probability
    top = np.argsort(-scores, axis=1)[:, :5]
    before = [p.clone() for p in model.parameters()]
    tp = tail_patch(task, model, train, queries, top, k=5, lr=0.5, n_random=8, progress=False)
    assert tp.mean_top > 0 and tp.mean_top > tp.mean_random and tp.win_rate == 1.0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    worst = np.argsort(scores, axis=1)[:, :5]
    tp_bad = tail_patch(task, model, train, queries, worst, k=5, lr=0.5, progress=False)
    assert tp_bad.mean_top < 0

    # the CLI computes the same numbers from files
    np.save(tmp_path / "grad_dot.npy", scores)
    save_masks(tmp_path / "masks.npy", masks)
    np.save(tmp_path / "truth.npy", truth)
    app = typer.Typer()
    app.command()(evaluate)
    out = tmp_path / "eval.json"
    res = CliRunner().invoke(
        app,
        [
            "--scores",
            str(tmp_path / "grad_dot.npy"),
            "--masks",
            str(tmp_path / "masks.npy"),
            "--ground-truth",
            str(tmp_path / "truth.npy"),
            "--output",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["results"]["grad_dot"]["mean"] == pytest.approx(good.mean)


def test_tail_patch_summary_maths():
    res = tail_patch_summary(np.array([1.0, 2.0, 3.0]), np.array([0.5, 2.5, 1.0]), n_boot=100)
    assert res.mean_top == 2.0 and res.mean_random == pytest.approx(4 / 3)
    assert res.mean_diff == pytest.approx(2 / 3) and res.win_rate == pytest.approx(2 / 3)
    assert res.ci_low <= res.mean_diff <= res.ci_high
    with pytest.raises(ValueError):
        tail_patch_summary(np.zeros(3), np.zeros(2))


def test_ground_truth_reverse_worker_splits_the_subsets(tmp_path):
    from tamis.attribution.evaluation import make_masks

    masks = make_masks(10, 6, seed=1)
    calls: list[int] = []

    def retrain(mask, seed):
        calls.append(seed)
        return mask[:3].astype(float) + seed

    setting = {"name": "toy"}
    # a reverse worker interrupted after the last three subsets ...
    def partial(mask, seed):
        if seed < 3:
            raise KeyboardInterrupt
        return retrain(mask, seed)

    with pytest.raises(KeyboardInterrupt):
        ground_truth(partial, masks, tmp_path, setting, progress=False, reverse=True)
    assert calls == [5, 4, 3]
    # ... and the forward worker retrains only the rest and returns the whole table
    truth = ground_truth(retrain, masks, tmp_path, setting, progress=False)
    assert calls == [5, 4, 3, 0, 1, 2]
    want = np.stack([masks[m, :3].astype(float) + m for m in range(6)])
    np.testing.assert_array_equal(truth, want)
