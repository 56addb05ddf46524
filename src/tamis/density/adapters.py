"""Generators users already have, behind the one interface the three techniques need.

A *latent generator* maps a batch of latents (GAN ``z`` or diffusion initial noise) to images
``(B, C, H, W)`` in [0, 1], differentiably, and knows how to draw its latents. Two adapters:

* :class:`DiffusersGenerator`: an unconditional diffusers model (``DDPMPipeline``,
  ``DDIMPipeline``, ``LDMPipeline`` or a ``UNet2DModel`` + scheduler), sampled by a deterministic
  DDIM (eta = 0) with a bounded step count so gradients reach the initial noise. Its
  :meth:`~DiffusersGenerator.loss` is diffusers' own denoising objective (epsilon, v or sample
  prediction, as the scheduler says) for importance-sampled fine-tuning.
* :class:`GANGenerator`: any ``G(z)`` module, StyleGAN-style ones included (``z_dim``,
  ``truncation_psi``, ``c``), with an optional discriminator for DRS and fine-tuning.

:func:`load_generator` opens either from a path (a diffusers directory, or a TorchScript file).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from tamis._diffusion import denoising_target


@runtime_checkable
class LatentGenerator(Protocol):
    """What :mod:`tamis.density` needs of a generator.

    ``latent_shape`` is the per-sample latent shape; calling maps ``(B, *latent_shape)`` latents
    to ``(B, C, H, W)`` images in [0, 1], differentiably; :meth:`sample_latents` draws ``n``
    latents from the generator's prior with a seed.
    """

    latent_shape: tuple[int, ...]

    def __call__(self, latents: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] from latents."""
        ...

    def sample_latents(self, n: int, seed: int = 0) -> torch.Tensor:
        """``n`` latents from the prior, reproducible from ``seed``."""
        ...


def _fingerprint(module: nn.Module) -> str:
    from tamis.density.extractors import module_hash

    return module_hash(module)[:16]


