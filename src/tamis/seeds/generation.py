"""Image generators behind one protocol, with explicit, batch-independent initial noise."""

from __future__ import annotations

import hashlib
import inspect
import json
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch


@dataclass(frozen=True)
class GenerationSettings:
    """How images are generated (part of every reproduction record).

    Attributes:
        height: image height in pixels.
        width: image width in pixels.
        steps: number of sampler steps.
        guidance: classifier-free guidance scale.
        generator_device: device of the torch.Generator that draws the initial noise (CPU and
            CUDA generators give different noise for the same seed).
        dtype: model dtype ("float32", "float16", "bfloat16").

    """

    height: int
    width: int
    steps: int
    guidance: float
    generator_device: str = "cpu"
    dtype: str = "float32"

    def to_dict(self) -> dict:
        """Plain-dict form."""
        return asdict(self)


def initial_latents(
    seeds: Sequence[int], shape: tuple[int, ...], device: str = "cpu"
) -> torch.Tensor:
    """Initial noise, one ``torch.Generator(device).manual_seed(s)`` per image.

    Returns a float32 CPU tensor (B, *shape). The same seed always gives the same noise,
    whatever the batch it is drawn in.
    """
    out = []
    for seed in seeds:
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seeds must be non-negative integers, got {seed!r}")
        gen = torch.Generator(device=device).manual_seed(int(seed))
        noise = torch.randn(tuple(shape), generator=gen, device=device, dtype=torch.float32)
        out.append(noise.cpu())
    if not out:
        return torch.zeros((0, *shape), dtype=torch.float32)
    return torch.stack(out)


def noise_hash(latents: torch.Tensor) -> str:
    """SHA-256 of the float32 bytes of one image's initial noise."""
    arr = latents.detach().to("cpu", torch.float32).contiguous().numpy()
    return hashlib.sha256(arr.tobytes()).hexdigest()


class ImageGenerator(Protocol):
    """A text-to-image model driven by explicit initial noise."""

    settings: GenerationSettings

    def fingerprint(self) -> str:
        """Stable hash of the weights and configuration."""
        ...

    def scheduler_info(self) -> dict:
        """``{"class": "DDIMScheduler", "config": {...}}``."""
        ...

    def latent_shape(self) -> tuple[int, ...]:
        """Per-image initial-noise shape, e.g. (4, 64, 64)."""
        ...

    def generate(self, prompts: Sequence[str], latents: torch.Tensor) -> np.ndarray:
        """uint8 (B, H, W, 3) images from the given initial noise (deterministic sampler)."""
        ...


#: Schedulers whose steps draw fresh noise: reproducible only through per-image generators.
STOCHASTIC_SCHEDULERS = frozenset(
    {
        "DDPMScheduler",
        "EulerAncestralDiscreteScheduler",
        "KDPM2AncestralDiscreteScheduler",
        "DPMSolverSDEScheduler",
        "LCMScheduler",
        "TCDScheduler",
        "DDPMWuerstchenScheduler",
    }
)

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _json_safe(value: object) -> object:
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, np.ndarray):
        return value.tolist()
    return repr(value)


def scheduler_is_stochastic(scheduler: object) -> bool:
    """True if the scheduler's steps draw fresh noise (ancestral/SDE samplers, DDPM)."""
    return type(scheduler).__name__ in STOCHASTIC_SCHEDULERS


