"""Tokenizer, text encoder, model folder round trip and the ImageGenerator interface."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tamis.seeds.generation import ImageGenerator, initial_latents
from tamis.seeds.world import model as wm
from tamis.seeds.world.captions import vocabulary
from tamis.seeds.world.text import TextEncoder, WordTokenizer


def test_tokenizer_round_trip_and_unknown_words(tmp_path) -> None:
    tok = WordTokenizer(vocabulary())
    text = "three red circles, on a cream background"
    ids = tok.encode(text)
    assert len(ids) == tok.max_length and ids[0] == tok.ids["[BOS]"]
    assert tok.decode(ids) == text
    unk = tok.encode("three zebra circles")
    assert unk[2] == tok.ids["[UNK]"]
    assert tok.decode(unk) == "three circles"
    assert tok.encode("") == [tok.ids["[BOS]"]] + [0] * (tok.max_length - 1)
    assert tok.encode("Three RED circles") == tok.encode("three red circles")
    tok.save(tmp_path / "tok.json")
    again = WordTokenizer.load(tmp_path / "tok.json")
    assert again.words == tok.words and again(["a red circle"]).equal(tok(["a red circle"]))
    with pytest.raises(TypeError, match="list"):
        tok("a red circle")
    with pytest.raises(ValueError, match="duplicate"):
        WordTokenizer(["a", "a"])
    with pytest.raises(ValueError, match="special"):
        WordTokenizer(["[PAD]"])


@settings(max_examples=10, deadline=None)
@given(words=st.lists(st.sampled_from(vocabulary()), max_size=20))
def test_tokenizer_truncates_and_decodes(words: list[str]) -> None:
    tok = WordTokenizer(vocabulary())
    ids = tok.encode(" ".join(words))
    assert len(ids) == tok.max_length
    kept = [w for w in words][: tok.max_length - 1]
    assert tok.decode(ids).replace(",", " ,").split() == kept


def _tiny_generator(steps: int = 3) -> wm.ShapesWorldGenerator:
    torch.manual_seed(0)
    tok = WordTokenizer(vocabulary())
    enc = TextEncoder(tok.vocab_size, tok.max_length)
    return wm.ShapesWorldGenerator(wm.build_unet(16), enc, tok, steps=steps, guidance=2.0,
                                   batch_size=2)


def test_generator_interface_determinism_and_round_trip(tmp_path) -> None:
    gen = _tiny_generator()
    for name in ImageGenerator.__annotations__.keys() | {"fingerprint", "scheduler_info",
                                                          "latent_shape", "generate"}:
        assert hasattr(gen, name), name
    assert gen.latent_shape() == (3, 16, 16)
    assert gen.scheduler_info()["class"] == "DDIMScheduler"
    lat = initial_latents([1, 2, 3], gen.latent_shape())
    prompts = ["two red circles", "a red circle on the left of a blue square", ""]
    a = gen.generate(prompts, lat)
    assert a.dtype == np.uint8 and a.shape == (3, 16, 16, 3)
    # batch-independent: image 2 alone equals image 2 in the batch
    assert np.array_equal(gen.generate(prompts[1:2], lat[1:2]), a[1:2])
    wm.save_model(tmp_path / "m", gen.unet, gen.text_encoder, gen.tokenizer, fp16=False)
    back = wm.ShapesWorldGenerator.load(tmp_path / "m", steps=3, guidance=2.0)
    assert back.fingerprint() == gen.fingerprint()
    assert np.array_equal(back.generate(prompts, lat), a)
    wm.save_model(tmp_path / "h", gen.unet, gen.text_encoder, gen.tokenizer, fp16=True)
    half = wm.ShapesWorldGenerator.load(tmp_path / "h", steps=3, guidance=2.0)
    assert np.array_equal(half.generate(prompts, lat),
                          wm.ShapesWorldGenerator.load(tmp_path / "h", steps=3,
                                                       guidance=2.0).generate(prompts, lat))


def test_generator_bad_input(tmp_path) -> None:
    gen = _tiny_generator()
    with pytest.raises(ValueError, match="latents"):
        gen.generate(["a"], torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="prompts"):
        gen.generate(["a", "b"], torch.zeros(1, 3, 16, 16))
    with pytest.raises(FileNotFoundError, match="not a shapes-world model"):
        wm.ShapesWorldGenerator.load(tmp_path)
    with pytest.raises(ValueError, match="steps"):
        wm.ShapesWorldGenerator(gen.unet, gen.text_encoder, gen.tokenizer, steps=0)
    with pytest.raises(ValueError, match="uint8"):
        wm.to_model(np.zeros((1, 4, 4, 3)))


def test_unet_matches_the_note() -> None:
    unet = wm.build_unet(32)
    n = sum(p.numel() for p in unet.parameters())
    assert 1.3e6 < n < 1.5e6
    attn = [name for name, _ in unet.named_modules() if name.endswith("attn2")]
    assert attn and all(name.startswith(("down_blocks.2", "mid_block", "up_blocks.0"))
                        for name in attn)
