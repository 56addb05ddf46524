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
