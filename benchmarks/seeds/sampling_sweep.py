"""Choose the shapes-world model's sampling default (guidance scale) by measurement.

    .venv/bin/python benchmarks/seeds/sampling_sweep.py \
        --model src/tamis/seeds/checkpoints/world_base --guidance 1 1.5 2 3 4 6 --write-default

Generates the same training prompts x seeds (seeds 5000+, disjoint from mining 0-31 and
evaluation 10000+) at each guidance scale (DDIM, ``--steps``), judges them with the exact
checker and reports numerical / spatial accuracy (bootstrap CI over prompts) and the shape
validity rate. The default is the scale with the highest mean of numerical and spatial
accuracy among those whose validity is within 0.05 of the best validity; ``--write-default``
stores it (with this provenance) under ``"sampling"`` in the model's ``world_model.json``,
which ``ShapesWorldGenerator.load`` reads. Results:
``benchmarks/results/seeds_sampling_sweep.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from seed_effect import pick_prompts  # noqa: E402

from tamis._io import write_text_atomic  # noqa: E402
from tamis.seeds import stats  # noqa: E402
from tamis.seeds.generation import initial_latents  # noqa: E402
from tamis.seeds.world.checker import ExactChecker  # noqa: E402
from tamis.seeds.world.model import ShapesWorldGenerator  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results"


def measure(model: Path, guidance: float, steps: int, prompts: list, seeds: list[int]) -> dict:
    """Accuracy per kind and validity of one sampling setting."""
    t0 = time.time()
    gen = ShapesWorldGenerator.load(model, steps=steps, guidance=guidance)
    checker = ExactChecker()
    texts = [p.text for p in prompts for _ in seeds]
    questions = [p.question for p in prompts for _ in seeds]
    images = gen.generate(texts, initial_latents(seeds * len(prompts), gen.latent_shape()))
    verdicts = checker.judge(images, questions)
    obs = [stats.Observation(p.category, s, p.text, v.correct, v.positions)
           for (p, s), v in zip(((p, s) for p in prompts for s in seeds), verdicts, strict=True)]
    out = {"guidance": guidance, "steps": steps, "n_images": len(images),
           "validity": checker.validity_rate(images)}
    for kind, prefix in (("numerical", "count="), ("spatial", "relation=")):
        sub = [o for o in obs if o.category.startswith(prefix)]
        out[kind] = stats.bootstrap_accuracy(sub) if sub else None
    out["wall_s"] = time.time() - t0
    return out


def choose(rows: list[dict]) -> dict:
    """The best mean accuracy among settings within 0.05 of the best validity."""
    best_valid = max(r["validity"] for r in rows)
    ok = [r for r in rows if r["validity"] >= best_valid - 0.05]
    return max(ok, key=lambda r: (r["numerical"]["accuracy"] + r["spatial"]["accuracy"]) / 2)


def markdown(res: dict) -> str:
    """The sweep as a markdown table."""
    lines = ["# Shapes-world sampling sweep (guidance scale)", "",
             f"Model `{res['model']}`, {res['n_prompts']} training prompts x {res['n_seeds']} "
             f"seeds (5000+), DDIM {res['steps']} steps, exact checker. Accuracy with 95% "
             "bootstrap CI over prompts.", "",
             "| guidance | numerical | spatial | mean | shape validity | wall s |",
             "|---|---|---|---|---|---|"]
    for r in res["rows"]:
        n, s = r["numerical"], r["spatial"]
        mark = " **(default)**" if r["guidance"] == res["chosen"] else ""
        lines.append(f"| {r['guidance']:g}{mark} | {n['accuracy']:.3f} [{n['lo']:.3f}, "
                     f"{n['hi']:.3f}] | {s['accuracy']:.3f} [{s['lo']:.3f}, {s['hi']:.3f}] | "
                     f"{(n['accuracy'] + s['accuracy']) / 2:.3f} | {r['validity']:.3f} | "
                     f"{r['wall_s']:.0f} |")
    lines += ["", f"Chosen default: guidance {res['chosen']:g} (best mean accuracy among the "
              "scales within 0.05 of the best shape validity).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--guidance", type=float, nargs="+", default=[1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--numerical", type=int, default=16)
    p.add_argument("--spatial", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--write-default", action="store_true")
    p.add_argument("--results", type=Path, default=RESULTS / "seeds_sampling_sweep.json")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    prompts = pick_prompts(a.numerical, a.spatial)
    seeds = list(range(5000, 5000 + a.seeds))
    rows = []
    for g in a.guidance:
        rows.append(measure(a.model, g, a.steps, prompts, seeds))
        r = rows[-1]
        print(f"guidance {g:g}: numerical {r['numerical']['accuracy']:.3f} spatial "
              f"{r['spatial']['accuracy']:.3f} validity {r['validity']:.3f} "
              f"({r['wall_s']:.0f} s)", flush=True)
    best = choose(rows)
    res = {"model": str(a.model), "steps": a.steps, "n_prompts": len(prompts),
           "n_seeds": len(seeds), "rows": rows, "chosen": best["guidance"],
           "command": " ".join(sys.argv)}
    write_text_atomic(a.results, json.dumps(res, indent=1))
    write_text_atomic(a.results.with_suffix(".md"), markdown(res))
    print(markdown(res))
    if a.write_default:
        meta_path = a.model / "world_model.json"
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        meta["sampling"] = {"steps": a.steps, "guidance": best["guidance"],
                            "chosen_by": "benchmarks/seeds/sampling_sweep.py",
                            "results": "benchmarks/results/seeds_sampling_sweep.json"}
        write_text_atomic(meta_path, json.dumps(meta, indent=1))
        print(f"wrote sampling default guidance {best['guidance']:g} to {meta_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
