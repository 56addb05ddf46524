"""Typed configuration for every stage of the LoRIF engine.

Each knob is a dataclass field with its meaning in the docstring. Validation happens in
``__post_init__`` so a bad value fails where it is written, with a message naming it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

StoreDtype = Literal["float16", "bfloat16", "float32", "float64", "int8"]
STORE_DTYPES = ("float16", "bfloat16", "float32", "float64", "int8")
CURVATURE_KINDS = ("lowrank", "dense", "identity", "kfac", "ekfac")


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


@dataclass(frozen=True)
class ProjectionConfig:
    """Two-sided random projection per layer (paper Step 1).

    Attributes:
        d1: Projected input dimension (P_in is I x d1).
        d2: Projected output-gradient dimension (P_out is O x d2).
        seed: Base seed; each layer's matrices are regenerated from (seed, layer name),
            never stored with the data.
        kind: ``"gaussian"`` (N(0, 1/d)), ``"rademacher"`` (+-1/sqrt(d)) or ``"identity"``
            (no projection: d1 = I, d2 = O; for exactness checks and tiny models).
        clip_to_layer: If True (default) a d1 > I or d2 > O is clipped to the layer's
            dimension and that side uses the identity (lossless; the layer's entry in the
            store layout says ``"clipped": true``), so the default configuration runs on
            any model, e.g. a 10-class output layer under d2 = 64. If False (strict) it is an
            error naming the layer.
        include_bias: Treat a layer's bias as an extra input column of ones, so its
            gradient is attributed too.
        identity_up_to: If set, a side whose full dimension (input with its bias column,
            or output) is at most this is kept unprojected (identity, lossless) and only
            larger sides are projected to d1 / d2. The factored store then holds
            c * (I + O) numbers for a small layer, a few times d1 + d2, and the curvature
            sees the layer's exact input and output-gradient covariances (what Kronecker
            curvature needs); large layers stay projected, so the store stays bounded on
            large models. ``None`` projects every side larger than d1 / d2.

    """

    d1: int = 64
    d2: int = 64
    seed: int = 0
    kind: Literal["gaussian", "rademacher", "identity"] = "gaussian"
    clip_to_layer: bool = True
    include_bias: bool = True
    identity_up_to: int | None = None

    def __post_init__(self) -> None:
        _check(self.kind in ("gaussian", "rademacher", "identity"), f"unknown kind {self.kind!r}")
        _check(self.d1 >= 1 and self.d2 >= 1, f"d1, d2 must be >= 1, got {self.d1}, {self.d2}")
        _check(self.identity_up_to is None or self.identity_up_to >= 1,
               f"identity_up_to must be None or >= 1, got {self.identity_up_to}")


@dataclass(frozen=True)
class FactorConfig:
    """Rank-c factors of each projected per-example gradient (paper Step 2).

    Attributes:
        rank: c, the number of factor pairs stored per layer and example. Exact whenever
            the per-example gradient has rank <= c (rank 1 for non-sequence inputs).
            ``None`` stores the dense d1 x d2 matrix instead (the LoGRA baseline).
        dtype: On-disk dtype of the factors. ``"int8"`` block-quantises each row (64
            numbers share a float32 absmax scale; 1.06 bytes a number, error at most 0.4 %
            of each block's largest entry), 53 % of float16's bytes.
        truncation: Which rank-c approximation of a per-example gradient of rank > c is
            kept: ``"frobenius"`` (the best in the plain Frobenius norm; the paper's) or
            ``"whitened"`` (the best in the K-FAC metric of the inverse curvature,
            (C_in + delta)^-1/2 G (C_out + delta)^-1/2, from the layer's input and
            output-gradient covariances; one extra pass over the data before the build, see
            :mod:`tamis.attribution.truncation`). Exact gradients (rank <= c) are stored
            exactly either way.
        truncation_damping: delta of the whitened metric, relative to the mean eigenvalue of
            each covariance.
        max_numbers: If set, a layer keeps at most max(1, max_numbers // (d1 + d2)) factor
            pairs, so no layer's factors hold more numbers than this; e.g. 4096 = the
            dense 64 x 64 LoGRA gradient, which bounds the store by dense LoGRA's on any
            model while small layers keep up to ``rank`` pairs. ``None``: no cap.

    """

    rank: int | None = 1
    dtype: StoreDtype = "float16"
    truncation: Literal["frobenius", "whitened"] = "frobenius"
    truncation_damping: float = 1.0
    max_numbers: int | None = None

    def __post_init__(self) -> None:
        _check(self.rank is None or self.rank >= 1, f"rank c must be >= 1, got {self.rank}")
        _check(
            self.dtype in STORE_DTYPES, f"dtype must be one of {STORE_DTYPES}, got {self.dtype!r}"
        )
        _check(self.truncation in ("frobenius", "whitened"),
               f"truncation must be 'frobenius' or 'whitened', got {self.truncation!r}")
        _check(self.truncation_damping > 0,
               f"truncation_damping must be > 0, got {self.truncation_damping}")
        _check(self.max_numbers is None or self.max_numbers >= 1,
               f"max_numbers must be None or >= 1, got {self.max_numbers}")

    @property
    def dense(self) -> bool:
        """True for the dense (LoGRA) store."""
        return self.rank is None


@dataclass(frozen=True)
class BuildConfig:
    """How the store is written.

    Attributes:
        batch_size: Examples per forward/backward pass.
        shard_size: Examples per shard file (the unit of atomic write and resume).
        compute_dtype: Precision of capture and factorisation (``"float64"`` for tests).
        progress: Show rich progress bars.

    """

    batch_size: int = 64
    shard_size: int = 4096
    compute_dtype: Literal["float32", "float64"] = "float32"
    progress: bool = True

    def __post_init__(self) -> None:
        _check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        _check(self.shard_size >= 1, f"shard_size must be >= 1, got {self.shard_size}")


@dataclass(frozen=True)
class CurvatureConfig:
    """Damped empirical-Fisher preconditioner (paper Step 3).

    Attributes:
        kind: ``"lowrank"`` (truncated SVD + Woodbury, O(D r) memory; LoRIF),
            ``"dense"`` (the full D x D damped inverse; LoGRA), ``"identity"``
            (no curvature; gradient dot / cosine), ``"kfac"`` (per-layer Kronecker factors
            A (x) S of the activation and output-gradient covariances) or ``"ekfac"``
            (K-FAC's eigenbasis with eigenvalues corrected to the gradients' exact second
            moments; Kronfluence's default). The Kronecker kinds recompute activations and
            output-gradients from the model and data (two passes for ``ekfac``, one for
            ``kfac``) for every ``fisher``; ``rank``, ``method`` and ``granularity`` do not
            apply to them.
        rank: r, the retained eigen-directions (``lowrank`` only); clipped to D.
        damping: lambda, absolute or relative to the mean eigenvalue of F.
        damping_mode: ``"relative"`` (lambda = damping * trace(F) / D, the LogIX /
            Kronfluence heuristic) or ``"absolute"``.
        granularity: ``"layer"`` (block-diagonal, default) or ``"model"`` (one block).
        method: ``"randomized"`` (Halko streaming SVD over the factored store: one pass
            per power iteration plus two), ``"nystrom"`` (single-pass Nystrom sketch of the
            PSD F, Tropp et al. 2017: one pass, slightly less accurate) or ``"exact"``
            (accumulate F = G^T G / N and eigendecompose; D <= a few thousand).
        oversample: Extra random directions for the randomized SVD.
        power_iters: Power iterations for the randomized SVD.
        seed: Seed of the randomized SVD's test matrix.
        chunk_size: Examples per streamed chunk.
        fisher: Which Fisher the curvature estimates: ``"empirical"`` (the stored
            gradients of the observed labels; the paper's), ``"true"`` (gradients of
            labels sampled from the model, recomputed from the model and data at fit time
            and never stored; Kronfluence's) or ``"ggn"`` (the exact Gauss-Newton matrix,
            K pseudo-gradients per example; small output spaces).
        n_samples: Sampled labels per example for ``fisher="true"``.
        fisher_batch_size: Examples per forward/backward of the true-Fisher / GGN pass.

    """

    kind: Literal["lowrank", "dense", "identity", "kfac", "ekfac"] = "lowrank"
    rank: int = 256
    damping: float = 1.0
    damping_mode: Literal["relative", "absolute"] = "relative"
    granularity: Literal["layer", "model"] = "layer"
    method: Literal["randomized", "nystrom", "exact"] = "randomized"
    oversample: int = 10
    power_iters: int = 2
    seed: int = 0
    chunk_size: int = 4096
    tail: Literal["none", "isotropic"] = "none"
    cache_projections: bool = False
    fisher: Literal["empirical", "true", "ggn"] = "empirical"
    n_samples: int = 1
    fisher_batch_size: int = 64

    def __post_init__(self) -> None:
        _check(self.kind in CURVATURE_KINDS, f"unknown kind {self.kind!r}")
        _check(self.fisher in ("empirical", "true", "ggn"), f"unknown fisher {self.fisher!r}")
        _check(
            isinstance(self.n_samples, int) and not isinstance(self.n_samples, bool)
            and self.n_samples >= 1,
            f"n_samples must be an integer >= 1, got {self.n_samples!r}",
        )
        _check(self.fisher_batch_size >= 1, "fisher_batch_size must be >= 1")
        _check(self.tail in ("none", "isotropic"), f"bad tail {self.tail!r}")
        _check(self.rank >= 1, f"rank r must be >= 1, got {self.rank}")
        _check(self.damping > 0, f"damping must be > 0, got {self.damping}")
        _check(
            self.damping_mode in ("relative", "absolute"), f"bad damping_mode {self.damping_mode!r}"
        )
        _check(self.granularity in ("layer", "model"), f"bad granularity {self.granularity!r}")
        _check(self.method in ("randomized", "nystrom", "exact"), f"bad method {self.method!r}")
        _check(self.oversample >= 0 and self.power_iters >= 0, "oversample, power_iters >= 0")
        _check(self.chunk_size >= 1, f"chunk_size must be >= 1, got {self.chunk_size}")


@dataclass(frozen=True)
class ScoreConfig:
    """How queries are scored against the store.

    Attributes:
        normalize: ``"none"`` (influence / gradient dot), ``"cosine"`` (divide by both
            norms) or ``"train_unit"`` (divide by the training gradient's norm only).
        kernel: ``"reconstruct"`` (rebuild a block of training gradients, one GEMM against
            all queries), ``"factored"`` (contract the training factors with the dense
            preconditioned queries) or ``"subspace"`` (both sides factored: the query's exact
            low-rank factors against the training factors, plus the curvature-subspace
            correction through the cached H = G V; needs ``cache_projections``).
        top_k: Number of most helpful and most harmful examples kept per query.
        chunk_size: Training examples per streamed chunk.
        keep_scores: Keep the full (queries x N) score matrix in memory.
        batch_size: Query examples per forward/backward pass.
        progress: Show rich progress bars.

    """

    normalize: Literal["none", "cosine", "train_unit"] = "none"
    kernel: Literal["reconstruct", "factored", "subspace"] = "reconstruct"
    top_k: int = 10
    chunk_size: int = 4096
    keep_scores: bool = True
    batch_size: int = 64
    progress: bool = True

    def __post_init__(self) -> None:
        _check(
            self.normalize in ("none", "cosine", "train_unit"), f"bad normalize {self.normalize!r}"
        )
        _check(
            self.kernel in ("reconstruct", "factored", "subspace"), f"bad kernel {self.kernel!r}"
        )
        _check(self.top_k >= 0, f"top_k must be >= 0, got {self.top_k}")
        _check(self.chunk_size >= 1 and self.batch_size >= 1, "chunk_size, batch_size >= 1")


def to_dict(cfg: object) -> dict:
    """A JSON-ready dict of a config dataclass."""
    return asdict(cfg)  # type: ignore[arg-type]
