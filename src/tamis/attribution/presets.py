"""Named presets: the store and curvature each method runs with when the user says nothing else.

The default method is ``"ekfac"``, chosen by measurement (``benchmarks/attribution/defaults.py``
on settings (a) MLP, (b) byte-level transformer, (c) MiniLM; tables in
``benchmarks/results/attribution_defaults_*.md`` and ``docs/attribution.md``): EK-FAC
curvature in the unprojected space of every layer side of at most 1,024 (larger sides are
projected to 64), up to 32 rank-c factor pairs per example and layer stored as int8 blocks,
never more bytes than the dense float16 64 x 64 LoGRA gradient (at most 7,616 numbers a
layer), empirical Fisher, damping 1 x the mean eigenvalue (which the Attributor divides by
the training horizon and the loss terms per example: :mod:`tamis.attribution.horizon`).
``"lorif"`` is the paper's
configuration (64 x 64 projection, c = 1, r = 256 Woodbury) one argument away.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from tamis.attribution.config import CurvatureConfig, FactorConfig, ProjectionConfig
from tamis.attribution.store import bytes_per_number

DEFAULT_METHOD = "ekfac"


@dataclass(frozen=True)
class Preset:
    """What a method runs with by default: projection, stored factors and curvature."""

    projection: ProjectionConfig
    factors: FactorConfig
    curvature: CurvatureConfig


#: int8 factors (1.06 bytes a number) capped at 7,616 numbers a layer: a store row is never
#: larger than the dense float16 64 x 64 LoGRA row (8,192 bytes a layer), with about twice
#: the factor pairs of a float16 cap at 4,096 numbers.
KRONECKER_FACTORS = FactorConfig(rank=32, dtype="int8", max_numbers=7616)
_KRONECKER_STORE = (ProjectionConfig(identity_up_to=1024), KRONECKER_FACTORS)

PRESETS: dict[str, Preset] = {
    "ekfac": Preset(*_KRONECKER_STORE, CurvatureConfig(kind="ekfac")),
    "kfac": Preset(*_KRONECKER_STORE, CurvatureConfig(kind="kfac")),
    "lorif": Preset(ProjectionConfig(), FactorConfig(rank=1), CurvatureConfig(kind="lowrank")),
    "logra": Preset(ProjectionConfig(), FactorConfig(rank=None), CurvatureConfig(kind="dense")),
    "grad_dot": Preset(ProjectionConfig(), FactorConfig(rank=1), CurvatureConfig(kind="identity")),
    "grad_cos": Preset(ProjectionConfig(), FactorConfig(rank=1), CurvatureConfig(kind="identity")),
}


def factors_with_dtype(factors: FactorConfig, dtype: str | None) -> FactorConfig:
    """``factors`` stored as ``dtype`` (``None``: unchanged), in the same bytes per layer.

    The per-layer cap is rescaled to keep the byte budget (e.g. the ekfac preset's int8 cap
    of 7,616 numbers is 4,046 numbers in float16).

    Raises:
        ValueError: an unknown dtype (from :class:`FactorConfig`).

    """
    if dtype is None or dtype == factors.dtype:
        return factors
    new = replace(factors, dtype=dtype)  # validates dtype
    if factors.max_numbers is not None:
        budget = factors.max_numbers * bytes_per_number(factors.dtype)
        new = replace(new, max_numbers=max(1, int(budget // bytes_per_number(dtype))))
    return new


def preset(method: str) -> Preset:
    """The preset of ``method`` (one of :data:`PRESETS`).

    Raises:
        ValueError: an unknown method, naming the known ones.

    """
    if method not in PRESETS:
        raise ValueError(f"method must be one of {tuple(PRESETS)}, got {method!r}")
    return PRESETS[method]


def curvature_kind_for(manifest: dict) -> str:
    """The curvature kind a store was built for: its preset's, else lowrank / dense by rank."""
    name = manifest.get("preset")
    if name in PRESETS:
        return PRESETS[name].curvature.kind
    return "dense" if manifest.get("rank") is None else "lowrank"
