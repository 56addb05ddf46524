"""A tiny Stable Diffusion pipeline built from configs, saved to disk (never downloaded)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

WORDS = (
    "a an the on of left right top under one two three four five six seven eight nine ten "
    "apple apples cat cats dog dogs in town sky red blue circle circles square squares"
).split()


def write_tokenizer(folder: Path) -> None:
    """Write a word-level CLIP BPE tokenizer (vocab.json, merges.txt) into ``folder``."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    chars = sorted({c for w in WORDS for c in w})
    vocab: dict[str, int] = {}
    for tok in ["<|startoftext|>", "<|endoftext|>", "!", ","]:
        vocab[tok] = len(vocab)
    for c in chars:
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    merges = []
    for w in WORDS:
        # Merge left to right into the whole word with its end marker.
        pieces = list(w[:-1]) + [w[-1] + "</w>"]
        while len(pieces) > 1:
            a, b = pieces[0], pieces[1]
            merges.append(f"{a} {b}")
            pieces = [a + b] + pieces[2:]
            vocab.setdefault(a + b, len(vocab))
    seen, uniq = set(), []
    for m in merges:
        if m not in seen:
            seen.add(m)
            uniq.append(m)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(uniq) + "\n")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16)
    tok.save_pretrained(str(folder))


def build_tiny_sd(folder: Path, seed: int = 0) -> Path:
    """Assemble a tiny StableDiffusionPipeline (32x32 px, 4x4 latents... 8x8) and save it."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    tok_dir = folder.parent / (folder.name + "-tokenizer")
    write_tokenizer(tok_dir)
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir))
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=16,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(8, 16, 16, 16),
        down_block_types=(
            "DownBlock2D",
            "CrossAttnDownBlock2D",
            "CrossAttnDownBlock2D",
            "DownBlock2D",
        ),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16,
        attention_head_dim=2,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 8),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        norm_num_groups=4,
        layers_per_block=1,
        sample_size=16,
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(folder))
    return folder


def build_tiny_pixart(folder: Path, seed: int = 0) -> Path:
    """Assemble a tiny PixArtAlphaPipeline (byte-level T5 tokenizer: no files needed)."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        PixArtAlphaPipeline,
        PixArtTransformer2DModel,
    )
    from transformers import ByT5Tokenizer, T5Config, T5EncoderModel

    torch.manual_seed(seed)
    tok = ByT5Tokenizer()
    text_encoder = T5EncoderModel(
        T5Config(
            vocab_size=tok.vocab_size + 3,
            d_model=16,
            d_kv=8,
            d_ff=32,
            num_layers=1,
            num_heads=2,
            decoder_start_token_id=0,
        )
    )
    transformer = PixArtTransformer2DModel(
        sample_size=8,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        in_channels=4,
        out_channels=8,
        patch_size=2,
        cross_attention_dim=16,
        caption_channels=16,
        norm_num_groups=4,
        num_embeds_ada_norm=1000,
        use_additional_conditions=False,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=(8, 8),
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        norm_num_groups=4,
        layers_per_block=1,
        sample_size=16,
    )
    pipe = PixArtAlphaPipeline(
        tokenizer=tok,
        text_encoder=text_encoder,
        vae=vae,
        transformer=transformer,
        scheduler=DDIMScheduler(steps_offset=1),
    )
    pipe.save_pretrained(str(folder))
    return folder
