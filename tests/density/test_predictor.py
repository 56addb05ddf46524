import numpy as np
import pytest
import torch

from tamis.density.predictor import (
    DensityPredictor,
    load_predictor,
    save_predictor,
    train_predictor,
)
from tamis.density.pseudo_density import pseudo_density


def test_predictor_learns_density_and_roundtrips(tmp_path):
    from scipy import stats

    from tamis.density.toys import gaussian_mixture

    x, _ = gaussian_mixture(2000, seed=0)
    rho = pseudo_density(x, k=20)
    model, hist = train_predictor(x, rho, hidden=(64, 64), epochs=30, patience=30, seed=0)
    with torch.no_grad():
        pred = model(torch.from_numpy(x)).numpy()
    assert stats.spearmanr(pred, rho).statistic > 0.85
    assert hist.val_mse[hist.best_epoch] < np.var(rho)
    path = save_predictor(model, tmp_path / "sub" / "pred.safetensors")
    assert not list(path.parent.glob("*.tmp"))  # atomic write leaves no temporary file
    loaded = load_predictor(path)
    with torch.no_grad():
        np.testing.assert_allclose(loaded(torch.from_numpy(x)).numpy(), pred, rtol=1e-6)


def test_predictor_is_differentiable_and_checks_shape():
    m = DensityPredictor(4, (8,))
    x = torch.randn(3, 4, requires_grad=True)
    m(x).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        m(torch.randn(3, 5))


def test_train_predictor_bad_input():
    with pytest.raises(ValueError, match="densities"):
        train_predictor(np.zeros((10, 2)), np.zeros(9))
    with pytest.raises(ValueError, match="NaN"):
        train_predictor(np.zeros((10, 2)), np.full(10, np.nan))


def test_load_rejects_other_files(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "x.safetensors"
    save_file({"a": torch.zeros(1)}, str(p))
    with pytest.raises(ValueError, match="not a tamis density predictor"):
        load_predictor(p)
