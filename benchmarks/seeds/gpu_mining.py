"""GPU throughput of seed mining with a full-size Stable Diffusion 1.5 architecture.

    # on a GPU machine (one device, or torchrun for several):
    .venv/bin/python benchmarks/seeds/gpu_mining.py --out $OUT
    torchrun --nproc-per-node 4 benchmarks/seeds/gpu_mining.py --out $OUT
    # a CPU smoke run of the same code (tiny pipeline; what the test runs):
    .venv/bin/python benchmarks/seeds/gpu_mining.py --tiny --device cpu --dtype float32 \\
        --prompts 2 --seeds 2 --steps 2 --out /tmp/gpu_mining

The pipeline is **randomly initialised** from the SD-1.5 component configs (UNet 860M,
VAE, CLIP ViT-L/14 text encoder; no weights are downloaded) with a small word-level CLIP
tokenizer, saved with ``save_pretrained`` and loaded back by path through
``DiffusersGenerator.from_pretrained`` exactly as a user's pipeline is. Mining runs the
library's ``mine`` over numerical prompts x seeds (sharded over the ``torchrun`` ranks,
merged by rank 0). Random weights make noise images, so the judge records every image as a
failure ("throughput run"): the run measures images per second and peak memory of the
mining path (generation, reproduction records, append-only results), not accuracy.
Writes ``<out>/seeds_gpu_mining.json``. Budget: under 8 minutes on one H200-class device.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from tamis.seeds.categories import TRAIN_BACKGROUNDS, TRAIN_OBJECTS  # noqa: E402
from tamis.seeds.generation import DiffusersGenerator  # noqa: E402
from tamis.seeds.judges.base import Verdict  # noqa: E402
from tamis.seeds.mining import MiningConfig, mine  # noqa: E402
from tamis.seeds.prompts import numerical_prompts  # noqa: E402


class ThroughputJudge:
    """Records every image as a failure: random weights give nothing to judge."""

    name = "throughput-run"

    def judge(self, images: np.ndarray, questions: list) -> list[Verdict]:
        """One failure verdict per image."""
        return [Verdict(None, None, error="throughput run: random weights, no judge")
                for _ in questions]


def build_sd15(folder: Path, dtype: torch.dtype) -> Path:
    """A randomly initialised SD-1.5-architecture pipeline, saved to ``folder``."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from seeds.tiny_pipeline import write_tokenizer

    torch.manual_seed(0)
    tok_dir = folder.parent / (folder.name + "-tokenizer")
    write_tokenizer(tok_dir)
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir), model_max_length=77)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
        num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
        bos_token_id=0, eos_token_id=1, pad_token_id=1))
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=768, attention_head_dim=8)
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4,
        block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, sample_size=512)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012,
                              beta_schedule="scaled_linear", clip_sample=False,
                              set_alpha_to_one=False, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                                   unet=unet, scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.to(dtype=dtype).save_pretrained(str(folder))
    return folder


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--tiny", action="store_true", help="the tests' tiny pipeline (CPU smoke)")
    p.add_argument("--device", default="cuda")
    p.add_argument("--dtype", default="float16")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--batch-size", type=int, default=8)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Build, load, warm up, mine; write and return the measurements."""
    args = parse_args(argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = args.device
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        if device == "cuda":
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
            torch.cuda.set_device(device)
    args.out.mkdir(parents=True, exist_ok=True)
    folder = args.out / ("tiny-sd" if args.tiny else "sd15-random")
    t0 = time.perf_counter()
    if rank == 0 and not (folder / "model_index.json").exists():
        if args.tiny:
            from seeds.tiny_pipeline import build_tiny_sd

            build_tiny_sd(folder)
        else:
            build_sd15(folder, getattr(torch, args.dtype))
    if world > 1:
        torch.distributed.barrier()
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    gen = DiffusersGenerator.from_pretrained(folder, device=device, dtype=args.dtype,
                                             steps=args.steps, guidance=args.guidance)
    gen.fingerprint()  # hashes every weight once (cached); not part of the mining time
    t_load = time.perf_counter() - t0
    prompts = numerical_prompts(TRAIN_OBJECTS[: max(1, args.prompts // 2)],
                                TRAIN_BACKGROUNDS[:2])[: args.prompts]
    judge, cfg = ThroughputJudge(), MiningConfig(batch_size=args.batch_size, progress=rank == 0)
    cuda = device.startswith("cuda")
    mine(gen, judge, prompts[:1], [10_000], args.out / "warmup.jsonl", cfg)  # kernels, caches
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    rows = mine(gen, judge, prompts, list(range(args.seeds)), args.out / "mining.jsonl", cfg)
    if cuda:
        torch.cuda.synchronize()
    t_mine = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() if cuda else None
    peaks = [peak]
    if world > 1:
        import torch.distributed as dist

        peaks = [None] * world
        dist.all_gather_object(peaks, peak)
    res = {"pipeline": "tiny" if args.tiny else "SD-1.5 architecture, random init",
           "height": gen.settings.height, "width": gen.settings.width, "steps": args.steps,
           "guidance": args.guidance, "dtype": args.dtype, "batch_size": args.batch_size,
           "world_size": world, "device": (torch.cuda.get_device_name(device) if cuda
                                           else "cpu"),
           "images": len(rows), "failures_recorded": sum(r["verdict"]["correct"] is None
                                                        for r in rows),
           "build_s": t_build, "load_s": t_load, "mine_s": t_mine,
           "images_per_s": len(rows) / t_mine, "peak_memory_bytes_per_rank": peaks,
           "torch": torch.__version__}
    if rank == 0:
        (args.out / "seeds_gpu_mining.json").write_text(json.dumps(res, indent=1))
        print(json.dumps(res, indent=1), flush=True)
    return res


if __name__ == "__main__":
    main()
