"""The training horizon of a plain PyTorch loop: from its optimizer, live or after the fact.

The horizon rule (:mod:`tamis.attribution.horizon`) needs S, the sum of the learning rate over
the optimizer steps. A transformers ``Trainer`` run records it (``StoreCallback``,
``trainer_state.json``); a hand-written loop has two ways to give it:

- :class:`HorizonTracker` records it while training runs, exactly, whatever the schedule
  (a step pre-hook reads the learning rate each ``optimizer.step()`` is about to use; steps
  a ``GradScaler`` skips are not counted, as they move nothing);
- :func:`horizon_from_optimizer` reads it afterwards from the optimizer (its step count) and
  the learning-rate scheduler, whose schedule is replayed on a stand-in optimizer and checked
  against the scheduler's current rate, so a schedule it cannot replay is an error, never a
  guess.

Both read the first parameter group's rate, as ``StoreCallback`` does.
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any

import torch

from tamis.attribution.horizon import TrainingHorizon

__all__ = ["HorizonTracker", "horizon_from_optimizer"]

NOT_REPLAYABLE = (
    "record the run with HorizonTracker(optimizer) before training, or pass "
    "TrainingHorizon.from_lrs(<the learning rate of every step>)"
)


def _unwrap(optimizer: Any) -> torch.optim.Optimizer:
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer
    if not isinstance(inner, torch.optim.Optimizer):
        raise TypeError(f"expected a torch.optim.Optimizer, got {type(optimizer).__name__}")
    return inner


def _identity(optimizer: torch.optim.Optimizer) -> tuple[str, float]:
    """The optimizer's class name and, for SGD, its momentum (what the rule needs)."""
    name = type(optimizer).__name__
    group = optimizer.param_groups[0]
    momentum = float(group.get("momentum", 0.0) or 0.0) if name.upper().startswith("SGD") \
        else 0.0
    return name, momentum


class HorizonTracker:
    """Record the training horizon of a plain PyTorch loop while it trains.

    Example::

        tracker = HorizonTracker(optimizer)       # before the first optimizer.step()
        for batch in loader:
            ...; optimizer.step(); scheduler.step()
        Attributor(task, model, path, horizon=tracker.horizon)

    Args:
        optimizer: the ``torch.optim.Optimizer`` (or an accelerate wrapper of one).

    """

    def __init__(self, optimizer: Any) -> None:
        self.optimizer = _unwrap(optimizer)
        self.lr_sum, self.steps = 0.0, 0
        self._handle = self.optimizer.register_step_pre_hook(self._before_step)

    def _before_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        self.lr_sum += float(optimizer.param_groups[0]["lr"])
        self.steps += 1

    @property
    def horizon(self) -> TrainingHorizon:
        """The horizon of the steps recorded so far.

        Raises:
            ValueError: no optimizer step was recorded yet.

        """
        if self.steps == 0:
            raise ValueError("HorizonTracker recorded no optimizer step: create it before "
                             "training and keep it alive while the loop runs")
        name, momentum = _identity(self.optimizer)
        return TrainingHorizon(self.lr_sum, self.steps, name, momentum)

    def remove(self) -> None:
        """Stop recording (the sum so far is kept)."""
        self._handle.remove()

    def __enter__(self) -> HorizonTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def optimizer_steps(optimizer: Any) -> int | None:
    """Optimizer steps taken, from the per-parameter ``step`` counters.

    Adam, AdamW, RMSprop and the like keep one; ``None`` for an optimizer that keeps none
    (plain SGD).
    """
    counts = [float(s["step"]) for s in _unwrap(optimizer).state.values() if "step" in s]
    return int(max(counts)) if counts else None


