"""Density predictor: an MLP regressing pseudo density from features (paper §2.3).

Differentiable, so ``predictor(extractor(generator(z)))`` can drive latent perturbation.
Inputs are standardised inside the module (stored buffers), so saved predictors carry their
own normalisation. Saved as safetensors with the architecture in the metadata, atomically.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tamis._io import atomic_path
from tamis.density._checks import as_features


class DensityPredictor(nn.Module):
    """MLP ``D -> hidden... -> 1`` (ReLU) with built-in feature standardisation.

    Args:
        in_dim: feature width D.
        hidden: hidden layer widths (the paper uses 512, 256, 128 for 768-d ViT features).

    """

    def __init__(self, in_dim: int, hidden: Sequence[int] = (256, 128)) -> None:
        super().__init__()
        self.in_dim = int(in_dim)
        self.hidden = tuple(int(h) for h in hidden)
        layers: list[nn.Module] = []
        prev = self.in_dim
        for h in self.hidden:
            layers += [nn.Linear(prev, h), nn.ReLU()]
            prev = h
        layers.append(nn.Linear(prev, 1))
        self.net = nn.Sequential(*layers)
        self.register_buffer("mean", torch.zeros(self.in_dim))
        self.register_buffer("std", torch.ones(self.in_dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Predicted pseudo density, shape ``(B,)``."""
        if features.ndim != 2 or features.shape[1] != self.in_dim:
            raise ValueError(
                f"the predictor expects features of shape (B, {self.in_dim}), "
                f"got {tuple(features.shape)}"
            )
        return self.net((features - self.mean) / self.std)[:, 0]


@dataclass
class TrainHistory:
    """Losses per epoch and the epoch kept (best validation MSE)."""

    train_mse: list[float] = field(default_factory=list)
    val_mse: list[float] = field(default_factory=list)
    best_epoch: int = -1


def train_predictor(
    features: object,
    densities: object,
    *,
    hidden: Sequence[int] = (256, 128),
    epochs: int = 100,
    lr: float = 1e-3,
    batch_size: int = 64,
    val_fraction: float = 0.2,
    patience: int = 10,
    seed: int = 0,
    progress: Callable[[int, float], None] | None = None,
) -> tuple[DensityPredictor, TrainHistory]:
    """Fit a :class:`DensityPredictor` with MSE, Adam and early stopping on a validation split.

    Args:
        features: ``(N, D)`` reference features.
        densities: ``(N,)`` their pseudo densities (targets).
        hidden: hidden widths.
        epochs: maximum epochs (paper: 100).
        lr: Adam learning rate (paper: 1e-3).
        batch_size: mini-batch size (paper: 64).
        val_fraction: held-out fraction (paper: 0.2); 0 disables early stopping.
        patience: epochs without validation improvement before stopping.
        seed: seed of the split, the initialisation and the shuffling.
        progress: called with ``(epoch, val_mse)`` after each epoch.

    Returns:
        The best predictor (eval mode) and its :class:`TrainHistory`.

    """
    x = as_features(features, "features")
    y = np.asarray(densities, dtype=np.float32).ravel()
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"{x.shape[0]} feature rows but {y.shape[0]} densities")
    if not np.isfinite(y).all():
        raise ValueError("densities contain NaN or infinite values")
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    order = torch.randperm(x.shape[0], generator=gen)
    n_val = int(round(val_fraction * x.shape[0]))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    tr, va = order[n_val:], order[:n_val]
    model = DensityPredictor(x.shape[1], hidden)
    model.mean.copy_(xt[tr].mean(0))
    model.std.copy_(xt[tr].std(0).clamp_min(1e-6))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    hist = TrainHistory()
    best_state, best, stale = None, float("inf"), 0
    for epoch in range(epochs):
        model.train()
        perm = tr[torch.randperm(tr.numel(), generator=gen)]
        total = 0.0
        for s in range(0, perm.numel(), batch_size):
            b = perm[s : s + batch_size]
            loss = ((model(xt[b]) - yt[b]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * b.numel()
        hist.train_mse.append(total / max(tr.numel(), 1))
        model.eval()
        with torch.no_grad():
            val = float(((model(xt[va]) - yt[va]) ** 2).mean()) if n_val else hist.train_mse[-1]
        hist.val_mse.append(val)
        if progress is not None:
            progress(epoch, val)
        if val < best:
            best, stale, hist.best_epoch = val, 0, epoch
            best_state = {k: v.clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if n_val and stale >= patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model, hist


def save_predictor(model: DensityPredictor, path: str | Path) -> Path:
    """Save a predictor to a safetensors file atomically (temporary file + rename).

    Returns:
        The path written.

    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": "tamis.density.predictor/1",
            "config": json.dumps({"in_dim": model.in_dim, "hidden": list(model.hidden)})}
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def load_predictor(path: str | Path) -> DensityPredictor:
    """Load a predictor saved by :func:`save_predictor` (eval mode).

    Raises:
        ValueError: if the file is not a tamis density predictor.

    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    if meta.get("format") != "tamis.density.predictor/1":
        raise ValueError(f"{path} is not a tamis density predictor (format {meta.get('format')})")
    cfg = json.loads(meta["config"])
    model = DensityPredictor(cfg["in_dim"], cfg["hidden"])
    model.load_state_dict(load_file(str(path)))
    model.eval()
    return model
