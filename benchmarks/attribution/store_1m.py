"""A store of >= 1,000,000 real gradients whose dense LoGRA twin does not fit in RAM.

Model: a 784-512-256-10 ReLU MLP trained one epoch on Fashion-MNIST (seeded). Data: the
60,000 training images, each under ``--augment`` deterministic augmentations (augmentation
``a`` of image ``i`` is example ``a * 60000 + i``: a shift of up to 2 pixels and, for odd
``a``, a horizontal flip), ``--n`` examples in all. Tracked layers: fc1 and fc2, projected to
d1 x d2 = 128 x 64 (D = 8,192 per layer, 16,384 in all). Both stores are built by
``build_store`` from the same model and examples, float16 on disk:

* LoRIF c = 1 (the per-example gradients of an MLP are rank 1: exact): 768 B per example;
* dense LoGRA: 32,768 B per example, 34 GB at N = 1,048,576 (RAM: 24 GB).

Queries: ``--queries`` test images, scored together, top-10 per query, against both stores:
cold (the store's files evicted from the page cache by posix_fadvise) and warm (right after;
the dense store cannot stay cached). The preconditioners (rank-r Woodbury for LoRIF, dense
D x D per layer for LoGRA) are fitted on the first shard and bound to the full store (their
values do not change the I/O timed; see query_scaling.py). The disk's sequential read
bandwidth is measured on the dense shards (cold, 16 MiB reads) in the same run, and each
query's bytes read are compared with it.

    .venv/bin/python benchmarks/attribution/store_1m.py --n 1048576

Writes benchmarks/results/attribution_store_1m.{json,md}; the stores (34.6 GB) are deleted
afterwards unless ``--keep``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    CACHE,
    RESULTS,
    command_line,
    drop_page_cache,
    environment,
    peak_rss_mb,
    reset_peak_rss,
)
from query_scaling import small_copy, time_query  # noqa: E402

from tamis.attribution import (  # noqa: E402
    BuildConfig,
    CurvatureConfig,
    FactorConfig,
    FactorStore,
    ProjectionConfig,
    ScoreConfig,
    build_store,
)
from tamis.attribution.build import query_gradients  # noqa: E402
from tamis.attribution.curvature import fit_curvature, store_identity  # noqa: E402
from tamis.attribution.examples import ClassificationTask  # noqa: E402
from tamis.data import load_fashion_mnist  # noqa: E402


class MLP(nn.Module):
    """784-512-256-10 ReLU MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(784, 512), nn.Linear(512, 256), nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of (B, 1, 28, 28) or (B, 784) images."""
        h = torch.relu(self.fc1(x.flatten(1)))
        return self.fc3(torch.relu(self.fc2(h)))


class Augmented(torch.utils.data.Dataset):
    """``copies`` deterministic augmentations of each image; example a * N + i."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, n: int) -> None:
        self.x, self.y, self.n = x, y, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        a, i = divmod(int(idx), self.x.shape[0])
        img = self.x[i]
        if a:
            g = np.random.default_rng(a)
            dy, dx = (int(v) for v in g.integers(-2, 3, size=2))
            img = torch.roll(img, shifts=(dy, dx), dims=(1, 2))
            if a % 2:
                img = torch.flip(img, dims=(2,))
        return img, self.y[i]


