"""A build under torch.distributed (2 gloo ranks) equals the single-process build."""

from __future__ import annotations

import json
import socket

import torch.multiprocessing as mp

from attribution.dist_worker import build_rank
from attribution.testable_tasks import SequenceTask, tiny_lm, token_data
from tamis.attribution import BuildConfig, FactorConfig, FactorStore, ProjectionConfig, build_store


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_rank_build_equals_single_process(tmp_path):
    single = build_store(
        SequenceTask(),
        tiny_lm(),
        token_data(23),
        tmp_path / "one",
        ProjectionConfig(d1=4, d2=4, seed=2),
        FactorConfig(2, "float32"),
        BuildConfig(batch_size=3, shard_size=4, progress=False),
    )
    mp.spawn(build_rank, args=(2, str(tmp_path / "two"), _free_port()), nprocs=2, join=True)
    two = FactorStore.open(tmp_path / "two")
    assert two.manifest["complete"] and len(two.manifest["shards"]) == 6
    for a, b in zip(single.manifest["shards"], two.manifest["shards"]):
        assert a["sha256"] == b["sha256"] and a["start"] == b["start"]
    assert json.dumps(single.energy(), sort_keys=True) == json.dumps(two.energy(), sort_keys=True)
