"""Generator adapters against diffusers' own pipelines and a tiny StyleGAN-style network."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from tamis.density.adapters import (
    DiffusersGenerator,
    GANGenerator,
    LatentGenerator,
    load_generator,
)
from tamis.density.finetune import finetune_with_loss
from tamis.density.perturb import perturb_latents
from tamis.density.sampling import importance_sample

diffusers = pytest.importorskip("diffusers")


def tiny_unet(**extra: object) -> nn.Module:
    cfg = dict(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
               block_out_channels=(8, 16), norm_num_groups=4,
               down_block_types=("DownBlock2D", "DownBlock2D"),
               up_block_types=("UpBlock2D", "UpBlock2D"))
    cfg.update(extra)
    torch.manual_seed(0)
    return diffusers.UNet2DModel(**cfg).eval()


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("ddpm")
    sched = diffusers.DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2")
    diffusers.DDPMPipeline(unet=tiny_unet(), scheduler=sched).save_pretrained(path)
    return path


def test_sampling_equals_diffusers_ddim_pipeline(pipeline_dir):
    gen = DiffusersGenerator.from_pretrained(pipeline_dir, num_inference_steps=5)
    assert isinstance(gen, LatentGenerator)
    assert gen.latent_shape == (1, 8, 8)
    z = gen.sample_latents(3, seed=7)
    with torch.no_grad():
        ours = gen(z)
    ref_pipe = diffusers.DDIMPipeline.from_pretrained(pipeline_dir)  # DDPM -> DDIM scheduler
    ref_pipe.scheduler = diffusers.DDIMScheduler.from_config(ref_pipe.scheduler.config)
    ref = ref_pipe(batch_size=3, generator=torch.Generator().manual_seed(7),
                   num_inference_steps=5, output_type="np").images
    np.testing.assert_allclose(ours.permute(0, 2, 3, 1).numpy(), ref, atol=1e-5)
    assert ours.min() >= 0 and ours.max() <= 1


def test_gradient_reaches_initial_noise_and_matches_finite_difference(pipeline_dir):
    gen = DiffusersGenerator.from_pretrained(pipeline_dir, num_inference_steps=3)
    gen.unet.double()
    gen.dtype = torch.float64
    z = gen.sample_latents(1, seed=1).double().requires_grad_(True)
    f = lambda x: gen(x).mean()  # noqa: E731
    (g,) = torch.autograd.grad(f(z), z)
    assert g.abs().sum() > 0
    d = torch.randn_like(z)
    h = 1e-5
    fd = (f(z + h * d) - f(z - h * d)) / (2 * h)
    np.testing.assert_allclose((g * d).sum().item(), fd.item(), rtol=1e-4, atol=1e-9)


def test_loss_is_diffusers_training_objective(pipeline_dir):
    gen = DiffusersGenerator.from_pretrained(pipeline_dir)
    x = torch.rand(4, 1, 8, 8)
    loss = gen.loss(x, seed=3)
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(x.shape, generator=g)
    t = torch.randint(0, 100, (4,), generator=g)
    sched = gen.train_scheduler
    pred = gen.unet(sched.add_noise(x * 2 - 1, noise, t), t).sample
    assert loss.item() == pytest.approx(torch.nn.functional.mse_loss(pred, noise).item(),
                                        rel=1e-6)


def test_v_prediction_target(tmp_path):
    sched = diffusers.DDPMScheduler(num_train_timesteps=50, prediction_type="v_prediction")
    gen = DiffusersGenerator(tiny_unet(), sched)
    x = torch.rand(2, 1, 8, 8)
    loss = gen.loss(x, seed=0)
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x.shape, generator=g)
    t = torch.randint(0, 50, (2,), generator=g)
    target = sched.get_velocity(x * 2 - 1, noise, t)
    pred = gen.unet(sched.add_noise(x * 2 - 1, noise, t), t).sample
    assert loss.item() == pytest.approx(torch.nn.functional.mse_loss(pred, target).item(),
                                        rel=1e-6)


def test_three_techniques_run_on_a_diffusers_model(pipeline_dir, tmp_path):
    gen = DiffusersGenerator.from_pretrained(pipeline_dir, num_inference_steps=3)
    score = lambda x: x.flatten(1).mean(1)  # noqa: E731 - brightness as a stand-in density
    res = importance_sample(gen, lambda b: gen.sample_latents(b, seed=b), score, 6,
                            tau=0.5, w=100.0, batch_size=4)
    assert res.samples.shape == (6, 1, 8, 8)
    z = gen.sample_latents(4, seed=0)
    up = perturb_latents(z, gen, score, direction="fidelity", epsilon=0.2, steps=2)
    down = perturb_latents(z, gen, score, direction="diversity", epsilon=0.2, steps=2)
    assert (up.final_scores > up.initial_scores).all()
    assert (down.final_scores < down.initial_scores).all()
    before = [p.detach().clone() for p in gen.parameters()]
    real = torch.rand(16, 1, 8, 8)
    losses = finetune_with_loss(gen.loss, gen.parameters(), real, np.linspace(0, 1, 16),
                                tau=0.5, w=5.0, steps=2, batch_size=4)
    assert len(losses) == 2 and np.isfinite(losses).all()
    assert any((a != b.detach()).any() for a, b in zip(before, gen.parameters(), strict=True))
    gen.save_pretrained(tmp_path / "tuned")
    again = load_generator(tmp_path / "tuned", num_inference_steps=3)
    with torch.no_grad():
        torch.testing.assert_close(again(z), gen(z))


def test_latent_pipeline_decodes_through_the_vae(tmp_path):
    torch.manual_seed(0)
    vq = diffusers.VQModel(in_channels=1, out_channels=1, latent_channels=2,
                           block_out_channels=(8, 8), norm_num_groups=4, num_vq_embeddings=16,
                           vq_embed_dim=2, down_block_types=("DownEncoderBlock2D",) * 2,
                           up_block_types=("UpDecoderBlock2D",) * 2, sample_size=8).eval()
    unet = tiny_unet(sample_size=4, in_channels=2, out_channels=2)
    sched = diffusers.DDIMScheduler(num_train_timesteps=100)
    pipe = diffusers.LDMPipeline(vqvae=vq, unet=unet, scheduler=sched)
    pipe.save_pretrained(tmp_path / "ldm")
    gen = load_generator(tmp_path / "ldm", num_inference_steps=4)
    assert gen.latent_shape == (2, 4, 4)
    with torch.no_grad():
        ours = gen(gen.sample_latents(2, seed=5))
    ref = diffusers.LDMPipeline.from_pretrained(tmp_path / "ldm")(
        batch_size=2, generator=torch.Generator().manual_seed(5), num_inference_steps=4,
        output_type="np").images
    assert ours.shape == (2, 1, 8, 8)
    np.testing.assert_allclose(ours.permute(0, 2, 3, 1).numpy(), ref, atol=1e-5)
    assert torch.isfinite(gen.loss(torch.rand(2, 1, 8, 8)))


def test_refusals_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_generator(tmp_path / "nope")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError, match="not a diffusers pipeline directory"):
        load_generator(tmp_path / "plain")
    cond = tmp_path / "sd"
    cond.mkdir()
    (cond / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
        "text_encoder": ["transformers", "CLIPTextModel"], "vae": ["diffusers", "AutoencoderKL"]}))
    with pytest.raises(ValueError, match="conditional pipeline.*StableDiffusionPipeline"):
        load_generator(cond)
    with pytest.raises(ValueError, match="class-conditional"):
        DiffusersGenerator(tiny_unet(num_class_embeds=10), diffusers.DDPMScheduler())
    cross = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
        block_out_channels=(8, 16), norm_num_groups=4, cross_attention_dim=8,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), attention_head_dim=2)
    with pytest.raises(ValueError, match="classifier-free-guided"):
        DiffusersGenerator(cross, diffusers.DDPMScheduler())
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="neither a diffusers pipeline directory nor a Torch"):
        load_generator(tmp_path / "junk.pt")
    gen = DiffusersGenerator(tiny_unet(), diffusers.DDPMScheduler())
    with pytest.raises(ValueError, match="expects \\(1, 8, 8\\)"):
        gen(torch.randn(2, 1, 4, 4))


class TinyStyleGAN(nn.Module):
    """StyleGAN calling convention: mapping z -> w, w_avg, truncation_psi, empty label c."""

    def __init__(self, z_dim: int = 6) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.mapping = nn.Sequential(nn.Linear(z_dim, 8), nn.LeakyReLU(0.2), nn.Linear(8, 8))
        self.synthesis = nn.Sequential(nn.Linear(8, 16), nn.Tanh())
        self.register_buffer("w_avg", torch.zeros(8))

    def forward(self, z: torch.Tensor, c: torch.Tensor, truncation_psi: float = 1.0):
        w = self.mapping(z)
        w = self.w_avg + truncation_psi * (w - self.w_avg)
        return self.synthesis(w).view(-1, 1, 4, 4)


def test_gan_adapter_stylegan_convention_and_truncation(tmp_path):
    torch.manual_seed(0)
    net = TinyStyleGAN()
    disc = nn.Sequential(nn.Flatten(), nn.Linear(16, 1))
    gen = GANGenerator(net, discriminator=disc, output_range=(-1, 1))
    assert isinstance(gen, LatentGenerator)
    assert gen.latent_shape == (6,)
    z = gen.sample_latents(5, seed=2)
    torch.testing.assert_close(z, torch.randn(5, 6, generator=torch.Generator().manual_seed(2)))
    img = gen(z)
    expected = (net(z, torch.zeros(5, 0)) + 1) / 2
    torch.testing.assert_close(img, expected)
    half = GANGenerator(net, truncation_psi=0.5, output_range=(-1, 1))
    w = net.mapping(z)
    torch.testing.assert_close(half(z), (net.synthesis(0.5 * w).view(-1, 1, 4, 4) + 1) / 2)
    logits = gen.discriminator_logits(img)
    torch.testing.assert_close(logits, disc(img * 2 - 1)[:, 0])
    with pytest.raises(ValueError, match="no discriminator"):
        half.discriminator_logits(img)
    up = perturb_latents(z, gen, lambda x: x.flatten(1).mean(1), epsilon=0.3, steps=3)
    assert (up.final_scores >= up.initial_scores).all()


def test_gan_adapter_plain_module_and_torchscript(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 16), nn.Sigmoid(), nn.Unflatten(1, (1, 4, 4)))
    with pytest.raises(ValueError, match="has no z_dim"):
        GANGenerator(net)
    gen = GANGenerator(net, latent_shape=(4,), truncation_psi=0.7)
    z = gen.sample_latents(3, seed=0)
    torch.testing.assert_close(z, 0.7 * torch.randn(3, 4, generator=torch.Generator()
                                                     .manual_seed(0)))
    torch.jit.save(torch.jit.script(net), tmp_path / "g.pt")
    loaded = load_generator(tmp_path / "g.pt", latent_dim=4)
    torch.testing.assert_close(loaded(z), net(z))
    with pytest.raises(ValueError, match="per-sample shape"):
        loaded(torch.randn(2, 5))
    with pytest.raises(ValueError, match="output_range"):
        GANGenerator(net, latent_shape=(4,), output_range=(1, 0))
