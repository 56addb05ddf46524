"""Hugging Face transformers models as attribution tasks, with JSONL data.

Two tasks ship with the package so that no user has to write one:

* :class:`CausalLMTask` for any ``AutoModelForCausalLM``: per-example next-token
  cross-entropy summed (or averaged) over the tokens whose label is not -100 (the
  completion of a prompt/completion pair; never the padding), and the same loss against
  tokens sampled from the model (``fisher="true"``).
* :class:`SequenceClassificationTask` for any ``AutoModelForSequenceClassification``:
  per-example cross-entropy; its logits give the true Fisher and the exact GGN.

Batches are ``(input_ids, attention_mask, labels)`` tensors, right-padded by
:func:`text_dataset` from JSONL records (``text``, or ``prompt`` + ``completion``, for a
causal LM; ``text`` + ``label`` for a classifier). Tracked layers: every ``nn.Linear`` and
GPT-2-style ``Conv1D`` of the model except the output embedding (``lm_head``), optionally
filtered by a regular expression on the module name. Padding positions get zero
output-gradients (the loss ignores them and, causal or masked, no other position attends to
them), so they contribute nothing to a stored gradient.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from tamis.attribution.capture import is_conv1d
from tamis.attribution.errors import AttributionError
from tamis.attribution.task import AttributionTask

IGNORE = -100
_HEADS = ("lm_head",)


def _full(t: torch.Tensor) -> torch.Tensor:
    """fp16 / bf16 logits in float32 for the loss (float32 and float64 stay as they are)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def hf_layers(model: nn.Module, pattern: str | None = None) -> list[str]:
    """Names of the trackable layers: Linear and Conv1D, without ``lm_head``.

    Args:
        model: a transformers model (any nn.Module works).
        pattern: optional regular expression; only names it matches (``re.search``) stay.

    Raises:
        AttributionError: nothing to track (naming the pattern).

    """
    rx = re.compile(pattern) if pattern else None
    names = [n for n, m in model.named_modules()
             if (isinstance(m, nn.Linear) or is_conv1d(m))
             and n.split(".")[-1] not in _HEADS and (rx is None or rx.search(n))]
    if not names:
        raise AttributionError(f"no Linear or Conv1D layer of the model matches {pattern!r}")
    return names


class _HFTask(AttributionTask):
    def __init__(self, pattern: str | None = None, modules: list[str] | None = None) -> None:
        self.pattern, self.modules = pattern, modules

    def tracked_modules(self, model: nn.Module) -> list[str]:
        """The layers given, else every Linear / Conv1D matching ``pattern`` (no lm_head)."""
        return list(self.modules) if self.modules is not None else hf_layers(model, self.pattern)

    def compute_measurement(self, batch: Any, model: nn.Module) -> torch.Tensor:
        """The query's own loss (positive scores = training examples that lower it)."""
        return self.compute_train_loss(batch, model)


