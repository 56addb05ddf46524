"""Collect a LoRIF store while a transformers ``Trainer`` trains (:class:`StoreCallback`).

Usage (one line more than plain training)::

    trainer = Trainer(model=model, args=args, train_dataset=train, data_collator=collator)
    StoreCallback("runs/store").attach(trainer)      # the one line
    trainer.train()
    att = Attributor(CausalLMTask(), model, "runs/store").fit(train_tuples)  # reuses the store

Two ways to collect (``when``):

* ``"during"`` (default): hooks on the tracked layers capture each training example's
  projected inputs A and output-gradients B *inside the Trainer's own forward and backward*
  (no extra pass; as bergson's callback and TracIn do). The Trainer's loss weights example
  i by w_i (a token mean over the whole accumulated batch for a causal LM, a batch mean for
  a classifier) and the Trainer may scale it further (gradient accumulation, fp16 loss
  scaling, averaging over devices). Both are undone exactly: w_i follows from the batch
  (labels, ``num_items_in_batch``) and is checked against the model's own loss on the first
  batch of every collected epoch; the further scale is read from the gradient that reaches
  the model's loss (an identity autograd tap). So a stored row is the task's per-example
  gradient (:class:`~tamis.attribution.hf.CausalLMTask`: summed token cross-entropy;
  :class:`~tamis.attribution.hf.SequenceClassificationTask`: cross-entropy), the same row
  :func:`~tamis.attribution.build_store` writes for those weights and that example, with
  two differences that are the point of the design: the weights are those of the step
  the example was trained on (within an epoch they move), and the model is in training mode
  (dropout, if any, is applied; set it to 0 for rows equal to an eval-mode build).
  ``collect="last_epoch"`` hooks only the last epoch; ``"every_epoch"`` writes one store per
  epoch (``path/epoch-<e>``). The manifest's model fingerprint is that of the weights at the
  end of the collected epoch (the model a query then uses); ``manifest["collected"]`` records
  how the rows were made.
* ``"end"``: at the end of training, :func:`~tamis.attribution.build_store` runs over the
  Trainer's training set with the final weights (eval mode, one extra forward and backward
  per example; any task, the whitened truncation included). No index column is needed.

Rows are keyed by dataset index, so shuffled batches land in the right row: the training
examples carry an ``index`` column (:func:`with_index`, and a collator that keeps it:
:class:`IndexCollator`); :meth:`StoreCallback.attach` sets up both and lets the column through
the Trainer's removal of unused columns. The model's forward never sees it (a pre-hook pops
it). Rows are gathered in a scratch file in the store folder (the rows of an epoch arrive in
random order) and written as atomic shards with :class:`~tamis.attribution.store.StoreWriter`
at the end of the epoch; the scratch file is then removed.

Not supported with ``when="during"``: several processes (DDP/FSDP), gradient checkpointing
(the forward runs twice), label smoothing or a ``compute_loss_func`` (the loss is no longer
the model's), the whitened truncation, tasks other than the two shipped HF tasks. Each is an
error naming the alternative (``when="end"``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import TrainerCallback

from tamis.attribution.build import _DTYPES, model_fingerprint, projection_header
from tamis.attribution.capture import GradientCapture, _is_linear, resolve_layers
from tamis.attribution.config import BuildConfig, FactorConfig, ProjectionConfig
from tamis.attribution.errors import AttributionError, NonFiniteError, StoreError
from tamis.attribution.factors import dense_gradients, low_rank_factors
from tamis.attribution.hf import IGNORE, CausalLMTask, SequenceClassificationTask, _full
from tamis.attribution.presets import DEFAULT_METHOD, preset
from tamis.attribution.store import (
    FORMAT,
    MANIFEST,
    VERSION,
    StoreWriter,
    read_manifest,
    row_layout,
    stored_length,
    to_numpy,
)
from tamis.attribution.task import AttributionTask

INDEX = "index"
SCRATCH = "collect-scratch.npy"
_FIX = ("call `StoreCallback(...).attach(trainer)` before `trainer.train()` (it adds the "
        "index column and keeps it through the Trainer's column removal), or use "
        "StoreCallback(..., when='end')")


class IndexedDataset(torch.utils.data.Dataset):
    """A map-style data set whose examples (dicts) gain an ``index`` entry: their position."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        """Number of examples of the wrapped data set."""
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        """Example ``i`` as a dict with ``index`` = i."""
        item = self.dataset[i]
        if not isinstance(item, Mapping):
            raise TypeError(f"StoreCallback needs dict examples (the Trainer's format: "
                            f"input_ids, attention_mask, labels), got {type(item).__name__}")
        return {**item, INDEX: int(i)}


def with_index(dataset: Any) -> IndexedDataset:
    """Wrap ``dataset`` so every example carries its position as ``index`` (idempotent)."""
    return dataset if isinstance(dataset, IndexedDataset) else IndexedDataset(dataset)


class IndexCollator:
    """Collate, then add the examples' ``index`` entries as one ``(B,)`` tensor.

    ``collate`` defaults to transformers' ``default_data_collator``. The base collator never
    sees the index (padding collators need not know about it); batches without indices
    (evaluation) pass through unchanged.
    """

    def __init__(self, collate: Callable[[list], Any] | None = None) -> None:
        if collate is None:
            from transformers import default_data_collator

            collate = default_data_collator
        self.collate = collate

    def __call__(self, features: list) -> Any:
        """The base collator's batch of ``features``, plus ``index`` when they carry one."""
        if not features or not isinstance(features[0], Mapping) or INDEX not in features[0]:
            return self.collate(features)
        index = torch.tensor([int(f[INDEX]) for f in features], dtype=torch.long)
        batch = self.collate([{k: v for k, v in f.items() if k != INDEX} for f in features])
        batch[INDEX] = index
        return batch


