"""Train the digits generator and extractors of the direction study (issue 12), resumably.

scikit-learn's 8x8 digits, split 2/3 train (1,198) / 1/3 test (599) by
:func:`tamis.data.images.load_digits_images`. Three artefacts:

* ``extractor_steer`` (F_g) and ``extractor_eval`` (F_e): two small CNN classifiers of
  different widths and seeds, trained on the train split (tamis safetensors checkpoints);
* ``ddpm/``: a diffusers ``DDPMPipeline`` (``UNet2DModel`` + ``DDPMScheduler``) trained with
  diffusers' own epsilon loss and an EMA, saved with ``save_pretrained``; users and the study
  load it by path through :class:`tamis.density.adapters.DiffusersGenerator`.

Runs in the background with a resumable state (``--run``, every ``--save-every`` steps, atomic);
a rerun with the same arguments continues. Coverage in F_e against the test split is printed
at every save, next to the real-vs-real coverage at the same sample size.

    .venv/bin/python benchmarks/density/train_digits.py --steps 15000 \
        --run benchmarks/cache/digits_ddpm_run --out src/tamis/density/checkpoints/digits
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tamis._io import atomic_path
from tamis.data.images import load_digits_images
from tamis.density.config import ExtractorConfig
from tamis.density.metrics import prdc
from tamis.density.models import extract, load_checkpoint, save_checkpoint, train_extractor

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "src" / "tamis" / "density" / "checkpoints" / "digits"
TEST_FRACTION = 1 / 3
STEER = ExtractorConfig(image_size=8, widths=(16, 32), feature_dim=32)
EVAL = ExtractorConfig(image_size=8, widths=(32, 64), feature_dim=64)
UNET = dict(
    sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
    block_out_channels=(32, 64, 64),
    down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    norm_num_groups=16,
)


def digits(split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``(N, 1, 8, 8)`` in [0, 1] and labels of the study's split."""
    ds = load_digits_images(split, test_fraction=TEST_FRACTION)
    return torch.from_numpy(ds.images[:, None]), torch.from_numpy(ds.labels)


def train_extractors(out: Path) -> None:
    """F_g and F_e on the train split (test accuracy printed)."""
    x, y = digits("train")
    xt, yt = digits("test")
    for name, cfg, seed in (("extractor_steer", STEER, 1), ("extractor_eval", EVAL, 2)):
        model = train_extractor(cfg, x, y, epochs=40, batch_size=64, seed=seed)
        with torch.no_grad():
            acc = (model(xt).argmax(1) == yt).float().mean().item()
        save_checkpoint(model, out / f"{name}.safetensors", "extractor", cfg.to_dict())
        print(f"{name}: test accuracy {acc:.3f}", flush=True)


def coverage_report(unet: torch.nn.Module, f_e: torch.nn.Module, n_steps: int = 50) -> dict:
    """PRDC in F_e of test-size sample sets against the test split, and real vs real."""
    from diffusers import DDIMScheduler

    from tamis.density.adapters import DiffusersGenerator

    xt, _ = digits("test")
    xr, _ = digits("train")
    gen = DiffusersGenerator(unet, DDIMScheduler(**SCHEDULER), num_inference_steps=n_steps)
    z = gen.sample_latents(xt.shape[0], seed=123)
    with torch.no_grad():
        fake = gen(z)
    feats = lambda im: extract(f_e, im).numpy()  # noqa: E731
    real = feats(xt)
    m = prdc(real=real, fake=feats(fake), k=5)
    rr = prdc(real=real, fake=feats(xr[: xt.shape[0]]), k=5)
    return {"fake": m, "real_vs_real": rr}


SCHEDULER = dict(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                 prediction_type="epsilon", clip_sample=True)


