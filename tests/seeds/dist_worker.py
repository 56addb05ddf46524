"""Worker of the 2-rank gloo mining test."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

from seeds.toy import ToyJudge
from tamis.seeds.generation import DiffusersGenerator
from tamis.seeds.mining import MiningConfig, mine


def mine_rank(rank, world, pipe_dir, out, prompts, seeds, port):
    """Mine ``prompts`` x ``seeds`` on this rank of a gloo group."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        gen = DiffusersGenerator.from_pretrained(pipe_dir, steps=3, guidance=2.0)
        mine(gen, ToyJudge(), prompts, seeds, out, MiningConfig(batch_size=2, progress=False))
    finally:
        dist.destroy_process_group()
