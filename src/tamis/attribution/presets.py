"""Named presets: the store and curvature each method runs with when the user says nothing else.

The default method is ``"ekfac"``, chosen by measurement (``benchmarks/attribution/defaults.py``
on settings (a) MLP, (b) byte-level transformer, (c) MiniLM; tables in
``benchmarks/results/attribution_defaults_*.md`` and ``docs/attribution.md``): EK-FAC
curvature in the unprojected space of every layer side of at most 1,024 (larger sides are
projected to 64), up to 16 rank-c factor pairs per example and layer but never more numbers
than the dense 64 x 64 LoGRA gradient (4,096), empirical Fisher, damping 1 x the mean
eigenvalue. ``"lorif"`` is the paper's configuration (64 x 64 projection, c = 1, r = 256
Woodbury) one argument away.
"""

from __future__ import annotations

from dataclasses import dataclass

from tamis.attribution.config import CurvatureConfig, FactorConfig, ProjectionConfig

DEFAULT_METHOD = "ekfac"


@dataclass(frozen=True)
class Preset:
    """What a method runs with by default: projection, stored factors and curvature."""

    projection: ProjectionConfig
    factors: FactorConfig
    curvature: CurvatureConfig


_KRONECKER_STORE = (ProjectionConfig(identity_up_to=1024), FactorConfig(rank=16, max_numbers=4096))

PRESETS: dict[str, Preset] = {
    "ekfac": Preset(*_KRONECKER_STORE, CurvatureConfig(kind="ekfac")),
    "kfac": Preset(*_KRONECKER_STORE, CurvatureConfig(kind="kfac")),
    "lorif": Preset(ProjectionConfig(), FactorConfig(rank=1), CurvatureConfig(kind="lowrank")),
    "logra": Preset(ProjectionConfig(), FactorConfig(rank=None), CurvatureConfig(kind="dense")),
    "grad_dot": Preset(ProjectionConfig(), FactorConfig(rank=1), CurvatureConfig(kind="identity")),
    "grad_cos": Preset(ProjectionConfig(), FactorConfig(rank=1), CurvatureConfig(kind="identity")),
}


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
