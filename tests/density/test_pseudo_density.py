import numpy as np
import pytest
from scipy import stats

from tamis.density.pseudo_density import (
    PseudoDensity,
    knn_mean_distance,
    pseudo_density,
    threshold_from_percentile,
)

from .conftest import brute_knn


def test_matches_brute_force_formula(rng):
    x = rng.normal(size=(200, 3))
    k = 10
    d = brute_knn(x, k)[0].mean(axis=1)
    expected = len(x) * (1 / d) / (1 / d).sum()
    np.testing.assert_allclose(pseudo_density(x, k=k), expected, rtol=1e-4)
    np.testing.assert_allclose(knn_mean_distance(x, k), d, rtol=1e-4)


@pytest.mark.parametrize("power", [0.5, 1.0, 3.0])
def test_mean_is_one_and_ranking_independent_of_power(rng, power):
    x = rng.normal(size=(300, 4))
    rho = pseudo_density(x, k=5, power=power)
    assert rho.mean() == pytest.approx(1.0)
    base = pseudo_density(x, k=5)
    assert stats.spearmanr(rho, base).statistic == pytest.approx(1.0)


def test_scale_and_translation_invariant(rng):
    x = rng.normal(size=(200, 5))
    np.testing.assert_allclose(pseudo_density(x), pseudo_density(x * 7.5 + 3), rtol=1e-3)


def test_self_is_excluded():
    # an isolated point far from a cluster: with self included its distance would be smaller
    x = np.vstack([np.zeros((1, 2)) + 100.0, np.random.default_rng(0).normal(size=(50, 2))])
    d = knn_mean_distance(x, 1)
    assert d[0] > 90


def test_query_scores_use_reference_normaliser(rng):
    x = rng.normal(size=(500, 2))
    pd = PseudoDensity(k=10).fit(x)
    near, far = pd.score(np.zeros((1, 2))), pd.score(np.full((1, 2), 4.0))
    assert near[0] > 1.5 and far[0] < 0.5
    # scoring a point not in the reference: mean distance to k nearest reference points
    d = brute_knn(x, 10, np.zeros((1, 2)))[0].mean()
    assert near[0] == pytest.approx((1 / d) / pd.normaliser_, rel=1e-4)


def test_density_tracks_true_density_2d(rng):
    from tamis.density.toys import gaussian_mixture

    x, true = gaussian_mixture(3000, seed=0)
    rho = pseudo_density(x, k=20)
    assert stats.spearmanr(rho, true).statistic > 0.8


def test_threshold_percentile():
    assert threshold_from_percentile(np.arange(101.0), 30) == pytest.approx(30)
    with pytest.raises(ValueError, match="percentile"):
        threshold_from_percentile([1.0, 2.0], 120)
    with pytest.raises(RuntimeError, match="fit"):
        PseudoDensity().score(np.zeros((1, 2)))
