import numpy as np
import pytest
import torch

from tamis.rationale.config import RationaleConfig, Stage
from tamis.rationale.data import Review, ReviewSet
from tamis.rationale.training import calibrate_sparsity, evaluate, fit, gumbel_tau

from .tiny import tiny_set

TINY = dict(embedding="random", filters=32, width=3, max_len=20, sparsity=1 / 7, lr=1e-2,
            batch_size=32, lambda_continuity=0.0)


def cfg(**kw):
    return RationaleConfig(**{**TINY, **kw})


def test_tiny_fit_reaches_high_f1():
    train, dev = tiny_set(400, 0), tiny_set(100, 1)
    res = fit(train, cfg(**FIT_KW), dev=dev, progress=False)
    f1 = res.history[-1]["dev_rationale"]
    assert min(f1[a]["f1"] for a in train.aspects) > 80.0, f1
    assert res.history[-1]["dev_rating"]["look"]["mse"] < 0.02
    stages = [h["stage"] for h in res.history]
    assert stages == ["S1"] * 4 + ["S2"] * 6 + ["S3"] * 2


FIT_KW = dict(stage1_epochs=4, stage2_epochs=6, stage3_epochs=2)


@pytest.mark.parametrize("method,extra", [
    ("mtm", {}), ("rnp", {}), ("a2r", {}), ("rnp", {"estimator": "reinforce"}),
    ("mtm", {"estimator": "reinforce", "encoder": "gru", "gru_hidden": 8}),
    ("interlock_free", {"contrastive_positives": "simclr", "contrastive_encoder": "generator"}),
    ("interlock_free", {"staged": False}),
    ("mtm", {"selector": "bernoulli", "lambda_overlap": 1.0, "task": "binary"}),
])
def test_every_method_trains(method, extra):
    train = tiny_set(64, 0)
    res = fit(train, cfg(method=method, joint_epochs=2, stage1_epochs=1, stage2_epochs=1,
                         stage3_epochs=1, **extra), dev=tiny_set(16, 1), progress=False)
    for h in res.history:
        assert np.isfinite(h["losses"]["task"])
        assert "dev_rationale" in h and "dev_rating" in h
    assert res.model.predict(train).shape == (64, 2)
    if method == "a2r":
        assert "gap" in res.history[-1]["losses"]


def test_frozen_parts_do_not_move():
    train = tiny_set(64, 0)
    c = cfg(stages=(Stage("P", 1, ("predictor",), full_text=True),
                    Stage("G", 1, ("generator",), contrastive=True)))
    r1 = fit(train, RationaleConfig(**{**c.to_dict(), "stages": c.stages[:1]}), progress=False)
    r2 = fit(train, c, progress=False)
    # the generator is untouched by a predictor-only stage (same init, same seed)
    torch.manual_seed(0)
    g1 = r1.model.generators[0].state_dict()
    p1, p2 = r1.model.predictors[0].state_dict(), r2.model.predictors[0].state_dict()
    for k in p1:
        assert torch.equal(p1[k], p2[k]), k  # the predictor is frozen in stage G
    assert any(not torch.equal(g1[k], r2.model.generators[0].state_dict()[k]) for k in g1)


def test_resume_is_identical(tmp_path):
    train, dev = tiny_set(64, 0), tiny_set(16, 1)
    c = cfg(stage1_epochs=2, stage2_epochs=2, stage3_epochs=1, stage4_epochs=1)
    full = fit(train, c, dev=dev, out_dir=tmp_path / "a", progress=False, seed=3)
    part = fit(train, c, dev=dev, out_dir=tmp_path / "b", progress=False, seed=3, stop_after=3)
    assert len(part.history) == 3 and not (tmp_path / "b" / "model.json").exists()
    part = fit(train, c, dev=dev, out_dir=tmp_path / "b", progress=False, seed=3, stop_after=1)
    rest = fit(train, c, dev=dev, out_dir=tmp_path / "b", progress=False, seed=3)
    sa, sb = full.model.state_dict(), rest.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    strip = [{k: v for k, v in h.items() if k != "wall_s"} for h in full.history]
    assert strip == [{k: v for k, v in h.items() if k != "wall_s"} for h in rest.history]
    again = fit(train, c, dev=dev, out_dir=tmp_path / "b", progress=False, seed=3)
    assert len(again.history) == len(full.history)
    assert (tmp_path / "b" / "model.json").exists() and (tmp_path / "b" / "history.json").exists()


def test_resume_refuses_other_runs(tmp_path):
    train = tiny_set(32, 0)
    c = cfg(joint_epochs=1, method="mtm")
    fit(train, c, out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="another configuration.*lr"):
        fit(train, cfg(joint_epochs=1, method="mtm", lr=0.5), out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="vocabulary fingerprint"):
        fit(tiny_set(32, 5), c, out_dir=tmp_path, progress=False)
    other = tiny_set(32, 0, aspects=("look", "taste"))
    with pytest.raises(ValueError, match="aspects"):
        fit(other, c, out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="seed"):
        fit(train, c, out_dir=tmp_path, progress=False, seed=1)
    (tmp_path / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="corrupted checkpoint"):
        fit(train, c, out_dir=tmp_path, progress=False)


