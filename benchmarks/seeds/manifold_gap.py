"""How far are the model's own samples from its training images? (fine-tuning diagnostic)

For 64 count prompts of the arms' training split, compares the base model's denoising loss
(epsilon MSE at the same 8 noise levels and noises for every image) on correct renders and on
its own samples at several DDIM step counts, with the exact checker's shape validity and
count accuracy of the samples. Fine-tuning on images whose loss is far above the renders'
teaches the model their defects.

    .venv/bin/python benchmarks/seeds/manifold_gap.py \
        --model benchmarks/seeds/checkpoints/world_base3

Writes benchmarks/results/<--name, default seeds_manifold_gap>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from tamis._io import write_text_atomic
from tamis.seeds.generation import initial_latents
from tamis.seeds.world.captions import scene_for_prompt, world_prompts
from tamis.seeds.world.checker import ExactChecker
from tamis.seeds.world.model import ShapesWorldGenerator, to_model, train_scheduler

RESULTS = Path(__file__).resolve().parents[1] / "results"


def denoising_loss(gen: ShapesWorldGenerator, images: np.ndarray, prompts: list[str],
                   levels: int = 8) -> float:
    """Mean epsilon-MSE over fixed timesteps and fixed noises (paired across image sets)."""
    sched = train_scheduler()
    x0 = to_model(images)
    ctx = gen.encode_text(prompts)
    g = torch.Generator().manual_seed(0)
    ts = torch.linspace(20, 980, levels).long()
    total = 0.0
    with torch.no_grad():
        for t in ts:
            noise = torch.randn(x0.shape, generator=g)
            xt = sched.add_noise(x0, noise, t.repeat(len(x0)))
            eps = gen.unet(xt, t, ctx).sample
            total += float(((eps - noise) ** 2).mean())
    return total / levels


def main() -> None:
    """Renders vs samples at each step count: loss, validity, accuracy."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--steps", type=int, nargs="+", default=[20, 50, 100])
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--name", default="seeds_manifold_gap", help="results file stem")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from tamis.seeds.world.render import BACKGROUNDS

    train = world_prompts("train", tuple(BACKGROUNDS)[:4])["numerical"]
    prompts = [train[(i * 7) % len(train)] for i in range(args.n)]
    texts = [q.text for q in prompts]
    rng = np.random.default_rng(0)
    renders = np.stack([scene_for_prompt(rng, q)[0] for q in prompts])
    checker = ExactChecker()
    base = ShapesWorldGenerator.load(args.model, guidance=1.0)
    rows = [{"images": "correct renders", "loss": denoising_loss(base, renders, texts),
             "validity": float(np.mean([checker.valid(im) for im in renders]))}]
    latents = initial_latents(list(range(20_000, 20_000 + args.n)), base.latent_shape())
    for steps in args.steps:
        t0 = time.time()
        gen = ShapesWorldGenerator.load(args.model, steps=steps, guidance=1.0)
        ims = gen.generate(texts, latents)
        verdicts = checker.judge(ims, [q.question for q in prompts])
        rows.append({"images": f"own samples, DDIM {steps} steps",
                     "loss": denoising_loss(base, ims, texts),
                     "validity": float(np.mean([checker.valid(im) for im in ims])),
                     "accuracy": float(np.mean([bool(v.correct) for v in verdicts])),
                     "seconds": time.time() - t0})
        print(rows[-1], flush=True)
    out = {"model": str(args.model), "n": args.n, "rows": rows}
    write_text_atomic(RESULTS / f"{args.name}.json", json.dumps(out, indent=1))
    lines = ["# How far are the model's own samples from its training images?", "",
             f"Model `{args.model}`, {args.n} training count prompts, the same 8 noise levels "
             "and noises for every set; exact checker.", "",
             "| images | denoising loss | shape validity | count accuracy |", "|---|---|---|---|"]
    for r in rows:
        acc = f"{r['accuracy']:.3f}" if "accuracy" in r else "1 (by construction)"
        lines.append(f"| {r['images']} | {r['loss']:.5f} | {r['validity']:.3f} | {acc} |")
    write_text_atomic(RESULTS / f"{args.name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
