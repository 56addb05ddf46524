"""Glue shared by the CLI, the demo and the benchmarks: bundled models, scorers, evaluation.

Loads the small Fashion-MNIST checkpoints shipped in ``tamis/density/checkpoints`` (made by
``benchmarks/density/train_checkpoints.py``) or trains tiny stand-ins when they are missing
or do not fit the data (e.g. the 8x8 digits fallback).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tamis.data import ImageDataset
from tamis.density.config import ExtractorConfig, GANConfig
from tamis.density.metrics import frechet_distance, prdc
from tamis.density.models import (
    Discriminator,
    FeatureCNN,
    Generator,
    extract,
    load_checkpoint,
    train_extractor,
    train_gan,
)
from tamis.density.predictor import DensityPredictor, train_predictor

__all__ = ["extract"]
from tamis.density.pseudo_density import PseudoDensity

CHECKPOINTS = Path(__file__).resolve().parent / "checkpoints"


@dataclass
class DemoModels:
    """The GAN and the two independent extractors (F_g steers, F_e evaluates)."""

    generator: Generator
    discriminator: Discriminator
    steer: FeatureCNN
    evaluate: FeatureCNN
    source: str


def images_tensor(ds: ImageDataset) -> torch.Tensor:
    """Images of a data set as a float tensor ``(N, 1, H, W)`` in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(ds.images[:, None], dtype=np.float32))


def load_models(
    train: ImageDataset, checkpoints: Path = CHECKPOINTS, gan_steps: int = 400,
    log: Callable[[str], None] = print,
) -> DemoModels:
    """Load the bundled checkpoints, or train tiny models on ``train`` if they do not fit.

    Args:
        train: training images (labels are used by the extractors).
        checkpoints: folder with ``gan_generator``, ``gan_discriminator``, ``extractor_steer``
            and ``extractor_eval`` ``.safetensors`` files.
        gan_steps: GAN steps of the fallback training.
        log: where progress notes go.

    Returns:
        The :class:`DemoModels`.

    """
    size = train.images.shape[1]
    names = ["gan_generator", "gan_discriminator", "extractor_steer", "extractor_eval"]
    paths = [checkpoints / f"{n}.safetensors" for n in names]
    if all(p.exists() for p in paths):
        mods = [load_checkpoint(p) for p in paths]
        if mods[0].cfg.image_size == size:  # type: ignore[union-attr]
            return DemoModels(*mods, source=f"checkpoints in {checkpoints}")  # type: ignore[arg-type]
    warnings.warn(f"no {size}x{size} checkpoints in {checkpoints}: training tiny models "
                  "(results will be weaker)", stacklevel=2)
    x, y = images_tensor(train), torch.from_numpy(train.labels)
    half = min(x.shape[0] // 2, 10_000)  # disjoint halves for the two extractors
    epochs = max(1, min(30, 10_000 // half))
    log("training the steering extractor")
    steer = train_extractor(ExtractorConfig(image_size=size, widths=(16, 32), feature_dim=64),
                            x[:half], y[:half], epochs=epochs, seed=1)
    log("training the evaluation extractor")
    ev = train_extractor(ExtractorConfig(image_size=size, widths=(32, 64), feature_dim=128),
                         x[half : 2 * half], y[half : 2 * half], epochs=epochs, seed=2)
    log(f"training the GAN ({gan_steps} steps)")
    g, d = train_gan(GANConfig(image_size=size), x, steps=gan_steps)
    return DemoModels(g, d, steer, ev, source="trained now (fallback)")


def freeze(*modules: torch.nn.Module) -> None:
    """Turn off the gradients of every parameter of ``modules`` (steering and scoring nets)."""
    for module in modules:
        for p in module.parameters():
            p.requires_grad_(False)


def density_scorer(extractor: FeatureCNN, predictor: DensityPredictor) -> Callable:
    """Differentiable images -> predicted pseudo density, ``predictor(extractor(x))``."""

    def score(x: torch.Tensor) -> torch.Tensor:
        return predictor(extractor.features(x))

    return score


def knn_scorer(extractor: FeatureCNN, density: PseudoDensity) -> Callable:
    """Non-differentiable images -> direct k-NN pseudo density in the extractor's space."""

    def score(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(density.score(extract(extractor, x)).astype(np.float32))

    return score


@dataclass
class Steering:
    """Reference densities in F_g, the fitted :class:`PseudoDensity` and the predictor."""

    density: PseudoDensity
    predictor: DensityPredictor
    scorer: Callable


def fit_steering(
    extractor: FeatureCNN, real: torch.Tensor, k: int = 20, epochs: int = 30, seed: int = 0
) -> Steering:
    """Pseudo density of the real images in the extractor's space, plus a trained predictor."""
    feats = extract(extractor, real).numpy()
    pd = PseudoDensity(k=k).fit(feats)
    pred, _ = train_predictor(feats, pd.reference_density, epochs=epochs, patience=5, seed=seed)
    freeze(pred)
    return Steering(pd, pred, density_scorer(extractor, pred))


def evaluate_images(
    extractor: FeatureCNN, real_features: np.ndarray, fake: torch.Tensor, k: int = 5
) -> dict[str, float]:
    """Precision, recall, density, coverage and FD of ``fake`` images in the extractor's space."""
    f = extract(extractor, fake).numpy()
    out = prdc(real=real_features, fake=f, k=k)
    out["fd"] = frechet_distance(real=real_features, fake=f)
    return out


def latent_sampler(dim: int, seed: int) -> Callable[[int], torch.Tensor]:
    """Make a seeded callable ``batch -> N(0, I)`` latents of width ``dim``."""
    gen = torch.Generator().manual_seed(seed)

    def sample(b: int) -> torch.Tensor:
        return torch.randn(b, dim, generator=gen)

    return sample


def generate(generator: Generator, latents: torch.Tensor, batch: int = 1024) -> torch.Tensor:
    """Run the generator without gradients, in batches."""
    with torch.no_grad():
        return torch.cat([generator(z) for z in latents.split(batch)])


def save_grid(images: torch.Tensor, path: Path, title: str, nrow: int = 8,
              rows: int | None = None) -> Path:
    """Save the first ``nrow * rows`` images (``rows`` defaults to ``nrow``) as a PNG grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = nrow if rows is None else rows
    x = images[: nrow * rows, 0].detach().cpu().numpy()
    n = x.shape[0]
    side = x.shape[1]
    canvas = np.ones((rows * (side + 1), nrow * (side + 1)))
    for i in range(n):
        r, c = divmod(i, nrow)
        canvas[r * (side + 1): r * (side + 1) + side, c * (side + 1): c * (side + 1) + side] = x[i]
    fig, ax = plt.subplots(figsize=(2.6 * nrow / 8, 2.6 * rows / 8 + 0.2), dpi=100)
    ax.imshow(canvas, cmap="gray_r", vmin=0, vmax=1)
    ax.set_title(title, fontsize=8)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
