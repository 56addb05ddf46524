"""Batching of map-style data sets for the engine (no DataLoader workers needed)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import TensorDataset, default_collate


def dataset_length(dataset: Any) -> int:
    """``len(dataset)``, with an error naming the problem for empty or unsized data."""
    try:
        n = len(dataset)
    except TypeError as err:
        raise TypeError(
            f"the data set must be map-style (len and indexing), got {type(dataset).__name__}"
        ) from err
    if n == 0:
        raise ValueError("the data set is empty")
    return n


def to_device(batch: Any, device: torch.device) -> Any:
    """``batch`` with every tensor moved to ``device`` (tuples, lists and dicts recursed).

    A no-op on the device the tensors already live on, so CPU runs pay nothing.
    """
    if isinstance(batch, torch.Tensor):
        return batch if batch.device == device else batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        moved = [to_device(v, device) for v in batch]
        return tuple(moved) if isinstance(batch, tuple) else moved
    return batch


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of the model's first parameter (CPU for a parameterless module)."""
    p = next(iter(model.parameters()), None)
    return p.device if p is not None else torch.device("cpu")


def iter_batches(
    dataset: Any,
    start: int,
    stop: int,
    batch_size: int,
    collate_fn: Callable[[Sequence[Any]], Any] | None = None,
) -> Iterator[Any]:
    """Batches of examples [start, stop) in order; tensors are sliced, not gathered."""
    for lo in range(start, stop, batch_size):
        hi = min(lo + batch_size, stop)
        if isinstance(dataset, TensorDataset) and collate_fn is None:
            yield tuple(t[lo:hi] for t in dataset.tensors)
        elif isinstance(dataset, torch.Tensor) and collate_fn is None:
            yield dataset[lo:hi]
        else:
            yield (collate_fn or default_collate)([dataset[i] for i in range(lo, hi)])
