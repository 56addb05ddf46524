import numpy as np
import pytest
from scipy import linalg

from tamis.density.metrics import ball_counts, density_coverage, frechet_distance, prdc

from .conftest import brute_prdc


@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("scale", [0.5, 1.0, 2.0])
def test_prdc_matches_brute_force(rng, k, scale):
    real = rng.normal(size=(300, 6))
    fake = rng.normal(size=(250, 6)) * scale + 0.3
    got = prdc(real=real, fake=fake, k=k)
    ref = brute_prdc(real, fake, k)
    for key in ref:
        assert got[key] == pytest.approx(ref[key], abs=1e-9), key


def test_ball_counts_exact_and_approximate(rng):
    centers = rng.normal(size=(500, 3))
    radii = rng.uniform(0.1, 2.0, size=500)
    q = rng.normal(size=(80, 3))
    expected = (np.linalg.norm(q[:, None] - centers[None], axis=2) <= radii[None]).sum(axis=1)
    np.testing.assert_array_equal(ball_counts(q, centers, radii, block=7), expected)
    # candidates only: a lower bound, exact once every centre is a candidate
    approx = ball_counts(q, centers, radii, method="ivf", candidates=8)
    assert (approx <= expected).all()
    full = ball_counts(q, centers, radii, method="ivf", candidates=500)
    np.testing.assert_array_equal(full, expected)


def test_prdc_approximate_is_close(rng):
    real, fake = rng.normal(size=(3000, 4)), rng.normal(size=(3000, 4)) * 0.8
    exact = prdc(real=real, fake=fake, k=5)
    approx = prdc(real=real, fake=fake, k=5, method="ivf")
    for key in exact:
        assert approx[key] == pytest.approx(exact[key], abs=0.03), key


def test_prdc_block_size_does_not_matter(rng):
    real, fake = rng.normal(size=(100, 3)), rng.normal(size=(90, 3))
    assert prdc(real=real, fake=fake, block=7) == prdc(real=real, fake=fake, block=1000)


def test_identical_sets_with_le():
    x = np.random.default_rng(1).normal(size=(200, 4))
    out = prdc(real=x, fake=x, k=5)
    assert out["precision"] == 1.0 and out["recall"] == 1.0 and out["coverage"] == 1.0
    # each fake lies in its own twin's ball plus on average k others: density = (k + 1) / k
    assert out["density"] == pytest.approx(6 / 5, abs=1e-9)


def test_density_coverage_agrees_with_prdc(rng):
    real, fake = rng.normal(size=(200, 5)), rng.normal(size=(150, 5)) * 1.3
    a, b = prdc(real=real, fake=fake, k=4), density_coverage(real=real, fake=fake, k=4)
    assert a["density"] == b["density"] and a["coverage"] == b["coverage"]


def test_fidelity_direction_on_gaussians(rng):
    real = rng.normal(size=(1000, 4))
    narrow = prdc(real=real, fake=rng.normal(size=(1000, 4)) * 0.5, k=5)
    wide = prdc(real=real, fake=rng.normal(size=(1000, 4)) * 1.5, k=5)
    assert narrow["precision"] > wide["precision"] and narrow["recall"] < wide["recall"]
    assert narrow["density"] > wide["density"]


def _fd_scipy(a, b):
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = linalg.sqrtm(s1 @ s2).real
    return ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean)


def test_frechet_matches_scipy_formula(rng):
    a = rng.normal(size=(500, 6)) @ rng.normal(size=(6, 6))
    b = rng.normal(size=(400, 6)) * 1.2 + 0.5
    assert frechet_distance(real=a, fake=b) == pytest.approx(_fd_scipy(a, b), rel=1e-4)


def test_frechet_zero_on_same_set_and_batched(rng):
    a = rng.normal(size=(300, 5))
    assert frechet_distance(real=a, fake=a) == pytest.approx(0.0, abs=1e-4)
    from tamis.density.metrics import _moments

    m1, c1 = _moments(a.astype(np.float32), batch=7)
    np.testing.assert_allclose(m1, a.mean(0), atol=1e-6)
    np.testing.assert_allclose(c1, np.cov(a, rowvar=False), atol=1e-5)


def test_prdc_reuses_pseudo_density_radii(rng):
    from tamis.density.pseudo_density import PseudoDensity

    real, fake = rng.normal(size=(300, 4)), rng.normal(size=(200, 4)) * 0.8
    pd = PseudoDensity(k=10).fit(real)
    assert prdc(real=real, fake=fake, k=5, real_radii=pd.kth_neighbour_distance(5)) == prdc(
        real=real, fake=fake, k=5)
    with pytest.raises(ValueError, match="real_radii"):
        prdc(real=real, fake=fake, real_radii=np.ones(3))
    with pytest.raises(ValueError, match="within"):
        pd.kth_neighbour_distance(11)
