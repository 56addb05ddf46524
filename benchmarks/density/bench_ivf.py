"""Approximate (faiss IVF) against exact (faiss flat) pseudo density at large N, side by side.

For each N, one process, 1 thread (torch, faiss): the exact self-query k-NN (k=20, self
excluded) and the IVF one on the same features, with the IVF index built once and searched
with several ``nprobe``. Reported per setting: wall time (IVF: k-means training + adding
counted once, in ``seconds_build``), speed-up over exact, Spearman rank correlation and
relative error of the pseudo densities against the exact ones, and the neighbour recall
(fraction of the exact k neighbours found). Also the densities of M held-out queries
(``PseudoDensity.score``) on the reference scale.

Features: a 64-d mixture of 50 anisotropic Gaussians with unequal weights and scales (so the
densities span a wide range), like the feature width of the demo's steering extractor.

    .venv/bin/python benchmarks/density/bench_ivf.py --ns 100000,300000

Writes benchmarks/results/density_ivf.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from tamis._io import write_text_atomic
from tamis.density.knn import build_index, knn

RESULTS = Path(__file__).resolve().parents[1] / "results"
K, DIM = 20, 64


def make_features(n: int, d: int = DIM, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = 50
    centres = rng.normal(size=(c, d)) * 4
    scales = rng.uniform(0.3, 2.0, size=(c, d))
    weights = rng.dirichlet(np.full(c, 0.7))
    lab = rng.choice(c, size=n, p=weights)
    return (centres[lab] + rng.normal(size=(n, d)) * scales[lab]).astype(np.float32)


def densities(dist: np.ndarray, norm: float | None = None) -> tuple[np.ndarray, float]:
    raw = 1.0 / dist.astype(np.float64).mean(axis=1)
    norm = float(raw.mean()) if norm is None else norm
    return raw / norm, norm


def compare(rho: np.ndarray, rho_ref: np.ndarray, idx: np.ndarray, idx_ref: np.ndarray) -> dict:
    rel = np.abs(rho - rho_ref) / rho_ref
    hits = np.mean([len(np.intersect1d(a, b, assume_unique=True)) / idx.shape[1]
                    for a, b in zip(idx[:20_000], idx_ref[:20_000], strict=True)])
    return {"spearman": float(spearmanr(rho, rho_ref).statistic),
            "rel_err_median": float(np.median(rel)), "rel_err_p99": float(np.quantile(rel, 0.99)),
            "rel_err_max": float(rel.max()), "neighbour_recall": float(hits)}


def run(n: int, m: int, nprobes: list[int]) -> dict:
    x = make_features(n + m)
    ref, queries = x[:n], x[n:]
    out: dict = {"n": n, "m_queries": m, "dim": DIM, "k": K}
    t = time.perf_counter()
    d_ex, i_ex = knn(ref, K, method="exact")
    out["exact_seconds"] = time.perf_counter() - t
    t = time.perf_counter()
    dq_ex, iq_ex = knn(ref, K, queries, method="exact")
    out["exact_query_seconds"] = time.perf_counter() - t
    rho_ex, norm_ex = densities(d_ex)
    rhoq_ex, _ = densities(dq_ex, norm_ex)
    print(f"N={n}: exact {out['exact_seconds']:.1f} s", flush=True)
    t = time.perf_counter()
    index = build_index(ref, "ivf")
    out["ivf_build_seconds"] = time.perf_counter() - t
    out["nlist"] = int(index.nlist)
    rows = []
    for nprobe in nprobes:
        index.nprobe = nprobe
        t = time.perf_counter()
        d_iv, i_iv = knn(ref, K, method="ivf", index=index)
        secs = time.perf_counter() - t
        t = time.perf_counter()
        dq_iv, iq_iv = knn(ref, K, queries, method="ivf", index=index)
        q_secs = time.perf_counter() - t
        rho_iv, norm_iv = densities(d_iv)
        rhoq_iv, _ = densities(dq_iv, norm_iv)
        row = {"nprobe": nprobe, "search_seconds": secs,
               "total_seconds": secs + out["ivf_build_seconds"],
               "speedup": out["exact_seconds"] / (secs + out["ivf_build_seconds"]),
               "query_seconds": q_secs, "query_speedup": out["exact_query_seconds"] / q_secs,
               "reference": compare(rho_iv, rho_ex, i_iv, i_ex),
               "queries": compare(rhoq_iv, rhoq_ex, iq_iv, iq_ex)}
        rows.append(row)
        print(f"  nprobe={nprobe}: {row['total_seconds']:.1f} s, speed-up "
              f"{row['speedup']:.1f}x, Spearman {row['reference']['spearman']:.4f}", flush=True)
    out["ivf"] = rows
    return out


def markdown(r: dict) -> str:
    lines = [
        "# Pseudo density at large N: approximate (faiss IVF) vs exact (faiss flat)", "",
        f"Reproduce: `{r['command']}` ({r['seconds'] / 60:.1f} min in all). Machine: "
        f"{r['machine']}, 1 thread (torch, faiss), measured while other jobs shared the cores.",
        "",
        f"Features: {DIM}-d mixture of 50 anisotropic Gaussians (unequal weights/scales). "
        f"Pseudo density k = {K}, self excluded, normalised to mean 1 on the reference. IVF: "
        "`IndexIVFFlat`, nlist = 8 sqrt(N) (the `tamis` default), k-means on max(20 nlist, "
        "50,000) points, 10 iterations; build time (train + add) is counted in every IVF total. "
        "Spearman and relative error |rho_ivf - rho_exact| / rho_exact over all points; "
        "neighbour recall = share of the exact k neighbours found (first 20,000 points). "
        "Queries: held-out points scored against the reference (`PseudoDensity.score`).", "",
        "| N | nprobe | exact s | IVF s (build + search) | speed-up | Spearman | median rel. err | "
        "p99 rel. err | neighbour recall | query speed-up | query Spearman |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for res in r["results"]:
        for row in res["ivf"]:
            a, q = row["reference"], row["queries"]
            lines.append(
                f"| {res['n']:,} | {row['nprobe']} | {res['exact_seconds']:.1f} | "
                f"{res['ivf_build_seconds']:.1f} + {row['search_seconds']:.1f} | "
                f"{row['speedup']:.1f}x | {a['spearman']:.4f} | {a['rel_err_median']:.4f} | "
                f"{a['rel_err_p99']:.4f} | {a['neighbour_recall']:.3f} | "
                f"{row['query_speedup']:.1f}x | {q['spearman']:.4f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ns", default="100000")
    ap.add_argument("--m", type=int, default=10_000, help="held-out queries")
    ap.add_argument("--nprobes", default="1,4,8,16,32")
    args = ap.parse_args()
    import faiss

    faiss.omp_set_num_threads(1)
    t0 = time.perf_counter()
    results = [run(int(n), args.m, [int(p) for p in args.nprobes.split(",")])
               for n in args.ns.split(",")]
    r = {"command": "python benchmarks/density/bench_ivf.py " + " ".join(sys.argv[1:]),
         "machine": f"{platform.platform()}, {os.cpu_count()} CPUs", "threads": 1,
         "seconds": time.perf_counter() - t0, "results": results}
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_text_atomic(RESULTS / "density_ivf.json", json.dumps(r, indent=2))
    write_text_atomic(RESULTS / "density_ivf.md", markdown(r))
    print(markdown(r))


if __name__ == "__main__":
    main()
