"""The demo section builds (on a tiny model trained here) with and without benchmark results."""

from __future__ import annotations

import json

import pytest

from tamis.rationale import demo
from tamis.rationale.config import RationaleConfig
from tamis.rationale.data import SyntheticConfig, synthetic_reviews
from tamis.rationale.training import fit


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("demo_model")
    train = synthetic_reviews(SyntheticConfig(n_reviews=64, max_len=64, seed=5))
    cfg = RationaleConfig(method="mtm", embedding="random", max_len=64, filters=8, width=3,
                          joint_epochs=1, batch_size=32)
    fit(train, cfg, progress=False).model.save(d)
    (d / "training.json").write_text(json.dumps({"corpus": {"correlation": 0.5,
                                                            "shortcut": 0.5}}))
    return d


def test_section_without_results(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "MODEL_DIR", tiny_model_dir)
    monkeypatch.setattr(demo, "N_SCORE", 40)
    monkeypatch.setattr(demo, "RESULTS_DIR", tmp_path / "none")
    s = demo.demo_section(tmp_path)
    assert s.error is None and "legend:" in s.body_html
    assert "no committed benchmark results" in s.body_html
    assert any("demo model: test F1" in line for line in s.console)


def test_section_with_results(tiny_model_dir, tmp_path, monkeypatch):
    res = tmp_path / "results"
    res.mkdir()
    (res / "rationale_interlocking.json").write_text(json.dumps(
        {"A": {"rnp": {"0.0": {"f1": [40.0, 1.5], "n": 3}, "0.9": {"f1": [20.0, 2.0], "n": 3}}},
         "B": {"rnp": {"0.0": {"f1": [41.0, None], "n": 1}}}}))
    (res / "rationale_matched.json").write_text(json.dumps({"0.9": {
        "rnp": {"n": 3, "f1": {"appearance": [20.0, 1.0]}, "macro": [20.0, 1.0]},
        "interlock_free": {"n": 3, "f1": {"appearance": [30.0, 2.0]}, "macro": [30.0, 2.0]},
        "_gap": {"best_baseline": "rnp", "macro": 10.0}}}))
    monkeypatch.setattr(demo, "MODEL_DIR", tiny_model_dir)
    monkeypatch.setattr(demo, "N_SCORE", 40)
    monkeypatch.setattr(demo, "RESULTS_DIR", res)
    s = demo.demo_section(tmp_path)
    assert "rho = 0.9" in s.body_html and "+10.0 macro F1" in s.body_html
    assert "40.0 +- 1.5 (n=3)" in s.body_html and "world B" in s.body_html
    assert "41.0 (n=1)" in s.body_html


def test_shipped_model_loads_if_present():
    if not (demo.MODEL_DIR / "model.json").exists():
        pytest.skip("the demo model has not been trained in this checkout")
    from tamis.rationale.models import RationaleModel

    m = RationaleModel.load(demo.MODEL_DIR)
    assert tuple(m.aspects) == ("appearance", "aroma", "palate")
    size = sum(p.stat().st_size for p in demo.MODEL_DIR.iterdir())
    assert size < 5_000_000
