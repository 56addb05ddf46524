"""The training horizon of a plain PyTorch loop: HorizonTracker and from_optimizer."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.optim import lr_scheduler as lrs
from torch.utils.data import TensorDataset

from tamis.attribution import Attributor, BuildConfig, HorizonTracker, TrainingHorizon
from tamis.attribution.optim_horizon import optimizer_steps

from .testable_tasks import ClassificationTask, mlp

torch.set_num_threads(1)

SCHEDULERS = {
    "lambda warm-up + linear decay": lambda o, n: lrs.LambdaLR(
        o, lambda s: min(1.0, (s + 1) / 5) * max(0.0, 1 - s / n)),
    "one-cycle": lambda o, n: lrs.OneCycleLR(o, max_lr=0.05, total_steps=n),
    "cosine": lambda o, n: lrs.CosineAnnealingLR(o, T_max=n),
    "exponential": lambda o, n: lrs.ExponentialLR(o, 0.95),
    "linear warm-up": lambda o, n: lrs.LinearLR(o, 0.1, 1.0, 10),
    "polynomial": lambda o, n: lrs.PolynomialLR(o, n, 2.0),
    "warm restarts": lambda o, n: lrs.CosineAnnealingWarmRestarts(o, 7),
    "multi-step": lambda o, n: lrs.MultiStepLR(o, [3, 11], 0.3),
}


def _train(make_scheduler=None, n: int = 23, optimizer=torch.optim.AdamW, per_epoch: int = 1,
           **opt_kw):
    """A short loop, recorded by a tracker and by hand (the rate each step used)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = optimizer(model.parameters(), lr=0.01, **opt_kw)
    sched = make_scheduler(opt, n) if make_scheduler else None
    tracker, used = HorizonTracker(opt), []
    for i in range(n):
        opt.zero_grad()
        model(torch.randn(4, 3)).pow(2).sum().backward()
        used.append(opt.param_groups[0]["lr"])
        opt.step()
        if sched is not None and (i + 1) % per_epoch == 0:
            sched.step()
    return opt, sched, tracker, used


@pytest.mark.parametrize("name", [None, *SCHEDULERS])
def test_tracker_and_replay_equal_the_rates_the_loop_used(name):
    opt, sched, tracker, used = _train(SCHEDULERS.get(name))
    expected = math.fsum(used)
    assert tracker.horizon.lr_sum == pytest.approx(expected, rel=1e-12)
    assert tracker.horizon.steps == 23 and tracker.horizon.optimizer == "AdamW"
    after = TrainingHorizon.from_optimizer(opt, sched)
    assert after.lr_sum == pytest.approx(expected, rel=1e-9)
    assert (after.steps, after.optimizer) == (23, "AdamW")


def test_a_per_epoch_scheduler_holds_each_rate_for_an_epoch():
    opt, sched, _, used = _train(lambda o, n: lrs.StepLR(o, 2, 0.5), n=40, per_epoch=5)
    assert sched.last_epoch == 8
    assert TrainingHorizon.from_optimizer(opt, sched).lr_sum == pytest.approx(math.fsum(used))
    # 0.01 for epochs 0-1, 0.005 for 2-3, ... 5 steps each
    assert math.fsum(used) == pytest.approx(5 * 2 * 0.01 * (1 + 0.5 + 0.25 + 0.125))


def test_sgd_records_its_momentum_and_takes_the_scheduler_s_step_count():
    opt, sched, tracker, used = _train(SCHEDULERS["one-cycle"], optimizer=torch.optim.SGD,
                                       momentum=0.9)
    assert optimizer_steps(opt) is None  # SGD keeps no step counter
    h = TrainingHorizon.from_optimizer(opt, sched)
    assert h.lr_sum == pytest.approx(math.fsum(used)) and h.steps == 23
    assert h.gradient_descent and h.momentum == tracker.horizon.momentum == \
        opt.param_groups[0]["momentum"]
    plain, _, _, _ = _train(optimizer=torch.optim.SGD)
    with pytest.raises(ValueError, match="steps="):
        TrainingHorizon.from_optimizer(plain)
    assert TrainingHorizon.from_optimizer(plain, steps=23).lr_sum == pytest.approx(0.23)


