"""Shared fixtures: the tiny Stable Diffusion pipeline (built once) and a toy judge."""

from __future__ import annotations

import pytest
import torch

from seeds.tiny_pipeline import build_tiny_sd
from seeds.toy import ToyJudge

# One thread: on a shared 2-core machine, 2 OpenMP threads spin and slow tiny models 100x.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory):
    """A tiny StableDiffusionPipeline saved to disk."""
    return build_tiny_sd(tmp_path_factory.mktemp("tiny-sd") / "pipe")


@pytest.fixture(scope="session")
def tiny_generator(tiny_sd_dir):
    """The tiny pipeline loaded back by path (16x16 images, 3 DDIM steps)."""
    from tamis.seeds.generation import DiffusersGenerator

    return DiffusersGenerator.from_pretrained(tiny_sd_dir, steps=3, guidance=2.0)


@pytest.fixture
def toy_judge():
    """A fresh toy judge."""
    return ToyJudge()