def task_batch(batch: Mapping, device: torch.device | str | None = None) -> tuple:
    """A Trainer batch (dict) as the HF tasks' ``(input_ids, attention_mask, labels)`` tuple.

    A missing ``attention_mask`` is all ones; tensors are moved to ``device`` if given.

    Raises:
        AttributionError: the batch has no ``input_ids`` or ``labels``.

    """
    missing = [k for k in ("input_ids", "labels") if k not in batch]
    if missing:
        raise AttributionError(f"the training batch has no {missing} (keys: {sorted(batch)})")
    ids, labels = batch["input_ids"], batch["labels"]
    mask = batch.get("attention_mask")
    if mask is None:
        mask = torch.ones_like(ids)
    out = (ids, mask, labels)
    return out if device is None else tuple(t.to(device) for t in out)


def task_collate(collate: Callable[[list], Any] | None = None,
                 device: torch.device | str | None = None) -> Callable[[list], tuple]:
    """A ``collate_fn`` for ``build_store`` / ``Attributor.fit`` over the Trainer's examples.

    Applies ``collate`` (the Trainer's collator) to the dict examples, then :func:`task_batch`.
    """
    base = IndexCollator(collate)

    def fn(features: list) -> tuple:
        return task_batch(base(features), device)

    return fn


def default_task(model: nn.Module) -> AttributionTask:
    """:class:`CausalLMTask` or :class:`SequenceClassificationTask` from the model's class.

    Raises:
        AttributionError: the model is neither (pass ``task=``).

    """
    name = type(model).__name__
    if "ForSequenceClassification" in name:
        return SequenceClassificationTask()
    if "CausalLM" in name or "LMHead" in name:
        return CausalLMTask()
    raise AttributionError(f"cannot tell the task of a {name}; pass task=CausalLMTask() or "
                           "SequenceClassificationTask() (or your own AttributionTask with "
                           "when='end')")


class _LossTap(torch.autograd.Function):
    """Identity on the loss whose backward records the gradient reaching it.

    That gradient is the Trainer's scale: 1 / accumulation steps, the fp16 loss scale, the
    device count.
    """

    @staticmethod
    def forward(ctx: Any, loss: torch.Tensor, record: Callable) -> torch.Tensor:  # noqa: D102
        ctx.record = record
        return loss.clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:  # noqa: D102
        ctx.record(grad.detach())
        return grad, None