def test_bad_training_data():
    good = tiny_set(8, 0)
    with pytest.raises(ValueError, match="no reviews"):
        fit(ReviewSet(good.aspects, []), cfg(), progress=False)
    r = good.reviews
    nan_all = ReviewSet(good.aspects, [Review(x.tokens, np.array([x.ratings[0], np.nan]))
                                       for x in r])
    with pytest.raises(ValueError, match=r"missing \(NaN\) for aspect\(s\) \['smell'\]"):
        fit(nan_all, cfg(), progress=False)
    bad = ReviewSet(good.aspects, [Review(x.tokens, x.ratings) for x in r])
    bad.reviews[3].ratings = np.array([0.5, 1.5])  # mutated after the set's own checks
    with pytest.raises(ValueError, match=r"\[0, 1\]; review 3 has smell=1.5"):
        fit(bad, cfg(), progress=False)
    with pytest.raises(ValueError, match="per-aspect targets"):
        fit(good, cfg(sparsity=(0.1, 0.1, 0.1)), progress=False)
    with pytest.raises(ValueError, match="aspect mismatch"):
        fit(good, cfg(), dev=tiny_set(4, 1, aspects=("look", "taste")), progress=False)


def test_nan_ratings_and_long_texts_are_handled():
    base = tiny_set(40, 0)
    rev = list(base.reviews)
    rev[0] = Review(rev[0].tokens, np.array([np.nan, 0.5]), rev[0].rationales)
    rev[2] = Review(rev[2].tokens * 3, rev[2].ratings)
    data = ReviewSet(base.aspects, rev)
    with pytest.warns(UserWarning, match="truncated"):
        res = fit(data, cfg(method="mtm", joint_epochs=1), dev=data, progress=False)
    assert np.isfinite(res.history[-1]["losses"]["task"])
    masks = res.model.explain([[], rev[1].tokens])  # empty token lists are accepted
    assert masks[0].shape == (2, 0) and masks[1].shape == (2, len(rev[1].tokens))


def test_calibrate_sparsity_hits_target():
    train = tiny_set(64, 0)
    res = fit(train, cfg(method="mtm", joint_epochs=2), progress=False)
    for target in (5.0, 12.0, (8.0, 15.0)):
        rate = calibrate_sparsity(res.model, train, target, tol=1.0)
        assert np.all(np.abs(rate - np.broadcast_to(target, (2,))) <= 1.0), rate
    with pytest.raises(ValueError, match="percent"):
        calibrate_sparsity(res.model, train, 0.0)
    ev = evaluate(res.model, train)
    assert abs(ev["rationale"]["smell"]["sparsity"] - 15.0) <= 1.0


def test_gumbel_tau_schedule():
    c = RationaleConfig()
    assert gumbel_tau(c, 0, 10) == 1.0
    assert gumbel_tau(c, 9, 10) == pytest.approx(0.5)
    assert gumbel_tau(c, 0, 1) == 1.0
    assert 0.5 < gumbel_tau(c, 5, 10) < 1.0


def test_config_validation_and_round_trip():
    c = RationaleConfig(sparsity=[0.1, 0.2], stages=[{"name": "x", "epochs": 2,
                                                      "train": ["predictor"]}])
    assert RationaleConfig.from_dict(c.to_dict()) == c
    for bad, msg in [
        (dict(method="fr2"), "method must be one of"),
        (dict(width=4), "odd"),
        (dict(sparsity=1.5), "sparsity"),
        (dict(lr=0), "lr must be > 0"),
        (dict(stages=[Stage("s", 1, ("generator",), full_text=True)]), "full-text"),
        (dict(stages=[Stage("s", 1, ("predictor",), contrastive=True)]), "contrastive"),
        (dict(stages=[Stage("s", 1, ("decoder",))]), "subset"),
        (dict(joint_epochs=0, method="mtm"), "0 epochs"),
        (dict(method="a2r", estimator="reinforce"), "soft"),
    ]:
        with pytest.raises(ValueError, match=msg):
            RationaleConfig(**bad)
    with pytest.raises(ValueError, match="unknown RationaleConfig"):
        RationaleConfig.from_dict({"nope": 1})
    with pytest.raises(ValueError, match="sum"):
        RationaleConfig(sparsity=0.4).alphas(3)
    assert [s.name for s in RationaleConfig().schedule()] == ["S1", "S2", "S3"]
    assert RationaleConfig(stage4_epochs=2).schedule()[-1].lr_scale == 0.1
    assert [s.name for s in RationaleConfig(method="rnp").schedule()] == ["joint"]
    assert not RationaleConfig(method="mtm").schedule()[0].contrastive
    assert RationaleConfig(staged=False).schedule()[0].contrastive
    assert not RationaleConfig(lambda_contrastive=0).schedule()[1].contrastive


def test_default_glove_path_trains():
    train = tiny_set(64, 0)
    res = fit(train, RationaleConfig(filters=16, max_len=20, stage1_epochs=1, stage2_epochs=1,
                                     stage3_epochs=1, sparsity=1 / 7), progress=False)
    emb = res.model.predictors[0].embed.weight
    assert emb.shape[1] == 50 and not emb.requires_grad  # frozen GloVe
    assert [h["stage"] for h in res.history] == ["S1", "S2", "S3"]
    assert all(np.isfinite(h["losses"]["task"]) for h in res.history)
