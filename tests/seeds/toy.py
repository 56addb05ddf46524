"""A deterministic toy judge for the mining tests."""

from __future__ import annotations

import numpy as np

from tamis.seeds.judges.base import Verdict


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


class ToyGenerator:
    """A cheap deterministic ImageGenerator (no diffusers): pixels from noise and prompt."""

    def __init__(self):
        """Settings of a 4x4 'model'."""
        from tamis.seeds.generation import GenerationSettings

        self.settings = GenerationSettings(height=4, width=4, steps=1, guidance=1.0)

    def fingerprint(self):
        """A fixed fingerprint."""
        return "toy"

    def scheduler_info(self):
        """No scheduler."""
        return {"class": "none", "config": {}}

    def latent_shape(self):
        """(3, 4, 4) noise."""
        return (3, 4, 4)

    def generate(self, prompts, latents):
        """Pixels = noise shifted by the prompt length, as uint8 (B, 4, 4, 3)."""
        x = latents.numpy().transpose(0, 2, 3, 1)
        shift = np.array([len(p) for p in prompts], float)[:, None, None, None]
        return np.clip((x + shift / 10) * 40 + 128, 0, 255).astype(np.uint8)
