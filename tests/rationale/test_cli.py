"""``tamis rationale train|evaluate|explain`` round trip on a tiny JSONL, and its bad input."""

import json

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from tamis.rationale.cli import app, build_config, parse_value
from tamis.rationale.data import Review, ReviewSet, write_jsonl

runner = CliRunner()
ASPECTS = ("look", "smell")
TINY = [
    "--set", "embedding=\"random\"", "--set", "filters=8", "--set", "width=3",
    "--set", "random_embedding_dim=8", "--set", "stage1_epochs=1", "--set", "stage2_epochs=1",
    "--set", "stage3_epochs=1", "--max-len", "16", "--batch-size", "16", "--no-progress",
]


def _set(n: int, seed: int) -> ReviewSet:
    rng = np.random.default_rng(seed)
    reviews = []
    for _ in range(n):
        toks = [f"w{j}" for j in rng.integers(0, 10, 8)]
        levels = rng.integers(0, 5, 2)
        toks[2], toks[6] = f"look{levels[0]}", f"smell{levels[1]}"
        reviews.append(Review(toks, levels / 4.0, {"look": [(2, 3)], "smell": [(6, 7)]}))
    return ReviewSet(ASPECTS, reviews)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    write_jsonl(root / "train.jsonl", _set(64, 0))
    write_jsonl(root / "dev.jsonl", _set(16, 1))
    res = runner.invoke(app, ["train", "--data", str(root / "train.jsonl"), "--dev",
                              str(root / "dev.jsonl"), "--out", str(root / "run"), *TINY])
    assert res.exit_code == 0, res.output
    return root


def test_train_writes_model_and_history(trained):
    run = trained / "run"
    assert (run / "model.safetensors").exists() and (run / "model.json").exists()
    history = json.loads((run / "history.json").read_text())
    assert [h["stage"] for h in history] == ["S1", "S2", "S3"]
    meta = json.loads((run / "model.json").read_text())
    assert meta["aspects"] == list(ASPECTS) and meta["config"]["filters"] == 8


def test_train_rerun_resumes_without_retraining(trained):
    from safetensors.torch import load_file

    run = trained / "run"
    before = load_file(run / "model.safetensors")
    res = runner.invoke(app, ["train", "--data", str(trained / "train.jsonl"), "--out",
                              str(run), *TINY])
    assert res.exit_code == 0, res.output
    after = load_file(run / "model.safetensors")
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_evaluate_prints_table_and_json(trained):
    out = trained / "scores.json"
    res = runner.invoke(app, ["evaluate", "--model", str(trained / "run"), "--data",
                              str(trained / "dev.jsonl"), "--json", str(out)])
    assert res.exit_code == 0, res.output
    assert "look" in res.output and "F1" in res.output
    scores = json.loads(out.read_text())
    assert set(scores) == {"rating", "rationale"}
    assert set(ASPECTS) <= set(scores["rationale"])


def test_evaluate_with_target_sparsity_matches_it(trained):
    out = trained / "calibrated.json"
    res = runner.invoke(app, ["evaluate", "--model", str(trained / "run"), "--data",
                              str(trained / "dev.jsonl"), "--json", str(out),
                              "--target-sparsity", "12.5"])
    assert res.exit_code == 0, res.output
    assert "calibrated selection" in res.output
    rat = json.loads(out.read_text())["rationale"]
    # 8 tokens per review: 12.5 % is exactly one token each; ties may leave it within 1 point
    for a in ASPECTS:
        assert abs(rat[a]["sparsity"] - 12.5) <= 1.0


def test_explain_text_and_file_with_html(trained):
    res = runner.invoke(app, ["explain", "--model", str(trained / "run"), "--text",
                              "w1 look3 w2 smell0"])
    assert res.exit_code == 0, res.output
    assert "legend" in res.output and "predicted" in res.output
    html = trained / "out.html"
    res = runner.invoke(app, ["explain", "--model", str(trained / "run"), "--data",
                              str(trained / "dev.jsonl"), "--limit", "3", "--html", str(html)])
    assert res.exit_code == 0, res.output
    text = html.read_text()
    assert text.count("predicted:") == 3 and "look" in text


