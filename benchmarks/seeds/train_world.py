"""Pretrain the shapes-world base model on noisy "web-like" captions (resumable, 1 thread).

    .venv/bin/python benchmarks/seeds/train_world.py --out runs/seeds/world_base --steps 3000

Every ``--every`` steps the full training state (UNet, text encoder, EMA copies, optimiser,
step) is written atomically to ``<out>/state.pt`` and the EMA weights as a model folder
``<out>/model`` (fp16, loadable by ``ShapesWorldGenerator.load``); a restart with the same
command continues from the last state. Each batch is drawn from ``default_rng([seed, step])``
so a resumed run sees the same data as an uninterrupted one. Loss goes to ``<out>/loss.tsv``.
``--smoke`` trains a tiny 16x16 configuration for a few hundred steps (CI-sized).

``--init MODEL`` warm-starts from a model folder (online and EMA weights; fresh optimiser) and
records that folder's provenance; use a new ``--seed`` so the continuation sees new batches.
``--schedule cosine`` decays the learning rate from ``--lr`` to ``--min-lr-ratio`` x ``--lr``
over ``--steps`` (a function of the step, so resuming is exact).

The shipped model (``src/tamis/seeds/checkpoints/world_base``) is stage 1 then stage 2::

    .venv/bin/python benchmarks/seeds/train_world.py --out benchmarks/seeds/runs/world_base \
        --steps 3000 --batch-size 16 --every 200
    .venv/bin/python benchmarks/seeds/train_world.py --out benchmarks/seeds/runs/world_base2 \
        --init benchmarks/seeds/runs/world_base/model --seed 1 --steps 4000 --batch-size 32 \
        --schedule cosine --warmup 50 --every 200
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from tamis._io import atomic_path, write_text_atomic
from tamis.seeds.world import model as wm
from tamis.seeds.world.captions import CaptionConfig, pretraining_batch, vocabulary
from tamis.seeds.world.text import TextEncoder, WordTokenizer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--ema", type=float, default=0.995)
    p.add_argument("--dropout", type=float, default=0.1, help="caption dropout (CFG)")
    p.add_argument("--noise", type=float, default=0.25, help="share of noisy captions")
    p.add_argument("--pile-share", type=float, default=0.0,
                   help="share of count scenes drawn as one touching clump (layout-dependent "
                        "world; CaptionConfig.pile_share)")
    p.add_argument("--every", type=int, default=200, help="checkpoint interval (steps)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--smoke", action="store_true", help="tiny 16x16 run")
    p.add_argument("--init", type=Path, default=None, help="warm-start from this model folder")
    p.add_argument("--schedule", choices=("constant", "cosine"), default="constant")
    p.add_argument("--min-lr-ratio", type=float, default=0.05)
    return p.parse_args(argv)


def _downsample(images: np.ndarray, size: int) -> np.ndarray:
    if images.shape[1] == size:
        return images
    f = images.shape[1] // size
    return images.reshape(len(images), size, f, size, f, 3).mean((2, 4)).round().astype(np.uint8)


def learning_rate(args: argparse.Namespace, step: int) -> float:
    """Learning rate at ``step``: linear warm-up, then constant or cosine decay."""
    import math

    warm = min(1.0, (step + 1) / max(1, args.warmup))
    if args.schedule == "constant" or step < args.warmup:
        return args.lr * warm
    frac = (step - args.warmup) / max(1, args.steps - args.warmup)
    low = args.min_lr_ratio
    return args.lr * (low + (1 - low) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


def train(args: argparse.Namespace) -> dict:
    """Run (or resume) the pretraining; return a summary."""
    torch.set_num_threads(args.threads)
    size = 16 if args.smoke else 32
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = WordTokenizer(vocabulary())
    torch.manual_seed(args.seed)
    unet = wm.build_unet(size)
    enc = TextEncoder(tokenizer.vocab_size, tokenizer.max_length)
    parent = None
    if args.init is not None:
        init_unet, init_enc, init_tok, parent = wm.load_model(args.init)
        if init_tok.words != tokenizer.words:
            raise ValueError(f"{args.init} was trained on another vocabulary")
        unet.load_state_dict(init_unet.state_dict())
        enc.load_state_dict(init_enc.state_dict())
        unet.train()
        enc.train()
    ema_unet, ema_enc = copy.deepcopy(unet), copy.deepcopy(enc)
    params = list(unet.parameters()) + list(enc.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)
    sched = wm.train_scheduler()
    step = 0
    state_path = out / "state.pt"
    if state_path.exists():
        st = torch.load(state_path, weights_only=False)
        unet.load_state_dict(st["unet"])
        enc.load_state_dict(st["enc"])
        ema_unet.load_state_dict(st["ema_unet"])
        ema_enc.load_state_dict(st["ema_enc"])
        opt.load_state_dict(st["opt"])
        step = int(st["step"])
        torch.set_rng_state(st["torch_rng"])
        print(f"resumed at step {step}", flush=True)
    captions = CaptionConfig(noise=args.noise, pile_share=args.pile_share)
    log = (out / "loss.tsv").open("a", encoding="utf-8")
    t0, window = time.time(), []
    first = step
    while step < args.steps:
        rng = np.random.default_rng([args.seed, step])
        images, texts = pretraining_batch(rng, args.batch_size, captions)
        images = _downsample(images, size)
        texts = ["" if rng.random() < args.dropout else t for t in texts]
        x0 = wm.to_model(images)
        noise = torch.randn_like(x0)
        t = torch.randint(0, wm.TRAIN_TIMESTEPS, (len(x0),))
        xt = sched.add_noise(x0, noise, t)
        ctx = enc(tokenizer(texts))
        loss = torch.nn.functional.mse_loss(unet(xt, t, ctx).sample, noise)
        for g in opt.param_groups:
            g["lr"] = learning_rate(args, step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = args.ema if args.init is not None else min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for e_mod, mod in ((ema_unet, unet), (ema_enc, enc)):
                for pe, p in zip(e_mod.parameters(), mod.parameters(), strict=True):
                    pe.mul_(decay).add_(p.detach(), alpha=1 - decay)
        step += 1
        window.append(float(loss.detach()))
        log.write(f"{step}\t{window[-1]:.5f}\t{time.time() - t0:.1f}\n")
        log.flush()
        if step % args.every == 0 or step == args.steps:
            with atomic_path(state_path, suffix=".pt") as tmp:
                torch.save({"unet": unet.state_dict(), "enc": enc.state_dict(),
                            "ema_unet": ema_unet.state_dict(), "ema_enc": ema_enc.state_dict(),
                            "opt": opt.state_dict(), "step": step,
                            "torch_rng": torch.get_rng_state()}, tmp)
            extra = {"training": {"step": step, "batch_size": args.batch_size, "lr": args.lr,
                                  "ema": args.ema, "caption_dropout": args.dropout,
                                  "caption_noise": args.noise, "seed": args.seed,
                                  "pile_share": args.pile_share,
                                  "schedule": args.schedule, "warmup": args.warmup,
                                  "command": " ".join(sys.argv)}}
            if parent is not None:
                extra["training"]["init"] = {"path": str(args.init),
                                             "training": parent.get("training")}
            tmp_dir = out / "model.tmp"
            wm.save_model(tmp_dir, ema_unet, ema_enc, tokenizer, extra)
            final = out / "model"
            if final.exists():
                import shutil

                old = out / "model.old"
                shutil.rmtree(old, ignore_errors=True)
                final.rename(old)
                tmp_dir.rename(final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp_dir.rename(final)
            rate = (time.time() - t0) / max(1, step - first)
            print(f"step {step} loss(avg {len(window)}) {np.mean(window):.4f} "
                  f"{rate:.2f} s/step", flush=True)
            window = []
    log.close()
    summary = {"steps": step, "size": size, "wall_s": time.time() - t0}
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    print(train(parse_args()))
