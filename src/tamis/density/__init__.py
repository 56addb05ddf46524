"""Pseudo density: steer generative models toward fidelity or diversity (Li et al., TMLR 2024).

Pure functions on ``(N, D)`` feature arrays (:mod:`~tamis.density.knn`,
:mod:`~tamis.density.pseudo_density`, :mod:`~tamis.density.metrics`), a differentiable density
predictor (:mod:`~tamis.density.predictor`) and the paper's three techniques, generic over a
generator callable (:mod:`~tamis.density.perturb`, :mod:`~tamis.density.sampling`,
:mod:`~tamis.density.finetune`). Feature extractors users already have
(:mod:`~tamis.density.extractors`: transformers backbones, TorchScript, the FID Inception) and
resumable on-disk feature caches (:mod:`~tamis.density.cache`); ``transformers`` is imported only
when a model is opened.
"""

from tamis.density.cache import cached_features, load_cached_features
from tamis.density.extractors import (
    CallableExtractor,
    FeatureExtractor,
    HFVisionExtractor,
    InceptionFIDExtractor,
    TamisCNNExtractor,
    TorchScriptExtractor,
    check_features,
    extract_features,
    load_extractor,
)
from tamis.density.finetune import importance_weights, weighted_sampler
from tamis.density.knn import knn
from tamis.density.metrics import (
    ball_counts,
    density_coverage,
    frechet_distance,
    prdc,
    precision_recall,
)
from tamis.density.perturb import perturb_latents
from tamis.density.predictor import (
    DensityPredictor,
    load_predictor,
    save_predictor,
    train_predictor,
)
from tamis.density.pseudo_density import (
    PseudoDensity,
    knn_mean_distance,
    pseudo_density,
    threshold_from_percentile,
)
from tamis.density.sampling import (
    discriminator_rejection_sample,
    importance_accept,
    importance_sample,
    temperature_noise,
    truncate_latents,
)

__all__ = [
    "CallableExtractor",
    "DensityPredictor",
    "FeatureExtractor",
    "HFVisionExtractor",
    "InceptionFIDExtractor",
    "PseudoDensity",
    "TamisCNNExtractor",
    "TorchScriptExtractor",
    "ball_counts",
    "cached_features",
    "check_features",
    "density_coverage",
    "discriminator_rejection_sample",
    "extract_features",
    "frechet_distance",
    "importance_accept",
    "importance_sample",
    "importance_weights",
    "knn",
    "knn_mean_distance",
    "load_cached_features",
    "load_extractor",
    "load_predictor",
    "perturb_latents",
    "prdc",
    "precision_recall",
    "pseudo_density",
    "save_predictor",
    "temperature_noise",
    "threshold_from_percentile",
    "train_predictor",
    "truncate_latents",
    "weighted_sampler",
]
