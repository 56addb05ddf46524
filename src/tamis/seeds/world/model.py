"""The shapes world's tiny text-to-image model: pixel-space UNet + word-level text encoder.

``UNet2DConditionModel`` (block_out_channels (32, 64, 64), one layer per block, cross-attention
only at 8x8, cross_attention_dim 64: 1.41M parameters) denoises 32x32 RGB images in [-1, 1];
``DDPMScheduler`` for training, ``DDIMScheduler`` (eta 0) for sampling, so the seed fixes only
the initial noise. Classifier-free guidance uses the empty caption (10% caption dropout in
training). A model folder holds ``unet/`` (``save_pretrained``, safetensors), ``text_encoder.
safetensors``, ``tokenizer.json`` and ``world_model.json`` (text-encoder config, sampling
defaults, training provenance).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from tamis._io import write_text_atomic
from tamis.seeds.generation import GenerationSettings
from tamis.seeds.world.text import TextEncoder, WordTokenizer

DEFAULT_DIR = Path(__file__).resolve().parent.parent / "checkpoints" / "world_base"
TRAIN_TIMESTEPS = 1000
BETA_SCHEDULE = "squaredcos_cap_v2"


def unet_config(sample_size: int = 32) -> dict:
    """The UNet's config (cross-attention at the 8x8 level only, for a 32x32 input)."""
    return dict(
        sample_size=sample_size, in_channels=3, out_channels=3,
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        block_out_channels=(32, 64, 64), layers_per_block=1, cross_attention_dim=64,
        attention_head_dim=8, norm_num_groups=8,
    )


def build_unet(sample_size: int = 32):
    """A freshly initialised UNet (see :func:`unet_config`)."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(**unet_config(sample_size))


def train_scheduler():
    """The DDPM noise scheduler used for (pre)training and fine-tuning."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=TRAIN_TIMESTEPS, beta_schedule=BETA_SCHEDULE,
                         prediction_type="epsilon", clip_sample=True)


