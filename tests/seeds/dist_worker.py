"""Worker of the 2-rank gloo mining test."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from seeds.toy import ToyGenerator, ToyJudge
from tamis.seeds.mining import MiningConfig, mine


def mine_rank(rank, world, out, prompts, seeds, port):
    """Mine ``prompts`` x ``seeds`` on this rank of a gloo group."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        mine(
            ToyGenerator(),
            ToyJudge(),
            prompts,
            seeds,
            out,
            MiningConfig(batch_size=2, progress=False),
        )
    finally:
        dist.destroy_process_group()
