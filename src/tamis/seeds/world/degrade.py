"""Degraded renders (blur, pixel noise, colour jitter) for judge validation and augmentation."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def degrade(image: np.ndarray, rng: np.random.Generator, blur: float = 0.0, noise: float = 0.0,
            jitter: float = 0.0) -> np.ndarray:
    """Return a degraded copy of a uint8 (H, W, 3) image.

    Args:
        image: the clean render.
        rng: random generator.
        blur: Gaussian blur sigma in pixels (0 = none).
        noise: standard deviation of additive per-pixel Gaussian noise (0-255 scale).
        jitter: standard deviation of a per-image, per-channel colour shift (0-255 scale).

    """
    x = image.astype(np.float32)
    if blur > 0:
        x = ndimage.gaussian_filter(x, sigma=(blur, blur, 0))
    if jitter > 0:
        x = x + rng.normal(0, jitter, size=(1, 1, 3))
    if noise > 0:
        x = x + rng.normal(0, noise, size=x.shape)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)
