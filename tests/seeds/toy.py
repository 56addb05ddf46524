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
