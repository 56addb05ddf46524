"""Technique 2 (importance/rejection sampling at inference, paper §2.5) and the baselines.

Baselines share the interface: truncation of GAN latents, reduced initial-noise temperature
for diffusion, and discriminator rejection sampling (DRS, Azadi et al. 2019).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tamis.density._generator import Generator, Scorer, call_generator, call_scorer

LatentSampler = Callable[[int], torch.Tensor]


@dataclass
class SampleResult:
    """Accepted samples and the cost of getting them.

    Attributes:
        samples: accepted generator outputs ``(n, ...)``.
        latents: their latents ``(n, ...)``.
        scores: their scores (density for importance sampling, logit for DRS).
        n_candidates: candidates generated in all.
        acceptance_rate: accepted / candidates.
        candidates_per_sample: candidates / accepted (``1 / acceptance_rate``).

    """

    samples: torch.Tensor
    latents: torch.Tensor
    scores: torch.Tensor
    n_candidates: int
    acceptance_rate: float
    candidates_per_sample: float


def importance_accept(
    scores: np.ndarray | torch.Tensor, tau: float, w: float, rng: np.random.Generator
) -> np.ndarray:
    """Apply the paper's two-level acceptance rule.

    ``w > 1`` (fidelity): accept if ``score > tau`` or ``u < 1/w``. ``w <= 1`` (diversity):
    accept if ``score < tau`` or ``u < w``. ``w = 1`` accepts everything.

    Args:
        scores: ``(B,)`` pseudo densities of the candidates.
        tau: density threshold (e.g. a percentile of the reference densities).
        w: weight (> 0).
        rng: numpy random generator for ``u ~ U(0, 1)``.

    Returns:
        ``(B,)`` boolean mask of accepted candidates.

    """
    if not w > 0 or not math.isfinite(w):
        raise ValueError(f"w must be a finite positive weight, got {w}")
    s = scores.detach().cpu().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)
    s = s.astype(np.float64).ravel()
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values")
    u = rng.random(s.shape[0])
    if w > 1:
        return (s > tau) | (u < 1.0 / w)
    return (s < tau) | (u < w)


def _rejection_loop(
    generator: Generator,
    latent_sampler: LatentSampler,
    score_and_accept: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, np.ndarray]],
    n: int,
    batch_size: int,
    max_candidates: int | None,
    image_shape: Sequence[int] | None,
    progress: Callable[[int], None] | None,
) -> SampleResult:
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    limit = max_candidates if max_candidates is not None else 1000 * n
    keep_x, keep_z, keep_s = [], [], []
    got, seen = 0, 0
    with torch.no_grad():
        while got < n:
            if seen >= limit:
                raise RuntimeError(
                    f"only {got} of {n} samples accepted after {seen} candidates "
                    f"(max_candidates={limit}); the threshold or weight rejects almost everything"
                )
            z = latent_sampler(batch_size)
            x = call_generator(generator, z, image_shape)
            s, acc = score_and_accept(x, z)
            seen += z.shape[0]
            idx = torch.from_numpy(np.flatnonzero(acc))
            keep_x.append(x[idx])
            keep_z.append(z[idx])
            keep_s.append(s[idx])
            got += idx.numel()
            if progress is not None:
                progress(min(got, n))
    rate = got / seen
    return SampleResult(
        torch.cat(keep_x)[:n], torch.cat(keep_z)[:n], torch.cat(keep_s)[:n], seen, rate, 1 / rate
    )


def importance_sample(
    generator: Generator,
    latent_sampler: LatentSampler,
    scorer: Scorer,
    n: int,
    *,
    tau: float,
    w: float,
    batch_size: int = 256,
    max_candidates: int | None = None,
    seed: int = 0,
    image_shape: Sequence[int] | None = None,
    progress: Callable[[int], None] | None = None,
) -> SampleResult:
    """Draw ``n`` samples by pseudo-density importance (rejection) sampling (Algorithm 2).

    Args:
        generator: callable latents -> images.
        latent_sampler: callable ``batch`` -> fresh latents or initial noise.
        scorer: callable images -> ``(B,)`` pseudo densities (predictor or direct k-NN).
        n: samples to accept.
        tau: density threshold; see :func:`tamis.density.threshold_from_percentile`.
        w: weight; ``> 1`` favours density above ``tau`` (fidelity), ``< 1`` below (diversity).
        batch_size: candidates per generator call.
        max_candidates: stop with an error past this many candidates (default ``1000 n``).
        seed: seed of the acceptance draws.
        image_shape: expected per-sample generator output shape (checked if given).
        progress: called with the number accepted so far.

    Returns:
        A :class:`SampleResult` with the acceptance rate and candidates per accepted sample.

    """
    rng = np.random.default_rng(seed)

    def score_and_accept(x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
        s = call_scorer(scorer, x)
        return s, importance_accept(s, tau, w, rng)

    return _rejection_loop(
        generator, latent_sampler, score_and_accept, n, batch_size, max_candidates,
        image_shape, progress,
    )


def expected_acceptance(p_above: float, w: float) -> float:
    """Theoretical acceptance rate of :func:`importance_accept`.

    Args:
        p_above: probability that a candidate's score is above ``tau`` (fidelity) -- for
            ``w <= 1`` pass the probability of being below ``tau``.
        w: the weight.

    Returns:
        ``p + (1 - p) / w`` for ``w > 1``, ``p + (1 - p) w`` otherwise.

    """
    return p_above + (1 - p_above) * (1 / w if w > 1 else w)


def truncate_latents(
    latents: torch.Tensor, psi: float, mean: torch.Tensor | None = None
) -> torch.Tensor:
    """Apply the truncation trick ``mean + psi (z - mean)`` (``psi = 1``: no truncation)."""
    if psi < 0:
        raise ValueError(f"psi must be >= 0, got {psi}")
    m = torch.zeros_like(latents) if mean is None else mean
    return m + psi * (latents - m)


def temperature_noise(
    shape: Sequence[int], temperature: float, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Draw initial diffusion noise ``temperature * N(0, I)`` (< 1 favours fidelity)."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    return temperature * torch.randn(tuple(shape), generator=generator)


def discriminator_rejection_sample(
    generator: Generator,
    latent_sampler: LatentSampler,
    discriminator: Scorer,
    n: int,
    *,
    gamma_percentile: float = 80.0,
    burn_in: int = 2048,
    batch_size: int = 256,
    max_candidates: int | None = None,
    seed: int = 0,
    eps: float = 1e-6,
    image_shape: Sequence[int] | None = None,
    progress: Callable[[int], None] | None = None,
) -> SampleResult:
    """Discriminator rejection sampling (Azadi et al., 2019), the baseline for GANs.

    With logit ``D(x)`` and the running maximum ``D_M``,
    ``F = D - D_M - log(1 - exp(D - D_M - eps)) - gamma``; accept with probability
    ``sigmoid(F)``. ``gamma`` is the ``gamma_percentile`` of ``F`` over ``burn_in`` samples
    (higher percentile: stricter, more fidelity).

    Args:
        generator: callable latents -> images.
        latent_sampler: callable ``batch`` -> latents.
        discriminator: callable images -> ``(B,)`` logits.
        n: samples to accept.
        gamma_percentile: percentile of the burn-in ``F`` used as ``gamma``.
        burn_in: candidates used to estimate ``D_M`` and ``gamma``.
        batch_size: candidates per call.
        max_candidates: error past this many candidates.
        seed: seed of the acceptance draws.
        eps: stabiliser inside the log.
        image_shape: expected per-sample generator output shape (checked if given).
        progress: called with the number accepted so far.

    Returns:
        A :class:`SampleResult` (scores are the discriminator logits).

    """
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        logits = []
        for s in range(0, burn_in, batch_size):
            z = latent_sampler(min(batch_size, burn_in - s))
            logits.append(call_scorer(discriminator, call_generator(generator, z, image_shape)))
        burn = torch.cat(logits).double()
    state = {"d_max": float(burn.max())}

    def f_value(d: torch.Tensor) -> torch.Tensor:
        delta = d.double() - state["d_max"]
        return delta - torch.log1p(-torch.exp(delta - eps))

    gamma = float(np.percentile(f_value(burn).numpy(), gamma_percentile))

    def score_and_accept(x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
        d = call_scorer(discriminator, x)
        state["d_max"] = max(state["d_max"], float(d.max()))
        p = torch.sigmoid(f_value(d) - gamma).numpy()
        return d, rng.random(p.shape[0]) < p

    return _rejection_loop(
        generator, latent_sampler, score_and_accept, n, batch_size, max_candidates,
        image_shape, progress,
    )
