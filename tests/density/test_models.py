import pytest
import torch

from tamis.density.config import DDPMConfig, ExtractorConfig, GANConfig
from tamis.density.models import (
    DDPM,
    Discriminator,
    FeatureCNN,
    Generator,
    load_checkpoint,
    save_checkpoint,
    train_extractor,
    train_gan,
)
from tamis.density.perturb import perturb_latents
from tamis.density.predictor import DensityPredictor


def test_shapes_and_roundtrip(tmp_path):
    cfg = GANConfig(latent_dim=4, image_size=8, g_channels=8, d_channels=4)
    g = Generator(cfg).eval()
    x = g(torch.randn(3, 4))
    assert x.shape == (3, 1, 8, 8) and 0 <= x.min() and x.max() <= 1
    assert Discriminator(cfg)(x).shape == (3,)
    path = save_checkpoint(g, tmp_path / "g.safetensors", "generator", cfg.to_dict())
    g2 = load_checkpoint(path)
    z = torch.randn(2, 4)
    torch.testing.assert_close(g2(z), g(z), atol=2e-3, rtol=1e-2)  # float16 storage
    with pytest.raises(ValueError, match="divisible by 4"):
        Generator(GANConfig(image_size=10))


def test_ddpm_loss_and_differentiable_ddim():
    m = DDPM(DDPMConfig(image_size=8, channels=8, timesteps=20))
    loss = m.loss(torch.rand(4, 1, 8, 8))
    loss.backward()
    x_t = torch.randn(2, 1, 8, 8, requires_grad=True)
    out = m.sample(x_t, steps=3)
    assert out.shape == (2, 1, 8, 8)
    out.sum().backward()
    assert x_t.grad is not None and torch.isfinite(x_t.grad).all()


def test_perturbation_through_generator_extractor_predictor():
    torch.manual_seed(0)
    g = Generator(GANConfig(latent_dim=4, image_size=8, g_channels=8)).eval()
    f = FeatureCNN(ExtractorConfig(image_size=8, widths=(4, 8), feature_dim=6)).eval()
    pred = DensityPredictor(6, (8,))
    res = perturb_latents(torch.randn(8, 4), g, lambda x: pred(f.features(x)), epsilon=0.5,
                          steps=5, image_shape=(1, 8, 8))
    assert res.final_scores.mean() > res.initial_scores.mean()


def test_tiny_training_runs():
    x = torch.rand(64, 1, 8, 8)
    y = torch.randint(0, 10, (64,))
    f = train_extractor(ExtractorConfig(image_size=8, widths=(4, 8), feature_dim=6), x, y,
                        epochs=1)
    assert f.features(x).shape == (64, 6)
    g, d = train_gan(GANConfig(latent_dim=4, image_size=8, g_channels=8, d_channels=4), x,
                     steps=3, batch_size=8)
    assert not g.training and not d.training


def test_bundled_checkpoints_load_if_present():
    from tamis.density.pipeline import CHECKPOINTS

    path = CHECKPOINTS / "gan_generator.safetensors"
    if not path.exists():
        pytest.skip("no bundled checkpoints")
    g = load_checkpoint(path)
    assert g(torch.randn(2, g.cfg.latent_dim)).shape == (2, 1, 28, 28)
