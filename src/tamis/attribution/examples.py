"""Built-in example tasks: the demo's small CNN on Fashion-MNIST (digits as fallback).

A *task factory* is any callable ``factory(cache_dir, data_dir) -> TaskBundle``; the CLI
takes one as ``--task module:function`` or ``--task path/to/file.py:function``. This module's
:func:`fashion_cnn` is the embedded default.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from tamis._io import atomic_path
from tamis._progress import track
from tamis.attribution.task import AttributionTask
from tamis.data import load_image_dataset


@dataclass
class TaskBundle:
    """Everything the CLI needs: task, trained model, training data and queries.

    ``retrain(mask, seed) -> (Q,)`` (optional) retrains the model with the same recipe on the
    training examples where ``mask`` is true and returns each query's loss: what
    ``tamis attribute tune`` measures LDS against.
    """

    task: AttributionTask
    model: nn.Module
    train: TensorDataset
    queries: TensorDataset
    info: dict = field(default_factory=dict)
    retrain: Callable[[np.ndarray, int], np.ndarray] | None = None


class ClassificationTask(AttributionTask):
    """Any classifier ``model(x) -> logits``: per-example cross-entropy, the query's loss.

    Args:
        modules: names of the layers to track (``None``: every supported layer).

    """

    def __init__(self, modules: list[str] | None = None) -> None:
        self.modules = None if modules is None else list(modules)

    def compute_train_loss(self, batch, model):
        """Cross-entropy of each example."""
        x, y = batch
        return F.cross_entropy(model(x), y, reduction="none")

    def compute_measurement(self, batch, model):
        """The query's loss (positive scores = training examples that lower it)."""
        return self.compute_train_loss(batch, model)

    def compute_logits(self, batch, model):
        """The class scores (enables ``fisher="true"`` and ``fisher="ggn"``)."""
        x, _ = batch
        return model(x)

    def tracked_modules(self, model):
        """The layers given at construction, or ``None`` for every supported layer."""
        return self.modules


ImageClassificationTask = ClassificationTask  # the name the demo task was first given


class SmallCNN(nn.Module):
    """Two strided convolutions and two linear layers, for square grey images."""

    def __init__(self, side: int = 28, classes: int = 10, width: int = 8, hidden: int = 64) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 5, stride=2, padding=2)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        s = math.ceil(math.ceil(side / 2) / 2)  # two stride-2 convolutions
        self.fc1 = nn.Linear(2 * width * s * s, hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of (B, 1, H, W) images."""
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


TRAIN_LR, TRAIN_BATCH = 2e-3, 64  # train_classifier's defaults


def train_classifier(
    model: nn.Module,
    data: TensorDataset,
    epochs: int = 3,
    batch_size: int = TRAIN_BATCH,
    lr: float = TRAIN_LR,
    seed: int = 0,
    progress: bool = True,
) -> nn.Module:
    """Adam on cross-entropy, shuffled minibatches, deterministic given ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    x, y = data.tensors
    model.train()
    steps = [(e, i) for e in range(epochs) for i in range(0, len(y), batch_size)]
    order = None
    for _epoch, lo in track(steps, "train model", len(steps), progress):
        if lo == 0:
            order = torch.randperm(len(y), generator=gen)
        idx = order[lo : lo + batch_size]
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    model.eval()
    return model


def accuracy(model: nn.Module, data: TensorDataset) -> float:
    """Top-1 accuracy of ``model`` on ``data``."""
    x, y = data.tensors
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def image_tensors(
    split: str, n: int, data_dir: Path | None, seed: int
) -> tuple[TensorDataset, dict]:
    """The first ``n`` examples of a fixed permutation of a split, as (N, 1, H, W) tensors."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_image_dataset(split, data_dir)
    order = np.random.default_rng(seed).permutation(len(ds))[:n]
    x = torch.from_numpy(ds.images[order]).unsqueeze(1)
    y = torch.from_numpy(ds.labels[order])
    info = {
        "dataset": ds.name,
        "classes": ds.classes,
        "indices": order,
        "notice": "; ".join(str(w.message) for w in caught),
    }
    return TensorDataset(x, y), info


def fashion_cnn(
    cache_dir: Path | str = Path(".tamis-cache"),
    data_dir: Path | None = None,
    n_train: int = 5000,
    n_queries: int = 100,
    epochs: int = 3,
    seed: int = 0,
    progress: bool = True,
) -> TaskBundle:
    """The demo task: :class:`SmallCNN` trained on ``n_train`` Fashion-MNIST images.

    The trained weights are cached in ``cache_dir`` so that separate ``build`` and ``query``
    runs attribute the very same model. Falls back to scikit-learn digits (with a notice)
    when Fashion-MNIST is not installed.
    """
    train, info = image_tensors("train", n_train, data_dir, seed)
    queries, _ = image_tensors("test", n_queries, data_dir, seed + 1)
    side = train.tensors[0].shape[-1]
    ckpt = Path(cache_dir) / f"{info['dataset']}-cnn-n{n_train}-e{epochs}-s{seed}.pt"
    torch.manual_seed(seed)
    model = SmallCNN(side=side, classes=len(info["classes"]))
    if ckpt.exists():
        model.load_state_dict(torch.load(ckpt, weights_only=True)["model"])
        model.eval()
    else:
        train_classifier(model, train, epochs=epochs, seed=seed, progress=progress)
        with atomic_path(ckpt) as tmp:
            torch.save({"model": model.state_dict()}, tmp)
    info["test_accuracy"] = accuracy(model, queries)
    info["checkpoint"] = str(ckpt)
    # the training horizon (constant-lr Adam, batch 64): sum of the lr over the steps
    info["lr_sum"] = TRAIN_LR * epochs * -(-len(train) // TRAIN_BATCH)

    def retrain(mask: np.ndarray, retrain_seed: int) -> np.ndarray:
        """The same recipe on a subset; per-query cross-entropy."""
        torch.manual_seed(seed)
        sub = SmallCNN(side=side, classes=len(info["classes"]))
        idx = torch.from_numpy(np.flatnonzero(mask))
        train_classifier(sub, TensorDataset(*(t[idx] for t in train.tensors)), epochs=epochs,
                         seed=retrain_seed, progress=False)
        xq, yq = queries.tensors
        with torch.no_grad():
            return F.cross_entropy(sub(xq), yq, reduction="none").numpy()

    return TaskBundle(ClassificationTask(), model, train, queries, info, retrain)


def load_factory(spec: str) -> Callable[..., TaskBundle]:
    """Resolve ``module:function`` or ``path/to/file.py:function`` to a task factory."""
    if ":" not in spec:
        raise ValueError(f"--task must look like module:function or file.py:function, got {spec!r}")
    target, _, func = spec.rpartition(":")
    if target.endswith(".py"):
        path = Path(target)
        if not path.exists():
            raise FileNotFoundError(f"task file {path} does not exist")
        module_spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)  # type: ignore[union-attr]
    else:
        module = importlib.import_module(target)
    factory = getattr(module, func, None)
    if not callable(factory):
        raise ValueError(f"{target} has no callable {func!r}")
    return factory
