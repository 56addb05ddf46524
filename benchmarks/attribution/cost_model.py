"""Cost model of the attribution store: storage, curvature memory, query I/O and compute.

The sizes are exact formulas of the store layout (``store.row_layout``) and the curvature
blocks, checked here against the sizes measured on disk by the other benchmarks; the query
time is modelled as max(I/O, compute) with the I/O bandwidth and GEMM rate measured in
``attribution_query_scaling.json`` on this machine. The model is then extrapolated to a
70B-parameter transformer (80 blocks x 7 projected linear modules) over 10M training
examples, next to dense LoGRA, with a plot of storage against N.

    .venv/bin/python benchmarks/attribution/cost_model.py

Writes benchmarks/results/attribution_cost_model.{json,md,png}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, command_line  # noqa: E402

from tamis._io import write_text_atomic  # noqa: E402


def store_bytes(layers: list[tuple[int, int, int | None]], dtype_bytes: int = 2) -> int:
    """Bytes per example: c (d1 + d2) per factored layer, d1 d2 per dense (c None)."""
    return dtype_bytes * sum(d1 * d2 if c is None else c * (d1 + d2) for d1, d2, c in layers)


def curvature_bytes(layers: list[tuple[int, int]], kind: str, r: int = 256) -> int:
    """float32 bytes of the preconditioner: lowrank D r, dense D^2, ekfac d1^2+d2^2+d1 d2."""
    total = 0
    for d1, d2 in layers:
        dim = d1 * d2
        total += {"lowrank": min(r, dim) * dim + min(r, dim), "dense": dim * dim,
                  "ekfac": d1 * d1 + d2 * d2 + dim}[kind]
    return 4 * total


def query_seconds(n: int, bytes_per_ex: float, numbers_per_ex: float, dense_dim: int,
                  n_queries: int, bandwidth: float, gflops: float, kernel: str) -> float:
    """max(I/O, compute) of one query batch streamed over N rows.

    reconstruct: rebuild every row's d1 x d2 gradient, then one GEMM with the queries,
    ~2 N D (c + q) flops; factored: contract the factors, ~2 N q numbers flops plus a
    D q preconditioned-query term per row's factors.
    """
    io = n * bytes_per_ex / bandwidth
    flops = (2 * n * dense_dim * (1 + n_queries) if kernel == "reconstruct"
             else 2 * n * numbers_per_ex * n_queries * 8)
    return max(io, flops / (gflops * 1e9))


def measured() -> dict:
    """The sizes and rates measured by the other benchmarks on this machine."""
    q = json.loads((RESULTS / "attribution_query_scaling.json").read_text())
    rows = {(r["method"], r["kernel"]): r for r in q["rows"]}
    dense = rows[("tamis logra (dense)", "reconstruct")]
    lorif = rows[("tamis lorif c=1", "reconstruct")]
    n = dense["N"]
    bw = dense["store_bytes_total"] / dense["cold"]["load_s"]  # cold read of 4.3 GB
    d, nq, layers = 128 * 32, 8, 4
    gflops = 2 * n * d * layers * (1 + nq) / dense["warm"]["compute_s"] / 1e9
    c = json.loads((RESULTS / "attribution_curvature_scale.json").read_text())
    return {"N": n, "layers": [(128, 32)] * layers, "n_queries": nq,
            "dense_bytes_per_ex": dense["store_bytes_per_example"],
            "lorif_bytes_per_ex": lorif["store_bytes_per_example"],
            "bandwidth_bytes_s": bw, "gflops": gflops,
            "dense_cold_s": dense["cold"]["total_s"], "lorif_cold_s": lorif["cold"]["total_s"],
            "lorif_factored_cold_s": rows[("tamis lorif c=1", "factored")]["cold"]["total_s"],
            "curvature_65536": {r["method"]: r for r in c["rows"]}}


def main() -> None:
    """Check the formulas against the measured sizes, fit the rates, extrapolate, plot."""
    m = measured()
    lay = [(d1, d2, 1) for d1, d2 in m["layers"]]
    dense_lay = [(d1, d2, None) for d1, d2 in m["layers"]]
    checks = [("LoRIF c=1 store, 4 x (128 x 32), bytes/ex", store_bytes(lay),
               m["lorif_bytes_per_ex"]),
              ("dense store, same layers, bytes/ex", store_bytes(dense_lay),
               m["dense_bytes_per_ex"]),
              ("lowrank curvature at D = 65,536, r = 256, MiB",
               curvature_bytes([(256, 256)], "lowrank") / 2**20,
               m["curvature_65536"]["randomized"]["curvature_mib"])]
    # 70B transformer: 80 blocks x 7 linear modules (q, k, v, o, gate, up, down)
    big = [(64, 64)] * (80 * 7)
    n_big = 10_000_000
    configs = {
        "LoRIF c=1, 64 x 64 (the paper's)": [(a, b, 1) for a, b in big],
        "LoRIF c=16 capped at 4096 numbers (tamis default on projected sides)":
            [(a, b, min(16, 4096 // (a + b))) for a, b in big],
        "dense LoGRA, 64 x 64": [(a, b, None) for a, b in big],
    }
    extrap = []
    for name, layers in configs.items():
        bpe = store_bytes(layers)
        nums = bpe / 2
        extrap.append({
            "config": name, "bytes_per_example": bpe, "store_tb": bpe * n_big / 1e12,
            "query_io_hours": n_big * bpe / m["bandwidth_bytes_s"] / 3600,
            "query_s_at_2gb_s": n_big * bpe / 2e9,
            "reconstruct_compute_hours_one_core": query_seconds(
                n_big, bpe, nums, sum(a * b for a, b, _ in layers), 8, 1e30, m["gflops"],
                "reconstruct") / 3600})
    curv = {k: curvature_bytes(big, k) / 1e9 for k in ("lowrank", "ekfac", "dense")}
    result = {"command": command_line(), "measured": m, "checks": checks,
              "extrapolation_70b_10m": extrap, "curvature_gb_70b": curv}
    write_text_atomic(RESULTS / "attribution_cost_model.json",
                      json.dumps(result, indent=1, default=str))
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ns = [10**k for k in range(3, 8)]
    for name, layers in configs.items():
        ax.loglog(ns, [n * store_bytes(layers) / 1e9 for n in ns], label=name.split(" (")[0])
    ax.axhline(24, color="grey", ls=":", label="RAM of this machine (24 GB)")
    ax.set_xlabel("training examples N")
    ax.set_ylabel("store size, GB (70B model, 560 modules)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / "attribution_cost_model.png", dpi=110)
    lines = ["# Attribution cost model", "", f"Command: `{result['command']}`.", "",
             "## Formulas against measurements (this machine)", "",
             "| quantity | formula | measured |", "|---|---|---|"]
    lines += [f"| {a} | {b:,.1f} | {c:,.1f} |" for a, b, c in checks]
    lines += ["", f"Rates measured in `attribution_query_scaling.json` (N = {m['N']:,}, one "
              f"thread, contended): cold read {m['bandwidth_bytes_s'] / 1e6:.0f} MB/s, "
              f"reconstruct GEMM {m['gflops']:.1f} GFLOP/s.", "",
              "## Extrapolation: 70B model (80 blocks x 7 modules), 10M examples, float16", "",
              "| store | bytes / example | store TB | one query pass at 2 GB/s, s | "
              "at the measured read rate, h | reconstruct compute on one core, h |",
              "|---|---|---|---|---|---|"]
    for e in extrap:
        lines.append(f"| {e['config']} | {e['bytes_per_example']:,} | {e['store_tb']:.2f} | "
                     f"{e['query_s_at_2gb_s']:,.0f} | {e['query_io_hours']:.1f} | "
                     f"{e['reconstruct_compute_hours_one_core']:,.0f} |")
    lines += ["", "Curvature (float32) for the 560 modules at 64 x 64: lowrank r = 256 "
              f"{curv['lowrank']:.2f} GB, EK-FAC {curv['ekfac']:.3f} GB, dense "
              f"{curv['dense']:.1f} GB.", "", "![store size](attribution_cost_model.png)"]
    write_text_atomic(RESULTS / "attribution_cost_model.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