class DiffusersGenerator:
    """An unconditional diffusers model as a differentiable generator of its initial noise.

    Sampling converts the model's scheduler into a ``DDIMScheduler`` with the same training
    schedule (``DDIMScheduler.from_config``) and runs ``num_inference_steps`` deterministic
    steps through diffusers' own ``step``; every operation is differentiable, so gradients
    reach the initial noise (paper Technique 1 on diffusion models). Memory for a backward pass
    grows linearly with ``num_inference_steps``: keep it bounded (10-50).

    Args:
        unet: a ``UNet2DModel`` (unconditional: no class labels, no text conditioning).
        scheduler: any diffusers noise scheduler whose config DDIM can read.
        num_inference_steps: DDIM steps per sample (the cost knob).
        vae: for latent pipelines, a ``VQModel`` or ``AutoencoderKL`` whose decoder maps the
            UNet's latents to images; ``None`` for pixel-space models.
        vae_scale: latents are divided by this before decoding (``vae.config.scaling_factor``
            when the VAE has one, else 1).
        dtype: compute dtype (float32 on CPU).
        device: where the model runs.

    Raises:
        ValueError: if the UNet is conditional (text or class labels).

    """

    def __init__(
        self,
        unet: nn.Module,
        scheduler: Any,
        *,
        num_inference_steps: int = 20,
        vae: nn.Module | None = None,
        vae_scale: float | None = None,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> None:
        from diffusers import DDIMScheduler

        _refuse_conditional(unet)
        if num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
        self.unet = _to(unet, dtype, device).eval()
        self.vae = _to(vae, dtype, device).eval() if vae is not None else None
        cfg = getattr(vae, "config", None) if vae is not None else None
        self.vae_scale = float(vae_scale if vae_scale is not None else
                               getattr(cfg, "scaling_factor", 1.0) or 1.0)
        self.scheduler = DDIMScheduler.from_config(scheduler.config)
        self.train_scheduler = scheduler
        self.num_inference_steps = int(num_inference_steps)
        self.dtype, self.device = dtype, torch.device(device)
        c = unet.config.in_channels
        s = unet.config.sample_size
        s = tuple(s) if isinstance(s, (list, tuple)) else (s, s)
        self.latent_shape: tuple[int, ...] = (c, *s)

    @classmethod
    def from_pretrained(
        cls, path: str | Path, *, num_inference_steps: int = 20,
        dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
    ) -> DiffusersGenerator:
        """Open a pipeline directory saved by ``save_pretrained`` (nothing is downloaded).

        Raises:
            FileNotFoundError: if the path does not exist.
            ValueError: if it is not a diffusers pipeline, or holds a conditional one.

        """
        from diffusers import DiffusionPipeline

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"generator path {path} does not exist")
        index = path / "model_index.json"
        if not index.is_file():
            raise ValueError(f"{path} is not a diffusers pipeline directory (no "
                             "model_index.json); save one with pipeline.save_pretrained(path)")
        try:
            spec = json.loads(index.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{index} is not valid JSON ({err})") from None
        conditional = {"text_encoder", "tokenizer", "text_encoder_2", "transformer"} & set(spec)
        if conditional:
            raise ValueError(
                f"{path} is a conditional pipeline ({spec.get('_class_name')}, with "
                f"{', '.join(sorted(conditional))}); tamis.density needs an unconditional one "
                "(text-to-image pipelines are tamis.seeds' domain)")
        if "unet" not in spec:
            raise ValueError(f"{path}: pipeline {spec.get('_class_name')} has no unet")
        pipe = DiffusionPipeline.from_pretrained(str(path), local_files_only=True, dtype=dtype)
        vae = getattr(pipe, "vqvae", None) or getattr(pipe, "vae", None)
        gen = cls(pipe.unet, pipe.scheduler, num_inference_steps=num_inference_steps, vae=vae,
                  dtype=dtype, device=device)
        gen.source = str(path)
        return gen

    # -- sampling ---------------------------------------------------------------------------
    def sample_latents(self, n: int, seed: int = 0) -> torch.Tensor:
        """Initial noise ``(n, *latent_shape)`` from a seeded CPU generator."""
        g = torch.Generator().manual_seed(int(seed))
        z = torch.randn((n, *self.latent_shape), generator=g)
        return z.to(device=self.device, dtype=self.dtype)

    def __call__(self, latents: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] from initial noise, by deterministic DDIM (differentiable)."""
        if tuple(latents.shape[1:]) != self.latent_shape:
            raise ValueError(f"initial noise has per-sample shape {tuple(latents.shape[1:])}, "
                             f"the model expects {self.latent_shape}")
        sched = self.scheduler
        sched.set_timesteps(self.num_inference_steps, device=self.device)
        x = latents.to(device=self.device, dtype=self.dtype) * sched.init_noise_sigma
        for t in sched.timesteps:
            out = self.unet(sched.scale_model_input(x, t), t).sample
            x = sched.step(out, t, x, eta=0.0).prev_sample
        if self.vae is not None:
            x = _decode(self.vae, x / self.vae_scale)
        return (x / 2 + 0.5).clamp(0, 1)

    # -- fine-tuning ------------------------------------------------------------------------
    def loss(self, images: torch.Tensor, seed: int | None = None) -> torch.Tensor:
        """Diffusers' denoising loss on a batch of real images in [0, 1].

        Random timesteps, ``scheduler.add_noise`` and an MSE against the target the scheduler's
        ``prediction_type`` names (``epsilon``: the noise; ``v_prediction``:
        ``get_velocity``; ``sample``: the clean input), as diffusers' training scripts do.
        Latent pipelines encode the images with the VAE first (no gradient to the VAE).
        """
        x0 = images.to(device=self.device, dtype=self.dtype) * 2 - 1
        if self.vae is not None:
            with torch.no_grad():
                x0 = _encode(self.vae, x0) * self.vae_scale
        sched = self.train_scheduler
        g = torch.Generator().manual_seed(seed) if seed is not None else None
        noise = torch.randn(x0.shape, generator=g).to(x0)
        t = torch.randint(0, sched.config.num_train_timesteps, (x0.shape[0],),
                          generator=g).to(self.device)
        noisy = sched.add_noise(x0, noise, t)
        pred = self.unet(noisy, t).sample
        target = denoising_target(sched, x0, noise, t)
        return torch.nn.functional.mse_loss(pred.float(), target.float())

    def parameters(self) -> Iterator[nn.Parameter]:
        """The UNet's parameters (what fine-tuning updates)."""
        return self.unet.parameters()

    @property
    def fingerprint(self) -> str:
        """A short hash of the UNet weights and the sampler settings."""
        return f"{_fingerprint(self.unet)}-ddim{self.num_inference_steps}"

    def save_pretrained(self, path: str | Path) -> None:
        """Write the (possibly fine-tuned) model as a diffusers pipeline directory."""
        from diffusers import DDPMPipeline, LDMPipeline

        if self.vae is None:
            pipe = DDPMPipeline(unet=self.unet, scheduler=self.train_scheduler)
        else:
            pipe = LDMPipeline(vqvae=self.vae, unet=self.unet, scheduler=self.train_scheduler)
        pipe.save_pretrained(str(path), safe_serialization=True)


def _to(module: nn.Module, dtype: torch.dtype, device: str | torch.device) -> nn.Module:
    p = next(iter(module.parameters()), None)
    if p is not None and (p.dtype != dtype or p.device != torch.device(device)):
        module = module.to(device=device, dtype=dtype)
    return module


def _refuse_conditional(unet: nn.Module) -> None:
    cfg = getattr(unet, "config", None)
    if cfg is None or not hasattr(cfg, "in_channels"):
        raise ValueError(f"expected a diffusers UNet2DModel, got {type(unet).__name__}")
    if getattr(cfg, "cross_attention_dim", None) is not None:
        raise ValueError(
            f"{type(unet).__name__} is conditioned on text (cross_attention_dim="
            f"{cfg.cross_attention_dim}): classifier-free-guided pipelines are not supported by "
            "tamis.density, which needs an unconditional model")
    if getattr(cfg, "num_class_embeds", None) or getattr(cfg, "class_embed_type", None):
        raise ValueError(f"{type(unet).__name__} is class-conditional (num_class_embeds="
                         f"{cfg.num_class_embeds}); tamis.density needs an unconditional model")


def _decode(vae: nn.Module, z: torch.Tensor) -> torch.Tensor:
    out = vae.decode(z)
    return out.sample if hasattr(out, "sample") else out[0]


def _encode(vae: nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = vae.encode(x)
    if hasattr(out, "latent_dist"):
        return out.latent_dist.mean
    return out.latents if hasattr(out, "latents") else out[0]


class GANGenerator:
    """A user's ``G(z)`` (and optional discriminator) behind :class:`LatentGenerator`.

    Works with plain ``nn.Module`` generators and StyleGAN-style ones: ``z_dim`` is read when
    ``latent_shape`` is not given; ``G(z, c, truncation_psi=psi)`` is called when the forward
    accepts them (StyleGAN2/3 convention; ``c`` defaults to an empty label), else ``G(z)``.
    Outputs are mapped from ``output_range`` (e.g. ``(-1, 1)`` for tanh generators) to [0, 1].

    Args:
        generator: the network.
        latent_shape: per-sample latent shape; default ``(generator.z_dim,)``.
        discriminator: ``D(x)`` on images in ``output_range``, returning logits, for DRS and
            importance-sampled GAN fine-tuning.
        truncation_psi: passed to StyleGAN-style generators (1 = no truncation); for plain
            generators :meth:`sample_latents` shrinks ``z`` toward 0 by ``psi`` instead.
        output_range: the generator's output range.

    """

    def __init__(
        self,
        generator: nn.Module,
        *,
        latent_shape: Sequence[int] | None = None,
        discriminator: nn.Module | None = None,
        truncation_psi: float = 1.0,
        output_range: tuple[float, float] = (0.0, 1.0),
    ) -> None:
        if latent_shape is None:
            z_dim = getattr(generator, "z_dim", None) or getattr(generator, "latent_dim", None)
            if z_dim is None:
                raise ValueError(f"{type(generator).__name__} has no z_dim attribute: pass "
                                 "latent_shape=(...) to GANGenerator")
            latent_shape = (int(z_dim),)
        lo, hi = output_range
        if not hi > lo:
            raise ValueError(f"output_range must be (low, high) with high > low, got "
                             f"{output_range}")
        self.generator, self.discriminator = generator, discriminator
        self.latent_shape = tuple(int(s) for s in latent_shape)
        self.truncation_psi = float(truncation_psi)
        self.output_range = (float(lo), float(hi))
        params = _forward_params(generator)
        self._stylegan = "truncation_psi" in params
        self._takes_c = "c" in params

    def sample_latents(self, n: int, seed: int = 0) -> torch.Tensor:
        """Standard normal latents; plain generators get ``psi * z`` when truncated."""
        g = torch.Generator().manual_seed(int(seed))
        z = torch.randn((n, *self.latent_shape), generator=g)
        if not self._stylegan and self.truncation_psi != 1.0:
            z = z * self.truncation_psi
        p = next(iter(self.generator.parameters()), None)
        return z.to(p.device) if p is not None else z

    def raw(self, latents: torch.Tensor) -> torch.Tensor:
        """The generator's own output (in ``output_range``)."""
        if tuple(latents.shape[1:]) != self.latent_shape:
            raise ValueError(f"latents have per-sample shape {tuple(latents.shape[1:])}, the "
                             f"generator expects {self.latent_shape}")
        if self._stylegan:
            c = torch.zeros(latents.shape[0], 0, device=latents.device)
            args = (latents, c) if self._takes_c else (latents,)
            return self.generator(*args, truncation_psi=self.truncation_psi)
        return self.generator(latents)

    def __call__(self, latents: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1]."""
        lo, hi = self.output_range
        return ((self.raw(latents) - lo) / (hi - lo)).clamp(0, 1)

    def discriminator_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Discriminator logits ``(B,)`` of images in [0, 1] (mapped back to its range).

        Raises:
            ValueError: if no discriminator was given.

        """
        if self.discriminator is None:
            raise ValueError("this generator has no discriminator: pass discriminator=... to "
                             "GANGenerator for DRS or fine-tuning")
        lo, hi = self.output_range
        out = self.discriminator(images * (hi - lo) + lo)
        return out.reshape(out.shape[0], -1)[:, 0]

    def parameters(self) -> Iterator[nn.Parameter]:
        """The generator's parameters."""
        return self.generator.parameters()

    @property
    def fingerprint(self) -> str:
        """A short hash of the generator weights and the truncation."""
        return f"{_fingerprint(self.generator)}-psi{self.truncation_psi:g}"


def _forward_params(module: nn.Module) -> set[str]:
    """Argument names of ``module.forward`` (TorchScript: from its schema)."""
    try:
        return set(inspect.signature(module.forward).parameters)
    except (TypeError, ValueError):
        schema = getattr(module.forward, "schema", None)
        return {a.name for a in schema.arguments} if schema is not None else set()


def load_generator(
    path: str | Path, *, num_inference_steps: int = 20, latent_dim: int | None = None,
    output_range: tuple[float, float] = (0.0, 1.0),
) -> LatentGenerator:
    """Open a generator from a path: a diffusers pipeline directory or a TorchScript ``G(z)``.

    Args:
        path: a directory with ``model_index.json`` (unconditional diffusers pipeline) or a
            TorchScript file (``torch.jit.save``) of a GAN generator.
        num_inference_steps: DDIM steps for diffusion models.
        latent_dim: latent width of a TorchScript generator without a ``z_dim`` attribute.
        output_range: output range of a TorchScript generator.

    Raises:
        FileNotFoundError: if the path does not exist.
        ValueError: if the path is neither kind, or the model is refused.

    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"generator path {path} does not exist")
    if path.is_dir():
        return DiffusersGenerator.from_pretrained(path, num_inference_steps=num_inference_steps)
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError) as err:
        raise ValueError(f"{path} is neither a diffusers pipeline directory nor a TorchScript "
                         f"generator (torch.jit.load: {str(err).splitlines()[0]})") from None
    shape = (latent_dim,) if latent_dim is not None else None
    return GANGenerator(module.eval(), latent_shape=shape, output_range=output_range)
