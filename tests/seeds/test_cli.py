"""The CLI end to end on the tiny pipeline with a loopback VLM judge."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from seeds.test_vlm_judge import _server
from tamis.seeds.cli import app, parse_seeds


@pytest.fixture
def vlm_url():
    server, _ = _server(lambda s, b: (200, "2" if "How many" in str(b) else "yes"))
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_parse_seeds():
    assert parse_seeds("0-3") == [0, 1, 2, 3] and parse_seeds("4") == [0, 1, 2, 3]
    assert parse_seeds("5,9") == [5, 9]
    with pytest.raises(typer.BadParameter):
        parse_seeds("x")


def test_mine_curate_finetune_evaluate(tiny_sd_dir, vlm_url, tmp_path):
    runner = CliRunner()
    common = ["--pipeline", str(tiny_sd_dir), "--steps", "2", "--guidance", "2"]
    vlm = ["--judge", "vlm", "--endpoint", vlm_url, "--vlm-model", "m"]
    mined = tmp_path / "mined.jsonl"
    r = runner.invoke(
        app,
        [
            "mine",
            "--out",
            str(mined),
            *common,
            *vlm,
            "--kind",
            "numerical",
            "--seeds",
            "2",
            "--n-objects",
            "1",
            "--n-backgrounds",
            "1",
        ],
    )
    assert r.exit_code == 0, r.output
    summary = json.loads(mined.with_suffix(".summary.json").read_text())
    assert summary["n_images"] == 10 and summary["failures"] == 0
    assert summary["reliability"]["count=2"]["0"]["accuracy"] == 1.0
    cur = tmp_path / "curated"
    r = runner.invoke(
        app,
        [
            "curate",
            "--mined",
            str(mined),
            "--out",
            str(cur),
            *common,
            *vlm,
            "--kind",
            "numerical",
            "--n-objects",
            "1",
            "--n-backgrounds",
            "1",
        ],
    )
    assert r.exit_code == 0, r.output
    meta = [json.loads(x) for x in (cur / "metadata.jsonl").read_text().splitlines()]
    # the judge always says 2: counts 3..6 are rectified to "two"
    assert len(meta) == 5 and all(m["text"].startswith("two ") for m in meta)
    ft = tmp_path / "ft"
    r = runner.invoke(
        app,
        [
            "finetune",
            "--data",
            str(cur),
            "--out",
            str(ft),
            "--pipeline",
            str(tiny_sd_dir),
            "--steps",
            "2",
            "--batch-size",
            "2",
        ],
    )
    assert r.exit_code == 0, r.output
    assert (ft / "pipeline" / "model_index.json").is_file() and (ft / "checkpoint.pt").is_file()
    ev = tmp_path / "ev"
    r = runner.invoke(
        app,
        [
            "evaluate",
            "--out",
            str(ev),
            "--pipeline",
            str(ft / "pipeline"),
            "--steps",
            "2",
            *vlm,
            "--kind",
            "spatial",
            "--seeds",
            "1",
            "--n-objects",
            "1",
            "--n-boot",
            "50",
        ],
    )
    assert r.exit_code == 0, r.output
    ev2 = tmp_path / "ev2"
    r = runner.invoke(
        app,
        [
            "evaluate",
            "--out",
            str(ev2),
            "--pipeline",
            str(tiny_sd_dir),
            "--steps",
            "2",
            *vlm,
            "--kind",
            "spatial",
            "--seeds",
            "1",
            "--n-objects",
            "1",
            "--n-boot",
            "50",
            "--base",
            str(ev / "results.jsonl"),
        ],
    )
    assert r.exit_code == 0, r.output
    gain = json.loads((ev2 / "evaluation.json").read_text())["relative_gain"]["spatial"]
    assert gain["gain"] == 0.0 and gain["n_prompts"] == 16  # the judge always says yes
    assert gain["two_way"]["difference"] == 0.0 and gain["two_way"]["n_prompts"] == 16
    report = json.loads((ev / "evaluation.json").read_text())
    assert report["kinds"]["spatial"]["accuracy"] == 1.0 and report["kinds"]["spatial"]["n"] == 16


def test_bad_pipeline_dir(tmp_path):
    r = CliRunner().invoke(
        app,
        [
            "mine",
            "--pipeline",
            str(tmp_path),
            "--judge",
            "vlm",
            "--endpoint",
            "http://127.0.0.1:9",
            "--vlm-model",
            "m",
        ],
    )
    assert r.exit_code != 0 and "model_index.json is missing" in r.output
    r = CliRunner().invoke(app, ["mine", "--pipeline", str(tmp_path), "--judge", "vlm"])
    assert r.exit_code != 0


def test_world_mine_curate_finetune_evaluate(tmp_path):
    """The shapes-world path (--world) end to end with the exact checker, 2 DDIM steps."""
    from tamis.seeds.world.model import DEFAULT_DIR

    runner = CliRunner()
    default = json.loads((DEFAULT_DIR / "world_model.json").read_text())["sampling"]
    world = ["--world", str(DEFAULT_DIR), "--steps", "2"]
    mined = tmp_path / "mined.jsonl"
    args = ["mine", "--out", str(mined), *world, "--judge", "checker", "--kind", "numerical"]
    r = runner.invoke(app, [*args, "--seeds", "2", "--n-backgrounds", "1", "--batch-size", "32"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in mined.read_text().splitlines()]
    assert len(rows) == 96  # 48 training count prompts on one background x 2 seeds
    rec = rows[0]["record"]
    assert rec["steps"] == 2 and rec["guidance"] == default["guidance"]  # the folder's
    assert {row["judge"] for row in rows} == {"exact-checker"}
    cur = tmp_path / "curated"
    r = runner.invoke(
        app,
        ["curate", "--mined", str(mined), "--out", str(cur), *world, "--mode", "none",
         "--kind", "numerical", "--n-backgrounds", "1", "--top-n", "1", "--batch-size", "32"],
    )
    assert r.exit_code == 0, r.output
    meta = [json.loads(x) for x in (cur / "metadata.jsonl").read_text().splitlines()]
    assert len(meta) == 48 and all((cur / m["file_name"]).is_file() for m in meta)
    ft = tmp_path / "ft"
    r = runner.invoke(
        app,
        ["finetune", "--data", str(cur), "--out", str(ft), "--world", str(DEFAULT_DIR),
         "--blocks", "d2mu0", "--steps", "2", "--batch-size", "4", "--lr", "1e-4",
         "--timesteps", "500:1000"],
    )
    assert r.exit_code == 0, r.output
    saved = json.loads((ft / "world" / "world_model.json").read_text())
    assert saved["finetune"]["timesteps"] == [500, 1000]
    assert saved["sampling"] == {"steps": default["steps"], "guidance": default["guidance"]}
    assert saved["finetune"]["mode"] == "qk"
    ev = tmp_path / "ev"
    r = runner.invoke(
        app,
        ["evaluate", "--out", str(ev), "--world", str(ft / "world"), "--steps", "2",
         "--kind", "numerical", "--seeds", "1", "--n-boot", "50", "--batch-size", "32"],
    )
    assert r.exit_code == 0, r.output
    report = json.loads((ev / "evaluation.json").read_text())
    assert report["kinds"]["numerical"]["n"] == 12 and report["kinds"]["numerical"]["failures"] == 0
    r = runner.invoke(app, ["mine", "--world", str(tmp_path), "--judge", "checker"])
    assert r.exit_code != 0 and "not a shapes-world model folder" in r.output
    r = runner.invoke(app, ["finetune", "--data", str(cur), "--out", str(tmp_path / "ft2"),
                            "--world", str(DEFAULT_DIR), "--timesteps", "500-1000"])
    assert r.exit_code != 0 and "LOW:HIGH" in r.output
