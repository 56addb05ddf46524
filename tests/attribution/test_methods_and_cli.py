"""Baselines in the same engine, and the CLI over it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from typer.testing import CliRunner

from attribution.testable_tasks import ClassificationTask, classification_data, mlp
from tamis.attribution import Attributor, BuildConfig, ProjectionConfig, ScoreConfig
from tamis.cli import app

QUIET = BuildConfig(batch_size=5, shard_size=7, compute_dtype="float64", progress=False)
TASK_FILE = str(Path(__file__).parent / "cli_task.py") + ":make"


def _fit(tmp_path, method):
    return Attributor(
        ClassificationTask(),
        mlp(),
        tmp_path / method,
        method=method,
        projection=ProjectionConfig(d1=4, d2=3),
        dtype="float64",
        build=QUIET,
        compute_dtype=torch.float64,
    ).fit(classification_data(15))


def test_grad_dot_and_cosine_are_plain_inner_products(tmp_path):
    dense = _fit(tmp_path, "logra")
    names = dense.store.layer_names
    g = torch.cat(
        [
            torch.cat([c.dense(n) for n in names], 1)
            for c in dense.store.iter_chunks(100, torch.float64)
        ]
    )
    assert g.shape[0] == 15
    queries = classification_data(3, seed=2)
    from tamis.attribution import query_gradients

    q = query_gradients(
        ClassificationTask(), dense.model, queries, dense.store, dtype=torch.float64, progress=False
    )
    q = torch.cat([q[n] for n in dense.store.layer_names], 1)
    cfg = ScoreConfig(progress=False)
    dot = _fit(tmp_path, "grad_dot").score(queries, cfg).scores
    torch.testing.assert_close(dot, q @ g.T)
    cos = _fit(tmp_path, "grad_cos").score(queries, cfg).scores
    expected = (q / q.norm(dim=1, keepdim=True)) @ (g / g.norm(dim=1, keepdim=True)).T
    torch.testing.assert_close(cos, expected)
    assert cos.abs().max() <= 1 + 1e-9


def test_cli_build_info_query_verify(tmp_path):
    runner = CliRunner()
    store = str(tmp_path / "store")
    res = runner.invoke(
        app,
        [
            "attribute",
            "build",
            "--task",
            TASK_FILE,
            "--store",
            store,
            "--d1",
            "4",
            "--d2",
            "3",
            "--rank-c",
            "1",
            "--dtype",
            "float32",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "bytes/example" in res.output
    res = runner.invoke(app, ["attribute", "info", "--store", store])
    assert res.exit_code == 0 and "fc" not in res.output and "N = 13" in res.output
    out = tmp_path / "scores.npz"
    res = runner.invoke(
        app,
        [
            "attribute",
            "query",
            "--task",
            TASK_FILE,
            "--store",
            store,
            "--out",
            str(out),
            "--rank-r",
            "4",
            "--top-k",
            "2",
            "--self-scores",
        ],
    )
    assert res.exit_code == 0, res.output
    arrays = np.load(out)
    assert arrays["scores"].shape == (3, 13)
    assert arrays["helpful_indices"].shape == (3, 2)
    assert arrays["self_influence"].shape == (13,)
    np.testing.assert_array_equal(arrays["helpful_indices"][:, 0], arrays["scores"].argmax(1))
    res = runner.invoke(app, ["attribute", "verify", "--store", store])
    assert res.exit_code == 0 and "verified" in res.output
    out_true = tmp_path / "scores_true.npz"
    res = runner.invoke(app, ["attribute", "query", "--task", TASK_FILE, "--store", store,
                              "--out", str(out_true), "--rank-r", "4", "--fisher", "true",
                              "--n-samples", "2"])
    assert res.exit_code == 0, res.output
    true_scores = np.load(out_true)["scores"]
    assert true_scores.shape == (3, 13) and np.isfinite(true_scores).all()
    assert not np.allclose(true_scores, arrays["scores"])
    res = runner.invoke(app, ["attribute", "query", "--task", TASK_FILE, "--store", store,
                              "--out", str(out_true), "--n-samples", "0", "--fisher", "true"])
    assert res.exit_code == 2 and "n_samples must be an integer >= 1" in res.output
    out_kron = tmp_path / "scores_ekfac.npz"
    res = runner.invoke(app, ["attribute", "query", "--task", TASK_FILE, "--store", store,
                              "--out", str(out_kron), "--curvature", "ekfac", "--fisher",
                              "true", "--self-scores"])
    assert res.exit_code == 0, res.output
    kron = np.load(out_kron)
    assert kron["scores"].shape == (3, 13) and np.isfinite(kron["scores"]).all()
    assert (kron["self_influence"] > 0).all()
    res = runner.invoke(app, ["attribute", "query", "--task", TASK_FILE, "--store", store,
                              "--curvature", "ekfac", "--granularity", "model"])
    assert res.exit_code == 2 and "per-layer curvature" in res.output


def test_cli_errors_are_named(tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["attribute", "query", "--task", TASK_FILE, "--store", str(tmp_path)])
    assert res.exit_code == 2 and "not a tamis store" in res.output
    res = runner.invoke(app, ["attribute", "build", "--task", "nonsense", "--store", str(tmp_path)])
    assert res.exit_code == 2 and "module:function" in res.output


def test_zero_argument_attributor_runs_on_a_small_classifier(tmp_path):
    """The paper's preset (d1 = d2 = 64) on layers narrower than 64: clipped, recorded."""
    att = Attributor(ClassificationTask(), mlp(), tmp_path / "s", method="lorif").fit(
        classification_data(15))
    layers = att.store.layers
    assert all(lay["clipped"] for lay in layers)
    assert all(lay["d1"] <= lay["in_dim"] and lay["d2"] <= lay["out_dim"] for lay in layers)
    scores = att.score(classification_data(4)).scores
    assert scores.shape == (4, 15) and np.isfinite(np.asarray(scores)).all()


