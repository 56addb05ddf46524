"""``tamis seeds mine|curate|finetune|evaluate``: reliable seeds from the command line.

The generator is a diffusers pipeline directory (``--pipeline``) or the shapes world
(``--world PATH``; the shipped world checkpoint when neither is given). Judges: ``checker`` /
``cnn`` (shapes world), ``vlm`` (OpenAI-compatible endpoint), ``detector`` (OWLv2 directory).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="Reliable random seeds: mine, curate, fine-tune, evaluate.", no_args_is_help=True
)
console = Console()

PipelineOpt = Annotated[Path | None, typer.Option(help="A diffusers pipeline directory.")]
GuidanceOpt = Annotated[
    float | None,
    typer.Option(help="Guidance scale (default: 7.5 for pipelines, the world model's own)."),
]
WorldOpt = Annotated[Path | None, typer.Option(help="A shapes-world checkpoint folder.")]
JudgeOpt = Annotated[str, typer.Option(help="checker | cnn | vlm | detector.")]
EndpointOpt = Annotated[str | None, typer.Option(help="VLM endpoint URL (--judge vlm).")]
VlmModelOpt = Annotated[str | None, typer.Option(help="VLM model name (--judge vlm).")]
DetectorOpt = Annotated[Path | None, typer.Option(help="OWLv2 directory (--judge detector).")]
KindOpt = Annotated[str, typer.Option(help="Prompt kind: numerical | spatial | both.")]
SeedsOpt = Annotated[str, typer.Option(help="Seeds: '0-99', '3,7,9' or N (= 0..N-1).")]
ObjectsOpt = Annotated[Path | None, typer.Option(help="Comp90-style object file (optional).")]


def parse_seeds(spec: str) -> list[int]:
    """Parse '0-99', '3,7,9' or 'N' (0..N-1).

    Raises:
        typer.BadParameter: anything else, or an empty/negative range.

    """
    try:
        if "-" in spec:
            lo, hi = (int(x) for x in spec.split("-", 1))
            seeds = list(range(lo, hi + 1))
        elif "," in spec:
            seeds = [int(x) for x in spec.split(",") if x.strip()]
        else:
            seeds = list(range(int(spec)))
    except ValueError:
        raise typer.BadParameter(f"bad seeds {spec!r}: use '0-99', '3,7,9' or N") from None
    if not seeds or min(seeds) < 0:
        raise typer.BadParameter(f"bad seeds {spec!r}: need at least one non-negative seed")
    return seeds


def _generator(pipeline, world, device, dtype, steps, guidance):
    if pipeline is not None and world is not None:
        raise typer.BadParameter("give either --pipeline or --world, not both")
    if pipeline is not None:
        from tamis.seeds.generation import DiffusersGenerator

        try:
            return DiffusersGenerator.from_pretrained(
                pipeline,
                device=device,
                dtype=dtype,
                steps=steps or 50,
                guidance=7.5 if guidance is None else guidance,
            )
        except (ValueError, FileNotFoundError) as err:
            raise typer.BadParameter(str(err)) from None
    from tamis.seeds.world.model import DEFAULT_DIR, ShapesWorldGenerator

    try:
        return ShapesWorldGenerator.load(world or DEFAULT_DIR, steps=steps, guidance=guidance)
    except (ValueError, FileNotFoundError) as err:
        raise typer.BadParameter(str(err)) from None


def _judge(name, endpoint, vlm_model, detector, device="cpu"):
    if name == "checker":
        from tamis.seeds.world.checker import ExactChecker

        return ExactChecker()
    if name == "cnn":
        from tamis.seeds.world.judge_cnn import CNNJudge

        loader = getattr(CNNJudge, "load_default", None) or CNNJudge.load
        return loader()
    if name == "vlm":
        if not endpoint or not vlm_model:
            raise typer.BadParameter("--judge vlm needs --endpoint and --vlm-model")
        from tamis.seeds.judges.vlm import VLMJudge

        return VLMJudge(endpoint, vlm_model)
    if name == "detector":
        if detector is None:
            raise typer.BadParameter("--judge detector needs --detector PATH")
        from tamis.seeds.judges.detector import DetectorJudge

        return DetectorJudge.from_pretrained(detector, device=device)
    raise typer.BadParameter(f"unknown judge {name!r} (checker, cnn, vlm, detector)")


def _prompts(
    world: bool,
    kind: str,
    split: str,
    objects: Path | None,
    n_objects: int | None,
    n_backgrounds: int | None,
):
    if kind not in ("numerical", "spatial", "both"):
        raise typer.BadParameter(f"unknown prompt kind {kind!r} (numerical, spatial, both)")
    if world and objects is None:
        from tamis.seeds.world.captions import world_prompts
        from tamis.seeds.world.render import BACKGROUNDS

        sets = world_prompts(split, backgrounds=tuple(BACKGROUNDS)[: n_backgrounds or 1])
        out = []
        if kind in ("numerical", "both"):
            out += sets["numerical"]
        if kind in ("spatial", "both"):
            out += sets["spatial"]
        return out
    from tamis.seeds import categories as cat
    from tamis.seeds.prompts import numerical_prompts, read_objects, spatial_prompts

    if objects is not None:
        objs = read_objects(str(objects))
        pairs = cat.spatial_pairs(
            objs, min(len(objs) * (len(objs) - 1), 80 if split == "train" else 40)
        )
    else:
        objs = list(cat.TRAIN_OBJECTS if split == "train" else cat.EVAL_OBJECTS)
        pairs = list(cat.TRAIN_PAIRS if split == "train" else cat.EVAL_PAIRS)
    backgrounds = list(cat.TRAIN_BACKGROUNDS if split == "train" else cat.EVAL_BACKGROUNDS)
    objs = objs[:n_objects] if n_objects else objs
    backgrounds = backgrounds[:n_backgrounds] if n_backgrounds else backgrounds
    out = []
    if kind in ("numerical", "both"):
        out += numerical_prompts(objs, backgrounds, split=split)
    if kind in ("spatial", "both"):
        out += spatial_prompts(pairs[: n_objects * 4] if n_objects else pairs, split=split)
    return out


def _init_distributed(device: str) -> int:
    """Join the torchrun process group if launched by torchrun; return this rank."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    return dist.get_rank()