def test_explain_defaults_to_the_demo_checkpoint(trained, tmp_path, monkeypatch):
    import tamis.rationale.cli as cli

    monkeypatch.setattr(cli, "DEMO_MODEL", trained / "run")
    res = runner.invoke(app, ["explain", "--text", "w1 look3 w2 smell0"])
    assert res.exit_code == 0, res.output
    monkeypatch.setattr(cli, "DEMO_MODEL", tmp_path / "absent")
    res = runner.invoke(app, ["explain", "--text", "w1 look3"])
    assert res.exit_code == 1 and "demo checkpoint" in res.output


def test_explain_long_text_warns_truncation(trained):
    res = runner.invoke(app, ["explain", "--model", str(trained / "run"), "--text",
                              " ".join(["w1"] * 40)])
    assert res.exit_code == 0, res.output
    assert "truncated" in res.output


@pytest.mark.parametrize("args, message", [
    (["explain", "--text", "a", "--data", "x.jsonl"], "exactly one of"),
    (["explain", "--model", "{run}", "--text", "  "], "empty"),
    (["evaluate", "--model", "{run}", "--data", "missing.jsonl"], "does not exist"),
    (["evaluate", "--model", "{root}/nowhere", "--data", "{root}/dev.jsonl"], "does not exist"),
    (["evaluate", "--model", "{run}", "--data", "{root}/other.jsonl"], "unknown aspect"),
    (["train", "--data", "{root}/train.jsonl", "--out", "{root}/r2", "--method", "magic"],
     "method must be one of"),
    (["train", "--data", "{root}/train.jsonl", "--out", "{root}/r2", "--set", "nope=1"],
     "unknown RationaleConfig field"),
    (["train", "--data", "{root}/train.jsonl", "--out", "{root}/r2", "--sparsity",
      "0.1,0.1,0.1"], "3 per-aspect targets"),
    (["train", "--data", "{root}/train.jsonl", "--out", "{root}/r2", "--sparsity", "x"],
     "comma list"),
    (["evaluate", "--model", "{run}", "--data", "{root}/dev.jsonl", "--target-sparsity",
      "150"], "percent"),
])
def test_bad_input_names_the_problem(trained, args, message):
    other = ReviewSet(("look", "taste"), [Review(["a", "b"], np.array([0.5, 0.5]))])
    write_jsonl(trained / "other.jsonl", other)
    args = [a.format(run=trained / "run", root=trained) for a in args]
    res = runner.invoke(app, args)
    assert res.exit_code != 0
    assert message in " ".join(res.output.split())


def test_corrupted_model_file_is_reported(trained, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "model.json").write_text((trained / "run" / "model.json").read_text())
    (bad / "model.safetensors").write_bytes(b"not a safetensors file")
    res = runner.invoke(app, ["explain", "--model", str(bad), "--text", "w1 look2"])
    assert res.exit_code == 1
    assert "corrupted" in res.output


def test_build_config_layers_file_options_and_sets(tmp_path):
    f = tmp_path / "cfg.json"
    f.write_text(json.dumps({"method": "mtm", "filters": 32, "lr": 0.01}))
    cfg = build_config(f, {"lr": 0.002, "encoder": None}, ["sparsity=[0.1, 0.2]", "staged=false"])
    assert (cfg.method, cfg.filters, cfg.lr, cfg.sparsity, cfg.staged) == (
        "mtm", 32, 0.002, (0.1, 0.2), False)
    assert parse_value("abc") == "abc" and parse_value("3") == 3
    with pytest.raises(ValueError, match="key=value"):
        build_config(None, {}, ["novalue"])


@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=60))
def test_explain_fuzz_text(trained, text):
    from tamis.rationale.data import tokenize

    res = runner.invoke(app, ["explain", "--model", str(trained / "run"), "--text", text])
    if tokenize(text):
        assert res.exit_code == 0, res.output
        assert "predicted" in res.output
    else:
        assert res.exit_code == 1 and "empty" in res.output


def test_explain_with_the_shipped_demo_checkpoint():
    from tamis.rationale.cli import DEMO_MODEL

    if not (DEMO_MODEL / "model.json").exists():
        pytest.skip("the demo checkpoint is not shipped in this checkout")
    res = runner.invoke(app, ["explain", "--text", "the appearance is hazy gold ."])
    assert res.exit_code == 0, res.output
    assert "appearance" in res.output and "predicted" in res.output
