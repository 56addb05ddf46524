"""The pipeline under torch.distributed (2 gloo ranks) equals the single-process run."""

from __future__ import annotations

import json
import socket

import torch
import torch.multiprocessing as mp

from attribution.dist_worker import build_rank, curvature_configs, pipeline_rank
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


def test_two_rank_curvature_scores_and_self_influence_equal_single_process(tmp_path):
    """Each rank streams its own shards (or data batches, for true-Fisher and Kronecker
    curvatures); the all-reduced curvature, the merged scores, top-k and self-influence
    equal one process (float64, summation order only), on both ranks."""
    from tamis.attribution import ScoreConfig, compute_scores, fit_curvature, self_influence
    from tamis.attribution.fisher import source_for

    store = build_store(SequenceTask(), tiny_lm(), token_data(23), tmp_path / "s",
                        ProjectionConfig(d1=4, d2=4, seed=2), FactorConfig(2, "float64"),
                        BuildConfig(batch_size=3, shard_size=4, compute_dtype="float64",
                                    progress=False))
    assert len(store.manifest["shards"]) == 6
    mp.spawn(pipeline_rank, args=(2, str(tmp_path / "s"), str(tmp_path), _free_port()),
             nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1)]
    for name, cfg in curvature_configs().items():
        curv = fit_curvature(store, cfg, torch.float64, progress=False,
                             source=source_for(cfg, SequenceTask(), tiny_lm(), token_data(23),
                                               store))
        res = compute_scores(SequenceTask(), tiny_lm(), token_data(5, seed=7), store, curv,
                             ScoreConfig(progress=False, top_k=3), torch.float64)
        own = self_influence(store, curv, dtype=torch.float64, progress=False)
        for out in ranks:
            torch.testing.assert_close(out[f"{name}.scores"], res.scores, rtol=1e-9,
                                       atol=1e-12)
            torch.testing.assert_close(out[f"{name}.self"], own, rtol=1e-9, atol=1e-12)
            assert torch.equal(out[f"{name}.helpful"], res.helpful.indices), name
            assert torch.equal(out[f"{name}.harmful"], res.harmful.indices), name
            assert int(out[f"{name}.passes"]) == curv.extra["passes"]


def test_a_rank_dying_mid_build_leaves_a_store_that_resumes_identically(tmp_path):
    """Rank 1 dies after one shard; the shards already written survive, and the build
    resumes in one process (a different world size) to the single-process shards."""
    import pytest

    from attribution.dist_worker import dying_build_rank

    reference = build_store(SequenceTask(), tiny_lm(), token_data(23), tmp_path / "ref",
                            ProjectionConfig(d1=4, d2=4, seed=2), FactorConfig(2, "float32"),
                            BuildConfig(batch_size=4, shard_size=4, progress=False))
    with pytest.raises(Exception):  # noqa: B017 - the spawned rank's error
        mp.spawn(dying_build_rank, args=(2, str(tmp_path / "s"), _free_port()), nprocs=2,
                 join=True)
    written = sorted(p.name for p in (tmp_path / "s").glob("shard-*.npy"))
    assert 0 < len(written) < 6
    resumed = build_store(SequenceTask(), tiny_lm(), token_data(23), tmp_path / "s",
                          ProjectionConfig(d1=4, d2=4, seed=2), FactorConfig(2, "float32"),
                          BuildConfig(batch_size=4, shard_size=4, progress=False))
    assert resumed.manifest["complete"]
    assert [s["sha256"] for s in resumed.manifest["shards"]] == [
        s["sha256"] for s in reference.manifest["shards"]]


def test_a_rank_dying_during_the_curvature_fit_is_named_and_nothing_is_saved(tmp_path):
    """Rank 1 dies inside the distributed curvature; rank 0 gets a DistributedError naming
    the stage (not a backend traceback, not a hang) and no curvature file is written."""
    from attribution.dist_worker import dying_curvature_rank

    build_store(SequenceTask(), tiny_lm(), token_data(23), tmp_path / "s",
                ProjectionConfig(d1=4, d2=4, seed=2), FactorConfig(2, "float64"),
                BuildConfig(batch_size=3, shard_size=4, compute_dtype="float64",
                            progress=False))
    ctx, port = mp.get_context("spawn"), _free_port()
    procs = [ctx.Process(target=dying_curvature_rank,
                         args=(r, 2, str(tmp_path / "s"), str(tmp_path), port))
             for r in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 3]
    msg = (tmp_path / "rank0.txt").read_text()
    assert "during the curvature fit" in msg and "rank 0 of 2" in msg
    assert "Restart every rank" in msg
    assert not (tmp_path / "curvature.pt").exists()
