"""LoRIF: low-rank influence functions for scalable training-data attribution.

The engine, in the order data flows through it:

1. :class:`AttributionTask` -- the user's contract (per-example loss, query measurement).
2. :func:`build_store` -- hooks capture projected inputs and output-gradients per layer,
   :mod:`~tamis.attribution.factors` keeps rank-c factors, :class:`FactorStore` writes shards.
3. :func:`fit_curvature` -- streaming randomized SVD + Woodbury preconditioner.
4. :func:`compute_scores` / :func:`self_influence` -- precondition queries, stream the store.

:class:`StoreCallback` (``tamis.attribution.trainer``, imported lazily with transformers)
collects the store inside a transformers ``Trainer``'s own training steps.

:class:`Attributor` wraps the four steps with method presets
(:mod:`~tamis.attribution.presets`): ``ekfac`` (the default, chosen by measurement), ``kfac``,
``lorif`` (the paper's), ``logra``, ``grad_dot``, ``grad_cos``.
"""

from tamis.attribution.build import build_store, model_fingerprint, query_gradients
from tamis.attribution.config import (
    BuildConfig,
    CurvatureConfig,
    FactorConfig,
    ProjectionConfig,
    ScoreConfig,
)
from tamis.attribution.curvature import Curvature, fit_curvature
from tamis.attribution.errors import (
    AttributionError,
    NonFiniteError,
    StoreError,
    StoreMismatchError,
    UnsupportedModuleError,
)
from tamis.attribution.fisher import FisherSource, sampled_cross_entropy
from tamis.attribution.horizon import (
    TrainingHorizon,
    horizon_damping,
    horizon_damping_mode,
    horizon_from_trainer_state,
    horizon_of_model,
)
from tamis.attribution.methods import METHODS, Attributor
from tamis.attribution.optim_horizon import HorizonTracker
from tamis.attribution.presets import DEFAULT_METHOD, PRESETS, Preset, preset
from tamis.attribution.scoring import ScoreResult, compute_scores, score_gradients, self_influence
from tamis.attribution.store import FactorStore
from tamis.attribution.task import AttributionTask

_LAZY = {"StoreCallback": "tamis.attribution.trainer"}  # imports transformers on first use


def __getattr__(name: str):  # noqa: ANN202
    """Lazily import the transformers-dependent names (``StoreCallback``)."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tamis.attribution' has no attribute {name!r}")


__all__ = [
    "StoreCallback",
    "DEFAULT_METHOD",
    "PRESETS",
    "Preset",
    "preset",
    "FisherSource",
    "sampled_cross_entropy",
    "METHODS",
    "AttributionError",
    "AttributionTask",
    "Attributor",
    "TrainingHorizon",
    "HorizonTracker",
    "horizon_damping",
    "horizon_damping_mode",
    "horizon_from_trainer_state",
    "horizon_of_model",
    "BuildConfig",
    "Curvature",
    "CurvatureConfig",
    "FactorConfig",
    "FactorStore",
    "NonFiniteError",
    "ProjectionConfig",
    "ScoreConfig",
    "ScoreResult",
    "StoreError",
    "StoreMismatchError",
    "UnsupportedModuleError",
    "build_store",
    "compute_scores",
    "fit_curvature",
    "model_fingerprint",
    "query_gradients",
    "score_gradients",
    "self_influence",
]
