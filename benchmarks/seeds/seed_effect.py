"""Does the seed matter for the shapes-world base model? (before any fine-tuning arm)

    .venv/bin/python benchmarks/seeds/seed_effect.py \
        --model src/tamis/seeds/checkpoints/world_base --seeds 32 --numerical 28 --spatial 12

Mines the base model over training prompts x seeds with ``tamis.seeds.mining.mine`` (resumable
JSONL + PNGs under ``--work``), judged by the exact checker (truth, with object positions), then
re-judges the same images with the CNN mining judge (agreement). Reports, with
``tamis.seeds.stats``: the chi-square test of seed x correct per category, the per-seed accuracy
spread, per-seed vs pooled placement-heatmap entropy, the share of centroid variance explained
by the seed (one-way ANOVA), and a PNG of per-seed placement heatmaps. Writes
``benchmarks/results/seeds_seed_effect.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from tamis._io import write_text_atomic
from tamis.seeds import stats
from tamis.seeds.mining import MiningConfig, mine
from tamis.seeds.prompts import Prompt, Question
from tamis.seeds.world.captions import world_prompts
from tamis.seeds.world.checker import ExactChecker
from tamis.seeds.world.judge_cnn import CNNJudge
from tamis.seeds.world.model import ShapesWorldGenerator


def pick_prompts(n_num: int, n_spa: int) -> list[Prompt]:
    """An even spread of training prompts: numerical over counts/objects, spatial over relations."""
    p = world_prompts("train", backgrounds=("white", "cream", "gray"))
    num, spa = p["numerical"], p["spatial"]
    rng = np.random.default_rng(0)
    by_cat: dict[str, list[Prompt]] = {}
    for q in num:
        by_cat.setdefault(q.category, []).append(q)
    out: list[Prompt] = []
    k = max(1, n_num // max(1, len(by_cat)))
    for cat in sorted(by_cat):
        idx = rng.choice(len(by_cat[cat]), size=min(k, len(by_cat[cat])), replace=False)
        out += [by_cat[cat][i] for i in sorted(idx)]
    by_rel: dict[str, list[Prompt]] = {}
    for q in spa:
        by_rel.setdefault(q.category, []).append(q)
    k = max(1, n_spa // max(1, len(by_rel)))
    for cat in sorted(by_rel):
        idx = rng.choice(len(by_rel[cat]), size=min(k, len(by_rel[cat])), replace=False)
        out += [by_rel[cat][i] for i in sorted(idx)]
    return out


def heatmap_png(maps: dict[int, np.ndarray], path: Path, n: int = 16) -> None:
    """A grid of the first ``n`` seeds' placement heatmaps (+ the pooled one), upscaled."""
    from PIL import Image, ImageDraw

    seeds = list(maps)[:n]
    tiles = [(str(s), maps[s]) for s in seeds] + [("all", sum(maps.values()))]
    cell, pad = 64, 14
    cols = 6
    rows = (len(tiles) + cols - 1) // cols
    canvas = Image.new("RGB", (cols * (cell + 4), rows * (cell + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (name, h) in enumerate(tiles):
        v = h / h.max() if h.max() > 0 else h
        rgb = np.stack([255 * v, 80 * v, 255 * (1 - v)], -1).astype(np.uint8)
        tile = Image.fromarray(rgb).resize((cell, cell), Image.NEAREST)
        x, y = (i % cols) * (cell + 4), (i // cols) * (cell + pad)
        canvas.paste(tile, (x, y + pad))
        draw.text((x + 2, y), f"seed {name}", fill="black")
    canvas.save(path)


def run(model: Path, n_seeds: int, n_num: int, n_spa: int, work: Path, results: Path,
        seed_offset: int = 1000, steps: int = 20, guidance: float | None = None) -> dict:
    """Mine, judge twice, compute the statistics; return the results dict."""
    t0 = time.time()
    gen = ShapesWorldGenerator.load(model, steps=steps, guidance=guidance)
    prompts = pick_prompts(n_num, n_spa)
    seeds = list(range(seed_offset, seed_offset + n_seeds))
    checker = ExactChecker()
    rows = mine(gen, checker, prompts, seeds, work / "mined.jsonl",
                MiningConfig(batch_size=40, image_dir=str(work / "images")))
    t_mine = time.time() - t0
    from PIL import Image

    images = np.stack([np.asarray(Image.open(work / "images" / r["image"]).convert("RGB"))
                       for r in rows])
    questions = [Question.from_dict(r["prompt"]["question"]) for r in rows]
    cnn = CNNJudge.load().judge(images, questions)
    truth = [r["verdict"]["correct"] for r in rows]
    agree = float(np.mean([v.correct == t for v, t in zip(cnn, truth, strict=True)]))
    obs = stats.observations(rows)
    rel = stats.seed_reliability(obs)
    chi = stats.chi_square(obs)
    spread = stats.accuracy_spread(rel)
    num_obs = [o for o in obs if o.category.startswith("count")]
    maps = stats.placement_heatmaps(num_obs, bins=8)
    ent = stats.placement_entropy(maps)
    anova = {"numerical": stats.centroid_variance_explained(num_obs),
             "spatial": stats.centroid_variance_explained(
                 [o for o in obs if not o.category.startswith("count")])}
    acc_by_kind = {}
    for kind, pref in (("numerical", "count"), ("spatial", "relation")):
        sel = [t for r, t in zip(rows, truth, strict=True)
               if r["prompt"]["category"].startswith(pref)]
        acc_by_kind[kind] = float(np.mean(sel)) if sel else None
    validity = checker.validity_rate(images)
    results.parent.mkdir(parents=True, exist_ok=True)
    heatmap_png(maps, results.with_suffix(".png"))
    out = {
        "model": str(model), "fingerprint": gen.fingerprint(), "seeds": [seeds[0], seeds[-1]],
        "n_prompts": len(prompts), "n_images": len(rows), "steps": steps,
        "guidance": gen.settings.guidance,
        "accuracy_exact": acc_by_kind, "shape_validity": validity,
        "cnn_agreement_with_checker": agree,
        "cnn_accuracy_by_kind": {
            k: float(np.mean([v.correct for v, r in zip(cnn, rows, strict=True)
                              if r["prompt"]["category"].startswith(p)]))
            for k, p in (("numerical", "count"), ("spatial", "relation"))},
        "chi_square": chi, "accuracy_spread": spread,
        "placement_entropy": {"mean_per_seed": ent["mean_per_seed"], "pooled": ent["pooled"]},
        "centroid_variance_explained": anova,
        "wall_seconds": {"mine": t_mine, "total": time.time() - t0},
    }
    write_text_atomic(results.with_suffix(".json"), json.dumps(out, indent=1))
    write_text_atomic(results.with_suffix(".md"), to_markdown(out))
    return out


def to_markdown(r: dict) -> str:
    """A short markdown report of the seed-effect results."""
    lines = [
        "# Seed effect on the shapes-world base model", "",
        f"Model `{r['model']}` (fingerprint {r['fingerprint'][:12]}), seeds {r['seeds'][0]}-"
        f"{r['seeds'][1]}, {r['n_prompts']} training prompts, {r['n_images']} images, DDIM "
        f"{r['steps']} steps, guidance {r['guidance']}. Judge: exact checker.", "",
        f"Accuracy: numerical {r['accuracy_exact']['numerical']:.3f}, spatial "
        f"{r['accuracy_exact']['spatial']:.3f}; shape validity {r['shape_validity']:.3f}; "
        f"CNN mining judge agrees with the checker on {r['cnn_agreement_with_checker']:.3f} "
        "of images.", "",
        "| category | chi2 | dof | p | Cramer's V | per-seed acc min | max | std |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for cat, c in sorted(r["chi_square"].items()):
        s = r["accuracy_spread"].get(cat, {})
        lines.append(f"| {cat} | {c['chi2']:.1f} | {c['dof']} | {c['p']:.2g} | "
                     f"{c['cramers_v']:.2f} | {s.get('min', float('nan')):.2f} | "
                     f"{s.get('max', float('nan')):.2f} | {s.get('std', float('nan')):.2f} |")
    pe = r["placement_entropy"]
    an = r["centroid_variance_explained"]["numerical"]
    lines += ["", f"Placement entropy (8x8 bins, numerical): mean per seed "
              f"{pe['mean_per_seed']:.2f} bits vs pooled {pe['pooled']:.2f} bits. Centroid "
              f"variance explained by the seed (eta^2): x {an['x']['eta2']:.2f} "
              f"(p {an['x']['p']:.2g}), y {an['y']['eta2']:.2f} (p {an['y']['p']:.2g}).", "",
              "Heatmaps: `seeds_seed_effect.png`. Toy numbers, not comparable to the paper's."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=Path("src/tamis/seeds/checkpoints/world_base"))
    p.add_argument("--seeds", type=int, default=32)
    p.add_argument("--numerical", type=int, default=28)
    p.add_argument("--spatial", type=int, default=12)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=None,
                   help="default: the model folder's measured sampling default")
    p.add_argument("--work", type=Path, default=Path("benchmarks/seeds/runs/seed_effect"))
    p.add_argument("--results", type=Path,
                   default=Path("benchmarks/results/seeds_seed_effect.json"))
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    r = run(a.model, a.seeds, a.numerical, a.spatial, a.work, a.results, steps=a.steps,
            guidance=a.guidance)
    print(to_markdown(r), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