def _device_for_rank(device: str) -> str:
    import os

    if device == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def _summary(rows: list[dict], top_n: int) -> dict:
    from tamis.seeds import stats

    obs = stats.observations(rows)
    rel = stats.seed_reliability(obs)
    return {
        "n_images": len(rows),
        "failures": sum(o.correct is None for o in obs),
        "top_seeds": stats.top_seeds(rel, top_n),
        "chi_square": stats.chi_square(obs),
        "spread": stats.accuracy_spread(rel),
        "reliability": {c: {str(s): v for s, v in d.items()} for c, d in rel.items()},
        "placement": stats.centroid_variance_explained(obs),
    }


@app.command()
def mine(
    out: Annotated[Path, typer.Option(help="Results JSONL (append-only, resumable).")] = Path(
        "mined.jsonl"
    ),
    pipeline: PipelineOpt = None,
    world: WorldOpt = None,
    judge: JudgeOpt = "cnn",
    endpoint: EndpointOpt = None,
    vlm_model: VlmModelOpt = None,
    detector: DetectorOpt = None,
    kind: KindOpt = "both",
    seeds: SeedsOpt = "0-99",
    objects: ObjectsOpt = None,
    n_objects: Annotated[int | None, typer.Option(help="First N objects (paper: 15).")] = 15,
    n_backgrounds: Annotated[int | None, typer.Option(help="First N backgrounds (4).")] = 4,
    top_n: Annotated[int, typer.Option(help="Top seeds kept per category.")] = 3,
    batch_size: Annotated[int, typer.Option(help="Images per pipeline call.")] = 8,
    save_images: Annotated[Path | None, typer.Option(help="Save PNGs here.")] = None,
    device: Annotated[str, typer.Option(help="Model device.")] = "cpu",
    dtype: Annotated[str, typer.Option(help="float32 | float16 | bfloat16.")] = "float32",
    steps: Annotated[int | None, typer.Option(help="Sampler steps.")] = None,
    guidance: GuidanceOpt = None,
) -> None:
    """Mine seeds: generate prompts x seeds, judge, write results and a summary JSON.

    Under ``torchrun`` each rank mines a slice and rank 0 merges.
    """
    from tamis.seeds.mining import MiningConfig
    from tamis.seeds.mining import mine as run_mine

    device = _device_for_rank(device)
    rank = _init_distributed(device)
    gen = _generator(pipeline, world, device, dtype, steps, guidance)
    j = _judge(judge, endpoint, vlm_model, detector, device)
    prompts = _prompts(pipeline is None, kind, "train", objects, n_objects, n_backgrounds)
    cfg = MiningConfig(
        batch_size=batch_size,
        image_dir=str(save_images) if save_images else None,
        progress=rank == 0,
    )
    rows = run_mine(gen, j, prompts, parse_seeds(seeds), out, cfg)
    if rank != 0:
        return
    summary = _summary(rows, top_n)
    from tamis._io import write_text_atomic

    write_text_atomic(out.with_suffix(".summary.json"), json.dumps(summary, indent=2))
    table = Table("category", "top seeds", "chi2 p", "Cramér's V", "acc range")
    for c, seeds_ in summary["top_seeds"].items():
        chi = summary["chi_square"][c]
        sp = summary["spread"].get(c, {})
        table.add_row(
            c,
            ", ".join(map(str, seeds_)),
            f"{chi['p']:.3g}",
            f"{chi['cramers_v']:.3f}",
            f"{sp.get('min', 0):.2f}-{sp.get('max', 0):.2f}",
        )
    console.print(table)
    console.print(f"{len(rows)} images ({summary['failures']} judge failures) -> {out}")


