"""Training-horizon damping: the rule, its file, the Attributor and the Trainer callback."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import TensorDataset

from tamis.attribution import (
    Attributor,
    BuildConfig,
    CurvatureConfig,
    TrainingHorizon,
    horizon_damping,
)
from tamis.attribution.errors import StoreError
from tamis.attribution.horizon import (
    HORIZON_FILE,
    mean_loss_terms,
    read_horizon,
    write_horizon,
)

from .testable_tasks import ClassificationTask, mlp

torch.set_num_threads(1)
BUILD = BuildConfig(progress=False, batch_size=8)


def _data(n: int = 24, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 6, generator=g, dtype=torch.float64),
                         torch.randint(0, 3, (n,), generator=g))


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf, True, "1"])
def test_bad_lr_sum_is_named(bad):
    with pytest.raises(ValueError, match="lr_sum"):
        TrainingHorizon(lr_sum=bad)


def test_from_lrs_sums_the_schedule_and_rejects_an_empty_one():
    h = TrainingHorizon.from_lrs([0.0, 0.5, 1.0, 0.5], optimizer="AdamW")
    assert (h.lr_sum, h.steps, h.optimizer) == (2.0, 4, "AdamW")
    with pytest.raises(ValueError, match="empty"):
        TrainingHorizon.from_lrs([])


@settings(max_examples=50, deadline=None)
@given(st.floats(1e-6, 1e6), st.floats(1.0, 4096.0))
def test_horizon_damping_is_one_over_s_rho(lr_sum, terms):
    lam = horizon_damping(TrainingHorizon(lr_sum), terms)
    assert lam > 0 and math.isclose(lam * lr_sum * terms, 1.0, rel_tol=1e-12)


def test_bad_loss_terms_are_named():
    with pytest.raises(ValueError, match="loss_terms"):
        horizon_damping(TrainingHorizon(1.0), 0.0)


def test_horizon_file_round_trip_and_corruption(tmp_path):
    assert read_horizon(tmp_path) is None
    h = TrainingHorizon(0.9, 300, "AdamW")
    write_horizon(tmp_path, h)
    assert read_horizon(tmp_path) == h
    (tmp_path / HORIZON_FILE).write_text('{"lr_sum": 0.9, "ste')  # truncated mid-write
    with pytest.raises(StoreError, match=HORIZON_FILE):
        read_horizon(tmp_path)
    (tmp_path / HORIZON_FILE).write_text('{"lr_sum": -3}')
    with pytest.raises(StoreError, match="lr_sum"):
        read_horizon(tmp_path)


def test_loss_terms_count_labelled_tokens_of_a_causal_lm():
    from tamis.attribution.hf import IGNORE, CausalLMTask

    ids = torch.ones(3, 6, dtype=torch.long)
    labels = ids.clone()
    labels[0, 4:] = IGNORE
    labels[1, :] = IGNORE
    labels[1, 2] = 1
    data = TensorDataset(ids, torch.ones_like(ids), labels)
    # shifted targets: 3, 1 and 5 labelled next tokens
    assert mean_loss_terms(CausalLMTask(), data, batch_size=2) == pytest.approx(3.0)
    assert mean_loss_terms(ClassificationTask(), _data(5)) == 1.0


def test_attributor_uses_the_horizon_rule_and_records_it(tmp_path):
    """ekfac with a horizon = ekfac at relative damping 1 / S (a classifier: rho = 1)."""
    data, queries, model = _data(), _data(5, seed=1), mlp()
    task = ClassificationTask()
    h = TrainingHorizon(lr_sum=0.25, steps=50)
    att = Attributor(task, model, tmp_path / "h", dtype="float32", build=BUILD,
                     horizon=h).fit(data)
    assert att.damping_rule == {"rule": "horizon", "lr_sum": 0.25, "loss_terms": 1.0,
                                "damping": 4.0}
    ref = Attributor(task, model, tmp_path / "ref", dtype="float32", build=BUILD,
                     curvature=CurvatureConfig(kind="ekfac", damping=4.0)).fit(data)
    assert ref.damping_rule["rule"] == "given"
    torch.testing.assert_close(att.score(queries).scores, ref.score(queries).scores)
    for b, r in zip(att.curvature.blocks, ref.curvature.blocks):
        assert b.damping == pytest.approx(r.damping)
    # the horizon now lives with the store: a later Attributor there picks it up
    again = Attributor(task, model, tmp_path / "h", dtype="float32", build=BUILD).fit(data)
    assert again.damping_rule["rule"] == "horizon"
    torch.testing.assert_close(again.score(queries).scores, ref.score(queries).scores)
    # without a horizon: the preset's 1 x mean eigenvalue
    plain = Attributor(task, model, tmp_path / "p", dtype="float32", build=BUILD).fit(data)
    assert plain.damping_rule == {"rule": "preset", "damping": 1.0}


class _FourTermTask(ClassificationTask):
    """A classifier that says each example's loss averages 4 terms (rho = 4)."""

    def loss_terms(self, batch):
        return torch.full((len(batch[0]),), 4.0)


