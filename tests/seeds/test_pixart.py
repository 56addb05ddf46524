"""A tiny PixArt-alpha pipeline by path: generation, records, q/k fine-tuning."""

from __future__ import annotations

import copy

import numpy as np
import torch

from seeds.tiny_pipeline import build_tiny_pixart
from tamis.seeds.finetune import FinetuneConfig, finetune, target_modules
from tamis.seeds.generation import DiffusersGenerator
from tamis.seeds.records import generate_with_records, regenerate


def test_tiny_pixart(tmp_path):
    path = build_tiny_pixart(tmp_path / "pixart")
    gen = DiffusersGenerator.from_pretrained(path, steps=2, guidance=2.0)
    assert gen.latent_shape() == (4, 8, 8)
    images, records = generate_with_records(gen, ["two apples", "a cat under a dog"], [3, 4])
    assert images.shape == (2, 16, 16, 3)
    assert np.array_equal(regenerate(records[1], gen), images[1])

    pipe = gen.pipeline
    names = target_modules(pipe.transformer, "all")
    assert len(names) == 8 and all("transformer_blocks." in n for n in names)

    def encode(captions):
        ids = pipe.tokenizer(
            captions, padding="max_length", max_length=16, truncation=True, return_tensors="pt"
        ).input_ids
        return pipe.text_encoder(ids)[0]

    model = copy.deepcopy(pipe.transformer)
    cfg = FinetuneConfig(blocks="all", steps=2, batch_size=2, lr=1e-2, progress=False)
    hist = finetune(
        model,
        encode,
        pipe.scheduler,
        images,
        ["two apples", "a cat under a dog"],
        cfg,
        vae=pipe.vae,
    )
    before = dict(pipe.transformer.named_parameters())
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= set(hist["trained"])
