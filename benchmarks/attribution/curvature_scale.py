"""Curvature at D = 65,536 per layer (d1 = d2 = 256): peak memory and time, measured.

A dense D x D inverse at this D is 65,536^2 x 4 bytes = 17.2 GB per layer in float32 (more
than this 24 GB machine can hold next to anything else); the LoRIF preconditioner keeps the
top-r eigenpairs, D x r numbers. This script writes a synthetic LoRIF c = 1 store of one
256 x 256 layer (N = ``--n`` rank-1 gradients whose input and output factors have a decaying
spectrum, so F has structure to find), then fits the rank-r curvature with the randomized SVD
(2 power iterations: 4 passes) and with the single-pass Nystrom sketch, each in a fresh
process so its peak RSS (VmHWM) is its own. Accuracy: the relative residual
||F v - s^2 v|| / s^2 of the top eigenpairs, from one more exact pass F v = G^T (G v) / N.

    .venv/bin/python benchmarks/attribution/curvature_scale.py --n 8192

Writes benchmarks/results/attribution_curvature_scale.{json,md}; the store is deleted.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import CACHE, RESULTS, command_line, environment, peak_rss_mb  # noqa: E402
from query_scaling import header  # noqa: E402

from tamis._io import write_text_atomic  # noqa: E402
from tamis.attribution import CurvatureConfig, FactorStore, ProjectionConfig  # noqa: E402
from tamis.attribution.curvature import fit_curvature  # noqa: E402
from tamis.attribution.projection import LayerSpec  # noqa: E402
from tamis.attribution.store import StoreWriter  # noqa: E402

D1 = D2 = 256


def write_store(path: Path, n: int, shard: int) -> float:
    """Synthetic rank-1 gradients a b^T with a ~ N(0, diag(k^-1)), b likewise."""
    spec = LayerSpec("layer", D1, D2, D1, D2, False, False)
    proj = ProjectionConfig(d1=D1, d2=D2)
    w = StoreWriter(path, header([spec], 1, n, shard, proj), overwrite=True)
    scale_a = torch.arange(1, D1 + 1, dtype=torch.float32) ** -0.5
    scale_b = torch.arange(1, D2 + 1, dtype=torch.float32) ** -0.5
    t0 = time.perf_counter()
    for index, start in enumerate(range(0, n, shard)):
        m = min(shard, n - start)
        g = torch.Generator().manual_seed(index)
        a = torch.randn(m, D1, generator=g) * scale_a
        b = torch.randn(m, D2, generator=g) * scale_b
        w.write_shard(index, start, torch.cat([a, b], 1).half().numpy(), {"layer": float(m)})
    w.finish(-(-n // shard))
    return time.perf_counter() - t0


def fit_one(path: str, method: str, rank: int, check: int) -> dict:
    """Fit in this (fresh) process; time, peak RSS, curvature bytes, eigen residuals."""
    torch.set_num_threads(1)
    store = FactorStore.open(path, verify=False)
    base = peak_rss_mb()
    cfg = CurvatureConfig(rank=rank, method=method, chunk_size=1024)
    t0 = time.perf_counter()
    curv = fit_curvature(store, cfg, torch.float32, progress=False)
    fit_s = time.perf_counter() - t0
    peak = peak_rss_mb()
    block = curv.blocks[0]
    v, s2 = block.eigvecs[:, :check], block.eigvals[:check]
    fv = torch.zeros_like(v)
    for chunk in store.iter_chunks(1024, torch.float32):
        g = chunk.dense("layer")
        fv += g.T @ (g @ v) / store.num_examples
    resid = ((fv - v * s2).norm(dim=0) / s2).tolist()
    return {"method": method, "rank": rank, "fit_s": fit_s, "passes": curv.extra["passes"],
            "peak_rss_mib": peak, "rss_before_fit_mib": base,
            "curvature_mib": curv.memory_bytes / 2**20, "top_eigvals": s2.tolist(),
            "residuals": resid}


def main() -> None:
    """Write the store, fit each method in its own process, write the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=8192)
    p.add_argument("--rank", type=int, default=256)
    p.add_argument("--check", type=int, default=10)
    p.add_argument("--worker", nargs=2, metavar=("PATH", "METHOD"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(fit_one(args.worker[0], args.worker[1], args.rank, args.check)))
        return
    path = CACHE / "curvature_scale" / "store"
    write_s = write_store(path, args.n, 4096)
    rows = []
    for method in ("randomized", "nystrom"):
        out = subprocess.run([sys.executable, __file__, "--rank", str(args.rank), "--check",
                              str(args.check), "--worker", str(path), method],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(rows[-1]["method"], f"{rows[-1]['fit_s']:.1f} s",
              f"peak {rows[-1]['peak_rss_mib']:.0f} MiB", flush=True)
    store_mib = sum(f.stat().st_size for f in path.glob("shard-*.npy")) / 2**20
    shutil.rmtree(path.parent, ignore_errors=True)
    dense_gb = (D1 * D2) ** 2 * 4 / 1e9
    result = {"command": command_line(), "environment": environment(), "n": args.n,
              "d1": D1, "d2": D2, "D": D1 * D2, "store_mib": store_mib, "write_s": write_s,
              "dense_inverse_gb": dense_gb, "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_text_atomic(RESULTS / "attribution_curvature_scale.json",
                      json.dumps(result, indent=1))
    lines = [
        "# Curvature at D = 65,536 per layer (d1 = d2 = 256)", "",
        f"Command: `{result['command']}`. One synthetic 256 x 256 layer, N = {args.n} "
        f"rank-1 gradients (LoRIF c = 1 store, {store_mib:.0f} MiB), r = {args.rank}, one "
        f"thread, each fit in a fresh process. A dense D x D inverse would need "
        f"{dense_gb:.1f} GB in float32 for this one layer (not run).", "",
        "| method | passes | fit s | peak RSS MiB (before fit) | curvature MiB | "
        f"max residual of the top {args.check} eigenpairs |",
        "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['passes']} | {r['fit_s']:.1f} | "
                     f"{r['peak_rss_mib']:.0f} ({r['rss_before_fit_mib']:.0f}) | "
                     f"{r['curvature_mib']:.1f} | {max(r['residuals']):.2e} |")
    write_text_atomic(RESULTS / "attribution_curvature_scale.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
