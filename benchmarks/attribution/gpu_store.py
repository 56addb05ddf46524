"""Store build on a GPU for a real-size transformer, against its plain training throughput.

Prepared for a session lent an accelerator (issue 11): GPT-2 small (124M parameters,
randomly initialised from ``GPT2Config()``; nothing downloaded) on random token sequences.
In one run, on the same model and batch size:

* plain training: AdamW steps (forward + backward + update) over ``--train-steps`` batches,
  examples per second after ``--warmup`` steps;
* store build: ``build_store`` with the package's default preset (EK-FAC store: sides <= 1,024
  unprojected, up to 16 factor pairs per layer) over ``--n`` examples, examples per second;
* peak GPU memory of each (``torch.cuda.max_memory_allocated``).

``--tiny`` swaps in a 2-layer, 64-wide GPT-2 so the script can be checked on a CPU
(``--device cpu``); the CPU figures it prints mean nothing about GPUs.

    python benchmarks/attribution/gpu_store.py --device cuda --results $OUT
    .venv/bin/python benchmarks/attribution/gpu_store.py --device cpu --tiny --n 64 \
        --train-steps 4 --warmup 1 --results /tmp/gpu_store

Writes ``<results>/attribution_gpu_store.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from tamis.attribution import BuildConfig, build_store
from tamis.attribution.hf import CausalLMTask
from tamis.attribution.presets import DEFAULT_METHOD, PRESETS


def sync(device: torch.device) -> None:
    """Wait for the device's queued kernels (timing)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak(device: torch.device) -> float:
    """Peak allocated GPU memory since the last reset, GiB (0 on CPU)."""
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0


def reset_peak(device: torch.device) -> None:
    """Reset the peak-memory counter."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def make_model(tiny: bool, seq: int):  # noqa: ANN201
    """GPT-2 small (or a tiny stand-in) from a config, random weights, no dropout."""
    from transformers import GPT2Config, GPT2LMHeadModel

    kw = dict(n_positions=max(seq, 64), resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    cfg = GPT2Config(n_layer=2, n_embd=64, n_head=2, vocab_size=512, **kw) if tiny else \
        GPT2Config(**kw)
    torch.manual_seed(0)
    return GPT2LMHeadModel(cfg)


def train_throughput(model, data: TensorDataset, batch: int, steps: int, warmup: int,
                     device: torch.device) -> dict:
    """Examples per second of plain AdamW training on the same batches."""
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids, mask, labels = data.tensors
    times = []
    reset_peak(device)
    for step in range(steps + warmup):
        lo = (step * batch) % (ids.shape[0] - batch + 1)
        b = [t[lo:lo + batch].to(device) for t in (ids, mask, labels)]
        sync(device)
        t0 = time.perf_counter()
        out = model(input_ids=b[0], attention_mask=b[1], labels=b[2])
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        sync(device)
        if step >= warmup:
            times.append(time.perf_counter() - t0)
    del opt
    model.zero_grad(set_to_none=True)
    return {"examples_per_s": batch * len(times) / sum(times), "steps": len(times),
            "peak_gib": peak(device)}


def main() -> None:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--n", type=int, default=4096, help="examples in the store")
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--train-steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--scratch", type=Path, default=Path("/tmp/tamis_gpu_store"))
    args = p.parse_args()
    device = torch.device(args.device)
    model = make_model(args.tiny, args.seq).to(device)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, model.config.vocab_size, (args.n, args.seq), generator=g)
    data = TensorDataset(ids, torch.ones_like(ids), ids.clone())
    params = sum(p.numel() for p in model.parameters())
    train = train_throughput(model, data, args.batch_size, args.train_steps, args.warmup, device)
    print("plain training", train, flush=True)
    preset = PRESETS[DEFAULT_METHOD]
    shutil.rmtree(args.scratch, ignore_errors=True)
    reset_peak(device)
    sync(device)
    t0 = time.perf_counter()
    store = build_store(CausalLMTask(), model, data, args.scratch, preset.projection,
                        preset.factors, BuildConfig(batch_size=args.batch_size,
                                                    shard_size=1024, progress=True),
                        preset=DEFAULT_METHOD)
    sync(device)
    build_s = time.perf_counter() - t0
    build = {"examples_per_s": args.n / build_s, "seconds": build_s, "peak_gib": peak(device),
             "bytes_per_example": store.bytes_per_example, "store_gb": store.disk_bytes / 1e9}
    print("store build", build, flush=True)
    shutil.rmtree(args.scratch, ignore_errors=True)
    res = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "torch": torch.__version__, "machine": platform.platform(), "parameters": params,
           "args": {k: str(v) for k, v in vars(args).items()}, "train": train, "build": build,
           "build_over_train": build["examples_per_s"] / train["examples_per_s"]}
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "attribution_gpu_store.json").write_text(json.dumps(res, indent=1))
    md = "\n".join([
        "# Store build on one accelerator against plain training", "",
        f"Device {res['device']}, torch {res['torch']}; GPT-2 "
        f"{'tiny stand-in' if args.tiny else 'small'} "
        f"({params / 1e6:.0f}M parameters, random init), {args.n:,} sequences of {args.seq} "
        f"tokens, batch {args.batch_size}, default preset ({DEFAULT_METHOD}).", "",
        "| | examples/s | peak memory GiB |", "|---|---|---|",
        f"| plain training (AdamW step) | {train['examples_per_s']:.1f} | "
        f"{train['peak_gib']:.2f} |",
        f"| store build | {build['examples_per_s']:.1f} | {build['peak_gib']:.2f} |", "",
        f"Build throughput = {res['build_over_train']:.2f} x training throughput; store "
        f"{build['bytes_per_example']:,.0f} bytes per example.", ""])
    (args.results / "attribution_gpu_store.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
