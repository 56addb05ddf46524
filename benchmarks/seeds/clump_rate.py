"""Layout diagnostic of the layout-dependent (pile) world: how often a model draws clumps.

    .venv/bin/python benchmarks/seeds/clump_rate.py --tag pile_qk_e40 \\
        --models base=benchmarks/seeds/checkpoints/world_pile \\
                 ft_top_seeds=benchmarks/seeds/runs/arms_pile_e40/ft_top_seeds ... \\
        --sets ft_top_seeds=benchmarks/seeds/runs/arms_pile_e40/ft_top_seeds/curated ...

In the world pretrained with ``CaptionConfig(pile_share > 0)`` a count prompt fails either
because the objects are drawn badly or because they are laid out as one touching clump, which
no component counter can count (``checker.clumped``). This script measures, per model, the
share of clumped images on the evaluation prompts x seeds (the same subsample rule and seeds
10000.. as ``arms.py``) by count, and the spread of that share between seeds; per fine-tuning
set (an image folder with ``metadata.jsonl``), the share of its images that are clumped. If
fine-tuning on a set moves the layouts, the model's clump rate moves towards the set's.
Results: ``benchmarks/results/seeds_clump_rate_<tag>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from arms import RESULTS, _subsample  # noqa: E402

from tamis._io import write_text_atomic  # noqa: E402
from tamis._progress import track  # noqa: E402
from tamis.seeds.finetune import load_image_folder  # noqa: E402
from tamis.seeds.generation import initial_latents  # noqa: E402
from tamis.seeds.world.captions import world_prompts  # noqa: E402
from tamis.seeds.world.checker import clumped  # noqa: E402
from tamis.seeds.world.model import ShapesWorldGenerator  # noqa: E402
from tamis.seeds.world.render import BACKGROUNDS  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=[], help="name=model_or_arm_folder, ...")
    p.add_argument("--sets", nargs="+", default=[], help="name=image_folder, ...")
    p.add_argument("--pools", nargs="+", default=[],
                   help="name=random_pool.npz (arms.py): its judge-accepted images, i.e. the "
                        "judge-filtered set")
    p.add_argument("--tag", required=True, help="suffix of the results files")
    p.add_argument("--eval-seeds", type=int, default=8)
    p.add_argument("--eval-prompts", type=int, default=48)
    p.add_argument("--backgrounds", type=int, default=4)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def _named(specs: list[str]) -> dict[str, Path]:
    out = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"expected name=folder, got {spec!r}")
        out[name] = Path(path)
    return out


def _colour_and_count(text: str) -> tuple[str, int] | None:
    """``("red", 3)`` from "three red circles, ..."; None for a caption that is not a count."""
    from tamis.seeds.prompts import COUNT_WORDS

    words = text.replace(",", " ").split()
    numbers = {w: n for n, w in COUNT_WORDS.items()}
    if len(words) < 2 or words[0] not in numbers:
        return None
    return words[1], numbers[words[0]]


def model_clump_rate(gen: ShapesWorldGenerator, prompts: list, seeds: list[int]) -> dict:
    """Clump share of a model's images over prompts x seeds: overall, by count, between seeds."""
    by_count: dict[int, list[bool]] = defaultdict(list)
    by_seed: dict[int, list[bool]] = defaultdict(list)
    for p in track(prompts, "clump rate", total=len(prompts)):
        colour = p.question.obj.singular.split()[0]
        images = gen.generate([p.text] * len(seeds), initial_latents(seeds, gen.latent_shape()))
        for s, im in zip(seeds, images, strict=True):
            c = clumped(im, colour)
            by_count[int(p.question.count)].append(c)
            by_seed[s].append(c)
    seed_rates = [float(np.mean(v)) for v in by_seed.values()]
    return {"clumped": float(np.mean([c for v in by_count.values() for c in v])),
            "by_count": {n: float(np.mean(v)) for n, v in sorted(by_count.items())},
            "seed_sd": float(np.std(seed_rates)), "seed_min": min(seed_rates),
            "seed_max": max(seed_rates), "n": sum(len(v) for v in by_count.values())}


