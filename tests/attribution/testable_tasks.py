"""Tiny CPU models and tasks for the attribution tests (run in seconds)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from tamis.attribution import AttributionTask
from tamis.attribution.examples import ClassificationTask  # noqa: F401  (re-exported for tests)


class SequenceTask(AttributionTask):
    """Next-token loss summed over positions: per-example gradients of rank up to T."""

    def compute_train_loss(self, batch, model):
        (tokens,) = batch
        logits = model(tokens[:, :-1])
        loss = F.cross_entropy(logits.transpose(1, 2), tokens[:, 1:], reduction="none")
        return loss.sum(1)

    def compute_measurement(self, batch, model):
        return self.compute_train_loss(batch, model)

    def compute_sampled_loss(self, batch, model, generator):
        from tamis.attribution.fisher import sampled_cross_entropy

        (tokens,) = batch
        return sampled_cross_entropy(model(tokens[:, :-1]), generator)


def mlp(d_in: int = 6, hidden: int = 5, classes: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh(), nn.Linear(hidden, classes)).double()


class TinyCNN(nn.Module):
    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv = nn.Conv2d(1, 3, 3, stride=2, padding=1)
        self.fc = nn.Linear(3 * 3 * 3, 4)

    def forward(self, x):
        return self.fc(torch.tanh(self.conv(x)).flatten(1))


class TinyLM(nn.Module):
    """Embedding -> Linear -> tanh -> Linear over positions (a causal mixing-free toy LM)."""

    def __init__(self, vocab: int = 7, width: int = 6, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.emb = nn.Embedding(vocab, width)
        self.hidden = nn.Linear(width, width)
        self.out = nn.Linear(width, vocab)

    def forward(self, tokens):
        return self.out(torch.tanh(self.hidden(self.emb(tokens))))


def tiny_lm(**kw) -> TinyLM:
    return TinyLM(**kw).double()


def classification_data(n: int, d_in: int = 6, classes: int = 3, seed: int = 1) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=g, dtype=torch.float64)
    y = torch.randint(0, classes, (n,), generator=g)
    return TensorDataset(x, y)


def image_data(n: int, seed: int = 1) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 6, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (n,), generator=g)
    return TensorDataset(x, y)


def token_data(n: int, length: int = 6, vocab: int = 7, seed: int = 1) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randint(0, vocab, (n, length), generator=g))
