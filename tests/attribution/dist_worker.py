"""Worker for the torch.distributed (gloo) build test; each rank builds its shards."""

import os

import torch
import torch.distributed as dist

from attribution.testable_tasks import SequenceTask, tiny_lm, token_data
from tamis.attribution import BuildConfig, FactorConfig, ProjectionConfig, build_store


def build_rank(rank: int, world: int, path: str, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        build_store(
            SequenceTask(),
            tiny_lm(),
            token_data(23),
            path,
            ProjectionConfig(d1=4, d2=4, seed=2),
            FactorConfig(2, "float32"),
            BuildConfig(batch_size=3, shard_size=4, progress=False),
        )
    finally:
        dist.destroy_process_group()