def test_default_preset_is_unprojected_ekfac_on_small_layers(tmp_path):
    """``Attributor(task, model, path)`` is EK-FAC with sides <= 1024 unprojected: on a small
    model it equals the explicit identity-projection EK-FAC, and the store records it."""
    from tamis.attribution.presets import PRESETS, curvature_kind_for

    data, queries = classification_data(15), classification_data(4, seed=3)
    default = Attributor(ClassificationTask(), mlp(), tmp_path / "d", build=QUIET,
                         dtype="float64", compute_dtype=torch.float64).fit(data)
    assert default.method == "ekfac" and default.store.manifest["preset"] == "ekfac"
    assert curvature_kind_for(default.store.manifest) == "ekfac"
    assert all(lay["rank"] == 1 for lay in default.store.layers)  # no sequence axis
    explicit = Attributor(ClassificationTask(), mlp(), tmp_path / "e", method="ekfac",
                          projection=ProjectionConfig(kind="identity"), rank_c=1,
                          build=QUIET, dtype="float64", compute_dtype=torch.float64).fit(data)
    cfg = ScoreConfig(progress=False)
    torch.testing.assert_close(default.score(queries, cfg).scores,
                               explicit.score(queries, cfg).scores)
    assert PRESETS["lorif"].factors.rank == 1 and PRESETS["lorif"].curvature.kind == "lowrank"
    assert curvature_kind_for({"rank": None}) == "dense"
    assert curvature_kind_for({"rank": 1}) == "lowrank"


def test_cli_query_auto_uses_the_preset_the_store_was_built_for(tmp_path):
    runner = CliRunner()
    outs = {}
    for method in ("ekfac", "lorif"):
        store = str(tmp_path / method)
        res = runner.invoke(app, ["attribute", "build", "--task", TASK_FILE, "--store", store,
                                  "--method", method, "--dtype", "float32"])
        assert res.exit_code == 0, res.output
        for curvature in ("auto", "ekfac" if method == "ekfac" else "lowrank"):
            out = tmp_path / f"{method}-{curvature}.npz"
            res = runner.invoke(app, ["attribute", "query", "--task", TASK_FILE, "--store",
                                      store, "--out", str(out), "--curvature", curvature])
            assert res.exit_code == 0, res.output
            outs[method, curvature] = np.load(out)["scores"]
    np.testing.assert_allclose(outs["ekfac", "auto"], outs["ekfac", "ekfac"])
    np.testing.assert_allclose(outs["lorif", "auto"], outs["lorif", "lowrank"])
    res = runner.invoke(app, ["attribute", "build", "--task", TASK_FILE, "--store",
                              str(tmp_path / "x"), "--method", "lorfi"])
    assert res.exit_code == 2 and "method must be one of" in res.output


def test_cli_fit_saves_the_curvature_that_query_reuses(tmp_path):
    runner = CliRunner()
    store = str(tmp_path / "s")
    assert runner.invoke(app, ["attribute", "build", "--task", TASK_FILE, "--store", store,
                               "--method", "lorif"]).exit_code == 0
    res = runner.invoke(app, ["attribute", "fit", "--task", TASK_FILE, "--store", store,
                              "--rank-r", "4"])
    assert res.exit_code == 0, res.output
    assert "lowrank curvature" in res.output
    files = list((tmp_path / "s").glob("curvature-lowrank-*.safetensors"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    res = runner.invoke(app, ["attribute", "query", "--task", TASK_FILE, "--store", store,
                              "--rank-r", "4", "--out", str(tmp_path / "o.npz")])
    assert res.exit_code == 0, res.output
    assert files[0].stat().st_mtime_ns == stamp  # reused, not refitted


def test_cli_lr_sum_sets_the_horizon_damping_and_query_reuses_it(tmp_path):
    """--lr-sum 0.25 on a classifier: damping 1 / (0.25 * 1) = 4, kept in the store."""
    runner = CliRunner()
    store = str(tmp_path / "s")
    assert runner.invoke(app, ["attribute", "build", "--task", TASK_FILE, "--store", store,
                               "--dtype", "float32"]).exit_code == 0
    res = runner.invoke(app, ["attribute", "fit", "--task", TASK_FILE, "--store", store])
    assert res.exit_code == 0, res.output
    assert "no training horizon" in res.output and "--lr-sum" in res.output
    res = runner.invoke(app, ["attribute", "fit", "--task", TASK_FILE, "--store", store,
                              "--lr-sum", "0.25"])
    assert res.exit_code == 0, res.output
    assert "damping 4 x mean eigenvalue" in res.output
    assert "no training horizon" not in res.output
    assert (tmp_path / "s" / "training_horizon.json").exists()
    outs = {}
    for name, extra in (("horizon", []), ("given", ["--damping", "4"]),
                        ("one", ["--damping", "1"])):
        out = tmp_path / f"{name}.npz"
        res = runner.invoke(app, ["attribute", "query", "--task", TASK_FILE, "--store", store,
                                  "--out", str(out), *extra])
        assert res.exit_code == 0, res.output
        outs[name] = np.load(out)["scores"]
    np.testing.assert_allclose(outs["horizon"], outs["given"])
    assert not np.allclose(outs["horizon"], outs["one"])
    res = runner.invoke(app, ["attribute", "fit", "--task", TASK_FILE, "--store", store,
                              "--lr-sum", "-1"])
    assert res.exit_code != 0 and "lr_sum" in res.output
