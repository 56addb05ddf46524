"""Reproduction records: everything needed to re-create one generated image exactly."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from tamis.seeds.errors import ReproductionError
from tamis.seeds.generation import ImageGenerator, initial_latents, noise_hash


def software_versions() -> dict[str, str]:
    """Versions of tamis, diffusers and torch (those installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("tamis", "diffusers", "torch", "transformers"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


@dataclass(frozen=True)
class GenerationRecord:
    """The exact recipe of one generated image.

    Attributes:
        prompt: the prompt text.
        seed: the seed of the initial noise.
        generator_device: device of the torch.Generator that drew the noise.
        height: image height.
        width: image width.
        steps: sampler steps.
        guidance: guidance scale.
        dtype: model dtype.
        scheduler: ``{"class": ..., "config": {...}}``.
        fingerprint: hash of the model's weights and configs.
        noise_hash: SHA-256 of the float32 initial noise.
        versions: tamis/diffusers/torch versions at generation time.

    """

    prompt: str
    seed: int
    generator_device: str
    height: int
    width: int
    steps: int
    guidance: float
    dtype: str
    scheduler: dict
    fingerprint: str
    noise_hash: str
    versions: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain-dict form (JSON-serialisable)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> GenerationRecord:
        """Inverse of :meth:`to_dict`.

        Raises:
            ValueError: a field is missing (its name in the message).

        """
        missing = [f for f in cls.__dataclass_fields__ if f not in data and f != "versions"]
        if missing:
            raise ValueError(f"generation record is missing field(s) {missing}")
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def generate_with_records(
    generator: ImageGenerator, prompts: Sequence[str], seeds: Sequence[int]
) -> tuple[np.ndarray, list[GenerationRecord]]:
    """Generate one image per (prompt, seed) in one call; return images and their records."""
    if len(prompts) != len(seeds):
        raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
    s = generator.settings
    latents = initial_latents(seeds, generator.latent_shape(), s.generator_device)
    images = _generate(generator, prompts, latents, seeds)
    fp, sched, versions = generator.fingerprint(), generator.scheduler_info(), software_versions()
    records = [
        GenerationRecord(
            prompt=p, seed=int(seed), generator_device=s.generator_device, height=s.height,
            width=s.width, steps=s.steps, guidance=float(s.guidance), dtype=s.dtype,
            scheduler=sched, fingerprint=fp, noise_hash=noise_hash(latents[i]), versions=versions,
        )
        for i, (p, seed) in enumerate(zip(prompts, seeds))
    ]
    return images, records


def _generate(generator, prompts, latents, seeds) -> np.ndarray:
    from tamis.seeds.generation import DiffusersGenerator

    if isinstance(generator, DiffusersGenerator):
        return generator.generate(list(prompts), latents, seeds=list(seeds))
    return generator.generate(list(prompts), latents)


def regenerate(record: GenerationRecord, generator: ImageGenerator) -> np.ndarray:
    """Re-create the image of ``record`` (uint8 (H, W, 3)).

    Raises:
        ReproductionError: the generator's fingerprint, settings or scheduler differ from the
            record's, or the re-drawn noise does not hash to the recorded value.

    """
    if generator.fingerprint() != record.fingerprint:
        raise ReproductionError(
            f"model fingerprint {generator.fingerprint()[:12]} != recorded "
            f"{record.fingerprint[:12]}: not the model that made this image"
        )
    s = generator.settings
    mine = (s.height, s.width, s.steps, float(s.guidance), s.dtype, s.generator_device)
    theirs = (record.height, record.width, record.steps, float(record.guidance), record.dtype,
              record.generator_device)
    if mine != theirs:
        raise ReproductionError(
            f"generation settings (height, width, steps, guidance, dtype, generator device) "
            f"{mine} != recorded {theirs}"
        )
    sched = generator.scheduler_info()
    if sched["class"] != record.scheduler.get("class"):
        raise ReproductionError(
            f"scheduler {sched['class']} != recorded {record.scheduler.get('class')}"
        )
    latents = initial_latents([record.seed], generator.latent_shape(), record.generator_device)
    got = noise_hash(latents[0])
    if got != record.noise_hash:
        raise ReproductionError(
            f"noise hash {got[:12]} != recorded {record.noise_hash[:12]} for seed {record.seed} "
            f"on {record.generator_device} (different torch version or generator device?)"
        )
    return _generate(generator, [record.prompt], latents, [record.seed])[0]