@app.command()
def curate(
    mined: Annotated[Path, typer.Option(help="Mining results JSONL (for the top seeds).")],
    out: Annotated[Path, typer.Option(help="Image folder to write.")] = Path("curated"),
    pipeline: PipelineOpt = None,
    world: WorldOpt = None,
    judge: JudgeOpt = "cnn",
    endpoint: EndpointOpt = None,
    vlm_model: VlmModelOpt = None,
    detector: DetectorOpt = None,
    kind: KindOpt = "both",
    objects: ObjectsOpt = None,
    n_objects: Annotated[int | None, typer.Option(help="First N objects (all).")] = None,
    n_backgrounds: Annotated[int | None, typer.Option(help="First N backgrounds (all).")] = None,
    mode: Annotated[str, typer.Option(help="rectify | filter | none.")] = "rectify",
    top_n: Annotated[int, typer.Option(help="Top seeds per category.")] = 3,
    seed: Annotated[int, typer.Option(help="Seed of the draw among top seeds.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Images per pipeline call.")] = 8,
    device: Annotated[str, typer.Option(help="Model device.")] = "cpu",
    dtype: Annotated[str, typer.Option(help="float32 | float16 | bfloat16.")] = "float32",
    steps: Annotated[int | None, typer.Option(help="Sampler steps.")] = None,
    guidance: GuidanceOpt = None,
) -> None:
    """Generate the self-curated training folder (images + metadata.jsonl) from top seeds."""
    from tamis.seeds import stats
    from tamis.seeds.curate import CurateConfig
    from tamis.seeds.curate import curate as run_curate
    from tamis.seeds.mining import read_results

    rows = read_results(mined, repair=False)
    if not rows:
        raise typer.BadParameter(f"no mining results in {mined}")
    top = stats.top_seeds(stats.seed_reliability(stats.observations(rows)), top_n)
    gen = _generator(pipeline, world, device, dtype, steps, guidance)
    j = None if mode == "none" else _judge(judge, endpoint, vlm_model, detector, device)
    prompts = _prompts(pipeline is None, kind, "train", objects, n_objects, n_backgrounds)
    prompts = [p for p in prompts if p.category in top]
    meta = run_curate(
        gen, prompts, top, out, j, CurateConfig(mode=mode, seed=seed, batch_size=batch_size)
    )
    console.print(f"{len(meta)} images kept of {len(prompts)} -> {out}/metadata.jsonl")


def _timestep_range(spec: str | None) -> tuple[int, int] | None:
    """``"500:1000"`` -> ``(500, 1000)``; None -> None (every timestep)."""
    if spec is None:
        return None
    low, sep, high = spec.partition(":")
    try:
        if not sep:
            raise ValueError
        return int(low), int(high)
    except ValueError:
        raise typer.BadParameter(f"--timesteps wants LOW:HIGH, got {spec!r}") from None


