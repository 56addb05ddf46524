"""Query latency at large N: dense LoGRA store vs LoRIF c=1 store, cold and warm cache.

The paper's 10x query claim is about I/O: a LoRIF row holds c (d1 + d2) numbers per layer
instead of d1 * d2. This script writes synthetic rows straight through
``tamis.attribution.store.StoreWriter`` (header built as ``build_store`` builds it), with
``--layers`` layers of d1 x d2 = 128 x 32 (D = 4096 per layer), N = ``--n`` examples, float16.
The dense rows are the exact products L R^T of the LoRIF rows (so both stores hold the same
gradients). Each store's preconditioner (dense D x D for LoGRA, rank-r Woodbury for LoRIF)
is fitted on a small store of the same layout (the first shard) and then bound to the big
store: its values do not change the I/O being timed, and fitting a dense curvature over
N = 262k rows would take hours on one thread.

Cold = the store's files evicted from the page cache (posix_fadvise DONTNEED on every
file, the same as common.drop_page_cache; no global drop_caches so other jobs on the
machine keep their cache) then open + score. Warm = the same query again (best of 2).

    .venv/bin/python benchmarks/attribution/query_scaling.py --n 262144

Writes benchmarks/results/attribution_query_scaling.{json,md}; the stores are deleted
afterwards (``--keep`` keeps them).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

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

from tamis.attribution import CurvatureConfig, FactorStore, ProjectionConfig, ScoreConfig  # noqa: E402
from tamis.attribution.build import projection_header  # noqa: E402
from tamis.attribution.curvature import fit_curvature, store_identity  # noqa: E402
from tamis.attribution.projection import LayerSpec  # noqa: E402
from tamis.attribution.scoring import score_gradients  # noqa: E402
from tamis.attribution.store import FORMAT, VERSION, StoreWriter, row_layout  # noqa: E402


def header(specs: list[LayerSpec], rank: int | None, n: int, shard: int,
           proj: ProjectionConfig) -> dict:
    """The manifest header, as build_store writes it."""
    layout = row_layout(specs, rank)
    return {"format": FORMAT, "version": VERSION, "kind": "dense" if rank is None else "lorif",
            "rank": rank, "dtype": "float16", "num_examples": n, "shard_size": shard,
            "row_length": layout[-1]["offset"] + layout[-1]["length"], "layers": layout,
            "projection": projection_header(proj), "model_fingerprint": "synthetic"}


def write_pair(root: Path, specs: list[LayerSpec], n: int, shard: int,
               proj: ProjectionConfig) -> dict:
    """Write the LoRIF c=1 and the dense store of the same synthetic rank-1 gradients."""
    w_lo = StoreWriter(root / "lorif", header(specs, 1, n, shard, proj), overwrite=True)
    w_de = StoreWriter(root / "dense", header(specs, None, n, shard, proj), overwrite=True)
    t0 = time.perf_counter()
    for index, start in enumerate(range(0, n, shard)):
        m = min(shard, n - start)
        g = torch.Generator().manual_seed(index)
        lo_parts, de_parts = [], []
        for s in specs:
            left = torch.randn(m, s.d1, 1, generator=g) / s.d1 ** 0.5
            right = torch.randn(m, s.d2, 1, generator=g) / s.d2 ** 0.5
            lo_parts += [left.reshape(m, -1), right.reshape(m, -1)]
            de_parts.append((left @ right.transpose(1, 2)).reshape(m, -1))
        energy = {s.name: float(m) for s in specs}  # rank-1 gradients: all energy kept
        w_lo.write_shard(index, start, torch.cat(lo_parts, 1).half().numpy(), energy)
        w_de.write_shard(index, start, torch.cat(de_parts, 1).half().numpy(), energy)
    shards = (n + shard - 1) // shard
    w_lo.finish(shards)
    w_de.finish(shards)
    return {"write_s": time.perf_counter() - t0}


def small_copy(src: Path, dst: Path) -> FactorStore:
    """A one-shard store with the same layout (to fit the curvature on)."""
    store = FactorStore.open(src, verify=False)
    first = store.manifest["shards"][0]
    shutil.rmtree(dst, ignore_errors=True)
    hdr = {k: v for k, v in store.manifest.items() if k in StoreWriter.KEYS or k in
           ("format", "version")}
    hdr["num_examples"] = first["stop"] - first["start"]
    w = StoreWriter(dst, hdr, overwrite=True)
    w.write_shard(0, 0, np.load(src / first["file"]), first["energy"])
    return w.finish(1)


def time_query(path: Path, curv, queries: dict, cfg: ScoreConfig, repeats: int) -> dict:
    """Cold (files evicted) then warm (best of ``repeats``) open + score."""
    out = {}
    drop_page_cache(path)
    reset_peak_rss()
    t0 = time.perf_counter()
    store = FactorStore.open(path, verify=False)
    t_open = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = score_gradients(queries, store, curv, cfg)
    out["cold"] = {"open_s": t_open, **res.timings, "total_s": t_open + time.perf_counter() - t0}
    warm = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        store = FactorStore.open(path, verify=False)
        res = score_gradients(queries, store, curv, cfg)
        warm.append({**res.timings, "total_s": time.perf_counter() - t0})
    out["warm"] = min(warm, key=lambda w: w["total_s"])
    out["peak_rss_mb"] = peak_rss_mb()
    out["top1"] = res.helpful.indices[:, 0].tolist()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--n", type=int, default=262144)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--d1", type=int, default=128)
    p.add_argument("--d2", type=int, default=32)
    p.add_argument("--queries", type=int, default=8)
    p.add_argument("--rank-r", type=int, default=512)
    p.add_argument("--shard-size", type=int, default=4096)
    p.add_argument("--chunk-size", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--root", type=Path, default=CACHE / "query_scaling")
    p.add_argument("--keep", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    proj = ProjectionConfig(d1=args.d1, d2=args.d2, seed=0)
    specs = [LayerSpec(f"layer{i}", 1024, 1024, args.d1, args.d2, False, False)
             for i in range(args.layers)]
    root = args.root
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    rows: list[dict] = []
    try:
        info = write_pair(root, specs, args.n, args.shard_size, proj)
        print("written", info, flush=True)
        g = torch.Generator().manual_seed(123)
        queries = {s.name: torch.randn(args.queries, s.dim, generator=g) for s in specs}
        for kind, sub, ckind, kernels in (
            ("tamis logra (dense)", "dense", "dense", ["reconstruct"]),
            ("tamis lorif c=1", "lorif", "lowrank", ["reconstruct", "factored"]),
        ):
            small = small_copy(root / sub, root / f"{sub}-small")
            ccfg = CurvatureConfig(kind=ckind, rank=args.rank_r)
            t0 = time.perf_counter()
            curv = fit_curvature(small, ccfg, torch.float32, progress=False)
            t_fit = time.perf_counter() - t0
            big = FactorStore.open(root / sub, verify=False)
            curv = dataclasses.replace(curv, store_id=store_identity(big))
            for kernel in kernels:
                cfg = ScoreConfig(kernel=kernel, chunk_size=args.chunk_size, top_k=10,
                                  keep_scores=False, progress=False)
                print("query", kind, kernel, flush=True)
                t = time_query(root / sub, curv, queries, cfg, args.repeats)
                rows.append({"method": kind, "kernel": kernel, "N": args.n,
                             "store_bytes_total": big.disk_bytes,
                             "store_bytes_per_example": big.bytes_per_example,
                             "curvature_bytes": curv.memory_bytes,
                             "curvature_fit_s_one_shard": t_fit, **t})
                print("  ->", json.dumps(t)[:400], flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    meta = {"command": command_line(), "environment": environment(), "N": args.n,
            "layers": args.layers, "d1": args.d1, "d2": args.d2, "queries": args.queries,
            "rank_r": args.rank_r, "chunk_size": args.chunk_size, **info}
    RESULTS.mkdir(parents=True, exist_ok=True)
    base = RESULTS / "attribution_query_scaling"
    base.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    base.with_suffix(".md").write_text(report(meta, rows))
    print(report(meta, rows))


def report(meta: dict, rows: list[dict]) -> str:
    dense = next(r for r in rows if r["method"].startswith("tamis logra"))
    lines = [
        "# Attribution benchmark: query latency at large N", "",
        f"Command: `{meta['command']}`", "",
        f"Synthetic rank-1 gradients, N={meta['N']}, {meta['layers']} layers of d1 x d2 = "
        f"{meta['d1']} x {meta['d2']} (D={meta['d1'] * meta['d2']} per layer), float16, "
        f"{meta['queries']} queries scored together, chunk {meta['chunk_size']} rows. The dense "
        "rows are the exact products of the LoRIF c=1 factors. Curvature fitted on the first "
        "shard and bound to the full store (its values do not change the I/O timed). Cold = "
        "the store's files evicted with posix_fadvise(DONTNEED) before open + score; warm = "
        "best of the repeats right after. load = reading rows from disk into memory "
        "(ScoreResult.timings load_s), compute = preconditioned-query x rows GEMM + top-k.", "",
        f"Environment: {json.dumps(meta['environment'])}", "",
        f"Store write (both stores, incl. sha256 + fsync): {meta['write_s']:.1f} s. (The "
        "dense and low-rank preconditioners differ, so the scores differ too; only the "
        "timings are compared.)", "",
        "| method | kernel | store GB | bytes/ex | cold total s (open+load+compute) | "
        "warm total s (load+compute) | cold speed-up vs dense | warm speed-up vs dense | "
        "peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        c, w = r["cold"], r["warm"]
        lines.append(
            f"| {r['method']} | {r['kernel']} | {r['store_bytes_total'] / 1e9:.2f} "
            f"| {r['store_bytes_per_example']:.0f} "
            f"| {c['total_s']:.2f} ({c['open_s']:.2f}+{c['load_s']:.2f}+{c['compute_s']:.2f}) "
            f"| {w['total_s']:.2f} ({w['load_s']:.2f}+{w['compute_s']:.2f}) "
            f"| {dense['cold']['total_s'] / c['total_s']:.1f}x "
            f"| {dense['warm']['total_s'] / w['total_s']:.1f}x | {r['peak_rss_mb']:.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
