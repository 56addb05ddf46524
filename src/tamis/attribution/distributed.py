"""torch.distributed glue shared by the build, the curvature and the query.

Every stage shards the *store* over ranks the same way (shard i belongs to rank i mod W), so
a rank reads only its own shards; partial sums (traces, Fisher sketches, Fisher times a
basis) are all-reduced and per-example outputs (score columns, self-influence) are summed
into full-size buffers that are zero outside a rank's rows. gloo on CPU, nccl on GPUs (CPU
tensors are moved to the rank's device for the collective and back). Outside an initialised
process group every helper is the identity, so single-process code pays nothing.

A rank that dies (or stops answering past the group's timeout) makes the others' next
collective fail; every helper turns that into one :class:`DistributedError` naming the stage
(``@distributed_stage``), instead of a backend traceback or a hang.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import TypeVar

import torch
import torch.distributed as dist

from tamis.attribution.errors import DistributedError

_STAGES: list[str] = []
_F = TypeVar("_F", bound=Callable)


def distributed_stage(name: str) -> Callable[[_F], _F]:
    """Name the pipeline stage a function runs, for the error a lost rank raises."""

    def wrap(fn: _F) -> _F:
        @functools.wraps(fn)
        def inner(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            _STAGES.append(name)
            try:
                return fn(*args, **kwargs)
            finally:
                _STAGES.pop()

        return inner  # type: ignore[return-value]

    return wrap


def _collective(op: Callable, *args) -> None:  # noqa: ANN002
    """Run a torch.distributed collective; a lost peer becomes a :class:`DistributedError`."""
    try:
        op(*args)
    except RuntimeError as err:  # gloo/nccl: connection closed by peer, timeout, ...
        rank, world = dist.get_rank(), dist.get_world_size()
        what = _STAGES[-1] if _STAGES else "a collective operation"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        first = re.sub(r"^\[[^\]]*\]\s*", "", first)  # gloo's source-location prefix
        raise DistributedError(
            f"rank {rank} of {world}: another rank died or stopped answering during {what} "
            f"({first[:200]}). Nothing of this stage was saved; shards already written are "
            "kept. Restart every rank (torchrun) to redo it."
        ) from None


def process_group() -> tuple[int, int]:
    """(rank, world size) of the torch.distributed group, or (0, 1) when not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier() -> None:
    """A barrier across ranks (no-op in one process)."""
    if process_group()[1] > 1:
        _collective(dist.barrier)


def my_shards(num_shards: int) -> list[int]:
    """Indices of the shards (or batches) this rank owns: i mod W == rank; all in one process."""
    rank, world = process_group()
    return [i for i in range(num_shards) if i % world == rank]


def _device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The sum of ``t`` over ranks (``t`` itself in one process); returns a tensor like t."""
    if process_group()[1] == 1:
        return t
    dev = _device()
    buf = t.detach().to(dev).contiguous().clone()
    _collective(dist.all_reduce, buf)
    return buf.to(t.device)


def all_reduce_float(x: float) -> float:
    """The sum of a Python float over ranks, in float64."""
    if process_group()[1] == 1:
        return x
    return float(all_reduce_sum(torch.tensor([x], dtype=torch.float64))[0])


def all_gather_objects(obj):
    """Every rank's ``obj`` as a list indexed by rank ([obj] in one process)."""
    world = process_group()[1]
    if world == 1:
        return [obj]
    out = [None] * world
    _collective(dist.all_gather_object, out, obj)
    return out
