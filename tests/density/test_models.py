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


def test_cosine_schedule_matches_slow_reference():
    """alpha_bar(t) = f(t+1)/f(0) for the cosine schedule, betas clipped at 0.999."""
    import math

    from tamis.density.models import ddpm_betas

    cfg = DDPMConfig(timesteps=50, schedule="cosine")

    def f(t):
        return math.cos((t / 50 + 0.008) / 1.008 * math.pi / 2) ** 2

    betas, ab, prod = [], [], 1.0
    for t in range(50):
        b = min(1 - f(t + 1) / f(t), 0.999)
        betas.append(b)
        prod *= 1 - b
        ab.append(prod)
    torch.testing.assert_close(ddpm_betas(cfg), torch.tensor(betas, dtype=torch.float64))
    m = DDPM(DDPMConfig(image_size=8, channels=8, timesteps=50, schedule="cosine"))
    torch.testing.assert_close(m.alpha_bar, torch.tensor(ab, dtype=torch.float32))
    # unclipped steps follow the closed form alpha_bar(t) = f(t+1) / f(0)
    for t in range(45):
        assert abs(ab[t] - f(t + 1) / f(0)) < 1e-9
    assert m.alpha_bar[-1] < 1e-3  # ends at (almost) pure noise, unlike linear T=200
    lin = DDPM(DDPMConfig(image_size=8, channels=8, timesteps=200))
    assert lin.alpha_bar[-1] > 0.1
    ref = [1.0]
    for b in torch.linspace(1e-4, 0.02, 200).tolist():
        ref.append(ref[-1] * (1 - b))
    torch.testing.assert_close(lin.alpha_bar, torch.tensor(ref[1:]), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="unknown schedule"):
        DDPM(DDPMConfig(schedule="quadratic"))


def test_ddpm_schedule_survives_checkpoint(tmp_path):
    cfg = DDPMConfig(image_size=8, channels=8, timesteps=30, schedule="cosine")
    m = DDPM(cfg).eval()
    path = save_checkpoint(m, tmp_path / "d.safetensors", "ddpm", cfg.to_dict())
    m2 = load_checkpoint(path)
    assert m2.cfg.schedule == "cosine" and m2.cfg.timesteps == 30
    # recomputed from the config, not the float16 copy (which rounds alpha_bar_T to 0)
    torch.testing.assert_close(m2.alpha_bar, m.alpha_bar, atol=0, rtol=0)
    assert (m2.alpha_bar > 0).all()
    with torch.no_grad():  # DDIM from t = T stays finite even where x_T == eps exactly
        assert torch.isfinite(m2.sample(torch.randn(4, 1, 8, 8), steps=4)).all()


def test_train_ddpm_ema_matches_slow_reference():
    """EMA weights equal a hand-written loop over the same seeded optimisation."""
    from tamis.density.models import train_ddpm

    cfg = DDPMConfig(image_size=8, channels=8, timesteps=20)
    x = torch.rand(32, 1, 8, 8)
    got = train_ddpm(cfg, x, steps=4, batch_size=8, lr=1e-3, seed=3, ema_decay=0.7)
    raw = train_ddpm(cfg, x, steps=4, batch_size=8, lr=1e-3, seed=3)
    # reference: same seed and draws, EMA kept in float64 python lists of tensors
    torch.manual_seed(3)
    model = DDPM(cfg)
    ema = {n: p.detach().double().clone() for n, p in model.named_parameters()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 1e-3, total_steps=4)
    for _ in range(4):
        loss = model.loss(x[torch.randint(0, 32, (8,))])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        for n, p in model.named_parameters():
            ema[n] = 0.7 * ema[n] + 0.3 * p.detach().double()
    for n, p in got.named_parameters():
        torch.testing.assert_close(p.double(), ema[n], atol=1e-6, rtol=1e-5)
    for (n, p), (_, q) in zip(raw.named_parameters(), model.named_parameters(), strict=True):
        torch.testing.assert_close(p, q, msg=n)  # without EMA: the raw final weights
    assert not got.training
    with pytest.raises(ValueError, match="ema_decay"):
        train_ddpm(cfg, x, steps=1, ema_decay=1.0)
