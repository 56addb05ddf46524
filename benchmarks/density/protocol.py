"""The Fashion-MNIST scoring protocol shared by ``demonstration.py`` and ``direction_regimes.py``.

Steering: pseudo density (k = 20) of 10,000 training images (a fixed random subset, seed 0) in
F_g, through the MLP predictor. Scoring: the independent extractor F_e. Equal sizes: M generated
images are scored against the first M test images of a fixed permutation per seed
(``1000 + seed``), shared by every setting of that seed, so differences are paired.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from tamis.data import ImageDataset, load_fashion_mnist
from tamis.density import pipeline as pl
from tamis.density.models import extract


def single_thread() -> None:
    """One torch thread and one faiss thread (the machines are shared; compare ratios only)."""
    torch.set_num_threads(1)
    try:
        import faiss

        faiss.omp_set_num_threads(1)
    except ImportError:  # pragma: no cover
        pass


@dataclass
class Protocol:
    """Data, frozen bundled models, the steering fit and the F_e test features."""

    train: ImageDataset
    test: ImageDataset
    models: pl.DemoModels
    ref_idx: np.ndarray
    steer: pl.Steering
    test_feats: np.ndarray
    _perms: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    def reals(self, seed: int, m: int) -> np.ndarray:
        """F_e features of the ``m`` real test images that seed ``seed`` scores against."""
        if seed not in self._perms:
            self._perms[seed] = np.random.default_rng(1000 + seed).permutation(
                len(self.test_feats))
        return self.test_feats[self._perms[seed][:m]]


def setup() -> Protocol:
    """Load Fashion-MNIST and the bundled models (frozen), fit the steering, extract the test."""
    train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    models = pl.load_models(train)
    pl.freeze(models.generator, models.discriminator, models.steer, models.evaluate)
    ref_idx = np.sort(np.random.default_rng(0).choice(len(train), 10_000, replace=False))
    steer = pl.fit_steering(models.steer, pl.images_tensor(train)[ref_idx])
    test_feats = extract(models.evaluate, pl.images_tensor(test)).numpy()
    return Protocol(train, test, models, ref_idx, steer, test_feats)
