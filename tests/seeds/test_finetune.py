"""q/k fine-tuning on the tiny SD pipeline: only selected parameters change; resume = straight."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from tamis.seeds.finetune import (
    FinetuneConfig,
    finetune,
    parse_blocks,
    swap_left_right,
    target_modules,
)


def _encoder(pipe):
    def encode(captions):
        ids = pipe.tokenizer(
            captions,
            padding="max_length",
            truncation=True,
            max_length=pipe.tokenizer.model_max_length,
            return_tensors="pt",
        )
        return pipe.text_encoder(ids.input_ids)[0]

    return encode


def _data(n=4):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 16, 16, 3), dtype=np.uint8)
    captions = ["two apples", "a cat on the left of a dog", "three cats", "a dog under a cat"]
    return images, captions[:n]


def test_block_filter_and_targets(tiny_generator):
    unet = tiny_generator.pipeline.unet
    assert parse_blocks("d1d2mu1u2") == ["d1", "d2", "m", "u1", "u2"]
    with pytest.raises(ValueError, match="bad block filter"):
        parse_blocks("x1")
    names = target_modules(unet, "d1d2mu1u2")
    assert names and all(n.split(".")[-1] in ("to_q", "to_k") for n in names)
    assert {n.split(".attn")[0].rsplit(".attentions", 1)[0] for n in names} <= {
        "down_blocks.1",
        "down_blocks.2",
        "mid_block",
        "up_blocks.1",
        "up_blocks.2",
    }
    assert any(".attn1." in n for n in names) and any(".attn2." in n for n in names)
    assert len(target_modules(unet, "d1d2mu1u2", "qkvo")) == 2 * len(names)
    with pytest.raises(ValueError, match="unknown fine-tuning mode"):
        FinetuneConfig(mode="bogus")


def test_qk_changes_only_selected_and_resume_equals_straight(tiny_generator, tmp_path):
    pipe = tiny_generator.pipeline
    images, captions = _data()
    base = copy.deepcopy(pipe.unet)
    cfg = FinetuneConfig(steps=4, batch_size=2, lr=1e-2, checkpoint_every=2, progress=False)

    straight = copy.deepcopy(base)
    hist = finetune(straight, _encoder(pipe), pipe.scheduler, images, captions, cfg, vae=pipe.vae)
    assert len(hist["loss"]) == 4 and all(np.isfinite(hist["loss"]))
    before, after = dict(base.named_parameters()), dict(straight.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and changed <= set(hist["trained"])
    assert all(n.rsplit(".", 1)[0].endswith(("to_q", "to_k")) for n in changed)

    resumed = copy.deepcopy(base)
    half = FinetuneConfig(**{**cfg.to_dict(), "steps": 2})
    finetune(resumed, _encoder(pipe), pipe.scheduler, images, captions, half, pipe.vae, tmp_path)
    resumed2 = copy.deepcopy(base)  # a fresh process: weights reloaded from the checkpoint
    h2 = finetune(
        resumed2, _encoder(pipe), pipe.scheduler, images, captions, cfg, pipe.vae, tmp_path
    )
    assert h2["loss"] == pytest.approx(hist["loss"], abs=0)
    for n, p in straight.named_parameters():
        assert torch.equal(p, dict(resumed2.named_parameters())[n]), n


def test_lora_and_swap(tiny_generator):
    pipe = tiny_generator.pipeline
    images, captions = _data()
    unet = copy.deepcopy(pipe.unet)
    cfg = FinetuneConfig(mode="lora", steps=2, batch_size=2, hflip="swap", progress=False)
    hist = finetune(unet, _encoder(pipe), pipe.scheduler, images, captions, cfg, vae=pipe.vae)
    assert hist["trained"] and all("lora_" in n for n in hist["trained"])
    assert swap_left_right("a cat on the left of a dog") == "a cat on the right of a dog"
    assert swap_left_right("right, left leftover") == "left, right leftover"


def test_full_and_ema_modes(tiny_generator):
    pipe = tiny_generator.pipeline
    images, captions = _data()
    unet = copy.deepcopy(pipe.unet)
    cfg = FinetuneConfig(
        mode="full", steps=2, batch_size=2, lr=1e-2, ema=True, ema_decay=0.5, progress=False
    )
    hist = finetune(unet, _encoder(pipe), pipe.scheduler, images, captions, cfg, vae=pipe.vae)
    assert hist["n_trained"] == sum(p.numel() for p in pipe.unet.parameters())
    before = dict(pipe.unet.named_parameters())
    changed = {n for n, p in unet.named_parameters() if not torch.equal(p, before[n])}
    assert any("conv_in" in n for n in changed)  # not only attention
    with pytest.raises(ValueError, match="3 captions"):
        finetune(unet, _encoder(pipe), pipe.scheduler, images, captions[:3], cfg, vae=pipe.vae)


def test_timestep_range_is_the_only_range_drawn(tiny_generator):
    pipe = tiny_generator.pipeline
    images, captions = _data()
    seen = []

    class Recording(type(pipe.scheduler)):
        def add_noise(self, x0, noise, t):
            seen.extend(int(v) for v in t)
            return super().add_noise(x0, noise, t)

    sched = Recording.from_config(pipe.scheduler.config)
    cfg = FinetuneConfig(steps=6, batch_size=4, timesteps=(700, 1000), progress=False)
    finetune(copy.deepcopy(pipe.unet), _encoder(pipe), sched, images, captions, cfg, vae=pipe.vae)
    assert len(seen) == 24 and min(seen) >= 700 and max(seen) < 1000
    seen.clear()
    cfg = FinetuneConfig(steps=6, batch_size=4, progress=False)
    finetune(copy.deepcopy(pipe.unet), _encoder(pipe), sched, images, captions, cfg, vae=pipe.vae)
    assert min(seen) < 700  # the default draws every timestep
    for bad in ((500, 500), (-1, 10)):
        with pytest.raises(ValueError, match="timesteps"):
            FinetuneConfig(timesteps=bad)
    with pytest.raises(ValueError, match="exceed"):
        finetune(copy.deepcopy(pipe.unet), _encoder(pipe), sched, images, captions,
                 FinetuneConfig(steps=1, timesteps=(0, 5000), progress=False), vae=pipe.vae)