def test_what_cannot_be_read_is_an_error_that_names_what_to_pass():
    opt, sched, _, _ = _train(SCHEDULERS["cosine"])
    with pytest.raises(ValueError, match="scheduler="):
        TrainingHorizon.from_optimizer(opt)  # the rate moved: a scheduler ran
    with pytest.raises(ValueError, match="do not divide"):
        TrainingHorizon.from_optimizer(opt, sched, steps=24)
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    o = torch.optim.AdamW(model.parameters(), lr=0.01)
    plateau = lrs.ReduceLROnPlateau(o)
    model(torch.randn(2, 3)).sum().backward()
    o.step()
    plateau.step(1.0)
    with pytest.raises(ValueError, match="HorizonTracker"):
        TrainingHorizon.from_optimizer(o, plateau)
    o2 = torch.optim.AdamW(model.parameters(), lr=0.01)
    seq = lrs.SequentialLR(o2, [lrs.LinearLR(o2, 0.1, 1, 3), lrs.ExponentialLR(o2, 0.9)], [3])
    o2.step()
    seq.step()
    with pytest.raises(ValueError, match="HorizonTracker"):
        TrainingHorizon.from_optimizer(o2, seq)
    fresh = torch.optim.AdamW(model.parameters(), lr=0.01)
    with pytest.raises(ValueError, match="steps="):
        TrainingHorizon.from_optimizer(fresh)  # never stepped: no counter
    with pytest.raises(ValueError, match="no optimizer step"):
        _ = HorizonTracker(fresh).horizon
    with pytest.raises(TypeError, match="Optimizer"):
        HorizonTracker(model)


def test_a_tampered_scheduler_is_caught_by_the_replay_check():
    opt, sched, _, _ = _train(SCHEDULERS["exponential"])
    opt.param_groups[0]["lr"] *= 3  # changed by hand: no replay can explain it
    with pytest.raises(ValueError, match="replaying ExponentialLR"):
        TrainingHorizon.from_optimizer(opt, sched)


def test_the_tracker_stops_when_removed():
    opt, _, tracker, _ = _train(n=3)
    with tracker:
        pass
    opt.step()
    assert tracker.horizon.steps == 3


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(sorted(SCHEDULERS)), st.integers(1, 40))
def test_replay_matches_the_tracker_for_any_length(name, n):
    opt, sched, tracker, _ = _train(SCHEDULERS[name], n=n)
    after = TrainingHorizon.from_optimizer(opt, sched)
    assert after.lr_sum == pytest.approx(tracker.horizon.lr_sum, rel=1e-9, abs=1e-15)
    assert after.steps == tracker.horizon.steps == n


def test_attributor_takes_the_tracked_horizon(tmp_path):
    """The tracked S gives the same damping rule as the hand-written TrainingHorizon."""
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(24, 6, generator=g, dtype=torch.float64),
                         torch.randint(0, 3, (24,), generator=g))
    model = mlp()
    opt = torch.optim.AdamW(model.parameters(), lr=0.02)
    sched = lrs.LambdaLR(opt, lambda s: 1 - s / 10)
    tracker = HorizonTracker(opt)
    task = ClassificationTask()
    for _ in range(10):
        opt.zero_grad()
        task.compute_train_loss(data[:], model).sum().backward()
        opt.step()
        sched.step()
    h = TrainingHorizon.from_optimizer(opt, sched)
    assert h.lr_sum == pytest.approx(0.02 * sum(1 - s / 10 for s in range(10)))
    att = Attributor(task, model, tmp_path / "s", dtype="float32",
                     build=BuildConfig(progress=False, batch_size=8),
                     horizon=tracker.horizon).fit(data)
    assert att.damping_rule["rule"] == "horizon"
    assert att.damping_rule["lr_sum"] == pytest.approx(h.lr_sum)
    assert att.damping_rule["damping"] == pytest.approx(1 / h.lr_sum)
