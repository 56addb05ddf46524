"""Train the small demo checkpoints on Fashion-MNIST (1 CPU thread) and save them (fp16).

Writes into src/tamis/density/checkpoints/ (each file < 2 MB), used by `tamis demo` and the
benchmark scripts; the demo trains tiny stand-ins when they are missing.

    .venv/bin/python benchmarks/density/train_checkpoints.py [--only gan,ddpm,extractors]

The DDPM (32-channel UNet, cosine schedule T=1000, EMA 0.995, 2,000 steps of batch 64) takes
about 17 min of CPU time on one thread (measured: 57 min wall on a 2-core machine shared with
other jobs, `--only ddpm`); its checkpoint is 0.55 MB.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from tamis.data import load_fashion_mnist
from tamis.density.config import DDPMConfig, ExtractorConfig, GANConfig
from tamis.density.models import save_checkpoint, train_ddpm, train_extractor, train_gan

OUT = Path(__file__).resolve().parents[2] / "src" / "tamis" / "density" / "checkpoints"
STEER = ExtractorConfig(widths=(16, 32), feature_dim=64)
EVAL = ExtractorConfig(widths=(32, 64), feature_dim=128)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="extractors,gan,ddpm")
    ap.add_argument("--gan-steps", type=int, default=3000)
    ap.add_argument("--ddpm-steps", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=OUT, help="checkpoint folder")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ds = load_fashion_mnist("train")
    x = torch.from_numpy(ds.images[:, None])
    y = torch.from_numpy(ds.labels)
    todo = args.only.split(",")
    out = args.out
    if "extractors" in todo:
        t = time.time()
        # two independent extractors: different halves, architectures and seeds
        f_g = train_extractor(STEER, x[:30000], y[:30000], epochs=2, seed=1)
        save_checkpoint(f_g, out / "extractor_steer.safetensors", "extractor", STEER.to_dict())
        f_e = train_extractor(EVAL, x[30000:], y[30000:], epochs=2, seed=2)
        save_checkpoint(f_e, out / "extractor_eval.safetensors", "extractor", EVAL.to_dict())
        print(f"extractors {time.time() - t:.0f}s", flush=True)
    if "gan" in todo:
        t = time.time()
        cfg = GANConfig()
        g, d = train_gan(cfg, x, steps=args.gan_steps, seed=0)
        save_checkpoint(g, out / "gan_generator.safetensors", "generator", cfg.to_dict())
        save_checkpoint(d, out / "gan_discriminator.safetensors", "discriminator",
                        cfg.to_dict())
        print(f"gan {time.time() - t:.0f}s", flush=True)
    if "ddpm" in todo:
        t = time.time()
        # cosine schedule, T=1000: alpha_bar_T ~ 0, so sampling from N(0, 1) matches training
        # (the earlier linear T=200 schedule ended at alpha_bar_T = 0.13); EMA weights.
        cfg = DDPMConfig(channels=32, timesteps=1000, schedule="cosine")

        def tick(step: int) -> None:
            if step % 200 == 0:
                print(f"ddpm step {step} {time.time() - t:.0f}s", flush=True)

        m = train_ddpm(cfg, x, steps=args.ddpm_steps, batch_size=64, lr=2e-3, seed=0,
                       ema_decay=0.995, progress=tick)
        save_checkpoint(m, out / "ddpm.safetensors", "ddpm", cfg.to_dict())
        print(f"ddpm {time.time() - t:.0f}s", flush=True)


if __name__ == "__main__":
    main()