def train_ddpm(args: argparse.Namespace) -> None:
    """Diffusers epsilon-prediction training with EMA; resumable through ``args.run``."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
    from diffusers.training_utils import EMAModel

    x, _ = digits("train")
    x = x * 2 - 1
    torch.manual_seed(0)
    unet = UNet2DModel(**UNET)
    ema = EMAModel(unet.parameters(), decay=args.ema, use_ema_warmup=True)
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.0)
    sched = DDPMScheduler(**SCHEDULER)
    horizon = args.schedule_steps or args.steps
    lr_at = lambda s: args.lr * min(1.0, (s + 1) / 500) * 0.5 * (  # noqa: E731
        1 + np.cos(np.pi * min(s, horizon) / horizon))
    state_file = args.run / "state.pt"
    step, log, evals = 0, [], []
    if state_file.exists():
        st = torch.load(state_file, weights_only=False)
        unet.load_state_dict(st["unet"])
        ema.load_state_dict(st["ema"])
        opt.load_state_dict(st["opt"])
        step, log, evals = st["step"], st["log"], st.get("evals", [])
        torch.set_rng_state(st["rng"])
        print(f"resumed at step {step}", flush=True)
    f_e = load_checkpoint(args.out / "extractor_eval.safetensors")
    print(f"unet parameters: {sum(p.numel() for p in unet.parameters()):,}", flush=True)
    t0, start_step = time.time(), step
    while step < args.steps:
        idx = torch.randint(0, x.shape[0], (args.batch_size,))
        x0 = x[idx]
        noise = torch.randn_like(x0)
        t = torch.randint(0, sched.config.num_train_timesteps, (x0.shape[0],))
        pred = unet(sched.add_noise(x0, noise, t), t).sample
        loss = F.mse_loss(pred, noise)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.step(unet.parameters())
        step += 1
        log.append(loss.item())
        if step % args.save_every == 0 or step == args.steps:
            eval_unet = UNet2DModel(**UNET)
            ema.copy_to(eval_unet.parameters())
            rep = coverage_report(eval_unet.eval(), f_e)
            rate = (time.time() - t0) / max(1, step - start_step)
            evals.append(f"step {step} loss {np.mean(log[-args.save_every:]):.4f} "
                         f"coverage {rep['fake']['coverage']:.3f} "
                         f"(real {rep['real_vs_real']['coverage']:.3f}) "
                         f"precision {rep['fake']['precision']:.3f} "
                         f"recall {rep['fake']['recall']:.3f} [{rate:.3f} s/step]")
            print(evals[-1], flush=True)
            args.run.mkdir(parents=True, exist_ok=True)
            with atomic_path(state_file) as tmp:
                torch.save({"unet": unet.state_dict(), "ema": ema.state_dict(),
                            "opt": opt.state_dict(), "step": step, "log": log,
                            "evals": evals,
                            "rng": torch.get_rng_state()}, tmp)
            with atomic_path(args.run / f"eval_{step}.json") as tmp:
                tmp.write_text(json.dumps(rep, indent=1))
    final = UNet2DModel(**UNET)
    ema.copy_to(final.parameters())
    DDPMPipeline(unet=final.eval(), scheduler=DDPMScheduler(**SCHEDULER)).save_pretrained(
        args.out / "ddpm", safe_serialization=True)
    (args.out / "ddpm" / "TRAINED_BY.txt").write_text(
        "benchmarks/density/train_digits.py " + " ".join(
            f"--{k.replace('_', '-')} {_rel(v)}" for k, v in vars(args).items()
            if k != "only" and v is not None)
        + f"\nsteps {step}, final loss {np.mean(log[-500:]):.4f}\n"
        + "".join(f"{line}\n" for line in evals))
    print(f"saved {args.out / 'ddpm'}", flush=True)


def _rel(v: object) -> object:
    """Paths inside the repository, relative to its root (for the reproduction record)."""
    if isinstance(v, Path) and v.is_relative_to(ROOT):
        return v.relative_to(ROOT)
    return v


def main() -> None:
    """Command line."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--only", default="extractors,ddpm")
    ap.add_argument("--steps", type=int, default=15000)
    ap.add_argument("--schedule-steps", type=int, default=None,
                    help="length of the cosine schedule (default --steps); stopping earlier "
                         "than the schedule is --steps N --schedule-steps M")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--save-every", type=int, default=1500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--run", type=Path, default=ROOT / "benchmarks" / "cache" / "digits_ddpm_run")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    todo = args.only.split(",")
    if "extractors" in todo:
        train_extractors(args.out)
    if "ddpm" in todo:
        train_ddpm(args)


if __name__ == "__main__":
    main()
