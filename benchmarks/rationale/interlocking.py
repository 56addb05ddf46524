"""Interlocking on the synthetic corpus: rationale F1 vs the rating correlation, two worlds.

For rho in {0, 0.5, 0.9} train RNP, MTM, A2R and the method and report test token F1 at
matched sparsity (``common.argmax_scores``), cross-aspect leakage and the shortcut lock-on
rate (percent of selected tokens inside the planted verdict sentence), with the dev rationale
F1 over training epochs plotted (the interlocking diagnostic). Two corpora:

* ``A`` (every aspect mentioned, shortcut 0.5): 3 seeds. Another aspect's words are a worse
  predictor than the aspect's own, so selecting them is a sub-optimal equilibrium: the world
  of the paper's interlocking.
* ``B`` (each aspect mentioned with probability 0.7): 3 seeds. For an unmentioned aspect the
  other aspects' words are the only evidence, so under correlation selecting them *lowers*
  the prediction loss: a spurious-correlation world, where leakage is the optimum of every
  select-then-predict objective rather than a lock.

Results: ``benchmarks/results/rationale_interlocking.{json,md,png}``.

    .venv/bin/python benchmarks/rationale/interlocking.py                # runs what is missing
    .venv/bin/python benchmarks/rationale/interlocking.py --shard 1/2    # half of them
    .venv/bin/python benchmarks/rationale/interlocking.py --report       # tables and plot
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, fmt, load_runs, run  # noqa: E402

from tamis._io import write_text_atomic  # noqa: E402

RHOS = (0.0, 0.9, 0.5)
BASELINES = ("rnp", "mtm", "a2r")
METHODS = (*BASELINES, "interlock_free")
ASPECTS = ("appearance", "aroma", "palate")
WORLDS = {"A": {"mention": 1.0, "seeds": (0, 1, 2)}, "B": {"mention": 0.7, "seeds": (0, 1, 2)}}


def name(method: str, rho: float, seed: int = 0, world: str = "A") -> str:
    """The cache key of one run (world A keys carry no suffix)."""
    tag = "" if world == "A" else f"_me{WORLDS[world]['mention']:g}"
    return f"{method}_rho{rho:g}{tag}_s{seed}"


def plan() -> list[tuple[str, float, str, int, str]]:
    """Every run of the study: seed 0 in worlds A and B, then seeds 1 and 2 (A, then B)."""
    out = []
    for world, seeds in (("A", (0,)), ("B", (0,)), ("A", (1, 2)), ("B", (1, 2))):
        for seed in seeds:
            for m in METHODS:
                for rho in RHOS:
                    out.append((name(m, rho, seed, world), rho, m, seed, world))
    return out


def _stats(vals: list[float]) -> tuple[float, float]:
    a = np.asarray([v for v in vals if v is not None], float)
    if a.size == 0:
        return float("nan"), float("nan")
    return float(a.mean()), (float(a.std(ddof=1)) if a.size > 1 else float("nan"))


def report() -> None:
    """Write the tables (markdown + JSON) and the F1-over-epochs plot from the cache."""
    runs = load_runs()
    rhos = sorted(RHOS)
    table: dict = {}
    md = ["# Interlocking on the synthetic corpus\n",
          "Test token F1 at matched sparsity (each method's own argmax selection, per-aspect "
          "offsets so that every aspect selects the dev gold rate of the test tokens), macro "
          "over aspects: mean +- s.d. over seeds, with the cross-aspect leakage and the "
          "shortcut lock-on rate (percent of selected tokens in the verdict sentence; `-` "
          "where the run predates the metric) in parentheses. 10,000 training reviews, "
          "L = 96, shortcut 0.5. `drop` = F1 at rho 0 minus F1 at rho 0.9.\n"]
    for world, spec in WORLDS.items():
        md.append(f"\n## World {world}: aspect mention probability {spec['mention']:g}, "
                  f"seeds {list(spec['seeds'])}\n")
        md.append("| method | n | " + " | ".join(f"rho = {r:g}" for r in rhos)
                  + " | drop | wall s |")
        md.append("|---|---|" + "---|" * (len(rhos) + 2))
        for m in METHODS:
            cells, means, walls, ns = [], {}, [], []
            for rho in rhos:
                found = [runs[k] for k in (name(m, rho, s, world) for s in spec["seeds"])
                         if k in runs]
                if not found:
                    cells.append("-")
                    continue
                f1 = _stats([r["argmax"]["_all"]["f1"] for r in found])
                leak = _stats([r["argmax"]["_all"]["leakage"] for r in found])
                sc = [r["argmax"].get("shortcut_rate", {}).get("_all") for r in found]
                scm = _stats(sc) if all(v is not None for v in sc) else (None, None)
                means[rho] = f1[0]
                walls += [r["wall_s"] for r in found]
                ns.append(len(found))
                table.setdefault(world, {}).setdefault(m, {})[str(rho)] = {
                    "f1": f1, "leakage": leak, "shortcut_rate": scm[0], "n": len(found),
                    "seeds": [r["seed"] for r in found],
                    "f1_per_seed": [r["argmax"]["_all"]["f1"] for r in found],
                    "f1_per_aspect": {a: _stats([r["argmax"][a]["f1"] for r in found])[0]
                                      for a in ASPECTS},
                    "wall_s": [r["wall_s"] for r in found]}
                sd = "" if not np.isfinite(f1[1]) else f" +- {fmt(f1[1])}"
                cells.append(f"{fmt(f1[0])}{sd} ({fmt(leak[0])}; {fmt(scm[0])})")
            drop = (fmt(means[0.0] - means[0.9]) if 0.0 in means and 0.9 in means else "-")
            n = f"{min(ns)}" if ns else "0"
            wall = f"{np.mean(walls):.0f}" if walls else "-"
            md.append(f"| {m} | {n} | " + " | ".join(cells) + f" | {drop} | {wall} |")
    text = "\n".join(md) + "\n"
    write_text_atomic(RESULTS / "rationale_interlocking.md", text)
    write_text_atomic(RESULTS / "rationale_interlocking.json",
                      json.dumps(table, indent=1, sort_keys=True) + "\n")
    _plot(runs, rhos)
    print(text)


def _plot(runs: dict, rhos: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(WORLDS), len(rhos), figsize=(4.2 * len(rhos), 3.2 * len(WORLDS)),
                             sharey=True, squeeze=False)
    for row, world in enumerate(WORLDS):
        for ax, rho in zip(axes[row], rhos):
            for m in METHODS:
                r = runs.get(name(m, rho, 0, world))
                if r is None:
                    continue
                ys = [h["dev_f1"]["_all"] if h["dev_f1"] else None for h in r["history"]]
                ax.plot(range(1, len(ys) + 1), [np.nan if y is None else y for y in ys],
                        label=m, marker=".")
            ax.set_title(f"world {world}, rho = {rho:g} (seed 0)", fontsize=9)
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
        axes[row][0].set_ylabel("dev rationale F1 (macro, %)")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "rationale_interlocking.png", dpi=90)
    plt.close(fig)


def main() -> None:
    """Run the missing runs (optionally one shard of them), then write the report."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--report", action="store_true", help="only rebuild tables from the cache")
    p.add_argument("--shard", default="1/1", help="i/n: run every n-th missing run from i")
    args = p.parse_args()
    if not args.report:
        i, n = (int(x) for x in args.shard.split("/"))
        done = load_runs()
        todo = [job for job in plan() if job[0] not in done]
        for key, rho, m, seed, world in todo[i - 1::n]:
            run(key, rho, m, seed=seed, mention=WORLDS[world]["mention"])
            report()
    report()


if __name__ == "__main__":
    main()
