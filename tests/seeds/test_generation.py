"""DiffusersGenerator over a tiny saved pipeline; records regenerate the same pixels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tamis.seeds.errors import ReproductionError
from tamis.seeds.generation import (
    DiffusersGenerator,
    GenerationSettings,
    check_pipeline_dir,
    initial_latents,
    noise_hash,
)
from tamis.seeds.records import GenerationRecord, generate_with_records, regenerate


def test_initial_latents_batch_independent():
    a = initial_latents([3, 5, 7], (4, 8, 8))
    b = initial_latents([5], (4, 8, 8))
    ref = torch.randn((4, 8, 8), generator=torch.Generator().manual_seed(5))
    assert torch.equal(a[1], b[0]) and torch.equal(b[0], ref)
    assert noise_hash(a[1]) == noise_hash(b[0]) != noise_hash(a[0])
    with pytest.raises(ValueError, match="non-negative"):
        initial_latents([-1], (2,))


def test_loads_by_path_and_generates(tiny_generator):
    g = tiny_generator
    assert g.latent_shape() == (4, 8, 8) and (g.settings.height, g.settings.width) == (16, 16)
    assert g.scheduler_info()["class"] == "DDIMScheduler" and not g.stochastic
    lat = initial_latents([1, 2], g.latent_shape())
    images = g.generate(["two apples", "a cat on the left of a dog"], lat)
    assert images.shape == (2, 16, 16, 3) and images.dtype == np.uint8
    # batch independence: the second image alone equals the second image of the batch
    alone = g.generate(["a cat on the left of a dog"], lat[1:])
    assert np.array_equal(alone[0], images[1])
    assert len(g.fingerprint()) == 64 and g.fingerprint() == g.fingerprint()


def test_fingerprint_covers_the_tokenizer(tiny_sd_dir):
    g = DiffusersGenerator.from_pretrained(tiny_sd_dir, steps=3, guidance=2.0)
    before = g.fingerprint()
    g.pipeline.tokenizer.add_tokens(["zebra-unseen-word"])
    g.invalidate_fingerprint()
    assert g.fingerprint() != before


def test_record_regenerates_same_pixels(tiny_generator, tiny_sd_dir):
    images, records = generate_with_records(tiny_generator, ["two apples", "three cats"], [4, 9])
    rec = GenerationRecord.from_dict(json.loads(json.dumps(records[1].to_dict())))
    again = DiffusersGenerator.from_pretrained(tiny_sd_dir, steps=3, guidance=2.0)
    assert np.array_equal(regenerate(rec, again), images[1])
    assert rec.versions["torch"] == torch.__version__.split("+")[0] or rec.versions["torch"]
    bad = GenerationRecord.from_dict({**rec.to_dict(), "noise_hash": "0" * 64})
    with pytest.raises(ReproductionError, match="noise hash"):
        regenerate(bad, again)
    other = GenerationRecord.from_dict({**rec.to_dict(), "fingerprint": "f" * 64})
    with pytest.raises(ReproductionError, match="fingerprint"):
        regenerate(other, again)
    steps = DiffusersGenerator(again.pipeline, GenerationSettings(16, 16, 4, 2.0))
    with pytest.raises(ReproductionError, match="settings"):
        regenerate(rec, steps)


def test_not_a_pipeline(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_pipeline_dir(tmp_path / "nope")
    with pytest.raises(ValueError, match="model_index.json is missing"):
        DiffusersGenerator.from_pretrained(tmp_path)
    (tmp_path / "model_index.json").write_text(json.dumps({"unet": ["diffusers", "X"]}))
    with pytest.raises(ValueError, match=r"missing component folder\(s\) \['unet'\]"):
        check_pipeline_dir(tmp_path)
    (tmp_path / "model_index.json").write_text("{oops")
    with pytest.raises(ValueError, match="not valid JSON"):
        check_pipeline_dir(tmp_path)


def test_stochastic_scheduler_warns_and_still_reproduces(tiny_generator):
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionPipeline

    p = tiny_generator.pipeline
    sched = EulerAncestralDiscreteScheduler.from_config(p.scheduler.config)
    pipe = StableDiffusionPipeline(**{**p.components, "scheduler": sched})
    with pytest.warns(UserWarning, match="stochastic"):
        gen = DiffusersGenerator(pipe, tiny_generator.settings)
    images, records = generate_with_records(gen, ["two apples", "three cats"], [1, 2])
    assert records[0].scheduler["class"] == "EulerAncestralDiscreteScheduler"
    assert np.array_equal(regenerate(records[1], gen), images[1])
