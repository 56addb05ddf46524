"""Property tests of the public entry points against the brute-force references."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from tamis.density.metrics import prdc
from tamis.density.pseudo_density import pseudo_density

from .conftest import brute_knn, brute_prdc

# well-separated values (a 1/8 grid plus a per-row jitter) so that float32 ties are unlikely
_floats = st.integers(-32, 32).map(lambda v: v / 8)


def _features(n_min=6, n_max=40, d=3):
    return st.integers(n_min, n_max).flatmap(
        lambda n: arrays(np.float64, (n, d), elements=_floats)
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(x=_features(), k=st.integers(1, 5))
def test_pseudo_density_properties(x, k):
    dist = brute_knn(x, k)[0].mean(axis=1)
    if (dist == 0).any():
        with pytest.warns(UserWarning) if not (dist == 0).all() else pytest.raises(ValueError):
            pseudo_density(x, k=k)
        return
    rho = pseudo_density(x, k=k)
    assert rho.shape == (len(x),) and np.isfinite(rho).all()
    assert rho.mean() == pytest.approx(1.0)
    expected = (1 / dist) / (1 / dist).mean()
    np.testing.assert_allclose(rho, expected, rtol=2e-3, atol=1e-6)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(real=_features(), fake=_features(), k=st.integers(1, 5), seed=st.integers(0, 10))
def test_prdc_matches_reference(real, fake, k, seed):
    rng = np.random.default_rng(seed)
    real = real + rng.normal(scale=0.05, size=real.shape)  # break exact ties
    fake = fake + rng.normal(scale=0.05, size=fake.shape)
    got = prdc(real=real, fake=fake, k=k)
    ref = brute_prdc(real, fake, k)
    for key in ref:
        # density counts, per fake sample, the real balls containing it: at most N_real / k
        assert 0 <= got[key] <= len(real) / k if key == "density" else 0 <= got[key] <= 1
        assert got[key] == pytest.approx(ref[key], abs=0.05), key


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ref=_features(n_min=3), q=_features(n_min=1, n_max=10), k=st.integers(1, 3))
def test_knn_distances_match_reference(ref, q, k):
    from tamis.density.knn import knn

    d, i = knn(ref, k, q)
    bd, _ = brute_knn(ref, k, q)
    np.testing.assert_allclose(d, bd, atol=1e-3)
    # returned indices really are at the returned distances
    np.testing.assert_allclose(np.linalg.norm(q[:, None] - ref[i], axis=2), d, atol=1e-3)
    ds, is_ = knn(ref, min(k, len(ref) - 1))
    assert not (is_ == np.arange(len(ref))[:, None]).any()


@settings(max_examples=60, deadline=None)
@given(scores=arrays(np.float64, st.integers(1, 50), elements=st.floats(-5, 5)),
       tau=st.floats(-5, 5), w=st.floats(1e-3, 1e3), seed=st.integers(0, 100))
def test_importance_accept_rule(scores, tau, w, seed):
    from tamis.density.sampling import importance_accept

    acc = importance_accept(scores, tau, w, np.random.default_rng(seed))
    assert acc.shape == scores.shape
    if w > 1:
        assert acc[scores > tau].all()
    else:
        assert acc[scores < tau].all()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(a=_features(n_min=3), b=_features(n_min=3))
def test_frechet_non_negative_and_symmetric(a, b):
    from tamis.density.metrics import frechet_distance

    ab, ba = frechet_distance(real=a, fake=b), frechet_distance(real=b, fake=a)
    assert ab >= 0 and np.isfinite(ab)
    assert ab == pytest.approx(ba, rel=1e-3, abs=1e-3)
