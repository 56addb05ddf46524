"""One front door over the engine: LoRIF and its baselines as named presets.

============  ==================================  =================================
method        store                               curvature
============  ==================================  =================================
``lorif``     rank-c factors (c = ``rank_c``)     top-r SVD + Woodbury (r = ``rank_r``)
``logra``     dense d1 x d2 (LoGRA)               full D x D damped inverse
``grad_dot``  rank-c factors                      identity, plain dot product
``grad_cos``  rank-c factors                      identity, cosine similarity
``ekfac``     rank-c factors                      per-layer EK-FAC (Kronecker eigenbasis,
                                                  corrected eigenvalues; Kronfluence's)
``kfac``      rank-c factors                      per-layer K-FAC A (x) S
============  ==================================  =================================

The Kronecker methods fit their factors in extra passes over the data (with the curvature's
``fisher``); with ``ProjectionConfig(kind="identity")`` they precondition in the unprojected
layer space, as Kronfluence does, while the store still holds rank-c factors.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from tamis.attribution.build import build_store
from tamis.attribution.config import (
    BuildConfig,
    CurvatureConfig,
    FactorConfig,
    ProjectionConfig,
    ScoreConfig,
)
from tamis.attribution.curvature import Curvature, fit_curvature
from tamis.attribution.scoring import ScoreResult, compute_scores, self_influence
from tamis.attribution.store import FactorStore
from tamis.attribution.task import AttributionTask

Method = Literal["lorif", "logra", "grad_dot", "grad_cos", "ekfac", "kfac"]
METHODS = ("lorif", "logra", "grad_dot", "grad_cos", "ekfac", "kfac")
_KINDS = {"lorif": "lowrank", "logra": "dense", "ekfac": "ekfac", "kfac": "kfac"}


class Attributor:
    """Fit a store and preconditioner once, then score any number of query batches.

    Example::

        attributor = Attributor(task, model, "runs/lorif", method="lorif", rank_c=1, rank_r=256)
        attributor.fit(train_dataset)
        result = attributor.score(test_dataset)       # result.scores, result.helpful, ...

    Args:
        task: The user's :class:`AttributionTask`.
        model: The trained model.
        path: Store folder (created; resumed if a partial build is there).
        method: One of ``lorif``, ``logra``, ``grad_dot``, ``grad_cos``, ``ekfac``,
            ``kfac``.
        projection: Two-sided projection config.
        rank_c: c, factors per example and layer (every method but ``logra``).
        rank_r: r, retained curvature directions (``lorif``).
        dtype: On-disk dtype.
        curvature: Full curvature config (overrides ``rank_r`` and the method's kind).
        build: Build config.
        compute_dtype: Precision of curvature and scoring.

    """

    def __init__(
        self,
        task: AttributionTask,
        model: nn.Module,
        path: str | Path,
        method: Method = "lorif",
        projection: ProjectionConfig | None = None,
        rank_c: int = 1,
        rank_r: int = 256,
        dtype: str = "float16",
        curvature: CurvatureConfig | None = None,
        build: BuildConfig | None = None,
        compute_dtype: torch.dtype = torch.float32,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.task, self.model, self.path, self.method = task, model, Path(path), method
        self.projection = projection or ProjectionConfig()
        self.factors = FactorConfig(rank=None if method == "logra" else rank_c, dtype=dtype)
        kind = _KINDS.get(method, "identity")
        self.curvature_config = replace(curvature or CurvatureConfig(rank=rank_r), kind=kind)
        self.build_config = build or BuildConfig()
        self.compute_dtype = compute_dtype
        self.store: FactorStore | None = None
        self.curvature: Curvature | None = None

    def fit(
        self,
        dataset: Any,
        collate_fn: Callable[[Sequence[Any]], Any] | None = None,
        overwrite: bool = False,
    ) -> Attributor:
        """Build (or resume) the store of ``dataset`` and fit the preconditioner."""
        self.store = build_store(
            self.task,
            self.model,
            dataset,
            self.path,
            self.projection,
            self.factors,
            self.build_config,
            collate_fn,
            overwrite,
        )
        from tamis.attribution.fisher import source_for

        cfg = self.curvature_config
        source = source_for(cfg, self.task, self.model, dataset, self.store, collate_fn)
        self.curvature = fit_curvature(
            self.store, cfg, self.compute_dtype, self.build_config.progress, source
        )
        self.curvature.save(self.path / f"curvature-{self.curvature.kind}.safetensors")
        return self

    def _fitted(self) -> tuple[FactorStore, Curvature]:
        if self.store is None or self.curvature is None:
            raise RuntimeError("call fit() before scoring")
        return self.store, self.curvature

    def score(
        self,
        queries: Any,
        config: ScoreConfig | None = None,
        collate_fn: Callable[[Sequence[Any]], Any] | None = None,
    ) -> ScoreResult:
        """Scores of every query against every training example (positive = helpful)."""
        store, curvature = self._fitted()
        cfg = config or ScoreConfig(progress=self.build_config.progress)
        if self.method == "grad_cos" and cfg.normalize == "none":
            cfg = replace(cfg, normalize="cosine")
        return compute_scores(
            self.task, self.model, queries, store, curvature, cfg, self.compute_dtype, collate_fn
        )

    def self_influence(self) -> torch.Tensor:
        """tau(i, i) for every training example."""
        store, curvature = self._fitted()
        return self_influence(
            store, curvature, dtype=self.compute_dtype, progress=self.build_config.progress
        )
