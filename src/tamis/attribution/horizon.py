"""The training horizon and the damping it implies (EK-FAC / K-FAC curvature).

Unrolled training responds to a curvature direction h as about 1 / (h + 1/S), S the sum of
the learning rate over the optimizer steps (Bae et al. 2022): a short run damps hard (its
limit is gradient dot), a long one barely. Measured over ten settings trained with AdamW
(``benchmarks/results/attribution_damping_horizon.md``), the relative damping

    damping = 1 / (S * rho)          (x the layer's mean eigenvalue)

lands within 0.02 LDS of the best of a sweep in every one. rho is the number of loss terms
an example's training loss is made of (its labelled tokens for a language model, 1 for a
classifier): the Hessian of a token-averaged loss is about rho times the per-example
gradient Fisher the curvature is fitted from. For plain SGD the same value is an *absolute*
damping, gradient descent's own horizon: 0.001, 0.024 and 0.023 below the best in the three
SGD settings measured (one with momentum 0.9), where the relative form is 0.17, 0.16 and
0.07 below.

The horizon comes from the training run: :class:`~tamis.attribution.trainer.StoreCallback`
records it from the Trainer's optimizer, or the user passes it
(``Attributor(..., horizon=TrainingHorizon(lr_sum=...))``, ``tamis attribute fit --lr-sum``);
a plain PyTorch loop records it with ``HorizonTracker(optimizer)`` or reads it afterwards with
``TrainingHorizon.from_optimizer(optimizer, scheduler)``.
It is stored next to the store as ``training_horizon.json``. Without one, the damping is the
rule at S = 1: the preset's 1x for a classifier, 1 / rho for a language model.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from tamis.attribution.errors import StoreError

HORIZON_FILE = "training_horizon.json"


@dataclass(frozen=True)
class TrainingHorizon:
    """How far the optimizer was allowed to go.

    Attributes:
        lr_sum: S, the sum of the learning rate over the optimizer steps (the schedule
            included: warm-up and decay count as they were applied).
        steps: Optimizer steps (recorded, not used).
        optimizer: Optimizer class name. ``"SGD"`` (any name starting with it) selects the
            gradient-descent form of the rule (absolute damping); anything else, or
            ``None``, the Adam form (relative damping), measured with AdamW.
        momentum: SGD's heavy-ball momentum beta; the horizon is then S / (1 - beta)
            (measured at beta = 0.9 in one setting: 0.023 below the best damping).

    """

    lr_sum: float
    steps: int | None = None
    optimizer: str | None = None
    momentum: float = 0.0

    def __post_init__(self) -> None:
        if isinstance(self.lr_sum, bool) or not isinstance(self.lr_sum, (int, float)):
            raise ValueError(f"lr_sum must be a number, got {self.lr_sum!r}")
        if not math.isfinite(self.lr_sum) or self.lr_sum <= 0:
            raise ValueError(f"lr_sum (the sum of the learning rate over the optimizer steps) "
                             f"must be finite and > 0, got {self.lr_sum}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")

    @property
    def gradient_descent(self) -> bool:
        """True for SGD (the absolute form of the rule), False for Adam-like optimizers."""
        return bool(self.optimizer) and self.optimizer.upper().startswith("SGD")

    @classmethod
    def from_lrs(cls, lrs: Iterable[float], optimizer: str | None = None) -> TrainingHorizon:
        """The horizon of a run that used learning rate ``lrs[t]`` at step ``t``."""
        values = [float(v) for v in lrs]
        if not values:
            raise ValueError("no optimizer step: the learning-rate list is empty")
        return cls(lr_sum=sum(values), steps=len(values), optimizer=optimizer)

    @classmethod
    def from_optimizer(cls, optimizer: Any, scheduler: Any = None,
                       steps: int | None = None) -> TrainingHorizon:
        """The horizon of a finished plain PyTorch run, from its optimizer and scheduler.

        See :func:`tamis.attribution.optim_horizon.horizon_from_optimizer`; to record it
        while training instead, :class:`~tamis.attribution.optim_horizon.HorizonTracker`.
        """
        from tamis.attribution.optim_horizon import horizon_from_optimizer

        return horizon_from_optimizer(optimizer, scheduler, steps)


def horizon_damping(horizon: TrainingHorizon, loss_terms: float = 1.0) -> float:
    """The damping ``1 / (S * rho)``, rho = ``loss_terms``, in :func:`horizon_damping_mode`.

    For SGD, S is the effective horizon ``lr_sum / (1 - momentum)``.
    """
    if not math.isfinite(loss_terms) or loss_terms <= 0:
        raise ValueError(f"loss_terms must be finite and > 0, got {loss_terms}")
    total = horizon.lr_sum / (1.0 - horizon.momentum) if horizon.gradient_descent else \
        horizon.lr_sum
    return 1.0 / (total * loss_terms)


def horizon_damping_mode(horizon: TrainingHorizon) -> str:
    """How :func:`horizon_damping` applies: ``"absolute"`` for SGD, else ``"relative"``.

    SGD: unrolled gradient descent responds as 1 / (h + 1/S). Adam-like: x each layer's
    mean eigenvalue, the form measured with AdamW.
    """
    return "absolute" if horizon.gradient_descent else "relative"


def horizon_rule_applies(cfg: Any) -> bool:
    """True for the curvatures the horizon rule is measured on: ekfac/kfac, relative damping."""
    return cfg.kind in ("ekfac", "kfac") and cfg.damping_mode == "relative"


def with_horizon_damping(cfg: Any, horizon: TrainingHorizon | None, task: Any, dataset: Any,
                         collate_fn: Callable[[Sequence[Any]], Any] | None = None,
                         batch_size: int = 256) -> tuple[Any, dict | None]:
    """``cfg`` (a ``CurvatureConfig``) with the horizon damping, and the rule's record.

    The rule applies to ``ekfac``/``kfac`` curvatures with relative damping; otherwise
    ``cfg`` comes back unchanged with ``None``. Without a horizon the preset's damping is
    divided by rho (the rule at S = 1; ``{"rule": "loss_terms"}``), which leaves a
    classifier's (rho = 1) unchanged and puts a language model's within 0.01 of its sweep's
    best in the three measured settings, where 1x was up to 0.031 below.
    """
    from dataclasses import replace

    if not horizon_rule_applies(cfg):
        return cfg, None
    terms = mean_loss_terms(task, dataset, collate_fn, batch_size)
    if horizon is None:
        if terms == 1.0:
            return cfg, None
        damping = cfg.damping / terms
        return replace(cfg, damping=damping), {"rule": "loss_terms", "loss_terms": terms,
                                                "damping": damping}
    damping, mode = horizon_damping(horizon, terms), horizon_damping_mode(horizon)
    rule = {"rule": "horizon", "lr_sum": horizon.lr_sum, "loss_terms": terms,
            "damping": damping}
    if mode != "relative":
        rule["damping_mode"] = mode
    return replace(cfg, damping=damping, damping_mode=mode), rule


def write_horizon(folder: str | Path, horizon: TrainingHorizon) -> Path:
    """Write ``training_horizon.json`` into ``folder`` atomically; return its path."""
    from tamis.attribution.store import write_json_atomic

    path = Path(folder) / HORIZON_FILE
    write_json_atomic(path, asdict(horizon))
    return path


def read_horizon(folder: str | Path) -> TrainingHorizon | None:
    """The horizon recorded in ``folder``, or ``None`` when there is none.

    Raises:
        StoreError: the file exists but is not a valid horizon (names the file).

    """
    path = Path(folder) / HORIZON_FILE
    if not path.exists():
        return None
    try:
        raw = json.loads(path.read_text())
        return TrainingHorizon(**raw)
    except (json.JSONDecodeError, TypeError, ValueError) as err:
        raise StoreError(f"{path} is not a valid training horizon ({err}); delete it or "
                         f"write it again with write_horizon") from err


def mean_loss_terms(task: Any, dataset: Any,
                    collate_fn: Callable[[Sequence[Any]], Any] | None = None,
                    batch_size: int = 256) -> float:
    """Mean of ``task.loss_terms(batch)`` over ``dataset`` (1 if the task does not say).

    Raises:
        ValueError: a non-finite or non-positive count.

    """
    from torch.utils.data import DataLoader

    total, n = 0.0, 0
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_fn)
    for batch in loader:
        terms = task.loss_terms(batch)
        if terms is None:
            return 1.0
        terms = torch.as_tensor(terms, dtype=torch.float64).reshape(-1)
        total += float(terms.sum())
        n += terms.numel()
    if n == 0:
        raise ValueError("the dataset is empty: no loss terms to count")
    mean = total / n
    if not math.isfinite(mean) or mean <= 0:
        raise ValueError(f"task.loss_terms gave a mean of {mean}; it must be finite and > 0")
    return mean


TRAINER_STATE = "trainer_state.json"


def horizon_from_trainer_state(folder: str | Path) -> TrainingHorizon | None:
    """The horizon a transformers ``Trainer`` logged in ``folder/trainer_state.json``.

    S sums the learning rate over the optimizer steps 1 .. ``global_step``; the rate of step
    t is the one logged at step t - 1 (the Trainer logs the scheduler's next rate), linearly
    interpolated between logged steps and held at the ends: exact for a constant schedule,
    approximate where ``logging_steps`` is sparse (a 20 % error in S moves the damping by
    20 %, well inside the flat part of the LDS curves measured in docs/attribution.md).
    ``None`` when there is no such file or it logs no learning rate.

    Raises:
        ValueError: the file is not valid JSON or has no usable ``global_step`` (names it).

    """
    import numpy as np

    path = Path(folder) / TRAINER_STATE
    if not path.exists():
        return None
    try:
        state = json.loads(path.read_text())
        steps = int(state.get("global_step") or state.get("max_steps") or 0)
    except (json.JSONDecodeError, TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"{path} is not a readable Trainer state ({err})") from err
    points = sorted((int(e["step"]), float(e["learning_rate"]))
                    for e in state.get("log_history", [])
                    if isinstance(e, dict) and "learning_rate" in e and "step" in e)
    if not points:
        return None
    if steps < 1:
        raise ValueError(f"{path} has no global_step >= 1")
    xs, ys = zip(*points)
    lrs = np.interp(np.arange(steps, dtype=np.float64), xs, ys)
    if not np.isfinite(lrs).all() or lrs.sum() <= 0:
        return None
    return TrainingHorizon(float(lrs.sum()), steps, "Trainer (from trainer_state.json)")


def horizon_of_model(model: Any) -> TrainingHorizon | None:
    """The horizon of a transformers model loaded from a ``Trainer`` folder, if it has one.

    ``from_pretrained(folder)`` records ``folder`` as ``model.name_or_path``; a Trainer's
    checkpoint folder (``checkpoint-N/``), or an output folder after ``trainer.save_state()``,
    also holds ``trainer_state.json``, whose logged learning rates give S
    (:func:`horizon_from_trainer_state`). ``None`` for any other model.

    Raises:
        ValueError: the folder's ``trainer_state.json`` is unreadable (names it).

    """
    folder = getattr(model, "name_or_path", None)
    if not isinstance(folder, (str, Path)) or not str(folder) or not Path(folder).is_dir():
        return None
    return horizon_from_trainer_state(folder)
