"""Tiny models for the demonstration, built from :mod:`tamis.density.config`.

A DCGAN, a DDPM with a deterministic (differentiable) DDIM sampler, and CNN feature
extractors, plus their short training loops and atomic safetensors checkpoints. The library
never needs these: any generator or extractor callable works.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tamis._io import atomic_path
from tamis.density.config import DDPMConfig, ExtractorConfig, GANConfig


def _check_size(size: int) -> None:
    if size % 4:
        raise ValueError(f"image_size must be divisible by 4, got {size}")


class Generator(nn.Module):
    """DCGAN generator: z -> images ``(B, 1, S, S)`` in [0, 1]."""

    def __init__(self, cfg: GANConfig) -> None:
        super().__init__()
        _check_size(cfg.image_size)
        self.cfg = cfg
        c, s = cfg.g_channels, cfg.image_size // 4
        self.fc = nn.Sequential(nn.Linear(cfg.latent_dim, c * s * s), nn.BatchNorm1d(c * s * s),
                                nn.ReLU())
        self.net = nn.Sequential(
            nn.ConvTranspose2d(c, c // 2, 4, 2, 1), nn.BatchNorm2d(c // 2), nn.ReLU(),
            nn.ConvTranspose2d(c // 2, 1, 4, 2, 1), nn.Sigmoid(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Images from latents ``(B, latent_dim)``."""
        s = self.cfg.image_size // 4
        return self.net(self.fc(z).view(z.shape[0], self.cfg.g_channels, s, s))


