"""Typed configurations of the tiny demo models (built from configs, never downloaded)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class GANConfig:
    """A small DCGAN for square grey images (side divisible by 4).

    Attributes:
        latent_dim: size of the latent z.
        image_size: image side (28 for Fashion-MNIST, 8 for digits).
        g_channels: generator width at the lowest resolution.
        d_channels: discriminator width of the first convolution.

    """

    latent_dim: int = 32
    image_size: int = 28
    g_channels: int = 64
    d_channels: int = 32

    def to_dict(self) -> dict:
        """Plain-dict form for checkpoint metadata."""
        return asdict(self)


@dataclass
class DDPMConfig:
    """A tiny DDPM (epsilon-prediction conv net with time embedding) and its schedule.

    Attributes:
        image_size: image side (divisible by 4).
        channels: base width of the network.
        timesteps: T of the linear beta schedule.
        beta_start: first beta.
        beta_end: last beta.
        schedule: ``"linear"`` (betas from ``beta_start`` to ``beta_end``) or ``"cosine"``
            (Nichol & Dhariwal 2021: ``alpha_bar(t) = cos^2((t/T + s)/(1 + s) * pi/2)``,
            normalised, ``s = 0.008``, betas clipped at 0.999; the beta fields are unused).
            The cosine schedule ends at ``alpha_bar ~ 0`` so sampling from pure noise matches
            training; a linear schedule with small ``T`` does not.

    """

    image_size: int = 28
    channels: int = 32
    timesteps: int = 200
    beta_start: float = 1e-4
    beta_end: float = 0.02
    schedule: str = "linear"

    def to_dict(self) -> dict:
        """Plain-dict form for checkpoint metadata."""
        return asdict(self)


@dataclass
class ExtractorConfig:
    """A small CNN classifier whose penultimate layer is the feature space.

    Attributes:
        image_size: image side (divisible by 4).
        widths: channels of the two convolution blocks.
        feature_dim: width of the penultimate (feature) layer.
        num_classes: classifier outputs.

    """

    image_size: int = 28
    widths: tuple[int, int] = (16, 32)
    feature_dim: int = 64
    num_classes: int = 10

    def to_dict(self) -> dict:
        """Plain-dict form for checkpoint metadata."""
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d
