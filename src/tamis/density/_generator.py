"""Calling user generators and scorers safely: batch-size and shape checks with clear errors."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

Generator = Callable[[torch.Tensor], torch.Tensor]
Scorer = Callable[[torch.Tensor], torch.Tensor]


def call_generator(
    generator: Generator, latents: torch.Tensor, image_shape: Sequence[int] | None = None
) -> torch.Tensor:
    """Run ``generator(latents)`` and check that it returns one tensor sample per latent.

    Args:
        generator: callable latent/initial noise ``(B, ...)`` -> images ``(B, ...)``.
        latents: the batch of latents.
        image_shape: expected per-sample shape (e.g. ``(1, 28, 28)``), or ``None`` to skip.

    Raises:
        TypeError: if the generator does not return a tensor.
        ValueError: if the batch size or the per-sample shape is wrong, or values are not finite.

    """
    out = generator(latents)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"the generator must return a torch.Tensor, got {type(out).__name__}")
    if out.ndim == 0 or out.shape[0] != latents.shape[0]:
        raise ValueError(
            f"the generator returned shape {tuple(out.shape)} for {latents.shape[0]} latents: "
            "its first dimension must be the batch size"
        )
    if image_shape is not None and tuple(out.shape[1:]) != tuple(image_shape):
        raise ValueError(
            f"the generator returned samples of shape {tuple(out.shape[1:])}, "
            f"expected {tuple(image_shape)}"
        )
    return out


def call_scorer(scorer: Scorer, images: torch.Tensor) -> torch.Tensor:
    """Run ``scorer(images)`` and check that it returns one finite score per image.

    Raises:
        ValueError: if the scorer does not return ``(B,)`` or ``(B, 1)`` scores.

    """
    s = scorer(images)
    if not isinstance(s, torch.Tensor):
        s = torch.as_tensor(s)
    if s.ndim == 2 and s.shape[1] == 1:
        s = s[:, 0]
    if s.ndim != 1 or s.shape[0] != images.shape[0]:
        raise ValueError(
            f"the scorer returned shape {tuple(s.shape)} for {images.shape[0]} images; "
            "expected one density per image, shape (B,)"
        )
    return s