class CausalLMTask(_HFTask):
    """Next-token cross-entropy per example over its labelled tokens.

    Args:
        pattern: regular expression selecting tracked module names (default: all but
            ``lm_head``).
        modules: explicit module names (overrides ``pattern``).
        reduction: ``"sum"`` over the example's labelled tokens (default: an example's
            weight in a token-averaged training loss grows with its length) or ``"mean"``.

    """

    def __init__(self, pattern: str | None = None, modules: list[str] | None = None,
                 reduction: str = "sum") -> None:
        super().__init__(pattern, modules)
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        self.reduction = reduction

    def _shifted(self, batch: Any, model: nn.Module):
        ids, mask, labels = batch
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        target = labels[:, 1:]
        keep = target != IGNORE
        return logits, target, keep

    def loss_terms(self, batch: Any) -> torch.Tensor:
        """(B,) labelled next tokens of each example (its loss terms)."""
        return (batch[2][:, 1:] != IGNORE).sum(1)

    def _reduce(self, losses: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        total = (losses * keep).sum(1)
        return total if self.reduction == "sum" else total / keep.sum(1).clamp_min(1)

    def compute_train_loss(self, batch: Any, model: nn.Module) -> torch.Tensor:
        """(B,) summed (or mean) cross-entropy of the labelled next tokens."""
        logits, target, keep = self._shifted(batch, model)
        losses = F.cross_entropy(_full(logits).transpose(1, 2), target.clamp_min(0),
                                 reduction="none")
        return self._reduce(losses, keep)

    def compute_sampled_loss(self, batch: Any, model: nn.Module,
                             generator: torch.Generator) -> torch.Tensor:
        """The same loss against tokens sampled from the model (true-Fisher gradients)."""
        from tamis.attribution.fisher import sampled_cross_entropy

        logits, _, keep = self._shifted(batch, model)
        total = sampled_cross_entropy(_full(logits), generator, keep)
        return total if self.reduction == "sum" else total / keep.sum(1).clamp_min(1)


class SequenceClassificationTask(_HFTask):
    """Cross-entropy of each example of an ``AutoModelForSequenceClassification``."""

    def compute_logits(self, batch: Any, model: nn.Module) -> torch.Tensor:
        """(B, K) class scores (enables ``fisher="true"`` and ``"ggn"``)."""
        ids, mask, _ = batch
        return _full(model(input_ids=ids, attention_mask=mask).logits)

    def compute_train_loss(self, batch: Any, model: nn.Module) -> torch.Tensor:
        """(B,) cross-entropy against the label."""
        return F.cross_entropy(self.compute_logits(batch, model), batch[2], reduction="none")


def read_jsonl(path: str | Path) -> list[dict]:
    """Records of a JSONL file, with errors naming the file and line.

    Raises:
        FileNotFoundError: the file is missing.
        ValueError: a line that is not a JSON object, or an empty file.

    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"JSONL file {path} does not exist")
    records = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{i} is not valid JSON ({err.msg})") from err
        if not isinstance(rec, dict):
            raise ValueError(f"{path}:{i} is not a JSON object")
        records.append(rec)
    if not records:
        raise ValueError(f"{path} holds no records")
    return records


def _label_id(value: Any, label2id: dict | None, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{where}: label must be an integer or a label name, got {value!r}")
    if isinstance(value, int):
        return value
    if not label2id or value not in label2id:
        raise ValueError(f"{where}: label {value!r} is not in the model's label2id "
                         f"{sorted(label2id or {})}")
    return int(label2id[value])


class TextDataset(TensorDataset):
    """``(input_ids, attention_mask, labels)`` rows plus ``groups``: the record of each row.

    Without windows every row is one record (``groups = arange(n)``); with windows a long
    record spans several consecutive rows. Influence is linear in the training (and query)
    gradient, so a record's score is the sum of its rows' scores (:func:`sum_windows`).
    """

    def __init__(self, *tensors: torch.Tensor, groups: torch.Tensor) -> None:
        super().__init__(*tensors)
        self.groups = groups
        self.num_records = int(groups.max()) + 1 if groups.numel() else 0


def split_windows(ids: list[int], labels: list[int], window: int
                  ) -> list[tuple[list[int], list[int]]]:
    """Cut one token sequence into windows of at most ``window`` tokens, overlapping by one.

    Window ``w`` covers tokens ``[w (window - 1), w (window - 1) + window)``. A causal LM
    predicts token ``t + 1`` from the tokens up to ``t`` inside a window, so with the
    one-token overlap every token but the first is a next-token target exactly once, as in
    the unsplit sequence (only the context beyond the window is lost); the memory of a
    forward/backward pass is bounded by the window.
    """
    if window < 2:
        raise ValueError(f"window must be >= 2 tokens, got {window}")
    if len(ids) <= window:
        return [(ids, labels)]
    stride = window - 1
    out = []
    for start in range(0, len(ids) - 1, stride):
        out.append((ids[start:start + window], labels[start:start + window]))
        if start + window >= len(ids):
            break
    return out


def sum_windows(scores: torch.Tensor, train_groups: torch.Tensor,
                query_groups: torch.Tensor | None = None) -> torch.Tensor:
    """Scores ``(Q_rows, N_rows)`` summed over the windows of each record, on both axes.

    Exact: an example's gradient is the sum of its windows' gradients and every score is
    linear in each gradient. Returns ``(Q_records, N_records)``.
    """
    n = int(train_groups.max()) + 1
    out = scores.new_zeros(scores.shape[0], n).index_add_(1, train_groups.to(scores.device),
                                                            scores)
    if query_groups is None:
        return out
    q = int(query_groups.max()) + 1
    return out.new_zeros(q, n).index_add_(0, query_groups.to(out.device), out)


def text_dataset(records: list[dict], tokenizer: Any, kind: str, max_length: int,
                 truncate: bool = False, label2id: dict | None = None,
                 source: str = "data", window: int | None = None) -> TextDataset:
    """Right-padded ``(input_ids, attention_mask, labels)`` tensors from JSONL records.

    Args:
        records: dicts with ``text`` (or ``prompt`` and ``completion``; kind ``"lm"``) or
            ``text`` and ``label`` (kind ``"cls"``; an integer or a ``label2id`` name).
        tokenizer: a transformers tokenizer (its ``pad_token_id``, or ``eos_token_id``).
        kind: ``"lm"`` (labels = the token ids, -100 on the prompt and the padding) or
            ``"cls"`` (labels = one class id per example).
        max_length: the model's context; a longer sequence is an error unless
            ``truncate`` or ``window``.
        truncate: cut sequences to ``max_length`` instead of failing.
        label2id: label names of a classifier.
        source: the file name used in error messages.
        window: causal LM only: split sequences longer than ``window`` tokens (at most
            ``max_length``) into windows overlapping by one token (:func:`split_windows`),
            one dataset row each; ``groups`` maps rows to records. Bounds the memory of
            a pass for long documents.

    Raises:
        ValueError: missing fields, a bad label, or a sequence longer than ``max_length``.

    """
    if kind not in ("lm", "cls"):
        raise ValueError(f"kind must be 'lm' or 'cls', got {kind!r}")
    if window is not None:
        if kind != "lm":
            raise ValueError("windows apply to causal LM texts; a classifier reads one "
                             "sequence per label: use truncate=True")
        if not 2 <= window <= max_length:
            raise ValueError(f"window must be between 2 and the model's context "
                             f"{max_length}, got {window}")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else \
        tokenizer.eos_token_id
    if pad is None:
        raise ValueError("the tokenizer has neither a pad nor an eos token")
    rows, labels, groups = [], [], []
    for i, rec in enumerate(records, 1):
        where = f"{source} record {i}"
        if kind == "cls" or "text" in rec:
            if "text" not in rec:
                raise ValueError(f"{where} has no 'text' field (fields: {sorted(rec)})")
            ids = list(tokenizer(rec["text"])["input_ids"])
            lab = list(ids)
        elif "prompt" in rec and "completion" in rec:
            p = list(tokenizer(rec["prompt"])["input_ids"])
            c = list(tokenizer(rec["completion"], add_special_tokens=False)["input_ids"])
            ids, lab = p + c, [IGNORE] * len(p) + c
        else:
            raise ValueError(f"{where} needs 'text' or 'prompt' + 'completion' "
                             f"(fields: {sorted(rec)})")
        if window is not None:
            parts = split_windows(ids, lab, window)
            rows += parts
            groups += [i - 1] * len(parts)
            continue
        if len(ids) > max_length:
            if not truncate:
                raise ValueError(f"{where} has {len(ids)} tokens, more than the model's "
                                 f"context of {max_length}; pass truncate=True to cut it, "
                                 "or window=N (--window N) to split it into windows")
            ids, lab = ids[:max_length], lab[:max_length]
        if kind == "cls":
            if "label" not in rec:
                raise ValueError(f"{where} has no 'label' field (fields: {sorted(rec)})")
            labels.append(_label_id(rec["label"], label2id, where))
        rows.append((ids, lab))
        groups.append(i - 1)
    width = max(len(ids) for ids, _ in rows)
    n = len(rows)
    input_ids = torch.full((n, width), pad, dtype=torch.long)
    mask = torch.zeros(n, width, dtype=torch.long)
    token_labels = torch.full((n, width), IGNORE, dtype=torch.long)
    for j, (ids, lab) in enumerate(rows):
        input_ids[j, :len(ids)] = torch.tensor(ids)
        mask[j, :len(ids)] = 1
        token_labels[j, :len(lab)] = torch.tensor(lab)
    g = torch.tensor(groups, dtype=torch.long)
    if kind == "cls":
        return TextDataset(input_ids, mask, torch.tensor(labels, dtype=torch.long), groups=g)
    return TextDataset(input_ids, mask, token_labels, groups=g)


def load_model(path: str | Path, kind: str | None = None):
    """A transformers model and tokenizer from a local folder, in eval mode.

    Args:
        path: folder with ``config.json`` (and weights, tokenizer files).
        kind: ``"lm"`` (AutoModelForCausalLM), ``"cls"``
            (AutoModelForSequenceClassification) or ``None``: from the config's
            ``architectures``.

    Returns:
        ``(model, tokenizer, kind)``.

    Raises:
        AttributionError: the folder is not a transformers model (naming it).

    """
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
    )

    path = Path(path)
    if not (path / "config.json").exists():
        raise AttributionError(f"{path} is not a transformers model folder (no config.json)")
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except Exception as err:  # transformers raises several types
        raise AttributionError(f"cannot read the transformers config in {path}: {err}") from err
    if kind is None:
        arch = " ".join(config.architectures or [])
        kind = "cls" if "SequenceClassification" in arch else "lm"
    auto = AutoModelForSequenceClassification if kind == "cls" else AutoModelForCausalLM
    try:
        model = auto.from_pretrained(path, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except Exception as err:
        raise AttributionError(f"cannot load a {auto.__name__} and its tokenizer from "
                               f"{path}: {err}") from err
    model.eval()
    return model, tokenizer, kind


def context_length(model: nn.Module, default: int = 512) -> int:
    """The model's maximum sequence length from its config."""
    cfg = getattr(model, "config", None)
    for key in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return default


def hf_bundle(model: str, data: str, queries: str | None = None, kind: str | None = None,
              pattern: str | None = None, truncate: bool = False, window: int | None = None):
    """A :class:`~tamis.attribution.examples.TaskBundle` of a local transformers model.

    ``queries`` defaults to ``data``. ``info["texts"]`` and ``info["query_texts"]`` keep
    the training and query texts for printing the top examples; with ``window``,
    ``info["groups"]`` and ``info["query_groups"]`` map dataset rows (windows) to records.
    """
    from tamis.attribution.examples import TaskBundle

    net, tokenizer, kind = load_model(model, kind)
    ctx = context_length(net)
    label2id = getattr(net.config, "label2id", None)
    train_records = read_jsonl(data)
    query_records = read_jsonl(queries) if queries else train_records
    train = text_dataset(train_records, tokenizer, kind, ctx, truncate, label2id, str(data),
                         window)
    query = text_dataset(query_records, tokenizer, kind, ctx, truncate, label2id,
                         str(queries or data), window)
    task = (SequenceClassificationTask if kind == "cls" else CausalLMTask)(pattern)

    def texts(records: list[dict]) -> list[str]:
        return [r.get("text") or f"{r.get('prompt', '')}{r.get('completion', '')}"
                for r in records]

    info = {"kind": kind, "texts": texts(train_records), "query_texts": texts(query_records),
            "model_path": str(model), "window": window}
    if window is not None:
        info["groups"], info["query_groups"] = train.groups, query.groups
    return TaskBundle(task, net, train, query, info)
