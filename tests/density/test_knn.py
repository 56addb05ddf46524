import numpy as np
import pytest

from tamis.density.knn import knn

from .conftest import brute_knn


@pytest.mark.parametrize("k", [1, 5, 20])
def test_exact_self_knn_matches_brute_force(rng, k):
    x = rng.normal(size=(300, 8))
    d, i = knn(x, k)
    bd, bi = brute_knn(x, k)
    np.testing.assert_allclose(d, bd, rtol=1e-4, atol=1e-4)
    assert (i == bi).mean() > 0.99  # index ties aside
    assert not (i == np.arange(300)[:, None]).any()  # self excluded


def test_exact_query_knn_matches_brute_force(rng):
    x, q = rng.normal(size=(400, 5)), rng.normal(size=(50, 5))
    d, i = knn(x, 7, q)
    bd, bi = brute_knn(x, 7, q)
    np.testing.assert_allclose(d, bd, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(i, bi)


def test_batching_does_not_change_results(rng):
    x = rng.normal(size=(257, 4))
    a = knn(x, 3, batch_size=10_000)
    b = knn(x, 3, batch_size=13)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_allclose(a[0], b[0])


def test_ivf_is_close_to_exact(rng):
    x = rng.normal(size=(5000, 8)).astype(np.float32)
    d_exact, _ = knn(x, 10)
    d_ivf, _ = knn(x, 10, method="ivf", nlist=64, nprobe=16)
    # approximate distances can only be >= exact ones, and the mean distance is close
    assert (d_ivf >= d_exact - 1e-4).all()
    rel = d_ivf.mean(1) / d_exact.mean(1) - 1
    assert np.median(rel) < 0.01 and rel.mean() < 0.03
    d_all, _ = knn(x, 10, method="ivf", nlist=64, nprobe=64)  # every cell visited: exact
    np.testing.assert_allclose(d_all, d_exact, atol=1e-4)


def test_duplicates_keep_zero_distance_neighbour():
    x = np.array([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    d, i = knn(x, 1)
    assert d[0, 0] == 0 and i[0, 0] == 1
    assert d[1, 0] == 0 and i[1, 0] == 0


def test_many_duplicates_self_dropped_once():
    x = np.zeros((6, 3))
    d, i = knn(x, 5)
    assert (d == 0).all()
    for row in range(6):
        assert sorted(i[row]) == sorted(set(range(6)) - {row}) or len(set(i[row])) == 5


def test_progress_callback(rng):
    seen = []
    knn(rng.normal(size=(100, 3)), 2, batch_size=30, progress=seen.append)
    assert seen == [30, 60, 90, 100]