def test_no_horizon_divides_the_preset_damping_by_the_loss_terms(tmp_path):
    """No horizon, rho = 4: the rule at S = 1, i.e. ekfac at relative damping 1 / 4."""
    data, queries, model, task = _data(), _data(5, seed=1), mlp(), _FourTermTask()
    att = Attributor(task, model, tmp_path / "r", dtype="float32", build=BUILD).fit(data)
    assert att.damping_rule == {"rule": "loss_terms", "loss_terms": 4.0, "damping": 0.25}
    ref = Attributor(task, model, tmp_path / "ref", dtype="float32", build=BUILD,
                     curvature=CurvatureConfig(kind="ekfac", damping=0.25)).fit(data)
    torch.testing.assert_close(att.score(queries).scores, ref.score(queries).scores)
    att.fit(data)  # a second fit starts from the preset again: 1 / 4, not 1 / 16
    assert att.curvature_config.damping == pytest.approx(0.25)
    # a horizon, when there is one, takes precedence: 1 / (S rho) = 1 / (0.5 * 4)
    timed = Attributor(task, model, tmp_path / "h", dtype="float32", build=BUILD,
                       horizon=TrainingHorizon(lr_sum=0.5)).fit(data)
    assert timed.damping_rule["rule"] == "horizon"
    assert timed.damping_rule["damping"] == pytest.approx(0.5)


