"""Shared fixtures: the tiny Stable Diffusion pipeline (built once) and a toy judge."""

from __future__ import annotations

import numpy as np
import pytest

from seeds.tiny_pipeline import build_tiny_sd
from tamis.seeds.judges.base import Verdict


@pytest.fixture(scope="session")
def tiny_sd_dir(tmp_path_factory):
    """A tiny StableDiffusionPipeline saved to disk."""
    return build_tiny_sd(tmp_path_factory.mktemp("tiny-sd") / "pipe")


@pytest.fixture(scope="session")
def tiny_generator(tiny_sd_dir):
    """The tiny pipeline loaded back by path (16x16 images, 3 DDIM steps)."""
    from tamis.seeds.generation import DiffusersGenerator

    return DiffusersGenerator.from_pretrained(tiny_sd_dir, steps=3, guidance=2.0)


class ToyJudge:
    """A deterministic judge: the count is read off the image's mean brightness."""

    name = "toy"

    def judge(self, images, questions):
        """Verdict from the mean pixel value (a pure function of the image)."""
        out = []
        for image, q in zip(images, questions):
            value = int(np.asarray(image, dtype=np.int64).sum()) % 7
            if q.kind == "count":
                out.append(Verdict.of(q, value, raw=str(value), positions=[(value / 7, 0.5)]))
            else:
                out.append(Verdict.of(q, value % 2 == 0, raw=str(value)))
        return out


@pytest.fixture
def toy_judge():
    """A fresh toy judge."""
    return ToyJudge()
