"""Technique 3: fine-tuning with importance sampling (paper §2.6, Algorithm 3).

The real side is a weighted sampler (weight ``w_real`` above ``tau``, 1 below) that drops into
any training loop, GAN or diffusion. For GANs the fake side is filtered by the rejection rule
with ``w_fake`` (default ``1 / w_real``, the paper), so the fixed point is
``q ~ p * w_real / w_fake``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import WeightedRandomSampler

from tamis.density._generator import Scorer
from tamis.density.sampling import LatentSampler, importance_sample


def importance_weights(densities: object, tau: float, w: float) -> np.ndarray:
    """Per-sample weights: ``w`` where density ``>= tau``, 1 elsewhere.

    Raises:
        ValueError: on non-finite densities or a non-positive weight.

    """
    d = np.asarray(densities, dtype=np.float64).ravel()
    if d.size == 0 or not np.isfinite(d).all():
        raise ValueError("densities must be a non-empty array of finite values")
    if not w > 0 or not np.isfinite(w):
        raise ValueError(f"w must be a finite positive weight, got {w}")
    return np.where(d >= tau, float(w), 1.0)


def weighted_sampler(
    densities: object,
    tau: float,
    w: float,
    num_samples: int | None = None,
    seed: int = 0,
) -> WeightedRandomSampler:
    """Build a ``torch`` sampler over the real data that draws dense samples ``w`` times as often.

    Pass it as ``DataLoader(dataset, sampler=..., batch_size=...)`` in any training loop.

    Args:
        densities: ``(N,)`` pseudo densities of the training samples, in data set order.
        tau: threshold.
        w: weight of samples at or above ``tau``.
        num_samples: draws per epoch (default N).
        seed: sampler seed.

    Returns:
        A ``WeightedRandomSampler`` with replacement.

    """
    weights = importance_weights(densities, tau, w)
    gen = torch.Generator().manual_seed(seed)
    return WeightedRandomSampler(
        torch.from_numpy(weights), num_samples or len(weights), replacement=True, generator=gen
    )


def infinite_batches(
    data: torch.Tensor, sampler: WeightedRandomSampler, batch_size: int
) -> Iterator[torch.Tensor]:
    """Yield batches of ``data`` rows drawn by ``sampler``, forever."""
    while True:
        idx = torch.tensor(list(sampler), dtype=torch.long)
        for s in range(0, idx.numel() - batch_size + 1, batch_size):
            yield data[idx[s : s + batch_size]]


@dataclass
class FinetuneHistory:
    """Losses per step and the fake-side acceptance rates."""

    d_loss: list[float] = field(default_factory=list)
    g_loss: list[float] = field(default_factory=list)
    fake_acceptance: list[float] = field(default_factory=list)


def _fake_latents(
    generator: nn.Module, latent_sampler: LatentSampler, scorer: Scorer | None,
    n: int, tau: float, w_fake: float, seed: int,
) -> tuple[torch.Tensor, float]:
    if scorer is None or w_fake == 1.0:
        return latent_sampler(n), 1.0
    res = importance_sample(generator, latent_sampler, scorer, n, tau=tau, w=w_fake,
                            batch_size=2 * n, seed=seed)
    return res.latents, res.acceptance_rate


def finetune_gan(
    generator: nn.Module,
    discriminator: nn.Module,
    real: torch.Tensor,
    densities: object,
    latent_sampler: LatentSampler,
    *,
    tau: float,
    w_real: float,
    w_fake: float | None = None,
    scorer: Scorer | None = None,
    steps: int = 300,
    batch_size: int = 64,
    lr: float = 2e-4,
    betas: tuple[float, float] = (0.5, 0.999),
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> FinetuneHistory:
    """Fine-tune a GAN in place with importance-sampled real and fake batches.

    Non-saturating logistic loss. Real batches come from :func:`weighted_sampler` (``w_real``);
    fake batches pass the rejection rule with ``w_fake`` scored by ``scorer`` (skipped when
    ``scorer`` is ``None`` or ``w_fake == 1``).

    Args:
        generator: ``nn.Module`` latents -> images.
        discriminator: ``nn.Module`` images -> logits ``(B,)`` or ``(B, 1)``.
        real: ``(N, ...)`` real training images, in the order of ``densities``.
        densities: ``(N,)`` pseudo densities of ``real``.
        latent_sampler: callable ``batch`` -> latents.
        tau: density threshold.
        w_real: real-side weight (``> 1`` fidelity, ``< 1`` diversity).
        w_fake: fake-side weight; default ``1 / w_real``.
        scorer: images -> densities for the fake side (e.g. predictor of extractor).
        steps: D+G updates.
        batch_size: batch size.
        lr: Adam learning rate for both networks.
        betas: Adam betas.
        seed: seed of the sampler and acceptance draws.
        progress: called with the step number.

    Returns:
        A :class:`FinetuneHistory`.

    """
    if real.shape[0] != np.asarray(densities).ravel().shape[0]:
        raise ValueError(f"{real.shape[0]} real images but {np.asarray(densities).size} densities")
    w_fake = 1.0 / w_real if w_fake is None else w_fake
    batches = infinite_batches(real, weighted_sampler(densities, tau, w_real, seed=seed),
                               batch_size)
    opt_g = torch.optim.Adam(generator.parameters(), lr=lr, betas=betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=betas)
    hist = FinetuneHistory()

    def logits(x: torch.Tensor) -> torch.Tensor:
        return discriminator(x).reshape(x.shape[0])

    for step in range(steps):
        x_real = next(batches)
        z, rate = _fake_latents(generator, latent_sampler, scorer, batch_size, tau, w_fake,
                                seed * 100_003 + 2 * step)
        with torch.no_grad():
            x_fake = generator(z)
        d_loss = F.softplus(-logits(x_real)).mean() + F.softplus(logits(x_fake)).mean()
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        z, _ = _fake_latents(generator, latent_sampler, scorer, batch_size, tau, w_fake,
                             seed * 100_003 + 2 * step + 1)
        g_loss = F.softplus(-logits(generator(z))).mean()
        opt_g.zero_grad()
        g_loss.backward()
        opt_g.step()
        hist.d_loss.append(d_loss.item())
        hist.g_loss.append(g_loss.item())
        hist.fake_acceptance.append(rate)
        if progress is not None:
            progress(step + 1)
    return hist


def finetune_with_loss(
    loss_fn: Callable[[torch.Tensor], torch.Tensor],
    parameters: object,
    real: torch.Tensor,
    densities: object,
    *,
    tau: float,
    w: float,
    steps: int = 300,
    batch_size: int = 64,
    lr: float = 1e-4,
    seed: int = 0,
    ema_decay: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[float]:
    """Fine-tune any model whose loss is a function of a real batch (e.g. a diffusion loss).

    The real batches come from :func:`weighted_sampler`; there is no fake side. Diffusion
    checkpoints usually hold EMA weights; fine-tuning them raw with Adam can degrade even an
    unweighted control, so ``ema_decay`` keeps an exponential moving average started from the
    initial parameters and writes it into them at the end.

    Args:
        loss_fn: real batch -> scalar loss (e.g. the denoising loss of a DDPM).
        parameters: parameters to optimise (Adam).
        real: ``(N, ...)`` training images in the order of ``densities``.
        densities: ``(N,)`` pseudo densities.
        tau: threshold.
        w: weight of samples at or above ``tau``.
        steps: optimiser steps.
        batch_size: batch size.
        lr: learning rate.
        seed: sampler seed.
        ema_decay: if given, ``ema <- decay * ema + (1 - decay) * param`` after every step,
            and the parameters are set to the average when done; ``None`` keeps the raw ones.
        progress: called with the step number.

    Returns:
        The loss per step.

    Raises:
        ValueError: if ``ema_decay`` is outside [0, 1).

    """
    if ema_decay is not None and not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay}")
    params = list(parameters)  # type: ignore[call-overload]
    opt = torch.optim.Adam(params, lr=lr)
    ema = [p.detach().clone() for p in params] if ema_decay is not None else None
    batches = infinite_batches(real, weighted_sampler(densities, tau, w, seed=seed), batch_size)
    losses = []
    for step in range(steps):
        loss = loss_fn(next(batches))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if ema is not None:
            with torch.no_grad():
                for e, p in zip(ema, params, strict=True):
                    e.lerp_(p, 1.0 - ema_decay)  # type: ignore[operator]
        losses.append(loss.item())
        if progress is not None:
            progress(step + 1)
    if ema is not None:
        with torch.no_grad():
            for e, p in zip(ema, params, strict=True):
                p.copy_(e)
    return losses