def _stand_in(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """An SGD over one dummy tensor per group, with the groups' settings at their start."""
    groups = []
    for g in optimizer.param_groups:
        group = {k: v for k, v in g.items() if k != "params"}
        group["lr"] = group.get("initial_lr", group["lr"])
        groups.append({**group, "params": [torch.zeros(1, requires_grad=True)]})
    return torch.optim.SGD(groups, lr=float(groups[0]["lr"]))


def replay_schedule(scheduler: Any, count: int) -> list[float]:
    """The first group's learning rate at scheduler epochs 0 .. ``count - 1``.

    The scheduler is deep-copied onto a stand-in optimizer, rewound to its start and stepped
    ``count`` times; its rate after that must equal the real scheduler's current one.

    Raises:
        ValueError: a scheduler that cannot be replayed (metric-driven, composite) or whose
            replay does not reproduce its current rate (names the scheduler).

    """
    from torch.optim.lr_scheduler import ChainedScheduler, ReduceLROnPlateau, SequentialLR

    name = type(scheduler).__name__
    if isinstance(scheduler, ReduceLROnPlateau):
        raise ValueError(f"{name} follows a metric, so its schedule cannot be replayed: "
                         + NOT_REPLAYABLE)
    if isinstance(scheduler, (SequentialLR, ChainedScheduler)):
        raise ValueError(f"{name} composes schedulers whose state this replay does not "
                         "rewind: " + NOT_REPLAYABLE)
    real = _unwrap(scheduler.optimizer)
    stand_in = _stand_in(real)
    replay = copy.deepcopy(scheduler, {id(scheduler.optimizer): stand_in, id(real): stand_in})
    replay.last_epoch = -1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the "step before optimizer.step()" notice
        # the scheduler's own first step (recursive forms keep the start rate in it)
        getattr(replay, "_initial_step", replay.step)()
        lrs = [float(stand_in.param_groups[0]["lr"])]
        for _ in range(count):
            replay.step()
            lrs.append(float(stand_in.param_groups[0]["lr"]))
    now = [float(g["lr"]) for g in real.param_groups]
    again = [float(g["lr"]) for g in stand_in.param_groups]
    if not all(math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-12) for a, b in zip(again, now,
                                                                              strict=True)):
        raise ValueError(f"replaying {name} from its state gave the learning rate {again[0]:.6g} "
                         f"after {count} steps where the optimizer has {now[0]:.6g}: "
                         + NOT_REPLAYABLE)
    return lrs[:count]


def horizon_from_optimizer(optimizer: Any, scheduler: Any = None,
                           steps: int | None = None) -> TrainingHorizon:
    """The horizon of a finished plain PyTorch run, from its optimizer and scheduler.

    Args:
        optimizer: the run's optimizer after training.
        scheduler: its ``torch.optim.lr_scheduler`` scheduler, if it had one. Stepped every
            optimizer step, or every epoch (then each epoch's rate counts for
            ``steps / scheduler.last_epoch`` steps).
        steps: optimizer steps taken; by default the optimizer's own ``step`` counters, else
            (plain SGD keeps none) the scheduler's step count.

    Raises:
        ValueError: the step count is unknown, the learning rate changed with no scheduler
            given, the steps do not divide into the scheduler's, or the schedule cannot be
            replayed (each names what to pass instead).

    """
    opt = _unwrap(optimizer)
    name, momentum = _identity(opt)
    taken = steps if steps is not None else optimizer_steps(opt)
    if taken is None and scheduler is not None:
        taken = int(scheduler.last_epoch)
    if taken is None:
        raise ValueError(f"{name} keeps no step count: pass steps=<optimizer steps taken>")
    if taken < 1:
        raise ValueError(f"no optimizer step was taken (steps = {taken})")
    group = opt.param_groups[0]
    if scheduler is None:
        start = float(group.get("initial_lr", group["lr"]))
        if not math.isclose(start, float(group["lr"]), rel_tol=1e-9):
            raise ValueError(f"the learning rate moved from {start:.6g} to "
                             f"{float(group['lr']):.6g}, so a scheduler ran: pass it "
                             "(scheduler=...)")
        return TrainingHorizon(float(group["lr"]) * taken, taken, name, momentum)
    epochs = int(scheduler.last_epoch)
    if epochs < 1:
        return TrainingHorizon(float(group["lr"]) * taken, taken, name, momentum)
    if taken % epochs:
        raise ValueError(f"{taken} optimizer steps do not divide into the scheduler's "
                         f"{epochs} steps: pass steps= or " + NOT_REPLAYABLE)
    per = taken // epochs
    lrs = replay_schedule(scheduler, epochs)
    return TrainingHorizon(per * math.fsum(lrs), taken, name, momentum)
