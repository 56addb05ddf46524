"""Diffusion pieces shared by the tools that fine-tune diffusers models (seeds, density)."""

from __future__ import annotations

from typing import Any

import torch


def denoising_target(scheduler: Any, x0: torch.Tensor, noise: torch.Tensor,
                     t: torch.Tensor) -> torch.Tensor:
    """What the model must predict from ``add_noise(x0, noise, t)``, as diffusers trains it.

    ``epsilon``: the noise; ``v_prediction``: ``scheduler.get_velocity``; ``sample``: ``x0``
    (the scheduler config's ``prediction_type``, ``epsilon`` when absent).

    Raises:
        ValueError: for any other prediction type.

    """
    kind = getattr(scheduler.config, "prediction_type", "epsilon") or "epsilon"
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(x0, noise, t)
    if kind == "sample":
        return x0
    raise ValueError(f"unsupported prediction_type {kind!r}")
