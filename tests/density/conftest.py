import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    try:
        import faiss

        faiss.omp_set_num_threads(1)
    except ImportError:
        pass


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def brute_knn(ref, k, queries=None):
    """Obviously-right k-NN with scipy (float64), self excluded for a self-query."""
    from scipy.spatial.distance import cdist

    ref = np.asarray(ref, dtype=np.float64)
    q = ref if queries is None else np.asarray(queries, dtype=np.float64)
    d = cdist(q, ref)
    if queries is None:
        np.fill_diagonal(d, np.inf)
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, idx, axis=1), idx


def brute_prdc(real, fake, k):
    """prdc formulas re-derived with full distance matrices (``<=``, self excluded)."""
    from scipy.spatial.distance import cdist

    real = np.asarray(real, dtype=np.float64)
    fake = np.asarray(fake, dtype=np.float64)
    r_real = brute_knn(real, k)[0][:, -1]
    r_fake = brute_knn(fake, k)[0][:, -1]
    d = cdist(real, fake)
    return {
        "precision": float((d <= r_real[:, None]).any(axis=0).mean()),
        "recall": float((d <= r_fake[None, :]).any(axis=1).mean()),
        "density": float((d <= r_real[:, None]).sum() / (k * fake.shape[0])),
        "coverage": float((d.min(axis=1) <= r_real).mean()),
    }
