"""Re-evaluate fine-tuned arms with more evaluation seeds, paired against the base and a control.

    .venv/bin/python benchmarks/seeds/reevaluate.py --eval-seeds 40 \\
        --models base=benchmarks/seeds/checkpoints/world_base4 \\
                 ft_top_seeds=benchmarks/seeds/runs/arms4_qk_e40/ft_top_seeds ... \\
        --out benchmarks/seeds/runs/reeval4 --tag base4_qk

``arms.py`` saves every fine-tuned model under ``<arm>/model``; its CIs come from 8 seeds per
evaluation prompt. This script loads saved models, generates every evaluation prompt of the
world (the same subsample rule as ``arms.py``) with seeds 10000.. (a superset of the arms'),
checks them with the exact checker and reports each model's accuracy, and its paired difference
from the base and from the control (the same prompts and seeds), with a CI from resampling
prompts and one from resampling prompts and seeds (``stats.bootstrap_difference_two_way``). A
model may be an arms.py arm folder (``<run>/<arm>``): if its ``result.json`` judged the same
prompts x seeds it is read as is (``arms.py --eval-seeds 40`` runs need no re-evaluation),
otherwise its ``model/`` is evaluated. One result file per model is cached under ``--out``,
so several processes can share the models (``--no-report``) and a last call writes the table.
Results:
``benchmarks/results/seeds_reeval_<tag>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from arms import RESULTS, _evaluate, _subsample  # noqa: E402

from tamis._io import write_text_atomic  # noqa: E402
from tamis.seeds import stats  # noqa: E402
from tamis.seeds.world.captions import world_prompts  # noqa: E402
from tamis.seeds.world.model import ShapesWorldGenerator  # noqa: E402
from tamis.seeds.world.render import BACKGROUNDS  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", required=True, help="name=model_folder, ...")
    p.add_argument("--out", type=Path, required=True, help="per-model result cache")
    p.add_argument("--tag", required=True, help="suffix of the results files")
    p.add_argument("--eval-seeds", type=int, default=40)
    p.add_argument("--eval-prompts", type=int, default=48)
    p.add_argument("--kind", choices=("both", "numerical", "spatial"), default="numerical")
    p.add_argument("--backgrounds", type=int, default=4)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=1.0)
    p.add_argument("--base", default="base", help="the model gains are measured against")
    p.add_argument("--control", default="ft_random_filtered", help="the critical control")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-report", action="store_true", help="evaluate only, write no table")
    return p.parse_args(argv)


def _models(specs: list[str]) -> dict[str, Path]:
    out = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--models wants name=folder, got {spec!r}")
        out[name] = Path(path)
    return out


def _same_evaluation(result: Path, prompts: list, seeds: list[int]) -> bool:
    """True if ``result`` (an arms.py ``result.json``) judged exactly these prompts x seeds."""
    if not result.exists():
        return False
    obs = json.loads(result.read_text()).get("_obs", [])
    cells = {(o[2], o[1]) for o in obs}
    return cells == {(p.text, s) for p in prompts for s in seeds}


def _paired(ref: list, arm: list) -> dict:
    r, a = ([stats.Observation(*o) for o in rows] for rows in (ref, arm))
    out = stats.bootstrap_relative_gain(r, a)
    out["two_way"] = stats.bootstrap_difference_two_way(r, a)
    out["per_seed"] = stats.per_seed_change(r, a)
    return out


def run(args: argparse.Namespace) -> dict | None:
    """Evaluate every model not yet cached; return the paired table (None with --no-report)."""
    torch.set_num_threads(args.threads)
    tints = tuple(BACKGROUNDS)[: max(1, args.backgrounds)]
    prompts = _subsample(world_prompts("eval", tints), args.eval_prompts, args.kind)
    seeds = list(range(10_000, 10_000 + args.eval_seeds))
    models = _models(args.models)
    results = {}
    for name, folder in models.items():
        done = args.out / name / "result.json"
        if not done.exists() and _same_evaluation(folder / "result.json", prompts, seeds):
            done = folder / "result.json"  # an arms.py arm folder already evaluated alike
            folder = folder / "model" if (folder / "model").exists() else folder
        elif (folder / "model" / "world_model.json").exists():
            folder = folder / "model"
        if not done.exists():
            print(f"evaluating {name} ({folder})", flush=True)
            gen = ShapesWorldGenerator.load(folder, steps=args.steps, guidance=args.guidance)
            res = _evaluate(gen, prompts, lambda p: seeds, args.out / name)
            res["model"] = str(folder)
            write_text_atomic(done, json.dumps(res))
        results[name] = json.loads(done.read_text())
        results[name].setdefault("model", str(folder))
    if args.no_report:
        return None
    table: dict = {"config": {k: str(v) for k, v in vars(args).items()}, "models": {},
                   "command": " ".join(sys.argv)}
    for name, res in results.items():
        row = {"model": res["model"], "validity": res["validity"],
               "accuracy": res["overall"]}
        for ref_key, ref in (("vs_base", args.base), ("vs_control", args.control)):
            if ref in results and ref != name:
                row[ref_key] = _paired(results[ref]["_obs"], res["_obs"])
        table["models"][name] = row
    write_text_atomic(RESULTS / f"seeds_reeval_{args.tag}.json", json.dumps(table, indent=1))
    write_text_atomic(RESULTS / f"seeds_reeval_{args.tag}.md", markdown(table))
    return table


def _diff(cell: dict | None) -> str:
    if not cell:
        return "-"
    two = cell.get("two_way")
    both = f", prompts and seeds [{two['lo']:+.3f}, {two['hi']:+.3f}]" if two else ""
    return (f"{cell['difference']:+.3f} (prompts [{cell['diff_lo']:+.3f}, "
            f"{cell['diff_hi']:+.3f}]{both}; {cell['gain']:+.1%})")


def _per_seed(cell: dict | None) -> str:
    if not cell or "per_seed" not in cell:
        return "-"
    p = cell["per_seed"]
    return (f"{p['better']} up / {p['worse']} down of {p['n_seeds']}, r {p['corr_with_base']:+.2f}"
            f", sd {p['sd_base']:.3f} -> {p['sd_arm']:.3f}")


def markdown(table: dict) -> str:
    """The paired table as markdown."""
    cfg = table["config"]
    lines = [
        f"# Shapes world: arms re-evaluated with {cfg['eval_seeds']} seeds per prompt",
        "",
        f"Command: `{table['command']}`. Exact checker; differences are paired over the same "
        f"prompts and seeds with two 95% CIs: bootstrap over prompts (the evaluation seeds "
        f"fixed), then over prompts and seeds (two-way, for new seeds); relative gain in "
        f"parentheses; control = `{cfg['control']}`. A model given as an arms.py arm folder "
        f"that was evaluated on the same prompts and seeds is read, not re-evaluated.",
        "",
        "Per seed (vs base): evaluation seeds whose accuracy the model raises / lowers, the "
        "correlation of that change with the base's accuracy at the seed, and the spread (sd) "
        "of per-seed accuracies, base -> model. Noise alone makes the correlation negative "
        "(regression to the mean): read it against the control's. Clearly more negative, with "
        "a smaller spread, means the model undoes the seed's effect rather than adding good "
        "layouts.",
        "",
        "| model | accuracy [95% CI] | vs base | vs control | per seed vs base | "
        "shape validity |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in table["models"].items():
        a = r["accuracy"]
        lines.append(f"| {name} | {a['accuracy']:.3f} [{a['lo']:.3f}, {a['hi']:.3f}] (n "
                     f"{a['n']}) | {_diff(r.get('vs_base'))} | {_diff(r.get('vs_control'))} | "
                     f"{_per_seed(r.get('vs_base'))} | {r['validity']:.3f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    out = run(parse_args())
    if out is not None:
        print(markdown(out))