class Discriminator(nn.Module):
    """DCGAN discriminator: images ``(B, 1, S, S)`` -> logits ``(B,)``."""

    def __init__(self, cfg: GANConfig) -> None:
        super().__init__()
        _check_size(cfg.image_size)
        c, s = cfg.d_channels, cfg.image_size // 4
        self.net = nn.Sequential(
            nn.Conv2d(1, c, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(c, 2 * c, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(2 * c * s * s, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Real/fake logits."""
        return self.net(x)[:, 0]


class FeatureCNN(nn.Module):
    """Small CNN classifier; :meth:`features` returns the penultimate layer."""

    def __init__(self, cfg: ExtractorConfig) -> None:
        super().__init__()
        _check_size(cfg.image_size)
        a, b = cfg.widths
        s = cfg.image_size // 4
        self.body = nn.Sequential(
            nn.Conv2d(1, a, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(a, b, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(b * s * s, cfg.feature_dim), nn.ReLU(),
        )
        self.head = nn.Linear(cfg.feature_dim, cfg.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``(B, feature_dim)`` of images ``(B, 1, S, S)`` in [0, 1]."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits."""
        return self.head(self.body(x))


def _time_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    half = dim // 2
    freqs = torch.exp(-math.log(10_000) * torch.arange(half, dtype=torch.float32) / half)
    ang = t.float()[:, None] * freqs[None]
    return torch.cat([ang.sin(), ang.cos()], dim=1)


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, tdim: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.c2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.t = nn.Linear(tdim, cout)
        self.n1 = nn.GroupNorm(8, cout)
        self.n2 = nn.GroupNorm(8, cout)

    def forward(self, x: torch.Tensor, te: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.n1(self.c1(x))) + self.t(te)[:, :, None, None]
        return F.silu(self.n2(self.c2(h)))


class TinyUNet(nn.Module):
    """Epsilon-prediction network: two resolutions down, two up, with skip connections."""

    def __init__(self, cfg: DDPMConfig) -> None:
        super().__init__()
        _check_size(cfg.image_size)
        c, self.tdim = cfg.channels, 4 * cfg.channels
        self.temb = nn.Sequential(nn.Linear(c, self.tdim), nn.SiLU(), nn.Linear(self.tdim,
                                                                                self.tdim))
        self.inp = nn.Conv2d(1, c, 3, padding=1)
        self.d1 = _Block(c, c, self.tdim)
        self.d2 = _Block(c, 2 * c, self.tdim)
        self.mid = _Block(2 * c, 2 * c, self.tdim)
        self.u2 = _Block(4 * c, c, self.tdim)
        self.u1 = _Block(2 * c, c, self.tdim)
        self.out = nn.Conv2d(c, 1, 3, padding=1)
        self.c = c

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """Predicted noise for noisy images ``x`` at integer steps ``t``."""
        te = self.temb(_time_embedding(t, self.c))
        h1 = self.d1(self.inp(x), te)
        h2 = self.d2(F.avg_pool2d(h1, 2), te)
        m = self.mid(F.avg_pool2d(h2, 2), te)
        u2 = self.u2(torch.cat([F.interpolate(m, scale_factor=2.0), h2], 1), te)
        u1 = self.u1(torch.cat([F.interpolate(u2, scale_factor=2.0), h1], 1), te)
        return self.out(u1)


def ddpm_betas(cfg: DDPMConfig) -> torch.Tensor:
    """The ``timesteps`` betas of ``cfg.schedule`` (``"linear"`` or ``"cosine"``), float64.

    Raises:
        ValueError: for an unknown schedule.

    """
    if cfg.schedule == "linear":
        return torch.linspace(cfg.beta_start, cfg.beta_end, cfg.timesteps, dtype=torch.float64)
    if cfg.schedule == "cosine":
        s, steps = 0.008, cfg.timesteps
        f = torch.cos((torch.arange(steps + 1, dtype=torch.float64) / steps + s) / (1 + s)
                      * math.pi / 2) ** 2
        return (1 - f[1:] / f[:-1]).clamp(max=0.999)
    raise ValueError(f"unknown schedule {cfg.schedule!r} (use 'linear' or 'cosine')")


class DDPM(nn.Module):
    """A DDPM: the network plus its beta schedule; images live in [-1, 1] internally."""

    def __init__(self, cfg: DDPMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.net = TinyUNet(cfg)
        betas = ddpm_betas(cfg)
        self.register_buffer("alpha_bar", torch.cumprod(1 - betas, 0).float())

    def loss(self, x0: torch.Tensor) -> torch.Tensor:
        """Denoising loss on images ``(B, 1, S, S)`` in [0, 1]."""
        x0 = x0 * 2 - 1
        t = torch.randint(0, self.cfg.timesteps, (x0.shape[0],))
        noise = torch.randn_like(x0)
        ab = self.alpha_bar[t].view(-1, 1, 1, 1)
        return F.mse_loss(self.net(ab.sqrt() * x0 + (1 - ab).sqrt() * noise, t), noise)

    def sample(self, x_t: torch.Tensor, steps: int = 10) -> torch.Tensor:
        """Deterministic DDIM (eta = 0) from initial noise; differentiable; output in [0, 1]."""
        ts = torch.linspace(self.cfg.timesteps - 1, 0, steps).round().long()
        x = x_t
        for i, t in enumerate(ts):
            ab = self.alpha_bar[t]
            eps = self.net(x, t.expand(x.shape[0]))
            x0 = ((x - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(-1, 1)
            ab_prev = self.alpha_bar[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0)
            x = ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps
        return (x + 1) / 2


def save_checkpoint(module: nn.Module, path: str | Path, kind: str, config: dict) -> Path:
    """Save a module's state (float16 for floating tensors) atomically with its config.

    Returns:
        The path written.

    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: (v.half() if v.is_floating_point() else v).detach().contiguous().cpu()
               for k, v in module.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"kind": kind, "config": json.dumps(config)})
    return path


_KINDS: dict[str, tuple[Callable[..., object], type]] = {
    "generator": (GANConfig, Generator),
    "discriminator": (GANConfig, Discriminator),
    "extractor": (ExtractorConfig, FeatureCNN),
    "ddpm": (DDPMConfig, DDPM),
}


def load_checkpoint(path: str | Path) -> nn.Module:
    """Load a module saved by :func:`save_checkpoint` (float32, eval mode).

    Raises:
        ValueError: if the file has no known ``kind``.

    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    if meta.get("kind") not in _KINDS:
        raise ValueError(f"{path}: not a tamis density checkpoint (kind={meta.get('kind')})")
    cfg_cls, mod_cls = _KINDS[meta["kind"]]
    cfg = json.loads(meta["config"])
    if "widths" in cfg:
        cfg["widths"] = tuple(cfg["widths"])
    module = mod_cls(cfg_cls(**cfg))
    state = {k: (v.float() if v.is_floating_point() else v)
             for k, v in load_file(str(path)).items()}
    module.load_state_dict(state)
    if isinstance(module, DDPM):
        # the schedule follows from the config: recompute it rather than trust the float16
        # copy, which rounds the last cosine alpha_bar (~2e-9) to 0 (0/0 -> NaN in DDIM)
        with torch.no_grad():
            module.alpha_bar.copy_(torch.cumprod(1 - ddpm_betas(module.cfg), 0).float())
    return module.eval()


def train_extractor(
    cfg: ExtractorConfig, images: torch.Tensor, labels: torch.Tensor, *, epochs: int = 2,
    batch_size: int = 128, lr: float = 2e-3, seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> FeatureCNN:
    """Train a :class:`FeatureCNN` classifier (cross-entropy, Adam); returns it in eval mode."""
    torch.manual_seed(seed)
    model = FeatureCNN(cfg)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    step = 0
    for _ in range(epochs):
        for idx in torch.randperm(images.shape[0]).split(batch_size):
            loss = F.cross_entropy(model(images[idx]), labels[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if progress is not None:
                progress(step)
    return model.eval()


def train_gan(
    cfg: GANConfig, images: torch.Tensor, *, steps: int = 1000, batch_size: int = 64,
    lr: float = 2e-4, seed: int = 0, progress: Callable[[int], None] | None = None,
) -> tuple[Generator, Discriminator]:
    """Train a DCGAN (non-saturating loss, Adam 0.5/0.999); returns both nets in eval mode."""
    torch.manual_seed(seed)
    g, d = Generator(cfg), Discriminator(cfg)
    return fit_gan(g, d, images, latent_dim=cfg.latent_dim, steps=steps,
                   batch_size=batch_size, lr=lr, progress=progress)


def fit_gan(
    generator: nn.Module, discriminator: nn.Module, images: torch.Tensor, *, latent_dim: int,
    steps: int = 1000, batch_size: int = 64, lr: float = 2e-4,
    progress: Callable[[int], None] | None = None,
) -> tuple[nn.Module, nn.Module]:
    """Train any generator/discriminator pair from scratch or on (non-saturating loss).

    Each step draws ``batch_size`` real rows with replacement and ``N(0, I)`` latents of width
    ``latent_dim`` from torch's global generator, updates D, then G (Adam, betas 0.5/0.999).

    Returns:
        Both networks in eval mode.

    """
    g, d = generator, discriminator
    og = torch.optim.Adam(g.parameters(), lr=lr, betas=(0.5, 0.999))
    od = torch.optim.Adam(d.parameters(), lr=lr, betas=(0.5, 0.999))
    for step in range(steps):
        x = images[torch.randint(0, images.shape[0], (batch_size,))]
        z = torch.randn(batch_size, latent_dim)
        fake = g(z)
        ld = F.softplus(-d(x)).mean() + F.softplus(d(fake.detach())).mean()
        od.zero_grad()
        ld.backward()
        od.step()
        lg = F.softplus(-d(fake)).mean()
        og.zero_grad()
        lg.backward()
        og.step()
        if progress is not None:
            progress(step + 1)
    return g.eval(), d.eval()


def train_ddpm(
    cfg: DDPMConfig, images: torch.Tensor, *, steps: int = 1000, batch_size: int = 64,
    lr: float = 2e-3, seed: int = 0, ema_decay: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> DDPM:
    """Train a :class:`DDPM` with the epsilon loss (Adam, one-cycle learning rate).

    Args:
        cfg: model and schedule.
        images: training images ``(N, 1, S, S)`` in [0, 1].
        steps: optimiser steps.
        batch_size: images per step (drawn with replacement).
        lr: peak learning rate.
        seed: torch seed.
        ema_decay: if given, keep an exponential moving average of the parameters,
            ``ema <- decay * ema + (1 - decay) * param`` after every step, and return the
            averaged model (the usual DDPM practice); ``None`` returns the raw weights.
        progress: called with the step number after each step.

    Returns:
        The trained (or averaged) model in eval mode.

    Raises:
        ValueError: if ``ema_decay`` is outside [0, 1).

    """
    if ema_decay is not None and not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
    torch.manual_seed(seed)
    model = DDPM(cfg)
    ema = [p.detach().clone() for p in model.parameters()] if ema_decay is not None else None
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)
    for step in range(steps):
        loss = model.loss(images[torch.randint(0, images.shape[0], (batch_size,))])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if ema is not None:
            with torch.no_grad():
                for e, p in zip(ema, model.parameters(), strict=True):
                    e.mul_(ema_decay).add_(p.detach(), alpha=1 - ema_decay)
        if progress is not None:
            progress(step + 1)
    if ema is not None:
        with torch.no_grad():
            for e, p in zip(ema, model.parameters(), strict=True):
                p.copy_(e)
    return model.eval()


def extract(
    extractor: FeatureCNN, images: torch.Tensor, batch_size: int = 1024
) -> torch.Tensor:
    """Features of many images without gradients, in batches."""
    with torch.no_grad():
        return torch.cat([extractor.features(b) for b in images.split(batch_size)])
