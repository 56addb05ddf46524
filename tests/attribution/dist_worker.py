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


def pipeline_rank(rank: int, world: int, store_path: str, out_dir: str, port: int) -> None:
    """Fit every curvature, score and self-influence on this rank's shards and batches."""
    from tamis.attribution import (
        FactorStore,
        ScoreConfig,
        compute_scores,
        fit_curvature,
        self_influence,
    )
    from tamis.attribution.fisher import source_for

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        store = FactorStore.open(store_path)
        out = {}
        for name, cfg in curvature_configs().items():
            curv = fit_curvature(store, cfg, torch.float64, progress=False,
                                 source=source_for(cfg, SequenceTask(), tiny_lm(),
                                                   token_data(23), store))
            res = compute_scores(SequenceTask(), tiny_lm(), token_data(5, seed=7), store, curv,
                                 ScoreConfig(progress=False, top_k=3), torch.float64)
            out[f"{name}.scores"] = res.scores
            out[f"{name}.helpful"] = res.helpful.indices
            out[f"{name}.harmful"] = res.harmful.indices
            out[f"{name}.self"] = self_influence(store, curv, dtype=torch.float64,
                                                 progress=False)
            out[f"{name}.passes"] = torch.tensor(curv.extra["passes"])
        torch.save(out, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def curvature_configs() -> dict:
    """The store-streamed curvatures the distributed test compares with one process."""
    from tamis.attribution import CurvatureConfig

    return {
        "lowrank": CurvatureConfig(rank=3, oversample=2, power_iters=2, chunk_size=3),
        "nystrom": CurvatureConfig(rank=3, oversample=2, method="nystrom", chunk_size=3),
        "dense": CurvatureConfig(kind="dense", chunk_size=3),
        "identity": CurvatureConfig(kind="identity", damping=0.5),
        "model": CurvatureConfig(rank=4, granularity="model", chunk_size=5),
        "true": CurvatureConfig(rank=3, oversample=2, fisher="true", n_samples=2,
                                fisher_batch_size=3),
        "ekfac_true": CurvatureConfig(kind="ekfac", fisher="true", fisher_batch_size=3),
        "kfac": CurvatureConfig(kind="kfac", fisher="empirical", fisher_batch_size=4),
    }


class _DiesOnRankOne(SequenceTask):
    """Raises on rank 1's second batch, as a killed or crashed rank would stop."""

    calls = 0

    def compute_train_loss(self, batch, model):
        if dist.get_rank() == 1:
            type(self).calls += 1
            if type(self).calls > 2:  # the probe batch, then one full batch
                raise RuntimeError("rank 1 dies")
        return super().compute_train_loss(batch, model)


def dying_build_rank(rank: int, world: int, path: str, port: int) -> None:
    """A two-rank build in which rank 1 dies after its first shard."""
    from datetime import timedelta

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=20))
    try:
        build_store(_DiesOnRankOne(), tiny_lm(), token_data(23), path,
                    ProjectionConfig(d1=4, d2=4, seed=2), FactorConfig(2, "float32"),
                    BuildConfig(batch_size=4, shard_size=4, progress=False))
    finally:
        dist.destroy_process_group()


def dying_curvature_rank(rank: int, world: int, store_path: str, out_dir: str,
                         port: int) -> None:
    """Rank 1 dies at its second all-reduce inside the curvature fit; rank 0 records the
    error it gets (a DistributedError naming the stage) and whether anything was saved."""
    from datetime import timedelta
    from pathlib import Path

    from tamis.attribution import CurvatureConfig, FactorStore, fit_curvature
    from tamis.attribution.errors import DistributedError

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=20))
    if rank == 1:
        real, calls = dist.all_reduce, [0]

        def dying(*args, **kwargs):
            calls[0] += 1
            if calls[0] == 2:
                os._exit(3)
            return real(*args, **kwargs)

        dist.all_reduce = dying
    store = FactorStore.open(store_path)
    try:
        fit_curvature(store, CurvatureConfig(kind="lowrank", rank=3, oversample=2),
                      torch.float64, progress=False).save(Path(out_dir) / "curvature.pt")
        Path(out_dir, f"rank{rank}.txt").write_text("finished")
    except DistributedError as err:
        Path(out_dir, f"rank{rank}.txt").write_text(str(err))
        # gloo's teardown of a group whose peer reset its socket can abort (SIGABRT) at
        # interpreter exit, after the error was raised and recorded; what is under test is
        # the error and that nothing was saved, so leave without the teardown
        os._exit(0)
