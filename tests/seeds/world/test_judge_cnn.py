"""The CNN mining judge: verdicts, failures, save/load, shipped accuracy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tamis.seeds.prompts import ObjectName, Question
from tamis.seeds.world.captions import object_name
from tamis.seeds.world.judge_cnn import DEFAULT_JUDGE, CNNJudge, JudgeNet, judge_example
from tamis.seeds.world.render import count_scene, render, spatial_scene


def _judge() -> CNNJudge:
    torch.manual_seed(0)
    return CNNJudge(JudgeNet())


def test_verdicts_failures_and_errors():
    """Count and spatial questions get verdicts; an unknown object is a recorded failure."""
    judge = _judge()
    rng = np.random.default_rng(0)
    imgs = np.stack([render(count_scene(rng, "red", "circle", 3)),
                     render(spatial_scene(rng, ("red", "circle"), "under", ("blue", "square"))),
                     render([])])
    qs = [Question("count", object_name("red", "circle"), count=3),
          Question("spatial", object_name("red", "circle"), relation="under",
                   obj2=object_name("blue", "square")),
          Question("count", ObjectName("zebra", "zebras"), count=2)]
    v = judge.judge(imgs, qs)
    assert len(v) == 3
    assert isinstance(v[0].answer, int) and v[0].correct == (v[0].answer == 3)
    assert isinstance(v[1].answer, bool) and v[1].correct is v[1].answer
    assert v[2].correct is None and "zebra" in v[2].error
    with pytest.raises(ValueError, match="shape"):
        judge.judge(imgs[0], qs[:1])
    with pytest.raises(ValueError, match="questions"):
        judge.judge(imgs, qs[:2])


def test_save_load_same_predictions(tmp_path):
    """fp16 storage round trip: the loaded judge gives the predictions of a half-rounded copy."""
    judge = _judge()
    judge.save(tmp_path / "j")
    loaded = CNNJudge.load(tmp_path / "j")
    ref = JudgeNet()
    ref.load_state_dict({k: v.half().float() for k, v in judge.net.state_dict().items()})
    rng = np.random.default_rng(1)
    ex = [judge_example(rng) for _ in range(16)]
    x, q = np.stack([e.image for e in ex]), np.stack([e.query for e in ex])
    a = loaded.predict(x, q)
    b = CNNJudge(ref).predict(x, q)
    assert all(np.array_equal(u, w) for u, w in zip(a, b, strict=True))
    with pytest.raises(FileNotFoundError, match="judge"):
        CNNJudge.load(tmp_path / "none")


def test_shipped_judge_accuracy_on_clean_renders():
    """The shipped judge is good but not perfect on clean renders (real, recomputed value)."""
    if not (DEFAULT_JUDGE / "judge.safetensors").exists():
        pytest.skip("no shipped judge")
    judge = CNNJudge.load()
    rng = np.random.default_rng(123)
    ex = [judge_example(rng, augment=False) for _ in range(300)]
    c, r = judge.predict(np.stack([e.image for e in ex]), np.stack([e.query for e in ex]))
    lc = np.array([e.count for e in ex])
    lr = np.array([e.relation for e in ex])
    acc = (np.sum(c[lc >= 0] == lc[lc >= 0]) + np.sum(r[lr >= 0] == lr[lr >= 0])) / len(ex)
    assert 0.8 < acc < 0.99
