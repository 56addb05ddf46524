"""Query time: dense LoGRA vs LoRIF with each scoring kernel, on the same model and data.

The subspace kernel contracts the query's exact factors with the training factors and adds the
curvature-subspace correction through cached H = G V, so a pair costs O(c c_q (d1 + d2) + r)
instead of O(D). All three give the same scores (checked here and in the tests).

Reproduce: .venv/bin/python benchmarks/attribution/kernel_speed.py
Writes benchmarks/results/attribution_kernel_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import TensorDataset

from tamis.attribution import (
    BuildConfig,
    CurvatureConfig,
    FactorConfig,
    ProjectionConfig,
    ScoreConfig,
    build_store,
    fit_curvature,
    query_gradients,
    score_gradients,
)
from tamis.attribution.examples import ClassificationTask

RESULTS = Path(__file__).resolve().parents[1] / "results"
TASK = ClassificationTask()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--d", type=int, default=64, help="d1 = d2 (D = d^2 per layer)")
    parser.add_argument("--r", type=int, default=64)
    parser.add_argument("--queries", type=int, nargs="+", default=[8, 64])
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 128), nn.Tanh(), nn.Linear(128, 128), nn.Tanh(),
                          nn.Linear(128, 64))
    x = torch.randn(args.n + max(args.queries), 256)
    y = torch.randint(0, 64, (len(x),))
    train = TensorDataset(x[: args.n], y[: args.n])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = build_store(TASK, model, train, Path(tmp) / "s",
                            ProjectionConfig(d1=args.d, d2=args.d, clip_to_layer=True),
                            FactorConfig(1, "float16"), BuildConfig(batch_size=500, progress=False))
        curv = fit_curvature(store, CurvatureConfig(rank=args.r, cache_projections=True),
                             progress=False)
        dense = build_store(TASK, model, train, Path(tmp) / "dense",
                            ProjectionConfig(d1=args.d, d2=args.d, clip_to_layer=True),
                            FactorConfig(None, "float16"), BuildConfig(batch_size=500,
                                                                       progress=False))
        dense_curv = fit_curvature(dense, CurvatureConfig(kind="dense"), progress=False)
        for nq in args.queries:
            queries = TensorDataset(x[args.n : args.n + nq], y[args.n : args.n + nq])
            qf = query_gradients(TASK, model, queries, store, progress=False, factors=True)
            qd = query_gradients(TASK, model, queries, dense, progress=False)
            scores = {}
            runs = [("LoGRA dense, full inverse", dense, dense_curv, qd, "reconstruct")] + [
                (f"LoRIF c=1 r={args.r}", store, curv, qf, k)
                for k in ("reconstruct", "factored", "subspace")
            ]
            for method, st, cv, q, kernel in runs:
                cfg = ScoreConfig(kernel=kernel, progress=False, chunk_size=4096)
                score_gradients(q, st, cv, cfg)  # warm the page cache
                best = float("inf")
                for _ in range(3):
                    t0 = time.perf_counter()
                    res = score_gradients(q, st, cv, cfg)
                    best = min(best, time.perf_counter() - t0)
                key = kernel if st is store else "dense"
                scores[key] = res.scores
                ref = scores.get("reconstruct", res.scores)
                rows.append({"queries": nq, "method": method, "kernel": kernel, "seconds": best,
                             "bytes_per_example": st.bytes_per_example,
                             "subspace_cache_bytes_per_example": (
                                 sum(b.projections.numel() * b.projections.element_size()
                                     for b in cv.blocks) / args.n if kernel == "subspace" else 0),
                             "compute_s": res.timings["compute_s"],
                             "max_rel_diff_vs_reconstruct": float(
                                 (res.scores - ref).abs().max() / ref.abs().max())})
            base = next(r for r in rows if r["queries"] == nq and r["method"].startswith("LoGRA"))
            for r in rows:
                if r["queries"] == nq:
                    r["speedup_vs_dense"] = base["seconds"] / r["seconds"]
        layers = [(lay["name"], lay["d1"], lay["d2"]) for lay in store.layers]
    meta = {"command": "python benchmarks/attribution/kernel_speed.py", "n": args.n,
            "layers": layers, "r": args.r, "threads": args.threads,
            "machine": platform.platform(), "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d")}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "attribution_kernel_speed.json").write_text(json.dumps({"meta": meta, "rows": rows},
                                                                      indent=1))
    lines = ["# Query time: dense LoGRA vs LoRIF scoring kernels (float16, warm page cache)", "",
             f"N = {args.n}, layers (name, d1, d2) = {layers}, curvature r = {args.r} per layer, "
             f"{args.threads} thread(s). Best of 3 runs of `score_gradients` (load + compute).",
             "Max rel. diff: against LoRIF's reconstruct kernel (same store and curvature). "
             "The subspace kernel also holds H = G V in memory (r numbers per layer per example, "
             "float32), listed as cache bytes/example.", "",
             "| queries | method | kernel | store bytes/example | cache bytes/example | seconds "
             "| speed-up vs dense LoGRA | max rel. diff |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        diff, cache = r["max_rel_diff_vs_reconstruct"], r["subspace_cache_bytes_per_example"]
        lines.append(f"| {r['queries']} | {r['method']} | {r['kernel']} | "
                     f"{r['bytes_per_example']:.0f} | {cache:.0f} | "
                     f"{r['seconds']:.3f} | "
                     f"{r['speedup_vs_dense']:.1f}x | {diff:.1e} |")
    lines += ["", f"Reproduce: `{meta['command']}` ({meta['machine']}, torch {meta['torch']}, "
              f"{meta['date']}); the machine's 2 cores are shared, so compare ratios only."]
    (RESULTS / "attribution_kernel_speed.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
