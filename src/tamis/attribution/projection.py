"""Two-sided random projections, regenerated from a seed (never stored with the data).

For a layer with input dimension I and output dimension O we draw P_in (I x d1) and
P_out (O x d2); the projected per-example gradient is G = (X P_in)^T (dY P_out), equal to
(P_in kron P_out)^T vec(dL/dW) without ever forming the I x O gradient.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import torch

from tamis.attribution.config import ProjectionConfig
from tamis.attribution.errors import AttributionError


@dataclass(frozen=True)
class LayerSpec:
    """Shapes of one tracked layer: input dim (bias column included), output dim, d1, d2.

    ``clipped`` records that the requested d1 or d2 exceeded the layer and was lowered to it
    (that side is then the identity); it is written to the store's layer layout.
    """

    name: str
    in_dim: int
    out_dim: int
    d1: int
    d2: int
    in_identity: bool
    out_identity: bool
    clipped: bool = False

    @property
    def dim(self) -> int:
        """D_l = d1 * d2, the projected gradient's dimension."""
        return self.d1 * self.d2

    def to_dict(self) -> dict:
        """JSON-ready description."""
        return dict(self.__dict__)


def layer_spec(name: str, in_dim: int, out_dim: int, cfg: ProjectionConfig) -> LayerSpec:
    """Resolve the projected dims of a layer, enforcing or clipping ``d <= dim``."""
    if cfg.kind == "identity":
        return LayerSpec(name, in_dim, out_dim, in_dim, out_dim, True, True)
    for side, d, full in (("d1", cfg.d1, in_dim), ("d2", cfg.d2, out_dim)):
        if d > full and not cfg.clip_to_layer:
            raise AttributionError(
                f"projection {side}={d} is larger than layer {name!r}'s "
                f"{'input' if side == 'd1' else 'output'} dimension {full}; lower it or "
                "set ProjectionConfig(clip_to_layer=True)"
            )
    d1, d2 = min(cfg.d1, in_dim), min(cfg.d2, out_dim)
    clipped = d1 < cfg.d1 or d2 < cfg.d2
    if cfg.identity_up_to is not None:
        d1 = in_dim if in_dim <= cfg.identity_up_to else d1
        d2 = out_dim if out_dim <= cfg.identity_up_to else d2
    return LayerSpec(name, in_dim, out_dim, d1, d2, d1 == in_dim, d2 == out_dim, clipped)


def _seed_for(base: int, name: str, side: str) -> int:
    return (base * 1_000_003 + zlib.crc32(f"{name}/{side}".encode())) % (2**63 - 1)


def projection_matrix(
    rows: int, cols: int, kind: str, seed: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """A rows x cols random projection with E[P P^T] = I (Gaussian or Rademacher)."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    if kind == "gaussian":
        p = torch.randn(rows, cols, generator=gen, dtype=torch.float64) / cols**0.5
    elif kind == "rademacher":
        p = (torch.randint(0, 2, (rows, cols), generator=gen).to(torch.float64) * 2 - 1) / cols**0.5
    else:
        raise AttributionError(f"unknown projection kind {kind!r}")
    return p.to(dtype)


def layer_projections(
    spec: LayerSpec, cfg: ProjectionConfig, dtype: torch.dtype
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(P_in, P_out) for a layer; ``None`` on a side that is the identity."""
    p_in = (
        None
        if spec.in_identity
        else projection_matrix(
            spec.in_dim, spec.d1, cfg.kind, _seed_for(cfg.seed, spec.name, "in"), dtype
        )
    )
    p_out = (
        None
        if spec.out_identity
        else projection_matrix(
            spec.out_dim, spec.d2, cfg.kind, _seed_for(cfg.seed, spec.name, "out"), dtype
        )
    )
    return p_in, p_out
