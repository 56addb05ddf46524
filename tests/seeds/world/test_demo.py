"""The demo section builds (with a tiny stand-in model) and degrades gracefully."""

from __future__ import annotations

import torch

from tamis.seeds import demo
from tamis.seeds.world import model as wm
from tamis.seeds.world.captions import vocabulary
from tamis.seeds.world.text import TextEncoder, WordTokenizer


def test_demo_section_builds_with_a_tiny_model(tmp_path, monkeypatch) -> None:
    torch.manual_seed(0)
    tok = WordTokenizer(vocabulary())
    tiny = wm.ShapesWorldGenerator(wm.build_unet(16), TextEncoder(tok.vocab_size), tok, steps=1)
    monkeypatch.setattr(wm.ShapesWorldGenerator, "load_default", classmethod(lambda cls, **k: tiny))
    monkeypatch.setattr(demo, "RESULTS", tmp_path / "no_results")
    monkeypatch.setattr(demo, "FT_DIR", tmp_path / "no_ft")
    section = demo.demo_section(tmp_path)
    assert section.error is None
    assert (tmp_path / "seeds_grid.png").exists() and (tmp_path / "seeds_heatmaps.png").exists()
    assert "seeds_arms.md is missing" in section.body_html
    assert "No fine-tuned checkpoint" in section.body_html
    assert any("chi2" in line for line in section.console)


def test_demo_section_reports_a_missing_checkpoint(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(wm, "DEFAULT_DIR", tmp_path / "nothing")
    section = demo.demo_section(tmp_path)
    assert section.error and "checkpoint missing" in section.error
