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


def test_warm_start_records_its_parent_and_cosine_decays(tmp_path) -> None:
    mod = _script()
    first = tmp_path / "first"
    mod.train(mod.parse_args(["--out", str(first), "--smoke", "--batch-size", "2",
                              "--steps", "4", "--every", "4"]))
    second = tmp_path / "second"
    args = mod.parse_args(["--out", str(second), "--smoke", "--batch-size", "2", "--steps", "4",
                           "--every", "4", "--init", str(first / "model"), "--seed", "1",
                           "--schedule", "cosine", "--warmup", "1", "--lr", "1e-3"])
    # the schedule: warm-up, the peak, then a decay to min_lr_ratio x lr at the last step
    lrs = [mod.learning_rate(args, s) for s in range(4)]
    assert lrs[0] == 1e-3 and lrs[1] == 1e-3 and lrs[1] > lrs[2] > lrs[3]
    assert abs(mod.learning_rate(args, 4) - 1e-3 * args.min_lr_ratio) < 1e-12
    # the warm start begins from the parent's weights, not from a fresh initialisation
    before = ShapesWorldGenerator.load(first / "model").unet.state_dict()
    mod.train(args)
    meta = json.loads((second / "model" / "world_model.json").read_text())
    assert meta["training"]["init"]["path"] == str(first / "model")
    assert meta["training"]["init"]["training"]["step"] == 4
    after = ShapesWorldGenerator.load(second / "model").unet.state_dict()
    key = "conv_in.weight"
    drift = (after[key] - before[key]).abs().max().item()
    fresh = (mod.wm.build_unet(16).state_dict()[key] - before[key]).abs().max().item()
    assert 0 < drift < fresh


def test_load_reads_the_folders_sampling_defaults(tmp_path) -> None:
    import shutil

    from tamis.seeds.world.model import DEFAULT_DIR

    folder = tmp_path / "m"
    shutil.copytree(DEFAULT_DIR, folder)
    meta = json.loads((folder / "world_model.json").read_text())
    meta["sampling"] = {"steps": 7, "guidance": 3.5}
    (folder / "world_model.json").write_text(json.dumps(meta))
    gen = ShapesWorldGenerator.load(folder)
    assert (gen.settings.steps, gen.settings.guidance) == (7, 3.5)
    gen = ShapesWorldGenerator.load(folder, steps=3, guidance=1.0)
    assert (gen.settings.steps, gen.settings.guidance) == (3, 1.0)
    meta.pop("sampling")
    (folder / "world_model.json").write_text(json.dumps(meta))
    gen = ShapesWorldGenerator.load(folder)
    assert (gen.settings.steps, gen.settings.guidance) == (20, 2.0)
