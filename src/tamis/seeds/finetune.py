"""Fine-tuning on a (self-curated) image set: attention q/k only (the paper), LoRA or full.

Standard denoising MSE with the scheduler's ``prediction_type`` (epsilon / v_prediction /
sample); the VAE and text encoder are frozen (text embeddings and latents are computed once);
gradients clipped to ``max_grad_norm``; optional EMA of the trained parameters; horizontal flip
off by default (spatial data), or ``"swap"``: flip and swap left/right in the caption.
Checkpoints every ``checkpoint_every`` steps into ``out_dir``; a rerun resumes and gives the
same result as an uninterrupted run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from tamis._diffusion import denoising_target
from tamis._io import atomic_path
from tamis._progress import track

MODES = ("qk", "lora", "full")
HFLIP = ("off", "flip", "swap")
BLOCK_PRESETS = {"d1d2mu1u2", "d0d1d2mu1u2u3", "all"}
PROJECTIONS = {"qk": ("to_q", "to_k"), "qkvo": ("to_q", "to_k", "to_v", "to_out.0")}


@dataclass(frozen=True)
class FinetuneConfig:
    """How to fine-tune.

    Attributes:
        mode: "qk" (attention projections of the chosen blocks; default), "lora" (peft LoRA on
            the same modules) or "full" (every denoiser parameter; ablation).
        blocks: block filter, e.g. "d1d2mu1u2" (down_blocks.1, down_blocks.2, mid_block,
            up_blocks.1, up_blocks.2: the paper's default), "d0d1d2mu1u2u3" or "all".
        projections: "qk" (to_q/to_k of attn1 and attn2) or "qkvo" (plus to_v, to_out).
        steps: optimiser steps.
        lr: AdamW learning rate.
        batch_size: images per step.
        weight_decay: AdamW weight decay.
        max_grad_norm: gradient-norm clip.
        ema: keep an EMA of the trained parameters and write it back at the end.
        ema_decay: EMA decay.
        hflip: "off" (default), "flip" (random horizontal flips) or "swap" (flip and swap
            left/right in the caption).
        lora_rank: LoRA rank (mode "lora").
        seed: seed of batch order, flips, timesteps and noise.
        timesteps: ``(low, high)``: draw training timesteps uniformly from ``low <= t < high``
            only; None (default, the paper's standard loss) draws from every timestep. A high
            range (say the noisiest half) trains the steps at which the layout is decided and
            leaves the low-noise steps, which draw the pixels, as they were: an ablation for
            self-generated sets whose layouts are good but whose pixels are not.
        checkpoint_every: steps between checkpoints (out_dir only).
        progress: show a progress bar.

    """

    mode: str = "qk"
    blocks: str = "d1d2mu1u2"
    projections: str = "qk"
    steps: int = 100
    lr: float = 1e-4
    batch_size: int = 4
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    ema: bool = False
    ema_decay: float = 0.999
    hflip: str = "off"
    lora_rank: int = 4
    seed: int = 0
    timesteps: tuple[int, int] | None = None
    checkpoint_every: int = 50
    progress: bool = True

    def __post_init__(self) -> None:
        """Validate the options (bad values named)."""
        if self.mode not in MODES:
            raise ValueError(f"unknown fine-tuning mode {self.mode!r} (use one of {MODES})")
        if self.hflip not in HFLIP:
            raise ValueError(f"unknown hflip {self.hflip!r} (use one of {HFLIP})")
        if self.projections not in PROJECTIONS:
            raise ValueError(f"unknown projections {self.projections!r} (use 'qk' or 'qkvo')")
        parse_blocks(self.blocks)
        for name in ("steps", "batch_size", "checkpoint_every", "lora_rank"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.timesteps is not None:
            low, high = self.timesteps
            if not 0 <= low < high:
                raise ValueError(f"timesteps must be (low, high) with 0 <= low < high, got "
                                 f"{self.timesteps}")

    def to_dict(self) -> dict:
        """Plain-dict form."""
        return asdict(self)


def parse_blocks(spec: str) -> list[str]:
    """Parse a block filter ("d1d2mu1u2") into tokens ["d1", "d2", "m", "u1", "u2"].

    Raises:
        ValueError: the spec is not made of ``d<i>``, ``m``, ``u<i>`` tokens (or "all").

    """
    if spec == "all":
        return ["all"]
    tokens = re.findall(r"d\d+|u\d+|m", spec)
    if not tokens or "".join(tokens) != spec:
        raise ValueError(
            f"bad block filter {spec!r}: use tokens d<i>, m, u<i> (e.g. 'd1d2mu1u2') or 'all'"
        )
    return tokens


def _block_prefixes(model: torch.nn.Module, spec: str) -> list[str]:
    tokens = parse_blocks(spec)
    if hasattr(model, "transformer_blocks"):
        # PixArt/DiT: the UNet's 9 positions (d0..d3, m, u0..u3) map onto equal slices of the
        # transformer blocks, so "d1d2mu1u2" keeps the middle blocks.
        n = len(model.transformer_blocks)
        if tokens == ["all"]:
            return [f"transformer_blocks.{i}." for i in range(n)]
        position = {"m": 4, **{f"d{i}": i for i in range(4)}, **{f"u{i}": 5 + i for i in range(4)}}
        chosen: list[int] = []
        for tok in tokens:
            if tok not in position:
                raise ValueError(f"block {tok!r} does not exist in a transformer (d0-d3, m, u0-u3)")
            p = position[tok]
            chosen += range(p * n // 9, (p + 1) * n // 9)
        return [f"transformer_blocks.{i}." for i in sorted(set(chosen))]
    if tokens == ["all"]:
        return [""]
    prefixes = []
    n_down = len(getattr(model, "down_blocks", []))
    n_up = len(getattr(model, "up_blocks", []))
    for tok in tokens:
        if tok == "m":
            if getattr(model, "mid_block", None) is not None:
                prefixes.append("mid_block.")
            continue
        index = int(tok[1:])
        if index < (n_down if tok[0] == "d" else n_up):
            prefixes.append(f"{'down' if tok[0] == 'd' else 'up'}_blocks.{index}.")
    return prefixes


def target_modules(model: torch.nn.Module, blocks: str, projections: str = "qk") -> list[str]:
    """Names of the attention projection modules (attn1/attn2) inside the chosen blocks.

    Raises:
        ValueError: no module matches (the filter and model named).

    """
    prefixes = _block_prefixes(model, blocks)
    ends = tuple(
        f".{attn}.{proj}" for attn in ("attn1", "attn2") for proj in PROJECTIONS[projections]
    )
    names = [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
        and name.endswith(ends)
        and any(name.startswith(p) for p in prefixes)
    ]
    if not names:
        raise ValueError(
            f"no attention projections match blocks={blocks!r} projections={projections!r} in "
            f"{type(model).__name__}"
        )
    return names


def select_parameters(model: torch.nn.Module, config: FinetuneConfig) -> list[str]:
    """Set ``requires_grad`` per the mode; return the names of the trained parameters.

    Mode "lora" adds a peft adapter to ``model`` first (its LoRA weights are the ones trained).
    """
    if config.mode == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return [n for n, _ in model.named_parameters()]
    modules = target_modules(model, config.blocks, config.projections)
    for p in model.parameters():
        p.requires_grad_(False)
    if config.mode == "qk":
        names = []
        for name in modules:
            for pname, p in model.get_submodule(name).named_parameters():
                p.requires_grad_(True)
                names.append(f"{name}.{pname}")
        return names
    from peft import LoraConfig, inject_adapter_in_model

    already = any("lora_" in n for n, _ in model.named_parameters())
    if not already:
        lora = LoraConfig(
            r=config.lora_rank, lora_alpha=config.lora_rank, init_lora_weights="gaussian",
            target_modules=modules,
        )
        torch.manual_seed(config.seed)
        inject_adapter_in_model(lora, model)
    names = []
    for name, p in model.named_parameters():
        if "lora_" in name:
            p.requires_grad_(True)
            names.append(name)
    return names


def swap_left_right(caption: str) -> str:
    """Swap the words "left" and "right" in a caption (for horizontally flipped images)."""
    return re.sub(r"\b(left|right)\b", lambda m: "right" if m.group(1) == "left" else "left",
                  caption)


def load_image_folder(folder: str | Path) -> tuple[np.ndarray, list[str]]:
    """Read an image folder with ``metadata.jsonl`` (``file_name``, ``text``).

    Raises:
        FileNotFoundError: no metadata.jsonl.
        ValueError: a bad line or images of different sizes.

    """
    from PIL import Image

    folder = Path(folder)
    meta = folder / "metadata.jsonl"
    if not meta.is_file():
        raise FileNotFoundError(f"{folder} has no metadata.jsonl")
    images, captions = [], []
    for number, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            file_name, text = row["file_name"], row["text"]
        except (ValueError, KeyError) as err:
            raise ValueError(f"{meta}:{number}: bad metadata line ({err})") from None
        images.append(np.asarray(Image.open(folder / file_name).convert("RGB")))
        captions.append(text)
    if not images:
        raise ValueError(f"{meta} lists no images")
    if len({im.shape for im in images}) != 1:
        raise ValueError(f"{folder}: images have different sizes")
    return np.stack(images), captions


def _to_model_input(images: np.ndarray, vae, device) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    if vae is None:
        return x
    out = []
    scale = float(getattr(vae.config, "scaling_factor", 0.18215))
    with torch.no_grad():
        for start in range(0, len(x), 16):
            chunk = x[start : start + 16].to(device, next(vae.parameters()).dtype)
            out.append(vae.encode(chunk).latent_dist.mode().float().cpu() * scale)
    return torch.cat(out)


def _encode(encode_text, captions: list[str]) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for start in range(0, len(captions), 64):
            out.append(encode_text(captions[start : start + 64]).detach().float().cpu())
    return torch.cat(out)


def _predict(model, x, t, emb):
    if hasattr(model, "transformer_blocks"):  # PixArt / DiT: timestep and conditions by name
        cond = {"resolution": None, "aspect_ratio": None}
        return model(x, encoder_hidden_states=emb, timestep=t, added_cond_kwargs=cond).sample
    return model(x, t, encoder_hidden_states=emb).sample


def finetune(
    unet: torch.nn.Module,
    encode_text: Callable[[list[str]], torch.Tensor],
    noise_scheduler,
    images: np.ndarray | str | Path,
    captions: Sequence[str] | None,
    config: FinetuneConfig | None = None,
    vae: torch.nn.Module | None = None,
    out_dir: str | Path | None = None,
) -> dict:
    """Fine-tune ``unet`` in place on ``images`` with ``captions``; return the history.

    Args:
        unet: the denoiser (``UNet2DConditionModel`` or a transformer with
            ``transformer_blocks``), called as ``unet(x, t, encoder_hidden_states=e).sample``.
        encode_text: frozen text encoder, list of captions -> (B, L, D) embeddings.
        noise_scheduler: a diffusers scheduler (``add_noise``, ``config.prediction_type``).
        images: uint8 (N, H, W, 3) or an image folder with metadata.jsonl.
        captions: one per image (ignored for a folder).
        config: options (:class:`FinetuneConfig`).
        vae: frozen VAE for latent models; None for pixel-space models (images in [-1, 1]).
        out_dir: checkpoint folder; an existing checkpoint there is resumed.

    Returns:
        ``{"loss": [...], "steps": n, "trained": [parameter names], "n_trained": count}``.

    """
    config = config or FinetuneConfig()
    if isinstance(images, (str, Path)):
        images, captions = load_image_folder(images)
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    captions = list(captions or [])
    if len(captions) != len(images):
        raise ValueError(f"{len(images)} images but {len(captions)} captions")
    device = next(unet.parameters()).device
    trained = select_parameters(unet, config)
    params = dict(unet.named_parameters())
    trainable = [params[n] for n in trained]
    if vae is not None:
        vae.requires_grad_(False)

    x_plain = _to_model_input(images, vae, device)
    e_plain = _encode(encode_text, captions)
    if config.hflip != "off":
        x_flip = _to_model_input(images[:, :, ::-1], vae, device)
        flipped_caps = captions
        if config.hflip == "swap":
            flipped_caps = [swap_left_right(c) for c in captions]
        e_flip = _encode(encode_text, flipped_caps)

    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    ema = None
    if config.ema:
        from diffusers.training_utils import EMAModel

        ema = EMAModel(trainable, decay=config.ema_decay)
    gen = torch.Generator().manual_seed(config.seed)
    history: dict = {"loss": []}
    start = 0
    ckpt = Path(out_dir) / "checkpoint.pt" if out_dir else None
    if ckpt is not None and ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        saved = {k: v for k, v in state["config"].items() if k not in ("steps", "progress")}
        mine = {k: v for k, v in config.to_dict().items() if k not in ("steps", "progress")}
        if saved != mine:
            raise ValueError(f"{ckpt} was written with a different config: {saved} != {mine}")
        with torch.no_grad():
            for name in trained:
                params[name].copy_(state["params"][name])
        optimizer.load_state_dict(state["optimizer"])
        gen.set_state(state["rng"])
        history = state["history"]
        start = state["step"]
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])

    def save(step: int) -> None:
        if ckpt is None:
            return
        state = {
            "config": config.to_dict(), "step": step, "history": history, "rng": gen.get_state(),
            "params": {n: params[n].detach().cpu().clone() for n in trained},
            "optimizer": optimizer.state_dict(),
            "ema": ema.state_dict() if ema is not None else None,
        }
        with atomic_path(ckpt, suffix=".pt") as tmp:
            torch.save(state, tmp)

    n_train_t = int(noise_scheduler.config.num_train_timesteps)
    t_low, t_high = config.timesteps or (0, n_train_t)
    if t_high > n_train_t:
        raise ValueError(f"timesteps {config.timesteps} exceed the scheduler's {n_train_t} "
                         "training timesteps")
    unet.train()
    n = len(images)
    for step in track(range(start, config.steps), "fine-tuning", total=config.steps - start,
                      enabled=config.progress):
        idx = torch.randint(0, n, (config.batch_size,), generator=gen)
        if config.hflip != "off":
            flip = torch.rand(config.batch_size, generator=gen) < 0.5
            x0 = torch.where(flip[:, None, None, None], x_flip[idx], x_plain[idx])
            emb = torch.where(flip[:, None, None], e_flip[idx], e_plain[idx])
        else:
            x0, emb = x_plain[idx], e_plain[idx]
        t = torch.randint(t_low, t_high, (config.batch_size,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        noisy = noise_scheduler.add_noise(x0, noise, t)
        target = denoising_target(noise_scheduler, x0, noise, t)
        dtype = next(unet.parameters()).dtype
        pred = _predict(unet, noisy.to(device, dtype), t.to(device), emb.to(device, dtype))
        if pred.shape[1] != target.shape[1]:  # learned-variance models (PixArt): epsilon half
            pred = pred[:, : target.shape[1]]
        loss = torch.nn.functional.mse_loss(pred.float(), target.to(device).float())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
        optimizer.step()
        if ema is not None:
            ema.step(trainable)
        history["loss"].append(float(loss.detach()))
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
            save(step + 1)
    if ema is not None:
        ema.copy_to(trainable)
    unet.eval()
    history.update(steps=config.steps, trained=trained, n_trained=sum(p.numel() for p in trainable))
    return history