@dataclass
class _Micro:
    """What one training micro-batch leaves: indices, loss weights, A and B per layer."""

    index: torch.Tensor
    labels: torch.Tensor | None
    num_items: Any
    weights: torch.Tensor | None = None
    scale: torch.Tensor | None = None
    a: dict = field(default_factory=dict)
    b: dict = field(default_factory=dict)

    def set_scale(self, grad: torch.Tensor) -> None:
        self.scale = grad


def _example_losses(task: AttributionTask, logits: torch.Tensor,
                    labels: torch.Tensor) -> torch.Tensor:
    """The task's per-example losses from the model's logits (no second forward)."""
    logits = _full(logits.detach())
    if isinstance(task, CausalLMTask):
        target = labels[:, 1:]
        keep = target != IGNORE
        ce = F.cross_entropy(logits[:, :-1].transpose(1, 2), target.clamp_min(0),
                             reduction="none")
        return task._reduce(ce, keep)
    return F.cross_entropy(logits, labels, reduction="none")


def _weight_candidates(task: AttributionTask, labels: torch.Tensor,
                       num_items: Any) -> list[tuple[str, torch.Tensor]]:
    """Per-example weights w_i with which the HF loss sums the task's losses, by convention.

    A causal LM's loss is sum of token cross-entropies / N (N = ``num_items_in_batch`` when
    the Trainer passes it, else the micro-batch's labelled tokens); a classifier's is the
    batch mean (or / ``num_items_in_batch``).
    """
    n_items = None if num_items is None else \
        float(torch.as_tensor(num_items).reshape(-1)[0])
    if isinstance(task, CausalLMTask):
        tokens = (labels[:, 1:] != IGNORE).sum(1).double()
        per = torch.ones_like(tokens) if task.reduction == "sum" else tokens
        out = [("token mean of the micro-batch", per / tokens.sum().clamp_min(1))]
        if n_items is not None:
            out.insert(0, ("token sum / num_items_in_batch", per / n_items))
        return out
    b = labels.shape[0]
    out = [("batch mean", torch.full((b,), 1.0 / b, dtype=torch.float64))]
    if n_items is not None:
        out.append(("sum / num_items_in_batch", torch.full((b,), 1.0 / n_items,
                                                          dtype=torch.float64)))
    return out


