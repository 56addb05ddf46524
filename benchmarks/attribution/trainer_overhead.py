"""Overhead of collecting the store during training: plain Trainer.train() vs StoreCallback.

Same model (a GPT-2 architecture built from a config: 4 layers, 256 hidden, 4 heads), same
random-token data (sequence 128, batch 8), same seed, in ONE process; runs alternate
(plain, callback, plain, callback, ...) so drift of a shared machine hits both arms alike.
Step time = interval between consecutive ``on_step_begin`` events (forward, backward,
optimizer, callbacks, data loading), first ``--warmup`` steps dropped; the callback arm's
store write at the end of the epoch is reported separately (``train()`` wall time).
bergson reports ~17 % for its Trainer callback (README of EleutherAI/bergson).

Reproduce: .venv/bin/python benchmarks/attribution/trainer_overhead.py
Writes benchmarks/results/attribution_trainer_overhead.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers

from tamis.attribution import FactorStore
from tamis.attribution.presets import preset
from tamis.attribution.trainer import StoreCallback

RESULTS = Path(__file__).resolve().parents[1] / "results"
EK = preset("ekfac").factors


class StepTimer(transformers.TrainerCallback):
    """Wall-clock times of ``on_step_begin`` events."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_step_begin(self, args, state, control, **kwargs) -> None:  # noqa: ANN001, D102
        self.times.append(time.perf_counter())

    def on_train_end(self, args, state, control, **kwargs) -> None:  # noqa: ANN001, D102
        self.times.append(time.perf_counter())


def make_model(args: argparse.Namespace) -> torch.nn.Module:
    """The benchmark model, identical for every run (seeded)."""
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=args.vocab, n_positions=args.seq,
                                  n_embd=args.hidden, n_layer=args.layers, n_head=4)
    return transformers.GPT2LMHeadModel(cfg)


ARMS = {  # name: StoreCallback arguments (None = plain training)
    "plain": None,
    "during (ekfac, default)": {"method": "ekfac"},
    "during (lorif)": {"method": "lorif"},
    "end (ekfac)": {"method": "ekfac", "when": "end"},
}


def run(args: argparse.Namespace, data: list[dict], arm: str, tmp: Path, rep: int) -> dict:
    """One training run; returns step times and wall time."""
    callback = ARMS[arm]
    model = make_model(args)
    timer = StepTimer()
    targs = transformers.TrainingArguments(
        output_dir=str(tmp / f"out{rep}"), per_device_train_batch_size=args.batch,
        num_train_epochs=1, learning_rate=1e-4, use_cpu=True, report_to=[],
        save_strategy="no", logging_strategy="no", dataloader_num_workers=0,
        disable_tqdm=True, seed=0)
    trainer = transformers.Trainer(model=model, args=targs, train_dataset=data,
                                   callbacks=[timer])
    store = tmp / f"store{rep}-{len(arm)}"
    if callback is not None:
        StoreCallback(store, **callback).attach(trainer)
    t0 = time.perf_counter()
    trainer.train()
    wall = time.perf_counter() - t0
    steps = [b - a for a, b in zip(timer.times, timer.times[1:])][args.warmup:]
    out = {"arm": arm, "wall_s": wall,
           "median_step_s": statistics.median(steps), "steps_s": steps}
    if callback is not None:
        s = FactorStore.open(store)
        out["store_bytes"] = s.disk_bytes
        out["store_rank_per_layer"] = sorted({lay["rank"] for lay in s.layers})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=14)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, args.vocab, (args.steps * args.batch, args.seq), generator=g)
    data = [{"input_ids": x, "attention_mask": torch.ones_like(x), "labels": x} for x in ids]
    load0 = os.getloadavg()
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for arm in ARMS:
                r = run(args, data, arm, Path(tmp), rep)
                runs.append(r)
                print(f"rep {rep} {r['arm']:24s} median step {r['median_step_s']:.3f} s, "
                      f"train() {r['wall_s']:.1f} s", flush=True)
    med = {arm: statistics.median(r["median_step_s"] for r in runs if r["arm"] == arm)
           for arm in ARMS}
    wall = {arm: statistics.median(r["wall_s"] for r in runs if r["arm"] == arm)
            for arm in ARMS}
    step_pct = {arm: 100 * (med[arm] / med["plain"] - 1) for arm in ARMS}
    wall_pct = {arm: 100 * (wall[arm] / wall["plain"] - 1) for arm in ARMS}
    paired = {arm: [100 * (c["median_step_s"] / p["median_step_s"] - 1)
                    for p, c in zip([r for r in runs if r["arm"] == "plain"],
                                    [r for r in runs if r["arm"] == arm])]
              for arm in ARMS if arm != "plain"}
    result = {
        "command": "PYTHONPATH=src .venv/bin/python " + " ".join(
            ["benchmarks/attribution/trainer_overhead.py", *sys.argv[1:]]),
        "config": vars(args),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "torch": torch.__version__,
                    "transformers": transformers.__version__,
                    "loadavg_start": load0, "loadavg_end": os.getloadavg()},
        "median_step_s": med,
        "step_overhead_pct": step_pct,
        "paired_step_overhead_pct": paired,
        "median_train_wall_s": wall,
        "wall_overhead_pct": wall_pct,
        "bergson_reported_pct": 17,
        "runs": runs,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "attribution_trainer_overhead.json").write_text(json.dumps(result, indent=1))
    ranks = {r["arm"]: (r["store_rank_per_layer"], r["store_bytes"]) for r in runs
             if "store_bytes" in r}
    md = [
        "# StoreCallback overhead vs plain Trainer.train()",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Machine: {result['machine']['platform']}, {os.cpu_count()} CPU cores, "
        f"{args.threads} torch thread(s), torch {torch.__version__}, transformers "
        f"{transformers.__version__}; load average {load0[0]:.2f} at start, "
        f"{result['machine']['loadavg_end'][0]:.2f} at end (a shared machine: other jobs ran).",
        "",
        f"Model: GPT-2 architecture, {args.layers} layers, hidden {args.hidden}, vocab "
        f"{args.vocab}, dropout 0.1 (config default); sequence {args.seq}, batch "
        f"{args.batch}, {args.steps} steps per run ({args.warmup} warm-up steps dropped), "
        f"{args.repeats} runs per arm, arms alternating. ekfac = the default preset (sides "
        f"<= 1024 unprojected, up to {EK.rank} {EK.dtype} factor pairs capped at "
        f"{EK.max_numbers} numbers per layer), lorif = 64 x 64 projection, c = 1, float16.",
        "",
        "| arm | median step (s) | step overhead | median train() wall (s) | wall overhead "
        "| ranks per layer | store MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for arm in ARMS:
        rk, nb = ranks.get(arm, ("-", None))
        md.append(f"| {arm} | {med[arm]:.3f} | {step_pct[arm]:+.1f} % | {wall[arm]:.1f} | "
                  f"{wall_pct[arm]:+.1f} % | {rk} | "
                  f"{'-' if nb is None else f'{nb / 1e6:.1f}'} |")
    md += [
        "",
        "Per-pair step overhead (run r of the arm vs run r of plain): "
        + "; ".join(f"{arm}: " + ", ".join(f"{x:.0f} %" for x in xs)
                    for arm, xs in paired.items()) + ".",
        "",
        "train() wall time includes the store write at the end of the epoch (during) or the "
        "store build pass with the final weights (end). bergson reports ~17 % for its "
        "callback (projected dense gradients, no per-example factorisation).",
        "",
    ]
    (RESULTS / "attribution_trainer_overhead.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
