"""k >= N, duplicates, NaN, mismatched dimensions, misbehaving generators: clear errors."""

import numpy as np
import pytest
import torch

from tamis.density.knn import knn
from tamis.density.metrics import frechet_distance, prdc
from tamis.density.perturb import perturb_latents
from tamis.density.pseudo_density import PseudoDensity, pseudo_density
from tamis.density.sampling import importance_sample


def test_k_too_large():
    x = np.random.default_rng(0).normal(size=(10, 2))
    with pytest.raises(ValueError, match=r"k=10 is too large .* N=10"):
        pseudo_density(x, k=10)
    with pytest.raises(ValueError, match="k=11"):
        knn(x, 11, x[:2])
    knn(x, 10, x[:2])  # k = N is fine when self is not excluded
    with pytest.raises(ValueError, match="fake set"):
        prdc(real=np.random.default_rng(1).normal(size=(50, 2)), fake=x, k=10)
    with pytest.raises(ValueError, match="positive integer"):
        knn(x, 0)


def test_nan_and_inf_features_named():
    x = np.random.default_rng(0).normal(size=(20, 3))
    x[4, 1] = np.nan
    x[7, 0] = np.inf
    with pytest.raises(ValueError, match=r"2 row\(s\) with NaN.*first at row 4"):
        pseudo_density(x, k=3)
    with pytest.raises(ValueError, match="fake has"):
        prdc(real=np.ones((20, 3)) + np.arange(20)[:, None], fake=x, k=3)


def test_mismatched_dims():
    a, b = np.zeros((20, 3)), np.zeros((20, 4))
    with pytest.raises(ValueError, match="D=3.*D=4"):
        prdc(real=a, fake=b)
    with pytest.raises(ValueError, match="dimensions differ"):
        frechet_distance(real=a, fake=b)
    with pytest.raises(ValueError, match="dimensions differ"):
        PseudoDensity(k=2).fit(np.random.default_rng(0).normal(size=(20, 3))).score(b)


def test_wrong_rank_and_empty():
    with pytest.raises(ValueError, match="2-D"):
        pseudo_density(np.zeros(10))
    with pytest.raises(ValueError, match="empty"):
        pseudo_density(np.zeros((0, 3)))


def test_duplicates_clamped_with_warning_or_raise():
    x = np.vstack([np.zeros((5, 2)), np.random.default_rng(0).normal(size=(30, 2)) + 5])
    with pytest.warns(UserWarning, match="clamped"):
        rho = pseudo_density(x, k=3)
    assert np.isfinite(rho).all() and rho.mean() == pytest.approx(1.0)
    assert (rho[:5] == rho.max()).all()  # the duplicates get the highest finite density
    with pytest.raises(ValueError, match="duplicates"):
        pseudo_density(x, k=3, on_zero="raise")
    with pytest.raises(ValueError, match="duplicates"):
        pseudo_density(np.zeros((10, 2)), k=3)  # all identical: nothing to clamp to
    # fewer copies than k: no zero mean distance, nothing to handle
    assert np.isfinite(pseudo_density(x, k=5)).all()


def test_prdc_with_duplicates_is_finite():
    x = np.repeat(np.random.default_rng(0).normal(size=(20, 2)), 3, axis=0)
    out = prdc(real=x, fake=x, k=2)
    assert out["precision"] == 1.0 and np.isfinite(out["density"])


def test_generator_wrong_shape():
    score = lambda x: x.flatten(1).sum(1)  # noqa: E731
    with pytest.raises(ValueError, match="first dimension must be the batch size"):
        perturb_latents(torch.zeros(4, 2), lambda z: z[:2], score, epsilon=0.1, steps=1)
    with pytest.raises(ValueError, match=r"expected \(1, 2\)"):
        importance_sample(lambda z: z, lambda b: torch.zeros(b, 3), score, 4, tau=0.0, w=2.0,
                          image_shape=(1, 2))
    with pytest.raises(TypeError, match="torch.Tensor"):
        importance_sample(lambda z: z.numpy(), lambda b: torch.zeros(b, 3), score, 4, tau=0.0,
                          w=2.0)
    with pytest.raises(ValueError, match="one density per image"):
        importance_sample(lambda z: z, lambda b: torch.zeros(b, 3), lambda x: x, 4, tau=0.0,
                          w=2.0)


def test_bad_weights_and_directions():
    with pytest.raises(ValueError, match="w must be"):
        importance_sample(lambda z: z, lambda b: torch.zeros(b, 3), lambda x: x[:, 0], 4,
                          tau=0.0, w=0.0)
    with pytest.raises(ValueError, match="direction"):
        perturb_latents(torch.zeros(2, 2), lambda z: z, lambda x: x[:, 0], direction="up")