class StoreCallback(TrainerCallback):
    """A ``transformers`` callback that builds a LoRIF store of the training examples.

    Args:
        path: Store folder (``collect="every_epoch"``: one store per epoch under it,
            ``epoch-<e>``).
        task: :class:`CausalLMTask` / :class:`SequenceClassificationTask` (default: from the
            model's class). Any :class:`AttributionTask` with ``when="end"``.
        method: Preset whose projection and factors are used (default: the package's
            default, ``ekfac``); recorded in the manifest.
        projection: Override the preset's projection.
        factors: Override the preset's factors (rank c, dtype, cap per layer).
        build: Shard size and compute precision (and the batch size of ``when="end"``).
            Use the same one in ``Attributor(build=...)`` to reuse the store.
        collect: ``"last_epoch"`` (default) or ``"every_epoch"`` (``when="during"``).
        when: ``"during"`` (hooks in the Trainer's own backward) or ``"end"`` (a store build
            with the final weights after training).
        overwrite: Replace a store already at ``path``.

    Attributes:
        order: ``(global_step, indices)`` per collected micro-batch (``when="during"``).

    """

    def __init__(
        self,
        path: str | Path,
        task: AttributionTask | None = None,
        method: str = DEFAULT_METHOD,
        projection: ProjectionConfig | None = None,
        factors: FactorConfig | None = None,
        build: BuildConfig | None = None,
        collect: str = "last_epoch",
        when: str = "during",
        overwrite: bool = False,
    ) -> None:
        if collect not in ("last_epoch", "every_epoch"):
            raise ValueError(f"collect must be 'last_epoch' or 'every_epoch', got {collect!r}")
        if when not in ("during", "end"):
            raise ValueError(f"when must be 'during' or 'end', got {when!r}")
        if when == "end" and collect != "last_epoch":
            raise ValueError("when='end' builds one store with the final weights; "
                             "collect='every_epoch' needs when='during'")
        p = preset(method)
        self.path, self.task, self.method = Path(path), task, method
        self.projection = projection or p.projection
        self.factors = factors or p.factors
        self.build = build or BuildConfig(progress=False)
        if when == "during" and self.factors.truncation != "frobenius":
            raise ValueError("the whitened truncation needs a pass over the data before the "
                             "store is written; use StoreCallback(..., when='end')")
        self.collect, self.when, self.overwrite = collect, when, overwrite
        self.order: list[tuple[int, list[int]]] = []
        self._handles: list = []
        self._active = False
        self._cur: _Micro | None = None
        self._convention: str | None = None
        self._lr_sum, self._lr_steps, self._lr_next = 0.0, 0, 0.0
        self._optimizer_name: str | None = None
        self._momentum = 0.0

    # -- setup ------------------------------------------------------------------------------
    def attach(self, trainer: Any) -> StoreCallback:
        """Prepare ``trainer`` and add this callback: the one line a user writes.

        Wraps ``trainer.train_dataset`` with :func:`with_index`, ``trainer.data_collator``
        with :class:`IndexCollator`, lets the ``index`` column through the Trainer's removal
        of unused columns, and calls ``trainer.add_callback(self)``.
        """
        if trainer.train_dataset is None:
            raise AttributionError("the trainer has no train_dataset")
        trainer.train_dataset = with_index(trainer.train_dataset)
        if not isinstance(trainer.data_collator, IndexCollator):
            trainer.data_collator = IndexCollator(trainer.data_collator)
        trainer._set_signature_columns_if_needed()
        if INDEX not in trainer._signature_columns:
            trainer._signature_columns.append(INDEX)
        trainer.add_callback(self)
        return self

    def _store_path(self, epoch: int) -> Path:
        return self.path / f"epoch-{epoch}" if self.collect == "every_epoch" else self.path

    def on_train_begin(self, args: Any, state: Any, control: Any, model: nn.Module = None,
                       train_dataloader: Any = None, **kwargs: Any) -> None:
        """Check the setup, choose the task and (``when="during"``) install the hooks."""
        if getattr(args, "world_size", 1) > 1 and self.when == "during":
            raise AttributionError("StoreCallback(when='during') runs in one process; under "
                                   "DDP/FSDP use when='end' (torchrun build) for now")
        if self.when == "during" and getattr(args, "gradient_checkpointing", False):
            raise AttributionError("gradient checkpointing reruns the forward pass, which "
                                   "the capture hooks would record twice; use when='end'")
        self.task = self.task or default_task(model)
        self.n = len(train_dataloader.dataset)
        self._track_lr_begin(kwargs.get("optimizer"))
        if (self.path / MANIFEST).exists() and not self.overwrite and self.collect == \
                "last_epoch" and not (self.path / SCRATCH).exists():
            raise StoreError(f"{self.path} already holds a store; pass overwrite=True or "
                             "choose another folder")
        if self.when == "end":
            return
        if not isinstance(self.task, (CausalLMTask, SequenceClassificationTask)):
            raise AttributionError(
                f"when='during' knows how the Trainer's loss weights the examples of "
                f"CausalLMTask and SequenceClassificationTask only, not "
                f"{type(self.task).__name__}; use when='end'")
        self.model = model
        self.specs = resolve_layers(model, self.task.tracked_modules(model), self.projection)
        dtype = _DTYPES[self.build.compute_dtype]
        self.capture = GradientCapture(model, self.specs, self.projection, dtype)
        self._handles = [
            model.register_forward_pre_hook(self._pre_forward, with_kwargs=True),
            model.register_forward_hook(self._post_forward, with_kwargs=True),
        ]
        for name, module in self.capture.modules.items():
            self._handles.append(module.register_forward_hook(self._layer_hook(name)))
        self.layout: list[dict] | None = None

    # -- hooks ------------------------------------------------------------------------------
    def _pre_forward(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple:
        index = kwargs.pop(INDEX, None)
        if not (self._active and module.training):
            return args, kwargs
        self._flush()
        if index is None:
            raise AttributionError(f"StoreCallback: the training batch has no {INDEX!r} "
                                   f"tensor, so its examples cannot be matched to store rows; "
                                   f"{_FIX}")
        self._cur = _Micro(index.detach().cpu().long().reshape(-1), kwargs.get("labels"),
                           kwargs.get("num_items_in_batch"))
        self._cur.a = {n: [] for n in self.specs}
        self._cur.b = {n: [] for n in self.specs}
        return args, kwargs

    def _layer_hook(self, name: str) -> Callable:
        p_in, p_out = self.capture.proj[name]

        def hook(mod: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            cur = self._cur
            if cur is None:
                return
            self.capture.flat_input[name] = _is_linear(mod) and inputs[0].dim() == 2
            x = self.capture._inputs_2d(name, mod, inputs[0].detach())
            cur.a[name].append(x if p_in is None else x @ p_in)
            if not output.requires_grad:
                raise AttributionError(f"output of {name!r} does not require grad; unfreeze "
                                       "its parameters or leave it out of the tracked layers")
            slots = cur.b[name]
            slot = len(slots)
            slots.append(None)

            def grad_hook(g: torch.Tensor) -> None:
                g = self.capture._out_grads_2d(mod, g.detach())
                slots[slot] = g if p_out is None else g @ p_out

            output.register_hook(grad_hook)

        return hook

    def _post_forward(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        cur = self._cur
        if cur is None or not module.training:
            return None
        loss = output.get("loss") if isinstance(output, Mapping) else None
        if loss is None or cur.labels is None:
            raise AttributionError(
                "StoreCallback(when='during') needs the model's own loss (labels passed to "
                "the model, a ModelOutput with .loss); label smoothing or a compute_loss_func "
                "replace it: use when='end'")
        candidates = _weight_candidates(self.task, cur.labels.detach().cpu(), cur.num_items)
        if self._convention is None:
            losses = _example_losses(self.task, output["logits"], cur.labels).double().cpu()
            got = float(loss.detach().double())
            tried = []
            for label, w in candidates:
                want = float((w * losses).sum())
                tried.append(f"{label}: {want:.6g}")
                if math.isclose(got, want, rel_tol=1e-4, abs_tol=1e-7):
                    self._convention = label
                    break
            else:
                raise AttributionError(
                    f"the model's training loss {got:.6g} is not the task's per-example "
                    f"losses weighted as the Trainer does ({'; '.join(tried)}): a custom loss, "
                    f"label smoothing, another reduction, or a task that is not the model's "
                    f"own loss; use when='end'")
        weights = dict(candidates).get(self._convention)
        if weights is None:  # the chosen convention needs num_items_in_batch, now absent
            weights = candidates[-1][1]
        cur.weights = weights
        output["loss"] = _LossTap.apply(loss, cur.set_scale)
        return output

    # -- rows ------------------------------------------------------------------------------
    def _begin_epoch_buffers(self) -> None:
        self._scratch = None
        self._seen = np.zeros(self.n, dtype=bool)
        self._energy: np.ndarray | None = None
        self._first_step: int | None = None

    def _open_scratch(self, row_length: int) -> np.ndarray:
        folder = self._store_path(self._epoch)
        folder.mkdir(parents=True, exist_ok=True)
        return np.lib.format.open_memmap(
            folder / SCRATCH, mode="w+",
            dtype=to_numpy(torch.zeros(1, 1), self.factors.dtype).dtype,
            shape=(self.n, stored_length(row_length, self.factors.dtype)))

    def _flush(self) -> None:
        """Turn the finished micro-batch into store rows in the scratch file."""
        cur, self._cur = self._cur, None
        if cur is None:
            return
        if cur.scale is None or cur.weights is None:
            raise AttributionError("a training forward pass had no backward pass through the "
                                   "model's loss; StoreCallback needs the Trainer's backward")
        scale = cur.weights.to(torch.float64) * float(cur.scale.double().sum())
        inv = torch.where(scale != 0, 1.0 / scale, torch.zeros_like(scale))
        captured = {}
        for name in self.specs:
            if any(g is None for g in cur.b[name]) or not cur.b[name]:
                raise AttributionError(f"no gradient reached module {name!r} in the backward")
            a = torch.cat(cur.a[name], dim=1)
            b = torch.cat(cur.b[name], dim=1)
            b = b * inv.to(device=b.device, dtype=b.dtype)[:, None, None]
            if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
                bad = cur.index.tolist()[:10]
                raise NonFiniteError(f"non-finite gradient at layer {name!r} for examples "
                                     f"{bad} (fp16 loss-scale overflow? use bf16 or "
                                     "when='end')")
            captured[name] = (a, b)
        if self.layout is None:
            rank_one = frozenset(k for k, v in self.capture.flat_input.items() if v)
            self.layout = row_layout(list(self.specs.values()), self.factors.rank, rank_one,
                                     self.factors.max_numbers)
        rows, energy = _rows(captured, self.layout)
        if self._scratch is None:
            self._scratch = self._open_scratch(rows.shape[1])
            self._energy = np.zeros((self.n, len(self.layout)), dtype=np.float64)
        idx = cur.index.numpy()
        if idx.min() < 0 or idx.max() >= self.n:
            raise AttributionError(f"training index out of range [0, {self.n}): "
                                   f"{idx.tolist()[:10]}")
        if self._seen[idx].any():
            raise AttributionError(f"examples {idx[self._seen[idx]].tolist()[:10]} were seen "
                                   "twice in one epoch; the store keeps one row per example")
        self._scratch[idx] = to_numpy(rows, self.factors.dtype)
        self._energy[idx] = energy.cpu().numpy()
        self._seen[idx] = True
        self.order.append((self._step, idx.tolist()))

    def _write_store(self, model: nn.Module, state: Any) -> None:
        missing = int((~self._seen).sum())
        path = self._store_path(self._epoch)
        if missing:
            raise StoreError(
                f"epoch {self._epoch} trained on {self.n - missing} of {self.n} examples, so "
                f"{missing} have no row (max_steps stopping mid-epoch, or "
                f"dataloader_drop_last); train whole epochs or use when='end'")
        factors, build = self.factors, self.build
        header = {
            "format": FORMAT, "version": VERSION,
            "kind": "dense" if factors.rank is None else "lorif",
            "rank": factors.rank, "dtype": factors.dtype, "num_examples": self.n,
            "shard_size": build.shard_size,
            "row_length": self.layout[-1]["offset"] + self.layout[-1]["length"],
            "layers": self.layout, "projection": projection_header(self.projection),
            "model_fingerprint": model_fingerprint(model), "preset": self.method,
        }
        writer = StoreWriter(path, header, overwrite=True)
        self._scratch.flush()
        names = [lay["name"] for lay in self.layout]
        starts = list(range(0, self.n, build.shard_size))
        for i, start in enumerate(starts):
            stop = min(start + build.shard_size, self.n)
            energy = dict(zip(names, self._energy[start:stop].sum(0).tolist()))
            writer.write_shard(i, start, np.array(self._scratch[start:stop]), energy)
        writer.manifest["collected"] = {
            "by": "StoreCallback", "when": "during", "epoch": self._epoch,
            "steps": [self._first_step, state.global_step], "mode": "train",
            "weights": "each example at the step it was trained on",
            "loss_weights": self._convention,
        }
        writer.finish(len(starts))
        self._scratch = None
        (path / SCRATCH).unlink(missing_ok=True)
        self._write_horizon(path)

    # -- events ------------------------------------------------------------------------------
    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Start collecting if this epoch is collected."""
        if self.when != "during":
            return
        self._epoch = int(state.epoch or 0)
        last = self._epoch >= max(int(state.num_train_epochs), 1) - 1
        self._active = self.collect == "every_epoch" or last
        self._convention = None
        self._step = state.global_step
        if self._active:
            self._begin_epoch_buffers()
            self._first_step = state.global_step + 1

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Remember the optimizer step the next micro-batches belong to."""
        self._step = state.global_step + 1

    def on_substep_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Write the rows of the micro-batch just back-propagated."""
        self._flush()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Write the rows of the last micro-batch of the step; add its lr to the horizon."""
        self._flush()
        self._track_lr_step(kwargs.get("optimizer"))

    # -- training horizon (sum of the learning rate; tamis.attribution.horizon) --------------
    @staticmethod
    def _current_lr(optimizer: Any) -> float | None:
        groups = getattr(optimizer, "param_groups", None)
        return float(groups[0]["lr"]) if groups else None

    def _track_lr_begin(self, optimizer: Any) -> None:
        self._lr_sum, self._lr_steps = 0.0, 0
        self._lr_next = self._current_lr(optimizer)
        inner = getattr(optimizer, "optimizer", optimizer)  # accelerate wraps it
        self._optimizer_name = type(inner).__name__ if optimizer is not None else None
        groups = getattr(inner, "param_groups", None) or [{}]
        self._momentum = float(groups[0].get("momentum", 0.0) or 0.0)

    def _track_lr_step(self, optimizer: Any) -> None:
        # on_step_end comes after optimizer.step() and scheduler.step(): the lr read now is
        # the next step's, so the step just taken used the one read at the previous event
        if self._lr_next is None:
            return
        self._lr_sum += self._lr_next
        self._lr_steps += 1
        self._lr_next = self._current_lr(optimizer)

    def _write_horizon(self, folder: Path) -> None:
        if self._lr_steps == 0 or self._lr_sum <= 0:
            return
        from tamis.attribution.horizon import TrainingHorizon, write_horizon

        momentum = self._momentum if (self._optimizer_name or "").upper().startswith("SGD") \
            else 0.0
        write_horizon(folder, TrainingHorizon(self._lr_sum, self._lr_steps,
                                              self._optimizer_name, momentum))

    def on_epoch_end(self, args: Any, state: Any, control: Any, model: nn.Module = None,
                     **kwargs: Any) -> None:
        """Write the epoch's store (atomic shards, then the manifest) and stop collecting."""
        if self.when != "during" or not self._active:
            return
        self._flush()
        self._active = False
        if self._scratch is None:
            raise StoreError(f"epoch {self._epoch} collected no training batch")
        self._write_store(model, state)

    def on_train_end(self, args: Any, state: Any, control: Any, model: nn.Module = None,
                     train_dataloader: Any = None, **kwargs: Any) -> None:
        """Remove the hooks; with ``when="end"``, build the store with the final weights."""
        self._cur, self._active = None, False
        for h in self._handles:
            h.remove()
        self._handles = []
        if self.when != "end":
            return
        from tamis.attribution.build import build_store

        device = next(model.parameters()).device
        collate = task_collate(getattr(train_dataloader, "collate_fn", None), device)
        store = build_store(self.task, model, train_dataloader.dataset, self.path,
                            self.projection, self.factors, self.build, collate,
                            overwrite=self.overwrite, preset=self.method)
        manifest = read_manifest(store.path)
        manifest["collected"] = {"by": "StoreCallback", "when": "end",
                                 "steps": [None, state.global_step], "mode": "eval",
                                 "weights": "final"}
        from tamis.attribution.store import write_json_atomic

        write_json_atomic(store.path / MANIFEST, manifest)
        self._write_horizon(store.path)


def _rows(captured: dict, layout: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    """Store rows (B, row_length) and per-example retained energy (B, layers).

    As :func:`~tamis.attribution.build.rows_from_capture` computes them (Frobenius truncation).
    """
    parts, energy = [], []
    for lay in layout:
        a, b = captured[lay["name"]]
        if lay["rank"] is None:
            parts.append(dense_gradients(a, b).reshape(a.shape[0], -1))
            energy.append(a.new_ones(a.shape[0]))
        else:
            f = low_rank_factors(a, b, lay["rank"])
            parts += [f.left.reshape(f.left.shape[0], -1), f.right.reshape(f.right.shape[0], -1)]
            energy.append(f.energy)
    return torch.cat(parts, dim=1), torch.stack(energy, dim=1).double()


def store_paths(path: str | Path) -> Sequence[Path]:
    """The stores a ``collect="every_epoch"`` callback wrote under ``path``, by epoch."""
    found = [p for p in Path(path).glob("epoch-*") if (p / MANIFEST).exists()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))
