"""Gradient streams for the true Fisher (sampled labels) and the exact GGN curvature.

The store holds the per-example gradients of the *observed* training loss; their second
moment is the empirical Fisher. Kronfluence instead fits its curvature on gradients of labels
*sampled from the model's predictive distribution* (the true Fisher, equal in expectation to
the Gauss-Newton matrix for softmax cross-entropy). A :class:`FisherSource` recomputes such
pseudo-gradients batch by batch, in the store's projected space, and hands them to the
curvature's streaming SVD; nothing is written to disk. Every pass over the source is
deterministic (each batch draws its labels from a generator seeded by ``(seed, batch,
sample)``), so the power iterations of the randomized SVD see one fixed matrix.

For a batch, the rows ``g`` returned satisfy ``F = (1/N) sum_rows g g^T``:

* ``true``: ``n_samples`` sampled-label gradients per example, each scaled by
  ``1/sqrt(n_samples)`` (a Monte-Carlo estimate of the GGN; error ~ 1/sqrt(n_samples));
* ``ggn``: K rows per example, ``g_k = J^T c_k`` with ``c_k = sqrt(p_k) (e_k - p)``, so that
  ``sum_k g_k g_k^T = J^T (diag(p) - p p^T) J`` exactly (small output spaces only).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tamis.attribution.capture import GradientCapture, LayerCapture, resolve_layers
from tamis.attribution.config import CurvatureConfig, ProjectionConfig
from tamis.attribution.data import dataset_length, iter_batches, model_device, to_device
from tamis.attribution.distributed import my_shards
from tamis.attribution.errors import AttributionError, NonFiniteError
from tamis.attribution.factors import dense_gradients
from tamis.attribution.store import FactorStore
from tamis.attribution.task import AttributionTask

FISHER_KINDS = ("empirical", "true", "ggn")


def _batch_generator(seed: int, batch: int, sample: int) -> torch.Generator:
    key = zlib.crc32(f"{seed}/{batch}/{sample}".encode())
    return torch.Generator().manual_seed(key)


def sampled_cross_entropy(logits: torch.Tensor, generator: torch.Generator,
                          mask: torch.Tensor | None = None) -> torch.Tensor:
    """Per-example cross-entropy against labels drawn from ``softmax(logits)``.

    Args:
        logits: ``(B, K)`` class scores, or ``(B, T, K)`` per-token scores (summed over
            the tokens where ``mask`` is true).
        generator: the source of the sampled labels.
        mask: optional ``(B, T)`` boolean token mask for 3-D logits.

    Returns:
        ``(B,)`` losses whose gradients are true-Fisher pseudo-gradients.

    """
    flat = logits.reshape(-1, logits.shape[-1])
    probs = torch.softmax(flat.detach().double(), dim=-1)
    if probs.device != generator.device:  # the seeded generator is a CPU one: sample there
        probs = probs.cpu()
    labels = torch.multinomial(probs, 1, generator=generator).squeeze(1).to(flat.device)
    losses = F.cross_entropy(flat, labels, reduction="none")
    if logits.dim() == 2:
        return losses
    losses = losses.reshape(logits.shape[:-1])
    if mask is not None:
        losses = losses * mask.to(losses.dtype)
    return losses.sum(dim=1)


def _require_sampling(task: AttributionTask, model: nn.Module, batch: Any,
                      kind: str) -> None:
    probe = torch.Generator().manual_seed(0)
    try:
        if kind == "ggn":
            task.compute_logits(batch, model)
        else:
            task.compute_sampled_loss(batch, model, probe)
    except NotImplementedError as err:
        need = ("compute_logits(batch, model)" if kind == "ggn" else
                "compute_sampled_loss(batch, model, generator) (or compute_logits(batch, "
                "model), from which it is derived)")
        raise AttributionError(
            f"fisher={kind!r} needs the task {type(task).__name__} to implement {need}; "
            "use fisher='empirical' to fit the curvature on the stored gradients") from err


class FisherSource:
    """Per-batch projected pseudo-gradient rows of the true Fisher or the exact GGN.

    Args:
        task: the attribution task (``compute_sampled_loss`` for ``true``,
            ``compute_logits`` for ``ggn``).
        model: the trained model (put in eval mode while streaming).
        dataset: the examples whose Fisher is estimated (usually the training set).
        store: the store whose projection and layers the rows must match.
        kind: ``"true"``, ``"ggn"`` or ``"empirical"`` (the observed-label losses,
            recomputed; the Kronecker curvatures need the raw activations and
            output-gradients, which the store does not keep).
        n_samples: sampled labels per example (``true`` only).
        seed: base seed of the sampled labels.
        batch_size: examples per forward/backward.
        collate_fn: optional collate function for non-tensor data sets.

    """

    def __init__(self, task: AttributionTask, model: nn.Module, dataset: Any,
                 store: FactorStore, kind: str = "true", n_samples: int = 1, seed: int = 0,
                 batch_size: int = 64,
                 collate_fn: Callable[[Sequence[Any]], Any] | None = None) -> None:
        if kind not in FISHER_KINDS:
            raise AttributionError(
                f"FisherSource kind must be one of {FISHER_KINDS}, got {kind!r}")
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
            raise AttributionError(f"n_samples must be an integer >= 1, got {n_samples!r}")
        self.task, self.model, self.dataset, self.store = task, model, dataset, store
        self.kind, self.n_samples, self.seed = kind, n_samples, seed
        self.batch_size, self.collate_fn = batch_size, collate_fn
        self.num_examples = dataset_length(dataset)
        projection = ProjectionConfig(**store.manifest["projection"])
        self.specs = resolve_layers(model, task.tracked_modules(model), projection)
        names = [lay["name"] for lay in store.layers]
        if list(self.specs) != names:
            raise AttributionError(f"the task tracks layers {list(self.specs)}, the store "
                                   f"{names}: build the store with the same task and model")
        self.projection = projection

    @property
    def num_batches(self) -> int:
        """Batches per pass on this rank (all of them in one process)."""
        return len(self._my_batches())

    def _my_batches(self) -> list[int]:
        """Batch indices this rank streams.

        Under torch.distributed batch b goes to rank b mod W and its sampled labels are
        seeded by the global b, so the ranks' sums add up to the one-process pass.
        """
        return my_shards(-(-self.num_examples // self.batch_size))

    def _losses(self, b: int) -> list[Callable[[Any, nn.Module], torch.Tensor]]:
        if self.kind == "empirical":
            return [self.task.compute_train_loss]
        if self.kind == "true":
            def sampled(s: int) -> Callable[[Any, nn.Module], torch.Tensor]:
                gen = _batch_generator(self.seed, b, s)
                return lambda batch, model: self.task.compute_sampled_loss(batch, model, gen)

            return [sampled(s) for s in range(self.n_samples)]

        def ggn_row(k: int) -> Callable[[Any, nn.Module], torch.Tensor]:
            def loss(batch: Any, model: nn.Module) -> torch.Tensor:
                logits = self.task.compute_logits(batch, model)
                if logits.dim() != 2:
                    raise AttributionError(
                        f"fisher='ggn' needs (B, K) logits, got shape {tuple(logits.shape)}; "
                        "use fisher='true' for sequence outputs")
                p = torch.softmax(logits.detach(), dim=-1)
                eye = torch.zeros_like(p)
                eye[:, k] = 1.0
                c = p[:, k:k + 1].clamp_min(0).sqrt() * (eye - p)
                return (logits * c).sum(dim=1)

            return loss

        return [ggn_row(k) for k in range(self._num_classes())]

    def _num_classes(self) -> int:
        if not hasattr(self, "_k"):
            batch = next(iter_batches(self.dataset, 0, 1, 1, self.collate_fn))
            with torch.no_grad():
                self._k = int(self.task.compute_logits(
                    to_device(batch, model_device(self.model)), self.model).shape[-1])
        return self._k

    def iter_captures(self, dtype: torch.dtype = torch.float32
                      ) -> Iterator[list[tuple[dict[str, LayerCapture], float]]]:
        """One pass: per batch, the projected captures of every pseudo-loss with its weight.

        Each item is ``(captures, w)``: per layer, the projected inputs A (B, T, d1) and
        output-gradients B (B, T, d2) of one pseudo-loss (one sampled label, one GGN row, or
        the observed label), with ``w`` the weight of its gradient outer products in ``N F``
        (``1 / n_samples`` for ``true``, else 1).
        """
        capture = GradientCapture(self.model, self.specs, self.projection, dtype)
        was_training = self.model.training
        self.model.eval()
        try:
            first = to_device(next(iter_batches(self.dataset, 0, 1, 1, self.collate_fn)),
                              model_device(self.model))
            if self.kind != "empirical":
                _require_sampling(self.task, self.model, first, self.kind)
            weight = 1.0 / self.n_samples if self.kind == "true" else 1.0
            for b in self._my_batches():
                lo = b * self.batch_size
                hi = min(lo + self.batch_size, self.num_examples)
                batch = next(iter_batches(self.dataset, lo, hi, self.batch_size,
                                          self.collate_fn))
                out = []
                for loss_fn in self._losses(b):
                    try:
                        out.append((capture.capture(loss_fn, batch), weight))
                    except NonFiniteError as err:
                        raise NonFiniteError(
                            f"{err} in the {self.kind}-Fisher pass (batch starting at example "
                            f"{b * self.batch_size})") from err
                yield out
        finally:
            self.model.train(was_training)

    def iter_chunks(self, dtype: torch.dtype = torch.float32) -> Iterator[dict[str, torch.Tensor]]:
        """One pass: per batch, ``{layer: rows (R, d1 * d2)}``.

        ``sum rows rows^T`` is the batch's contribution to ``N F``.
        """
        for items in self.iter_captures(dtype):
            rows: dict[str, list[torch.Tensor]] = {n: [] for n in self.specs}
            for captured, weight in items:
                for name, cap in captured.items():
                    g = dense_gradients(cap.a, cap.b).reshape(cap.a.shape[0], -1).cpu()
                    rows[name].append(g * weight ** 0.5 if weight != 1.0 else g)
            yield {n: torch.cat(parts) for n, parts in rows.items()}


def source_for(cfg: CurvatureConfig, task: AttributionTask, model: nn.Module, dataset: Any,
               store: FactorStore,
               collate_fn: Callable[[Sequence[Any]], Any] | None = None) -> FisherSource | None:
    """The Fisher source that fitting ``cfg`` needs, or ``None`` when the store suffices."""
    from tamis.attribution.curvature import needs_source

    if not needs_source(cfg):
        return None
    return FisherSource(task, model, dataset, store, cfg.fisher, cfg.n_samples, cfg.seed,
                        cfg.fisher_batch_size, collate_fn)
