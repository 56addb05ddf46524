"""`tune`: the returned choice is the argmax of the LDS it measured; budgets and CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from attribution.cli_task import make
from tamis.attribution import BuildConfig, FactorConfig, ProjectionConfig, build_store
from tamis.attribution.errors import AttributionError
from tamis.attribution.tuning import TuneConfig, load_tuning, tune
from tamis.cli import app

QUIET = BuildConfig(batch_size=5, shard_size=7, compute_dtype="float64", progress=False)
TASK_FILE = str(Path(__file__).parent / "cli_task.py") + ":make"


def _bundle_and_store(tmp_path):
    b = make()
    store = build_store(b.task, b.model, b.train, tmp_path / "store",
                        ProjectionConfig(d1=4, d2=3), FactorConfig(1, "float64"), QUIET)
    return b, store


def test_tune_returns_the_argmax_and_writes_it(tmp_path):
    b, store = _bundle_and_store(tmp_path)
    cfg = TuneConfig(dampings=(0.01, 1.0, 100.0), ranks=(2, 50), fishers=("empirical", "true"),
                     n_subsets=6)
    res = tune(b.task, b.model, b.train, b.queries, store, b.retrain, cfg, progress=False)
    # 3 dampings x 2 Fishers x (lowrank at 2 ranks + ekfac)
    assert len(res.table) == 3 * 2 * 3
    assert {r["kind"] for r in res.table} == {"lowrank", "ekfac"}
    best = max((r for r in res.table if np.isfinite(r["lds"])), key=lambda r: r["lds"])
    assert res.best == best
    on_disk = load_tuning(store.path)
    assert on_disk.best == res.best and len(on_disk.table) == 18
    cc = on_disk.curvature_config()
    assert (cc.kind, cc.fisher, cc.damping) == (best["kind"], best["fisher"], best["damping"])
    if best["kind"] == "lowrank":
        assert cc.rank == best["rank"]
    # the retrained measurements are cached: a second call retrains nothing
    calls = []

    def counting(mask, seed):
        calls.append(seed)
        return b.retrain(mask, seed)

    again = tune(b.task, b.model, b.train, b.queries, store, counting, cfg, progress=False)
    assert calls == [] and again.best == res.best


def test_tuning_budget_and_bad_input(tmp_path):
    with pytest.raises(ValueError, match="too small for any LDS"):
        TuneConfig(n_subsets=2)
    with pytest.raises(ValueError, match="fishers"):
        TuneConfig(fishers=("ggn",))
    with pytest.raises(ValueError, match="kinds"):
        TuneConfig(kinds=("dense",))
    b, store = _bundle_and_store(tmp_path)
    with pytest.raises(AttributionError, match="expected one per query"):
        tune(b.task, b.model, b.train, b.queries, store, lambda m, s: np.zeros(7),
             TuneConfig(n_subsets=3, ranks=(2,), dampings=(1.0,), fishers=("empirical",)),
             progress=False)
    with pytest.raises(AttributionError, match="no tuning.json"):
        load_tuning(tmp_path / "nowhere")
    (store.path / "tuning.json").write_text("{not json")
    with pytest.raises(AttributionError, match="not a tuning file"):
        load_tuning(store.path)


def test_cli_tune_then_query_tuned(tmp_path):
    runner = CliRunner()
    store = str(tmp_path / "store")
    res = runner.invoke(app, ["attribute", "build", "--task", TASK_FILE, "--store", store,
                              "--d1", "4", "--d2", "3", "--dtype", "float32"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["attribute", "query", "--task", TASK_FILE, "--store", store,
                              "--tuned", "--out", str(tmp_path / "s.npz")])
    assert res.exit_code == 2 and "attribute tune" in res.output
    res = runner.invoke(app, ["attribute", "tune", "--task", TASK_FILE, "--store", store,
                              "--subsets", "5", "--ranks", "2", "--dampings", "0.1,10",
                              "--fishers", "empirical"])
    assert res.exit_code == 0, res.output
    tuning = json.loads((tmp_path / "store" / "tuning.json").read_text())
    best = tuning["best"]
    assert f"damping={best['damping']:g}" in " ".join(res.output.split())
    # --kinds auto on a store built for the (default) EK-FAC preset searches Kronecker kinds
    assert {row["kind"] for row in tuning["table"]} == {"ekfac", "kfac"}
    out = tmp_path / "s.npz"
    res = runner.invoke(app, ["attribute", "query", "--task", TASK_FILE, "--store", store,
                              "--tuned", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert np.load(out)["scores"].shape == (3, 13)
    res = runner.invoke(app, ["attribute", "tune", "--task", TASK_FILE, "--store", store,
                              "--subsets", "2"])
    assert res.exit_code == 2 and "too small for any LDS" in " ".join(res.output.split())
