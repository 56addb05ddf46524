"""Training noise of the fine-tuned arms: the same arms.py run under several fine-tuning seeds.

    .venv/bin/python benchmarks/seeds/training_noise.py --tag base4_qk_checker_e40 \\
        --results benchmarks/results/seeds_arms_numerical_base4_qk_checker_e40.json \\
                  benchmarks/results/seeds_arms_numerical_base4_qk_checker_e40_fts1.json \\
                  benchmarks/results/seeds_arms_numerical_base4_qk_checker_e40_fts2.json

Every ``arms.py`` CI resamples evaluation prompts (and, in ``reevaluate.py``, seeds) of one
fine-tuned model; fine-tuning is deterministic, so none of them holds the training run's own
noise (batch order, timesteps, noise draws: ``arms.py --ft-seed``). This script reads one
``arms.py`` results file per fine-tuning seed (same model, prompts, evaluation seeds and sets;
only ``--ft-seed`` differs), and reports per arm the accuracy and the paired difference from
the base in each run, their mean over runs, the between-run standard deviation, and a
t-interval over runs; and the same for the paper's critical comparison, top seeds against the
judge-filtered control. Results: ``benchmarks/results/seeds_training_noise_<tag>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import stats as sstats

from tamis._io import write_text_atomic

RESULTS = Path(__file__).resolve().parents[1] / "results"
KIND = "numerical"


def _ft_seed(run: dict) -> int:
    return int(run["config"].get("ft_seed", 0))


def _over_runs(values: list[float], level: float = 0.95) -> dict:
    """Mean, sd between runs and the t-interval of the mean over runs (2 or more runs)."""
    v = np.asarray(values, dtype=np.float64)
    sd = float(v.std(ddof=1))
    half = sstats.t.ppf(0.5 + level / 2, v.size - 1) * sd / np.sqrt(v.size)
    return {"mean_difference": float(v.mean()), "sd_between_runs": sd,
            "t_interval": [float(v.mean() - half), float(v.mean() + half)]}


def summarize(runs: list[dict]) -> dict:
    """Per arm and for top seeds against the control: per-run values, mean, sd, t-interval."""
    if len(runs) < 2:
        raise ValueError(f"training noise needs at least 2 runs, got {len(runs)}")
    seeds = [_ft_seed(r) for r in runs]
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"the runs repeat a fine-tuning seed: {seeds}")
    base_acc = {r["arms"]["base"][KIND]["accuracy"] for r in runs}
    if len(base_acc) != 1:
        raise ValueError(f"the runs' base arms differ ({sorted(base_acc)}): not the same "
                         "prompts, evaluation seeds or model")
    arms = [a for a in runs[0]["arms"] if a != "base" and all(a in r["arms"] for r in runs)]
    out: dict = {"ft_seeds": seeds, "base": base_acc.pop(), "arms": {}}
    for arm in arms:
        cells = [r["arms"][arm] for r in runs]
        acc = [c[KIND]["accuracy"] for c in cells]
        diff = [c[f"gain_{KIND}"]["difference"] for c in cells]
        half = [(c[f"gain_{KIND}"]["diff_hi"] - c[f"gain_{KIND}"]["diff_lo"]) / 2
                for c in cells]
        out["arms"][arm] = {"accuracy": acc, "difference": diff,
                            "prompt_ci_half_width": half, **_over_runs(diff),
                            "n_train": [c["n_train"] for c in cells],
                            "validity": [c["validity"] for c in cells]}
    tvf = [r.get("top_vs_filtered", {}).get(KIND) for r in runs]
    if all(t and "difference" in t for t in tvf):
        diff = [t["difference"] for t in tvf]
        out["top_vs_filtered"] = {
            "difference": diff, "prompt_ci": [[t["diff_lo"], t["diff_hi"]] for t in tvf],
            "two_way_ci": [[t["two_way"]["lo"], t["two_way"]["hi"]] if "two_way" in t else None
                           for t in tvf],
            **_over_runs(diff)}
    return out


def markdown(s: dict, commands: list[str]) -> str:
    """The training-noise tables as markdown."""
    seeds = ", ".join(str(x) for x in s["ft_seeds"])
    lines = [
        "# Shapes world: training noise of the fine-tuned arms (toy numbers)",
        "",
        f"Fine-tuning seeds {seeds}; base accuracy {s['base']:.3f} (identical in every run). "
        "Each run's difference from the base carries its CI over evaluation prompts "
        "(half-width given); the t-interval is over runs (training noise only, the evaluation "
        "prompts and seeds being the same in every run).",
        "",
        "Runs: " + "; ".join(f"`{c}`" for c in commands),
        "",
        "| arm | n train | accuracy per run | vs base per run (prompt-CI half-width) | mean "
        "vs base | sd between runs | t-interval over runs |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm, a in s["arms"].items():
        per = ", ".join(f"{d:+.3f} (±{h:.3f})" for d, h in
                        zip(a["difference"], a["prompt_ci_half_width"]))
        lines.append(
            f"| {arm} | {'/'.join(str(n) for n in sorted(set(a['n_train'])))} | "
            + ", ".join(f"{x:.3f}" for x in a["accuracy"]) + f" | {per} | "
            f"{a['mean_difference']:+.3f} | {a['sd_between_runs']:.3f} | "
            f"[{a['t_interval'][0]:+.3f}, {a['t_interval'][1]:+.3f}] |")
    t = s.get("top_vs_filtered")
    if t:
        lines += ["", "Top seeds against the judge-filtered control, paired per run: "
                  + ", ".join(f"{d:+.3f} [{c[0]:+.3f}, {c[1]:+.3f}]"
                              for d, c in zip(t["difference"], t["prompt_ci"]))
                  + f"; mean {t['mean_difference']:+.3f}, sd between runs "
                  f"{t['sd_between_runs']:.3f}, t-interval over runs "
                  f"[{t['t_interval'][0]:+.3f}, {t['t_interval'][1]:+.3f}]."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    """Read the runs, write the tables, return the summary."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", nargs="+", type=Path, required=True,
                   help="arms.py results JSON, one per fine-tuning seed")
    p.add_argument("--tag", required=True, help="suffix of the results files")
    args = p.parse_args(argv)
    runs = [json.loads(path.read_text()) for path in args.results]
    s = summarize(runs)
    s["command"] = " ".join(["benchmarks/seeds/training_noise.py"] + (argv or sys.argv[1:]))
    commands = [r["command"] for r in runs]
    write_text_atomic(RESULTS / f"seeds_training_noise_{args.tag}.json", json.dumps(s, indent=1))
    md = markdown(s, commands)
    write_text_atomic(RESULTS / f"seeds_training_noise_{args.tag}.md", md)
    print(md)
    return s


if __name__ == "__main__":
    main()