def sample_scheduler():
    """The deterministic DDIM sampler (eta 0)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(num_train_timesteps=TRAIN_TIMESTEPS, beta_schedule=BETA_SCHEDULE,
                         prediction_type="epsilon", clip_sample=True, set_alpha_to_one=True)


def to_pixels(x: torch.Tensor) -> np.ndarray:
    """Model space ``(B, 3, H, W)`` in [-1, 1] -> uint8 ``(B, H, W, 3)``."""
    x = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def to_model(images: np.ndarray) -> torch.Tensor:
    """uint8 ``(B, H, W, 3)`` -> float ``(B, 3, H, W)`` in [-1, 1]."""
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 images (B, H, W, 3), got {images.dtype} {images.shape}")
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def save_model(path: str | Path, unet, text_encoder: TextEncoder, tokenizer: WordTokenizer,
               extra: dict | None = None, fp16: bool = True) -> None:
    """Write a model folder (weights in fp16 by default to keep it small)."""
    from safetensors.torch import save_file

    from tamis._io import atomic_path

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if fp16:
        _save_unet_fp16(unet, path / "unet")
    else:
        unet.save_pretrained(path / "unet", safe_serialization=True)
    state = {k: (v.half() if fp16 else v).contiguous() for k, v in
             text_encoder.state_dict().items()}
    with atomic_path(path / "text_encoder.safetensors") as tmp:
        save_file(state, str(tmp))
    tokenizer.save(path / "tokenizer.json")
    meta = {"text_encoder": text_encoder.config, "sample_size": unet.config.sample_size,
            "train_timesteps": TRAIN_TIMESTEPS, "beta_schedule": BETA_SCHEDULE, **(extra or {})}
    write_text_atomic(path / "world_model.json", json.dumps(meta, indent=1))


def _save_unet_fp16(unet, path: Path) -> None:
    import copy

    copy.deepcopy(unet).half().save_pretrained(path, safe_serialization=True)


def load_model(path: str | Path):
    """Read a model folder: ``(unet, text_encoder, tokenizer, meta)`` in float32, eval mode.

    Raises:
        FileNotFoundError: the folder is not a shapes-world model folder.

    """
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file

    path = Path(path)
    for name in ("unet/config.json", "text_encoder.safetensors", "tokenizer.json",
                 "world_model.json"):
        if not (path / name).exists():
            raise FileNotFoundError(f"{path} is not a shapes-world model folder (no {name})")
    meta = json.loads((path / "world_model.json").read_text(encoding="utf-8"))
    unet = UNet2DConditionModel.from_pretrained(path / "unet").float().eval()
    tokenizer = WordTokenizer.load(path / "tokenizer.json")
    enc = TextEncoder(**meta["text_encoder"])
    enc.load_state_dict({k: v.float() for k, v in load_file(path / "text_encoder.safetensors")
                         .items()})
    return unet, enc.eval(), tokenizer, meta


class ShapesWorldGenerator:
    """The world model as an :class:`~tamis.seeds.generation.ImageGenerator`.

    Args:
        unet: the denoiser.
        text_encoder: the caption encoder.
        tokenizer: its tokenizer.
        steps: DDIM steps (eta 0).
        guidance: classifier-free guidance scale (1 = no guidance).
        batch_size: images per forward pass (results do not depend on it).

    """

    def __init__(self, unet, text_encoder: TextEncoder, tokenizer: WordTokenizer,
                 steps: int = 20, guidance: float = 2.0, batch_size: int = 64) -> None:
        """Wrap loaded components."""
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        if guidance < 0:
            raise ValueError(f"guidance must be >= 0, got {guidance}")
        self.unet, self.text_encoder, self.tokenizer = unet.eval(), text_encoder.eval(), tokenizer
        size = int(unet.config.sample_size)
        self.settings = GenerationSettings(height=size, width=size, steps=steps,
                                           guidance=guidance)
        self.batch_size = batch_size
        self.scheduler = sample_scheduler()
        self._fingerprint: str | None = None

    @classmethod
    def load(cls, path: str | Path, steps: int | None = None, guidance: float | None = None,
             **kwargs) -> ShapesWorldGenerator:
        """Load a model folder (see :func:`load_model`).

        ``steps`` / ``guidance`` left at ``None`` take the folder's measured sampling defaults
        (``world_model.json`` -> ``"sampling"``), else 20 DDIM steps and guidance 2.
        """
        unet, enc, tok, meta = load_model(path)
        sampling = meta.get("sampling", {})
        steps = int(sampling.get("steps", 20)) if steps is None else steps
        guidance = float(sampling.get("guidance", 2.0)) if guidance is None else guidance
        return cls(unet, enc, tok, steps=steps, guidance=guidance, **kwargs)

    @classmethod
    def load_default(cls, **kwargs) -> ShapesWorldGenerator:
        """Load the shipped base checkpoint (``tamis/seeds/checkpoints/world_base``)."""
        return cls.load(DEFAULT_DIR, **kwargs)

    def encode_text(self, prompts: Sequence[str]) -> torch.Tensor:
        """Cross-attention context ``(B, L, 64)`` of a list of prompts."""
        return self.text_encoder(self.tokenizer(list(prompts)))

    def fingerprint(self) -> str:
        """SHA-256 over the weights (float32 bytes), the configs and the sampler settings."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for module in (self.unet, self.text_encoder):
                for k, v in sorted(module.state_dict().items()):
                    h.update(k.encode())
                    h.update(v.detach().float().cpu().numpy().tobytes())
            cfg = {k: v for k, v in dict(self.unet.config).items() if not k.startswith("_")}
            h.update(json.dumps(cfg, sort_keys=True, default=str).encode())
            h.update(json.dumps(self.text_encoder.config, sort_keys=True).encode())
            h.update(json.dumps(self.tokenizer.words).encode())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def scheduler_info(self) -> dict:
        """``{"class": "DDIMScheduler", "config": {...}, "eta": 0.0}``."""
        return {"class": type(self.scheduler).__name__,
                "config": json.loads(json.dumps(dict(self.scheduler.config), default=str)),
                "eta": 0.0}

    def latent_shape(self) -> tuple[int, ...]:
        """``(3, 32, 32)``: pixel space, no VAE."""
        size = int(self.unet.config.sample_size)
        return (3, size, size)

    @torch.no_grad()
    def denoise(self, prompts: Sequence[str], latents: torch.Tensor) -> torch.Tensor:
        """Run DDIM from ``latents``; returns model-space images ``(B, 3, H, W)``."""
        sched = sample_scheduler()
        sched.set_timesteps(self.settings.steps)
        cond = self.encode_text(prompts)
        g = self.settings.guidance
        if g != 1.0:
            uncond = self.encode_text([""] * len(prompts))
            ctx = torch.cat([uncond, cond])
        x = latents.float() * sched.init_noise_sigma
        for t in sched.timesteps:
            if g != 1.0:
                eps_u, eps_c = self.unet(torch.cat([x, x]), t, ctx).sample.chunk(2)
                eps = eps_u + g * (eps_c - eps_u)
            else:
                eps = self.unet(x, t, cond).sample
            x = sched.step(eps, t, x, eta=0.0).prev_sample
        return x

    def generate(self, prompts: Sequence[str], latents: torch.Tensor) -> np.ndarray:
        """uint8 ``(B, H, W, 3)`` images from explicit initial noise (deterministic)."""
        prompts = list(prompts)
        if latents.ndim != 4 or tuple(latents.shape[1:]) != self.latent_shape():
            raise ValueError(f"latents must be (B, *{self.latent_shape()}), got "
                             f"{tuple(latents.shape)}")
        if len(prompts) != latents.shape[0]:
            raise ValueError(f"{len(prompts)} prompts for {latents.shape[0]} latents")
        out = []
        for i in range(0, len(prompts), self.batch_size):
            out.append(to_pixels(self.denoise(prompts[i:i + self.batch_size],
                                              latents[i:i + self.batch_size])))
        if not out:
            size = self.latent_shape()[1]
            return np.zeros((0, size, size, 3), np.uint8)
        return np.concatenate(out)
