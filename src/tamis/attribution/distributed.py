"""torch.distributed glue shared by the build, the curvature and the query.

Every stage shards the *store* over ranks the same way (shard i belongs to rank i mod W), so
a rank reads only its own shards; partial sums (traces, Fisher sketches, Fisher times a
basis) are all-reduced and per-example outputs (score columns, self-influence) are summed
into full-size buffers that are zero outside a rank's rows. gloo on CPU, nccl on GPUs (CPU
tensors are moved to the rank's device for the collective and back). Outside an initialised
process group every helper is the identity, so single-process code pays nothing.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def process_group() -> tuple[int, int]:
    """(rank, world size) of the torch.distributed group, or (0, 1) when not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier() -> None:
    """A barrier across ranks (no-op in one process)."""
    if process_group()[1] > 1:
        dist.barrier()


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
    dist.all_reduce(buf)
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
    dist.all_gather_object(out, obj)
    return out
