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

Every method has a preset (:mod:`tamis.attribution.presets`) that fills in whatever is not
passed. The default method is ``ekfac``: chosen by measurement on three settings, it is
ahead of the paper's ``lorif`` preset and of Kronfluence at its defaults on two of them
(``docs/attribution.md``).
"""

from __future__ import annotations

import warnings
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
from tamis.attribution.horizon import (
    TrainingHorizon,
    horizon_of_model,
    horizon_rule_applies,
    read_horizon,
    with_horizon_damping,
    write_horizon,
)
from tamis.attribution.presets import DEFAULT_METHOD, factors_with_dtype, preset
from tamis.attribution.scoring import ScoreResult, compute_scores, self_influence
from tamis.attribution.store import FactorStore
from tamis.attribution.task import AttributionTask

Method = Literal["lorif", "logra", "grad_dot", "grad_cos", "ekfac", "kfac"]
METHODS = ("lorif", "logra", "grad_dot", "grad_cos", "ekfac", "kfac")


NO_HORIZON_WARNING = (
    "no training horizon: the damping falls back to the preset's (1 x the mean eigenvalue, / "
    "the loss terms per example), which measured up to 0.11 LDS below the horizon rule on a "
    "short fine-tuning run. Pass horizon=TrainingHorizon(lr_sum=<sum of the learning rate over "
    "the optimizer steps>) or TrainingHorizon.from_optimizer(optimizer, scheduler), or build the "
    "store with StoreCallback, which records it "
    "(docs/attribution.md, 'The best damping follows the training horizon')."
)


class Attributor:
    """Fit a store and preconditioner once, then score any number of query batches.

    Example::

        attributor = Attributor(task, model, "runs/tda")      # EK-FAC preset (the default)
        attributor.fit(train_dataset)
        result = attributor.score(test_dataset)       # result.scores, result.helpful, ...
        paper = Attributor(task, model, "runs/lorif", method="lorif")  # the paper's LoRIF

    Args:
        task: The user's :class:`AttributionTask`.
        model: The trained model.
        path: Store folder (created; resumed if a partial build is there).
        method: One of ``ekfac`` (default), ``lorif``, ``logra``, ``grad_dot``,
            ``grad_cos``, ``kfac``.
        projection: Two-sided projection config (default: the method's preset).
        rank_c: c, factors per example and layer (every method but ``logra``); given
            explicitly it is used as is (clipped to the layer), without the preset's cap
            on numbers per layer. Default: the method's preset.
        rank_r: r, retained curvature directions (``lorif``).
        dtype: On-disk dtype (default: the preset's; int8 for ekfac/kfac). With a per-layer
            cap, the cap is rescaled to the same bytes (:func:`factors_with_dtype`).
        curvature: Full curvature config (overrides ``rank_r`` and the preset; its kind is
            always the method's).
        build: Build config.
        compute_dtype: Precision of curvature and scoring.
        factors: Full store-factor config (overrides ``rank_c``, ``dtype`` and the preset).
        horizon: The training run's :class:`TrainingHorizon` (sum of the learning rate).
            With ``ekfac``/``kfac`` and no ``curvature`` given, the damping is then the
            horizon rule ``1 / (S * rho)`` (:mod:`tamis.attribution.horizon`) instead of the
            preset's 1 x mean eigenvalue. Default: the ``training_horizon.json`` that
            :class:`~tamis.attribution.trainer.StoreCallback` leaves in ``path``, else the
            ``trainer_state.json`` of the folder a transformers model was loaded from (a
            ``Trainer`` checkpoint, :func:`~tamis.attribution.horizon.horizon_of_model`),
            if any. Passed here or found in the model's folder, it is written there. With
            no horizon at all, a task whose loss averages rho > 1 terms (``task.loss_terms``:
            a causal LM's labelled tokens) gets the preset's damping / rho, the rule at S = 1.

    Attributes:
        damping_rule: How the damping was chosen: ``"preset"``, ``"horizon"`` (with
            ``lr_sum``, ``loss_terms`` and the relative ``damping``), ``"loss_terms"`` (no
            horizon, rho > 1: ``loss_terms`` and ``damping``) or ``"given"``.

    """

    def __init__(
        self,
        task: AttributionTask,
        model: nn.Module,
        path: str | Path,
        method: Method = DEFAULT_METHOD,
        projection: ProjectionConfig | None = None,
        rank_c: int | None = None,
        rank_r: int = 256,
        dtype: str | None = None,
        curvature: CurvatureConfig | None = None,
        build: BuildConfig | None = None,
        compute_dtype: torch.dtype = torch.float32,
        factors: FactorConfig | None = None,
        horizon: TrainingHorizon | None = None,
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.task, self.model, self.path, self.method = task, model, Path(path), method
        p = preset(method)
        self.projection = projection or p.projection
        if factors is None:
            factors = factors_with_dtype(p.factors, dtype)
            if rank_c is not None and not factors.dense:
                factors = replace(factors, rank=rank_c, max_numbers=None)
        self.factors = factors
        base = curvature or replace(p.curvature, rank=rank_r)
        self.curvature_config = replace(base, kind=p.curvature.kind)
        self._damping_given = curvature is not None
        self._preset_curvature = self.curvature_config  # the rules start here on every fit
        self.horizon = horizon
        self.damping_rule: dict = {"rule": "given" if self._damping_given else "preset",
                                   "damping": self.curvature_config.damping}
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
            preset=self.method,
        )
        from tamis.attribution.fisher import source_for

        cfg = self._horizon_config(dataset, collate_fn)
        source = source_for(cfg, self.task, self.model, dataset, self.store, collate_fn)
        self.curvature = fit_curvature(
            self.store, cfg, self.compute_dtype, self.build_config.progress, source
        )
        self.curvature.save(self.path / f"curvature-{self.curvature.kind}.safetensors")
        return self

    def _horizon_config(self, dataset: Any,
                        collate_fn: Callable[[Sequence[Any]], Any] | None) -> CurvatureConfig:
        """The curvature config, with the horizon damping where it applies."""
        cfg = self._preset_curvature
        if self.horizon is not None:
            write_horizon(self.path, self.horizon)
        if self._damping_given:
            return cfg
        horizon = self.horizon or read_horizon(self.path)
        if horizon is None and horizon_rule_applies(cfg):
            horizon = horizon_of_model(self.model)  # a model loaded from a Trainer folder
            if horizon is None:
                warnings.warn(NO_HORIZON_WARNING, UserWarning, stacklevel=3)
            else:
                write_horizon(self.path, horizon)
        self.curvature_config, rule = with_horizon_damping(
            cfg, horizon, self.task, dataset, collate_fn, self.build_config.batch_size)
        if rule is not None:
            self.damping_rule = rule
        return self.curvature_config

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