def test_a_missing_horizon_is_said_and_a_present_one_is_not(tmp_path):
    """The zero-argument fallback warns, naming what to pass; a horizon silences it."""
    import warnings

    data, model, task = _data(), mlp(), ClassificationTask()
    with pytest.warns(UserWarning, match=r"no training horizon.*TrainingHorizon\(lr_sum="):
        Attributor(task, model, tmp_path / "a", dtype="float32", build=BUILD).fit(data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Attributor(task, model, tmp_path / "b", dtype="float32", build=BUILD,
                   horizon=TrainingHorizon(lr_sum=0.5)).fit(data)
        Attributor(task, model, tmp_path / "c", dtype="float32", build=BUILD,
                   curvature=CurvatureConfig(kind="ekfac", damping=0.1)).fit(data)


def test_horizon_leaves_explicit_curvature_and_lorif_alone(tmp_path):
    data, model, task = _data(), mlp(), ClassificationTask()
    h = TrainingHorizon(lr_sum=0.25)
    given_cfg = Attributor(task, model, tmp_path / "g", build=BUILD, horizon=h,
                           curvature=CurvatureConfig(kind="ekfac", damping=0.3)).fit(data)
    assert given_cfg.damping_rule["rule"] == "given"
    assert given_cfg.curvature_config.damping == 0.3
    lorif = Attributor(task, model, tmp_path / "l", method="lorif", build=BUILD,
                       horizon=h).fit(data)
    assert lorif.damping_rule["rule"] == "preset"


def _lr_recorder(transformers):
    """A Trainer callback keeping the lr of every optimizer step (its own list)."""

    class Recorder(transformers.TrainerCallback):
        def __init__(self) -> None:
            self.lrs: list[float] = []

        def on_step_begin(self, args, state, control, optimizer=None, **kw):
            self.lrs.append(optimizer.param_groups[0]["lr"])

    return Recorder()


def test_store_callback_records_the_lr_the_trainer_applied(tmp_path):
    """Sum of the lr of every optimizer step (linear warm-up and decay) = the horizon."""
    transformers = pytest.importorskip("transformers")
    from tamis.attribution.trainer import StoreCallback

    from .test_trainer_callback import BUILD as CB_BUILD
    from .test_trainer_callback import FACTORS, _dicts, _gpt2, _lm_data, _trainer

    rec = _lr_recorder(transformers)
    trainer = _trainer(_gpt2(), _dicts(_lm_data(6)), tmp_path, learning_rate=0.01,
                       warmup_steps=2, lr_scheduler_type="linear", callbacks=[rec])
    StoreCallback(tmp_path / "cb", factors=FACTORS, build=CB_BUILD).attach(trainer)
    trainer.train()
    h = read_horizon(tmp_path / "cb")
    assert h is not None and h.steps == len(rec.lrs) == 6  # 2 epochs x 3 steps
    assert h.lr_sum == pytest.approx(sum(rec.lrs)) and h.lr_sum > 0
    assert h.optimizer is not None and "Adam" in h.optimizer


def test_horizon_from_trainer_state_interpolates_the_logged_rates(tmp_path):
    import json

    from tamis.attribution import horizon_from_trainer_state

    assert horizon_from_trainer_state(tmp_path) is None  # no file
    state = {"global_step": 20, "log_history": [
        {"step": 10, "learning_rate": 1e-3, "loss": 1.0}, {"step": 20, "learning_rate": 5e-4},
        {"step": 20, "train_loss": 0.9}]}
    (tmp_path / "trainer_state.json").write_text(json.dumps(state))
    h = horizon_from_trainer_state(tmp_path)
    # step t uses the rate logged at t - 1: 11 steps at 1e-3, then 9 steps falling linearly
    want = 11 * 1e-3 + sum(1e-3 - 5e-5 * k for k in range(1, 10))
    assert h.steps == 20 and h.lr_sum == pytest.approx(want)
    (tmp_path / "trainer_state.json").write_text(json.dumps({"global_step": 5,
                                                             "log_history": [{"loss": 1}]}))
    assert horizon_from_trainer_state(tmp_path) is None  # no learning rate logged
    (tmp_path / "trainer_state.json").write_text('{"global_step": 5, "log_hi')
    with pytest.raises(ValueError, match="trainer_state.json"):
        horizon_from_trainer_state(tmp_path)


def test_horizon_from_a_real_trainer_state_is_close_to_the_applied_rates(tmp_path):
    """logging_steps=1: every step but the first is exact; the first holds the next rate."""
    transformers = pytest.importorskip("transformers")
    from tamis.attribution import horizon_from_trainer_state

    from .test_trainer_callback import _dicts, _gpt2, _lm_data, _trainer

    rec = _lr_recorder(transformers)
    trainer = _trainer(_gpt2(), _dicts(_lm_data(6)), tmp_path, learning_rate=0.01,
                       lr_scheduler_type="constant", logging_strategy="steps",
                       logging_steps=1, callbacks=[rec])
    trainer.train()
    trainer.save_state()
    h = horizon_from_trainer_state(tmp_path / "out")
    assert h is not None and h.steps == len(rec.lrs) == 6
    assert h.lr_sum == pytest.approx(sum(rec.lrs))  # constant schedule: exact


def test_sgd_horizon_is_an_absolute_damping_with_momentum(tmp_path):
    """SGD: damping 1 / (S / (1 - beta) * rho), absolute; Adam-like: relative."""
    from tamis.attribution import horizon_damping_mode

    sgd = TrainingHorizon(lr_sum=10.0, optimizer="SGD", momentum=0.9)
    assert horizon_damping_mode(sgd) == "absolute"
    assert horizon_damping(sgd) == pytest.approx(1 / 100)
    assert horizon_damping_mode(TrainingHorizon(10.0, optimizer="AdamW")) == "relative"
    assert horizon_damping(TrainingHorizon(10.0, optimizer="AdamW", momentum=0.9)) == 0.1
    with pytest.raises(ValueError, match="momentum"):
        TrainingHorizon(1.0, momentum=1.0)
    data, queries, model = _data(), _data(5, seed=1), mlp()
    att = Attributor(ClassificationTask(), model, tmp_path / "s", dtype="float32", build=BUILD,
                     horizon=TrainingHorizon(lr_sum=4.0, optimizer="SGD")).fit(data)
    assert att.damping_rule["damping_mode"] == "absolute"
    for b in att.curvature.blocks:
        assert b.damping == pytest.approx(0.25)
    ref = Attributor(ClassificationTask(), model, tmp_path / "r", dtype="float32", build=BUILD,
                     curvature=CurvatureConfig(kind="ekfac", damping=0.25,
                                               damping_mode="absolute")).fit(data)
    torch.testing.assert_close(att.score(queries).scores, ref.score(queries).scores)


def test_a_model_loaded_from_a_trainer_folder_brings_its_horizon(tmp_path):
    """Zero arguments on ``from_pretrained(<Trainer folder>)``: the horizon rule, no warning."""
    import warnings

    transformers = pytest.importorskip("transformers")
    from tamis.attribution import horizon_from_trainer_state, horizon_of_model
    from tamis.attribution.hf import SequenceClassificationTask

    from .test_trainer_callback import _bert_cls, _dicts, _lm_data, _trainer

    data = _lm_data(6, seed=3)
    cls = TensorDataset(data.tensors[0].clamp_min(1), torch.ones_like(data.tensors[1]),
                        torch.tensor([0, 1, 2, 0, 1, 2]))
    trainer = _trainer(_bert_cls(), _dicts(cls), tmp_path, learning_rate=0.01,
                       lr_scheduler_type="constant", logging_strategy="steps", logging_steps=1)
    trainer.train()
    trainer.save_model()
    trainer.save_state()
    out = tmp_path / "out"
    expected = horizon_from_trainer_state(out)
    assert expected is not None and expected.lr_sum == pytest.approx(0.06)  # 6 steps x 0.01
    model = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert horizon_of_model(model) == expected
    assert horizon_of_model(torch.nn.Linear(2, 2)) is None  # not loaded from a folder
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        att = Attributor(SequenceClassificationTask(), model, tmp_path / "s",
                         build=BUILD).fit(cls)
    assert att.damping_rule["rule"] == "horizon"
    assert att.damping_rule["lr_sum"] == pytest.approx(expected.lr_sum)
    assert read_horizon(tmp_path / "s") == expected  # recorded with the store
    (out / "trainer_state.json").write_text('{"global_step": 6, "log_hi')
    with pytest.raises(ValueError, match="trainer_state.json"):
        Attributor(SequenceClassificationTask(), model, tmp_path / "t", build=BUILD).fit(cls)
