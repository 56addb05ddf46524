"""Model definitions shared by the tamis side and the anchor subprocesses (torch only)."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    """784-h-10 tanh MLP on flattened 28x28 images (inputs (B, 784) or (B, 1, 28, 28))."""

    def __init__(self, hidden: int = 32, d_in: int = 784, classes: int = 10) -> None:
        super().__init__()
        self.flat = nn.Flatten()
        self.fc1 = nn.Linear(d_in, hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.fc1(self.flat(x))))


def train_mlp(x: torch.Tensor, y: torch.Tensor, seed: int, epochs: int = 30,
              batch_size: int = 500, lr: float = 3e-3, weight_decay: float = 1e-3,
              hidden: int = 32) -> MLP:
    """Adam, fixed epochs, seeded init and order: the retraining function of setting (a)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = MLP(hidden)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    n = x.shape[0]
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for lo in range(0, n, batch_size):
            idx = perm[lo:lo + batch_size]
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    return model.eval()