@app.command()
def finetune(
    data: Annotated[Path, typer.Option(help="Image folder with metadata.jsonl.")],
    out: Annotated[Path, typer.Option(help="Output folder (checkpoints, weights).")] = Path(
        "finetuned"
    ),
    pipeline: PipelineOpt = None,
    world: WorldOpt = None,
    mode: Annotated[str, typer.Option(help="qk | lora | full.")] = "qk",
    blocks: Annotated[str, typer.Option(help="Block filter, e.g. d1d2mu1u2.")] = "d1d2mu1u2",
    projections: Annotated[str, typer.Option(help="qk | qkvo.")] = "qk",
    steps: Annotated[int, typer.Option(help="Optimiser steps.")] = 1000,
    lr: Annotated[float, typer.Option(help="Learning rate.")] = 1e-5,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 4,
    hflip: Annotated[str, typer.Option(help="off | flip | swap.")] = "off",
    ema: Annotated[bool, typer.Option(help="EMA of trained weights.")] = False,
    seed: Annotated[int, typer.Option(help="Training seed.")] = 0,
    checkpoint_every: Annotated[int, typer.Option(help="Steps between checkpoints.")] = 100,
    device: Annotated[str, typer.Option(help="Model device.")] = "cpu",
    timesteps: Annotated[
        str | None,
        typer.Option(help="Train only timesteps LOW:HIGH (e.g. 500:1000); default all."),
    ] = None,
) -> None:
    """Fine-tune on a curated folder (q/k projections by default); resumable in --out."""
    from tamis.seeds.finetune import FinetuneConfig
    from tamis.seeds.finetune import finetune as run_finetune

    cfg = FinetuneConfig(
        mode=mode,
        blocks=blocks,
        projections=projections,
        steps=steps,
        lr=lr,
        batch_size=batch_size,
        hflip=hflip,
        ema=ema,
        seed=seed,
        checkpoint_every=checkpoint_every,
        timesteps=_timestep_range(timesteps),
    )
    gen = _generator(pipeline, world, device, "float32", None, None)
    if pipeline is not None:
        pipe = gen.pipeline
        tok = pipe.tokenizer

        def encode(captions):
            ids = tok(
                captions,
                padding="max_length",
                truncation=True,
                max_length=tok.model_max_length,
                return_tensors="pt",
            ).input_ids
            return pipe.text_encoder(ids.to(device))[0]

        from diffusers import DDPMScheduler

        noise_sched = DDPMScheduler.from_config(pipe.scheduler.config)
        denoiser = getattr(pipe, "unet", None) or pipe.transformer
        hist = run_finetune(
            denoiser, encode, noise_sched, data, None, cfg, vae=pipe.vae, out_dir=out
        )
        pipe.save_pretrained(str(out / "pipeline"))
    else:
        from tamis.seeds.world.model import train_scheduler

        hist = run_finetune(
            gen.unet, gen.encode_text, train_scheduler(), data, None, cfg, out_dir=out
        )
        from tamis.seeds.world.model import save_model

        sampling = {"steps": gen.settings.steps, "guidance": gen.settings.guidance}
        save_model(
            out / "world",
            gen.unet,
            gen.text_encoder,
            gen.tokenizer,
            extra={"sampling": sampling, "finetune": asdict(cfg)},
            fp16=False,
        )
    console.print(f"{hist['n_trained']} parameters trained, final loss {hist['loss'][-1]:.4f}")


@app.command()
def evaluate(
    out: Annotated[Path, typer.Option(help="Folder for results JSONL and the JSON report.")] = Path(
        "evaluation"
    ),
    pipeline: PipelineOpt = None,
    world: WorldOpt = None,
    judge: JudgeOpt = "checker",
    endpoint: EndpointOpt = None,
    vlm_model: VlmModelOpt = None,
    detector: DetectorOpt = None,
    kind: KindOpt = "both",
    seeds: SeedsOpt = "1000-1004",
    objects: ObjectsOpt = None,
    n_objects: Annotated[int | None, typer.Option(help="First N objects (all).")] = None,
    n_backgrounds: Annotated[int | None, typer.Option(help="First N backgrounds (all).")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per pipeline call.")] = 8,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples.")] = 1000,
    base: Annotated[
        Path | None, typer.Option(help="Base arm's results.jsonl: also report relative gains.")
    ] = None,
    device: Annotated[str, typer.Option(help="Model device.")] = "cpu",
    dtype: Annotated[str, typer.Option(help="float32 | float16 | bfloat16.")] = "float32",
    steps: Annotated[int | None, typer.Option(help="Sampler steps.")] = None,
    guidance: GuidanceOpt = None,
) -> None:
    """Accuracy per category (bootstrap CI over prompts) on the evaluation split."""
    from tamis._io import write_text_atomic
    from tamis.seeds.evaluate import accuracy_report, relative_gains
    from tamis.seeds.mining import MiningConfig, read_results
    from tamis.seeds.mining import mine as run_mine

    gen = _generator(pipeline, world, device, dtype, steps, guidance)
    j = _judge(judge, endpoint, vlm_model, detector, device)
    prompts = _prompts(pipeline is None, kind, "eval", objects, n_objects, n_backgrounds)
    out.mkdir(parents=True, exist_ok=True)
    rows = run_mine(
        gen,
        j,
        prompts,
        parse_seeds(seeds),
        out / "results.jsonl",
        MiningConfig(batch_size=batch_size),
    )
    report = accuracy_report(rows, n_boot)
    if base is not None:
        base_rows = read_results(base, repair=False)
        if not base_rows:
            raise typer.BadParameter(f"no results in --base {base}")
        report["relative_gain"] = relative_gains(base_rows, rows, n_boot)
    write_text_atomic(out / "evaluation.json", json.dumps(report, indent=2))
    table = Table("category", "accuracy", "95% CI", "images", "failures")
    for name, r in {**report["categories"], **report["kinds"]}.items():
        acc = "n/a" if r["accuracy"] is None else f"{r['accuracy']:.3f}"
        ci = "n/a" if r["lo"] is None else f"[{r['lo']:.3f}, {r['hi']:.3f}]"
        table.add_row(name, acc, ci, str(r["n"]), str(r["failures"]))
    console.print(table)
    for k, g in report.get("relative_gain", {}).items():
        console.print(f"relative gain ({k}): {g['gain']:+.3f} [{g['lo']:+.3f}, {g['hi']:+.3f}]")
    console.print(f"-> {out / 'evaluation.json'}")
