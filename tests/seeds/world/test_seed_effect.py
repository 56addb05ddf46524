"""seed_effect.py end to end on a random-weight world model (2 seeds, 2 DDIM steps), resumable."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from tamis.seeds.world.captions import vocabulary
from tamis.seeds.world.model import build_unet, save_model
from tamis.seeds.world.text import TextEncoder, WordTokenizer

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_seed_effect_runs_and_resumes(tmp_path):
    """Statistics and files are written; a rerun mines nothing new and gives the same numbers."""
    sys.path.insert(0, str(ROOT / "benchmarks" / "seeds"))
    import seed_effect

    torch.manual_seed(0)
    tok = WordTokenizer(vocabulary())
    save_model(tmp_path / "m", build_unet(), TextEncoder(tok.vocab_size, tok.max_length), tok)
    prompts = seed_effect.pick_prompts(4, 4)
    assert len(prompts) == 8 and len({p.category for p in prompts}) == 8
    res = tmp_path / "out" / "seeds_seed_effect.json"
    r1 = seed_effect.run(tmp_path / "m", 2, 4, 4, tmp_path / "work", res, steps=2)
    assert r1["n_images"] == 16 and set(r1["chi_square"]) == {p.category for p in prompts}
    assert 0.0 <= r1["cnn_agreement_with_checker"] <= 1.0
    assert res.with_suffix(".png").exists() and "chi2" in res.with_suffix(".md").read_text()
    lines = (tmp_path / "work" / "mined.jsonl").read_text().splitlines()
    r2 = seed_effect.run(tmp_path / "m", 2, 4, 4, tmp_path / "work", res, steps=2)
    assert (tmp_path / "work" / "mined.jsonl").read_text().splitlines() == lines
    assert r2["chi_square"] == r1["chi_square"]
    assert json.loads(res.read_text())["n_images"] == 16
