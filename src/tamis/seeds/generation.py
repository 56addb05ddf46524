"""Image generators behind one protocol, with explicit, batch-independent initial noise."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

import numpy as np
import torch


@dataclass(frozen=True)
class GenerationSettings:
    """How images are generated (part of every reproduction record).

    Attributes:
        height: image height in pixels.
        width: image width in pixels.
        steps: number of sampler steps.
        guidance: classifier-free guidance scale.
        generator_device: device of the torch.Generator that draws the initial noise (CPU and
            CUDA generators give different noise for the same seed).
        dtype: model dtype ("float32", "float16", "bfloat16").

    """

    height: int
    width: int
    steps: int
    guidance: float
    generator_device: str = "cpu"
    dtype: str = "float32"

    def to_dict(self) -> dict:
        """Plain-dict form."""
        return asdict(self)


def initial_latents(
    seeds: Sequence[int], shape: tuple[int, ...], device: str = "cpu"
) -> torch.Tensor:
    """Initial noise, one ``torch.Generator(device).manual_seed(s)`` per image.

    Returns a float32 CPU tensor (B, *shape). The same seed always gives the same noise,
    whatever the batch it is drawn in.
    """
    out = []
    for seed in seeds:
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seeds must be non-negative integers, got {seed!r}")
        gen = torch.Generator(device=device).manual_seed(int(seed))
        noise = torch.randn(tuple(shape), generator=gen, device=device, dtype=torch.float32)
        out.append(noise.cpu())
    if not out:
        return torch.zeros((0, *shape), dtype=torch.float32)
    return torch.stack(out)


def noise_hash(latents: torch.Tensor) -> str:
    """SHA-256 of the float32 bytes of one image's initial noise."""
    arr = latents.detach().to("cpu", torch.float32).contiguous().numpy()
    return hashlib.sha256(arr.tobytes()).hexdigest()


class ImageGenerator(Protocol):
    """A text-to-image model driven by explicit initial noise."""

    settings: GenerationSettings

    def fingerprint(self) -> str:
        """Stable hash of the weights and configuration."""
        ...

    def scheduler_info(self) -> dict:
        """``{"class": "DDIMScheduler", "config": {...}}``."""
        ...

    def latent_shape(self) -> tuple[int, ...]:
        """Per-image initial-noise shape, e.g. (4, 64, 64)."""
        ...

    def generate(self, prompts: Sequence[str], latents: torch.Tensor) -> np.ndarray:
        """uint8 (B, H, W, 3) images from the given initial noise (deterministic sampler)."""
        ...