def check_pipeline_dir(path: str | Path) -> Path:
    """Check that ``path`` is a saved diffusers pipeline; return it as a Path.

    Raises:
        FileNotFoundError: the directory does not exist.
        ValueError: no ``model_index.json``, or a component folder it names is missing.

    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"pipeline directory {path} does not exist")
    index = path / "model_index.json"
    if not index.is_file():
        raise ValueError(
            f"{path} is not a diffusers pipeline: model_index.json is missing "
            "(save one with pipeline.save_pretrained(path))"
        )
    try:
        spec = json.loads(index.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{index} is not valid JSON: {err}") from None
    missing = [
        name
        for name, value in spec.items()
        if not name.startswith("_")
        and isinstance(value, list)
        and value[0] is not None
        and not (path / name).is_dir()
    ]
    if missing:
        raise ValueError(
            f"{path} is not a complete pipeline: missing component folder(s) {missing}"
        )
    return path


class DiffusersGenerator:
    """Any diffusers text-to-image pipeline, driven by explicit initial latents.

    Works with StableDiffusionPipeline (1.x/2.x) and PixArtAlphaPipeline (any pipeline whose
    ``__call__`` accepts ``prompt``, ``latents``, ``height``, ``width``,
    ``num_inference_steps``, ``guidance_scale`` and ``output_type``). The safety checker is off.
    """

    def __init__(self, pipeline: object, settings: GenerationSettings, device: str = "cpu"):
        """Wrap a loaded pipeline (see :meth:`from_pretrained`)."""
        self.pipeline = pipeline
        self.settings = settings
        self.device = device
        self._fingerprint: str | None = None
        if hasattr(pipeline, "safety_checker"):
            pipeline.safety_checker = None
        if hasattr(pipeline, "set_progress_bar_config"):
            pipeline.set_progress_bar_config(disable=True)
        self.stochastic = scheduler_is_stochastic(pipeline.scheduler)
        if self.stochastic:
            warnings.warn(
                f"scheduler {type(pipeline.scheduler).__name__} is stochastic: images are "
                "reproducible only with the same per-image generators (recorded), and depend on "
                "the generator device",
                stacklevel=2,
            )
        denoiser = getattr(pipeline, "unet", None) or getattr(pipeline, "transformer", None)
        if denoiser is None:
            raise ValueError(f"pipeline {type(pipeline).__name__} has neither unet nor transformer")
        self.denoiser = denoiser
        self.vae_scale_factor = int(getattr(pipeline, "vae_scale_factor", 8))
        if settings.height % self.vae_scale_factor or settings.width % self.vae_scale_factor:
            raise ValueError(
                f"height/width ({settings.height}x{settings.width}) must be multiples of the "
                f"VAE scale factor {self.vae_scale_factor}"
            )
        self._call_params = set(inspect.signature(type(pipeline).__call__).parameters)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        device: str = "cpu",
        dtype: str = "float32",
        height: int | None = None,
        width: int | None = None,
        steps: int = 50,
        guidance: float = 7.5,
        generator_device: str = "cpu",
    ) -> DiffusersGenerator:
        """Load ``DiffusionPipeline.from_pretrained(path)`` from a LOCAL directory.

        Height/width default to the denoiser's native resolution.

        Raises:
            ValueError / FileNotFoundError: ``path`` is not a saved pipeline (names what is
                missing), or an unknown dtype.

        """
        from diffusers import DiffusionPipeline

        path = check_pipeline_dir(path)
        if dtype not in _DTYPES:
            raise ValueError(f"unknown dtype {dtype!r} (use one of {sorted(_DTYPES)})")
        pipe = DiffusionPipeline.from_pretrained(
            str(path), dtype=_DTYPES[dtype], local_files_only=True
        )
        pipe = pipe.to(device)
        denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
        native = int(denoiser.config.sample_size) * int(getattr(pipe, "vae_scale_factor", 8))
        settings = GenerationSettings(
            height=height or native, width=width or native, steps=steps, guidance=guidance,
            generator_device=generator_device, dtype=dtype,
        )
        return cls(pipe, settings, device=device)

    def latent_shape(self) -> tuple[int, ...]:
        """(channels, height / vae_scale_factor, width / vae_scale_factor)."""
        channels = int(self.denoiser.config.in_channels)
        f = self.vae_scale_factor
        return (channels, self.settings.height // f, self.settings.width // f)

    def scheduler_info(self) -> dict:
        """The scheduler's class name and config."""
        sched = self.pipeline.scheduler
        return {"class": type(sched).__name__, "config": _json_safe(dict(sched.config))}

    def fingerprint(self) -> str:
        """SHA-256 over every component's config, weights and tokenizer vocabulary (cached)."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            for name, comp in sorted(self.pipeline.components.items()):
                h.update(name.encode())
                config = getattr(comp, "config", None)
                if config is not None and hasattr(config, "items"):
                    cfg = {k: v for k, v in dict(config).items() if not str(k).startswith("_")}
                    h.update(json.dumps(_json_safe(cfg), sort_keys=True).encode())
                elif config is not None and hasattr(config, "to_dict"):
                    cfg = {k: v for k, v in config.to_dict().items() if not k.startswith("_")}
                    cfg.pop("transformers_version", None)
                    h.update(json.dumps(_json_safe(cfg), sort_keys=True).encode())
                if hasattr(comp, "get_vocab"):  # a tokenizer: its vocabulary and limits
                    h.update(json.dumps(sorted(comp.get_vocab().items())).encode())
                    h.update(str(getattr(comp, "model_max_length", "")).encode())
                if isinstance(comp, torch.nn.Module):
                    for key, tensor in sorted(comp.state_dict().items()):
                        h.update(key.encode())
                        t = tensor.detach().cpu().contiguous()
                        h.update(str(t.dtype).encode())
                        if t.numel():
                            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    def invalidate_fingerprint(self) -> None:
        """Forget the cached fingerprint (call after changing the weights)."""
        self._fingerprint = None

    def generate(
        self, prompts: Sequence[str], latents: torch.Tensor, seeds: Sequence[int] | None = None
    ) -> np.ndarray:
        """uint8 (B, H, W, 3) images, one pipeline call for the batch.

        ``seeds`` seed the per-image step generators of stochastic schedulers (on the
        recorded generator device, ``seed + 1``); deterministic schedulers ignore them.
        """
        if len(prompts) != latents.shape[0]:
            raise ValueError(f"{len(prompts)} prompts but {latents.shape[0]} latents")
        if tuple(latents.shape[1:]) != self.latent_shape():
            raise ValueError(
                f"latents shape {tuple(latents.shape[1:])} != expected {self.latent_shape()}"
            )
        if len(prompts) == 0:
            return np.zeros((0, self.settings.height, self.settings.width, 3), np.uint8)
        s = self.settings
        kwargs: dict = {
            "prompt": list(prompts),
            "latents": latents.to(self.device, _DTYPES[s.dtype]),
            "height": s.height,
            "width": s.width,
            "num_inference_steps": s.steps,
            "guidance_scale": s.guidance,
            "output_type": "np",
        }
        if "use_resolution_binning" in self._call_params:
            kwargs["use_resolution_binning"] = False
        if "clean_caption" in self._call_params:
            kwargs["clean_caption"] = False  # PixArt: the prompt is used exactly as recorded
        if "eta" in self._call_params:
            kwargs["eta"] = 0.0
        if seeds is not None:
            kwargs["generator"] = [
                torch.Generator(device=s.generator_device).manual_seed(int(x) + 1) for x in seeds
            ]
        with torch.no_grad():
            images = self.pipeline(**kwargs).images
        images = np.asarray(images, dtype=np.float32)
        return (np.clip(images, 0.0, 1.0) * 255).round().astype(np.uint8)
