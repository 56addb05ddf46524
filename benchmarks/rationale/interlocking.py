"""Interlocking on the synthetic corpus: baselines' rationale F1 vs the rating correlation.

For rho in {0, 0.5, 0.9} (shortcut 0.5, one corpus per rho) train RNP, MTM and A2R (and the
method, for reference) with one seed; report test token F1 / leakage at the raw selection and
at matched sparsity, and plot the dev rationale F1 over training epochs (the interlocking
diagnostic). Results: ``benchmarks/results/rationale_interlocking.{json,md,png}``.

    .venv/bin/python benchmarks/rationale/interlocking.py            # runs what is missing
    .venv/bin/python benchmarks/rationale/interlocking.py --report   # tables/plot from cache
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, fmt, load_runs, run  # noqa: E402

from tamis._io import write_text_atomic  # noqa: E402

RHOS = (0.0, 0.9, 0.5)
BASELINES = ("rnp", "mtm", "a2r")
METHODS = (*BASELINES, "interlock_free")
ASPECTS = ("appearance", "aroma", "palate")


def name(method: str, rho: float, seed: int = 0) -> str:
    """The cache key of one run."""
    return f"{method}_rho{rho:g}_s{seed}"


def report() -> None:
    """Write the table (markdown + JSON) and the F1-over-epochs plot from the cache."""
    runs = load_runs()
    rhos = sorted(RHOS)
    rows, table = [], {}
    for m in METHODS:
        for view in ("raw", "argmax"):
            cells = []
            for rho in rhos:
                r = runs.get(name(m, rho))
                if r is None:
                    cells.append("-")
                    continue
                if view not in r:
                    cells.append("-")
                    continue
                s = r[view]
                key = "matched" if view == "argmax" else view
                table.setdefault(m, {}).setdefault(key, {})[str(rho)] = {
                    "f1": s["_all"]["f1"], "leakage": s["_all"]["leakage"],
                    "sparsity": s["_all"]["sparsity"],
                    "f1_per_aspect": {a: s[a]["f1"] for a in ASPECTS},
                    "wall_s": r["wall_s"]}
                cells.append(f"{fmt(s['_all']['f1'])} ({fmt(s['_all']['leakage'])}; "
                             f"S {fmt(s['_all']['sparsity'])})")
            label = "matched" if view == "argmax" else view
            rows.append(f"| {m} | {label} | " + " | ".join(cells) + " |")
    head = ("| method | selection | " + " | ".join(f"rho = {r:g}" for r in rhos) + " |\n"
            "|---|---|" + "---|" * len(rhos))
    walls = [f"{k}: {v['wall_s']:.0f} s" for k, v in sorted(runs.items())
             if any(k == name(m, r) for m in METHODS for r in rhos)]
    md = ("# Interlocking on the synthetic corpus\n\n"
          "Test token F1, macro over aspects (cross-aspect leakage in parentheses; S = "
          "sparsity, percent). `raw`: the trained (argmax) selection; `matched`: the same "
          "argmax with per-aspect offsets so that each aspect selects the dev gold rate of "
          "the test tokens (ties broken at random). 10,000 training reviews, L = 96, "
          "1 seed.\n\n"
          f"{head}\n" + "\n".join(rows) + "\n\nWall time per run: " + ", ".join(walls) + "\n")
    write_text_atomic(RESULTS / "rationale_interlocking.md", md)
    write_text_atomic(RESULTS / "rationale_interlocking.json",
                      json.dumps(table, indent=1, sort_keys=True) + "\n")
    _plot(runs, rhos)
    print(md)


def _plot(runs: dict, rhos: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(rhos), figsize=(4.2 * len(rhos), 3.4), sharey=True)
    for ax, rho in zip(axes, rhos):
        for m in METHODS:
            r = runs.get(name(m, rho))
            if r is None:
                continue
            ys = [h["dev_f1"]["_all"] if h["dev_f1"] else None for h in r["history"]]
            ax.plot(range(1, len(ys) + 1), [float("nan") if y is None else y for y in ys],
                    label=m, marker=".")
        ax.set_title(f"rho = {rho:g}")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("dev rationale F1 (macro, %)")
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "rationale_interlocking.png", dpi=90)
    plt.close(fig)


def main() -> None:
    """Run the missing runs, then write the report."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--report", action="store_true", help="only rebuild tables from the cache")
    p.add_argument("--baselines-only", action="store_true", help="skip interlock_free runs")
    args = p.parse_args()
    if not args.report:
        methods = BASELINES if args.baselines_only else METHODS
        for m in methods:  # baselines first at every rho, then the method
            for rho in RHOS:
                run(name(m, rho), rho, m, seed=0)
                report()
    report()


if __name__ == "__main__":
    main()