def collate(items: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (image, label) pairs."""
    return torch.stack([a for a, _ in items]), torch.stack([b for _, b in items])


def train(x: torch.Tensor, y: torch.Tensor) -> MLP:
    """One seeded Adam epoch."""
    torch.manual_seed(0)
    model = MLP()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for idx in torch.randperm(x.shape[0]).split(256):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    return model.eval()


def read_bandwidth(folder: Path, limit: int = 8 << 30) -> dict:
    """Cold sequential read bandwidth over the folder's largest files (16 MiB reads)."""
    drop_page_cache(folder)
    files = sorted(folder.glob("shard-*.npy"))
    done, t0 = 0, time.perf_counter()
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            while chunk := os.read(fd, 16 << 20):
                done += len(chunk)
        finally:
            os.close(fd)
        if done >= limit:
            break
    dt = time.perf_counter() - t0
    drop_page_cache(folder)
    return {"bytes": done, "seconds": dt, "bytes_per_s": done / dt}


def main() -> None:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=1_048_576)
    p.add_argument("--queries", type=int, default=8)
    p.add_argument("--rank-r", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--shard-size", type=int, default=16384)
    p.add_argument("--chunk-size", type=int, default=16384)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--root", type=Path, default=CACHE / "store_1m")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--only", default="lorif,dense", help="stores to build and query")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    ds = load_fashion_mnist("train")
    x, y = torch.from_numpy(ds.images[:, None]), torch.from_numpy(ds.labels)
    t0 = time.perf_counter()
    model = train(x, y)
    for prm in model.parameters():
        prm.requires_grad_(True)
    t_train = time.perf_counter() - t0
    data = Augmented(x, y, args.n)
    test = load_fashion_mnist("test")
    qx = torch.from_numpy(test.images[: args.queries, None])
    qy = torch.from_numpy(test.labels[: args.queries])
    task = ClassificationTask(["fc1", "fc2"])
    proj = ProjectionConfig(d1=128, d2=64, seed=0)
    root = args.root
    root.mkdir(parents=True, exist_ok=True)
    rows, builds = [], {}
    kinds = [k for k in ("lorif", "dense") if k in args.only.split(",")]
    try:
        for kind in kinds:
            fcfg = FactorConfig(rank=1 if kind == "lorif" else None, dtype="float16")
            print(f"building {kind} over {args.n:,} examples", flush=True)
            reset_peak_rss()
            t0 = time.perf_counter()
            store = build_store(task, model, data, root / kind, proj, fcfg,
                                BuildConfig(batch_size=args.batch_size,
                                            shard_size=args.shard_size),
                                collate_fn=collate)
            builds[kind] = {"build_s": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb(),
                            "bytes": store.disk_bytes,
                            "bytes_per_example": store.bytes_per_example}
            print("  ->", builds[kind], flush=True)
        bandwidth = read_bandwidth(root / kinds[-1])
        print("read bandwidth", bandwidth, flush=True)
        for kind in kinds:
            ckind = "lowrank" if kind == "lorif" else "dense"
            small = small_copy(root / kind, root / f"{kind}-small")
            t0 = time.perf_counter()
            curv = fit_curvature(small, CurvatureConfig(kind=ckind, rank=args.rank_r),
                                 torch.float32, progress=False)
            t_fit = time.perf_counter() - t0
            big = FactorStore.open(root / kind, verify=False)
            curv = dataclasses.replace(curv, store_id=store_identity(big))
            queries = query_gradients(task, model, torch.utils.data.TensorDataset(qx, qy),
                                      big, args.queries, torch.float32, None, False,
                                      factors=False)
            for kernel in (["reconstruct", "factored"] if kind == "lorif" else
                           ["reconstruct"]):
                cfg = ScoreConfig(kernel=kernel, chunk_size=args.chunk_size, top_k=10,
                                  keep_scores=False, progress=False)
                print("query", kind, kernel, flush=True)
                t = time_query(root / kind, curv, queries, cfg, args.repeats)
                io_bound = big.disk_bytes / bandwidth["bytes_per_s"]
                rows.append({"store": kind, "kernel": kernel, "N": args.n,
                             "store_bytes_total": big.disk_bytes,
                             "store_bytes_per_example": big.bytes_per_example,
                             "curvature_bytes": curv.memory_bytes,
                             "curvature_fit_s_one_shard": t_fit,
                             "io_bound_s": io_bound, **t})
                print("  ->", json.dumps(t)[:300], flush=True)
    finally:
        if not args.keep:
            for kind in kinds:
                shutil.rmtree(root / kind, ignore_errors=True)
                shutil.rmtree(root / f"{kind}-small", ignore_errors=True)
    meta = {"command": command_line(), "environment": environment(), "N": args.n,
            "queries": args.queries, "rank_r": args.rank_r, "chunk_size": args.chunk_size,
            "train_s": t_train, "builds": builds, "bandwidth": bandwidth,
            "ram_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")}
    RESULTS.mkdir(parents=True, exist_ok=True)
    base = RESULTS / "attribution_store_1m"
    base.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    base.with_suffix(".md").write_text(report(meta, rows))
    print(report(meta, rows))


def report(meta: dict, rows: list[dict]) -> str:
    """The markdown table."""
    b, bw = meta["builds"], meta["bandwidth"]["bytes_per_s"]
    dense = next((r for r in rows if r["store"] == "dense"), None)
    lines = [
        "# Attribution at N >= 1M: a LoRIF store whose dense twin does not fit in RAM", "",
        f"Command: `{meta['command']}`", "",
        f"N = {meta['N']:,} real per-example gradients (Fashion-MNIST x deterministic shift/"
        "flip augmentations) of a 784-512-256-10 MLP trained one epoch "
        f"({meta['train_s']:.0f} s); fc1 + fc2 projected to 128 x 64 (D = 16,384), float16. "
        f"RAM {meta['ram_bytes'] / 2**30:.1f} GiB. {meta['queries']} queries scored together, "
        f"top-10, chunks of {meta['chunk_size']:,} rows. Curvature fitted on the first shard "
        "and bound to the full store. Cold = the store's files evicted (posix_fadvise "
        "DONTNEED) before open + score; warm = best of the repeats right after. Disk "
        f"sequential cold read, measured in the same run: {bw / 1e9:.2f} GB/s. I/O bound = "
        "store bytes / that bandwidth.", "",
        f"Environment: {json.dumps(meta['environment'])}", "",
        "| store | build s | peak RSS MiB (build) | store GB | bytes/ex |",
        "|---|---|---|---|---|"]
    for kind, v in b.items():
        lines.append(f"| {kind} | {v['build_s']:.0f} | {v['peak_rss_mb']:.0f} | "
                     f"{v['bytes'] / 1e9:.2f} | {v['bytes_per_example']:.0f} |")
    lines += ["", "| store | kernel | cold s (open+load+compute) | cold / I/O bound | "
              "warm s (load+compute) | cold speed-up vs dense | warm speed-up vs dense | "
              "peak RSS MiB |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        c, w = r["cold"], r["warm"]
        up_c = f"{dense['cold']['total_s'] / c['total_s']:.1f}x" if dense else "-"
        up_w = f"{dense['warm']['total_s'] / w['total_s']:.1f}x" if dense else "-"
        lines.append(
            f"| {r['store']} | {r['kernel']} "
            f"| {c['total_s']:.2f} ({c['open_s']:.2f}+{c['load_s']:.2f}+{c['compute_s']:.2f}) "
            f"| {c['total_s'] / r['io_bound_s']:.2f} ({r['io_bound_s']:.2f} s) "
            f"| {w['total_s']:.2f} ({w['load_s']:.2f}+{w['compute_s']:.2f}) "
            f"| {up_c} | {up_w} | {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
