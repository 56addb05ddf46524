"""Curation on the tiny pipeline: top-seed draws, rectification, filtering, resumable folder."""

from __future__ import annotations

import json

import pytest

from seeds.toy import ToyJudge
from tamis.seeds.curate import CurateConfig, curate, draw_seeds, rectify_caption
from tamis.seeds.finetune import load_image_folder
from tamis.seeds.judges.base import Verdict
from tamis.seeds.prompts import ObjectName, numerical_prompts, spatial_prompts

APPLE, CAT = ObjectName("apple", "apples", "an"), ObjectName("cat", "cats")
PROMPTS = numerical_prompts([APPLE, CAT], ["in town"], counts=(2, 3)) + spatial_prompts(
    [(APPLE, CAT)], ["left of", "under"]
)
TOP = {"count=2": [3, 4], "count=3": [5], "relation=left of": [6], "relation=under": [7]}


def test_rectify_caption():
    p = PROMPTS[0]  # "two apples, in town"
    assert rectify_caption(p, Verdict.of(p.question, 3)) == "three apples, in town"
    assert rectify_caption(p, Verdict.of(p.question, 1)) == "one apple, in town"
    assert rectify_caption(p, Verdict.of(p.question, 0)) is None
    s = PROMPTS[4]  # "an apple on the left of a cat"
    wrong = Verdict.of(s.question, False, relation_seen="right of")
    assert rectify_caption(s, wrong) == "an apple on the right of a cat"
    assert rectify_caption(s, Verdict.of(s.question, False)) is None


def test_draw_seeds_from_top():
    seeds = draw_seeds(PROMPTS, TOP, seed=1)
    assert seeds[:2] in ([3, 3], [3, 4], [4, 3], [4, 4]) and seeds[2] == 5
    assert draw_seeds(PROMPTS, TOP, seed=1) == seeds
    with pytest.raises(ValueError, match="no top seeds for category 'count=2'"):
        draw_seeds(PROMPTS, {}, 0)


@pytest.mark.parametrize("mode", ["rectify", "filter", "none"])
def test_curate_folder(tiny_generator, tmp_path, mode):
    cfg = CurateConfig(mode=mode, batch_size=3, progress=False)
    meta = curate(tiny_generator, PROMPTS, TOP, tmp_path, ToyJudge(), cfg)
    log = [json.loads(line) for line in (tmp_path / "curation.jsonl").read_text().splitlines()]
    assert len(log) == len(PROMPTS)
    images, captions = load_image_folder(tmp_path)
    assert images.shape == (len(meta), 16, 16, 3) and captions == [m["text"] for m in meta]
    if mode == "filter":
        assert all(r["verdict"]["correct"] for r in log if r["file_name"])
    if mode == "none":
        assert captions == [p.text for p in PROMPTS]
    if mode == "rectify":
        for r in log:
            if r["action"] == "rectified":
                assert r["text"] != r["prompt"]["text"]
    # a rerun (resume) changes nothing
    assert curate(tiny_generator, PROMPTS, TOP, tmp_path, ToyJudge(), cfg) == meta


def test_needs_judge(tiny_generator, tmp_path):
    with pytest.raises(ValueError, match="needs a judge"):
        curate(tiny_generator, PROMPTS, TOP, tmp_path, None, CurateConfig(mode="filter"))
    with pytest.raises(ValueError, match="unknown curation mode"):
        CurateConfig(mode="x")


def test_curated_folder_loads_as_a_datasets_imagefolder(tiny_generator, tmp_path):
    """What diffusers' train_text_to_image.py does with --train_data_dir (where installed)."""
    datasets = pytest.importorskip("datasets")
    meta = curate(tiny_generator, PROMPTS, TOP, tmp_path, None,
                  CurateConfig(mode="none", batch_size=3, progress=False))
    ds = datasets.load_dataset("imagefolder", data_dir=str(tmp_path), split="train")
    assert len(ds) == len(meta) and ds[0]["image"].size == (16, 16)
    assert sorted(ds["text"]) == sorted(m["text"] for m in meta)