def set_clump_rate(folder: Path) -> dict:
    """Clump share of a fine-tuning image folder's count images."""
    images, captions = load_image_folder(folder)
    flags = []
    for im, cap in zip(images, captions, strict=True):
        cc = _colour_and_count(cap)
        if cc is not None:
            flags.append(clumped(im, cc[0]))
    return {"clumped": float(np.mean(flags)) if flags else None, "n": len(flags)}


def pool_clump_rate(path: Path) -> dict:
    """Clump share of the judge-accepted images of an ``arms.py`` random pool (the filtered set)."""
    z = np.load(path, allow_pickle=False)
    flags = []
    for im, cap, ok in zip(z["images"], z["captions"], z["correct"], strict=True):
        cc = _colour_and_count(str(cap))
        if ok and cc is not None:
            flags.append(clumped(im, cc[0]))
    return {"clumped": float(np.mean(flags)) if flags else None, "n": len(flags)}


def run(args: argparse.Namespace) -> dict:
    """Measure every model and set; write the results files."""
    torch.set_num_threads(args.threads)
    tints = tuple(BACKGROUNDS)[: max(1, args.backgrounds)]
    prompts = _subsample(world_prompts("eval", tints), args.eval_prompts, "numerical")
    seeds = list(range(10_000, 10_000 + args.eval_seeds))
    out: dict = {"models": {}, "sets": {}, "eval_seeds": args.eval_seeds,
                 "eval_prompts": len(prompts), "command": " ".join(sys.argv)}
    t0 = time.time()
    for name, folder in _named(args.models).items():
        if (folder / "model" / "world_model.json").exists():
            folder = folder / "model"
        gen = ShapesWorldGenerator.load(folder, steps=args.steps, guidance=args.guidance)
        out["models"][name] = model_clump_rate(gen, prompts, seeds) | {"model": str(folder)}
    for name, folder in _named(args.sets).items():
        out["sets"][name] = set_clump_rate(folder) | {"folder": str(folder)}
    for name, path in _named(args.pools).items():
        out["sets"][name] = pool_clump_rate(path) | {"folder": str(path)}
    out["wall_s"] = time.time() - t0
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = RESULTS / f"seeds_clump_rate_{args.tag}"
    write_text_atomic(stem.with_suffix(".json"), json.dumps(out, indent=1))
    write_text_atomic(stem.with_suffix(".md"), _markdown(out))
    return out


def _markdown(res: dict) -> str:
    lines = ["# Layout diagnostic: clumped images (objects touching as one region)", "",
             f"Command: `{res['command']}`; {res['eval_prompts']} held-out count prompts x "
             f"{res['eval_seeds']} seeds (10000..), exact clump test (`checker.clumped`); "
             f"{res['wall_s']:.0f} s.", ""]
    if res["models"]:
        counts = sorted({n for m in res["models"].values() for n in m["by_count"]}, key=int)
        lines += ["| model | clumped | " + " | ".join(f"count {n}" for n in counts)
                  + " | between seeds sd (min - max) |",
                  "|---|---|" + "---|" * len(counts) + "---|"]
        for name, m in res["models"].items():
            cells = " | ".join(f"{m['by_count'][n]:.3f}" for n in counts)
            lines.append(f"| {name} | {m['clumped']:.3f} | {cells} | {m['seed_sd']:.3f} "
                         f"({m['seed_min']:.2f} - {m['seed_max']:.2f}) |")
        lines.append("")
    if res["sets"]:
        lines += ["| fine-tuning set | count images | clumped |", "|---|---|---|"]
        for name, s in res["sets"].items():
            rate = "-" if s["clumped"] is None else f"{s['clumped']:.3f}"
            lines.append(f"| {name} | {s['n']} | {rate} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    run(parse_args())
