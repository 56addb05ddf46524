"""The contract a user implements to attribute their model (in the spirit of Kronfluence).

Two methods are required, the others optional::

    class MyTask(AttributionTask):
        def compute_train_loss(self, batch, model):      # (B,) per-example training losses
            x, y = batch
            return F.cross_entropy(model(x), y, reduction="none")

        def compute_measurement(self, batch, model):     # (B,) per-example query measurement
            return self.compute_train_loss(batch, model)

        def tracked_modules(self, model):                # optional: names to track
            return ["fc1", "fc2"]

        def compute_logits(self, batch, model):          # optional: (B, K) class scores,
            x, _ = batch                                 # for the true Fisher and the GGN
            return model(x)

The true-Fisher curvature (``CurvatureConfig(fisher="true")``, Kronfluence's default) needs
per-example losses of labels *sampled* from the model: :meth:`AttributionTask.compute_sampled_loss`,
derived from ``compute_logits`` for softmax classifiers; override it for other likelihoods
(a language model samples one token per position). The exact GGN (``fisher="ggn"``) needs
``compute_logits``.

Sign convention: both the training and the query gradients are gradients of quantities to
*decrease* (losses), so a positive score means the training example *helps* the query (a
gradient step on it lowers the query's loss).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import nn


class AttributionTask(ABC):
    """What the engine needs to know about a model and its data."""

    @abstractmethod
    def compute_train_loss(self, batch: Any, model: nn.Module) -> torch.Tensor:
        """Return the per-example training losses of ``batch``, shape (B,).

        Examples must not interact (no batch statistics), so that the gradient of the sum
        is the per-example gradient for each row. Call ``model.eval()`` style layers.
        """

    @abstractmethod
    def compute_measurement(self, batch: Any, model: nn.Module) -> torch.Tensor:
        """Return the per-example query measurement of ``batch``, shape (B,).

        Usually the query loss; a margin or negative log-probability also works. Scores
        are inner products of its gradient with the training-loss gradients.
        """

    def tracked_modules(self, model: nn.Module) -> list[str] | None:
        """Names of the modules to track, or ``None`` for every Linear and Conv2d."""
        return None

    def compute_logits(self, batch: Any, model: nn.Module) -> torch.Tensor:
        """Return the ``(B, K)`` class scores of a softmax cross-entropy model (optional).

        Implement it to enable the true-Fisher (``fisher="true"``) and exact-GGN
        (``fisher="ggn"``) curvatures for a classifier.
        """
        raise NotImplementedError("compute_logits")

    def compute_sampled_loss(
        self, batch: Any, model: nn.Module, generator: torch.Generator
    ) -> torch.Tensor:
        """Return per-example losses ``(B,)`` of labels sampled from the model (optional).

        The labels are drawn with ``generator`` from the model's predictive distribution
        (as Kronfluence's ``compute_train_loss(..., sample=True)``); their gradients
        estimate the true Fisher. The default samples from ``softmax(compute_logits)``.
        """
        from tamis.attribution.fisher import sampled_cross_entropy

        return sampled_cross_entropy(self.compute_logits(batch, model), generator)

    def loss_terms(self, batch: Any) -> torch.Tensor | None:
        """Number of loss terms in each example's training loss, ``(B,)`` (optional).

        A language model's loss is made of its labelled tokens; a classifier's of one term
        (``None``, the default, means 1). Summed or averaged makes no difference. Used by
        the training-horizon damping (:mod:`tamis.attribution.horizon`).
        """
        return None

    def batch_size_of(self, batch: Any) -> int:
        """Number of examples in ``batch`` (first dimension of its first tensor)."""
        first = batch[0] if isinstance(batch, (tuple, list)) else batch
        if isinstance(first, dict):
            first = next(iter(first.values()))
        return int(first.shape[0])
