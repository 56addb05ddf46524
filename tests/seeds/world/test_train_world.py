"""The pretraining script: a smoke run reduces the loss, writes a loadable model and resumes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from tamis.seeds.generation import initial_latents
from tamis.seeds.world.model import ShapesWorldGenerator

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "seeds" / "train_world.py"


def _script():
    spec = importlib.util.spec_from_file_location("train_world", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _losses(out: Path) -> list[tuple[int, float]]:
    rows = [line.split("\t") for line in (out / "loss.tsv").read_text().splitlines()]
    return [(int(r[0]), float(r[1])) for r in rows]


def test_smoke_training_reduces_loss_and_resumes(tmp_path) -> None:
    mod = _script()
    out = tmp_path / "run"
    common = ["--out", str(out), "--smoke", "--batch-size", "4", "--every", "6", "--lr", "2e-3"]
    mod.train(mod.parse_args(common + ["--steps", "12"]))
    losses = _losses(out)
    assert [s for s, _ in losses] == list(range(1, 13))
    assert np.mean([v for _, v in losses[-4:]]) < np.mean([v for _, v in losses[:4]])
    meta = json.loads((out / "model" / "world_model.json").read_text())
    assert meta["training"]["step"] == 12
    # a restart with more steps continues from step 12 (no step is trained twice)
    mod.train(mod.parse_args(common + ["--steps", "18"]))
    assert [s for s, _ in _losses(out)] == list(range(1, 19))
    gen = ShapesWorldGenerator.load(out / "model", steps=2)
    img = gen.generate(["two red circles"], initial_latents([0], gen.latent_shape()))
    assert img.shape == (1, 16, 16, 3) and img.dtype == np.uint8
