"""Bad input gets an error that names the problem, and nothing already written is lost."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import TensorDataset

from attribution.testable_tasks import ClassificationTask, classification_data, mlp
from tamis.attribution import (
    AttributionError,
    BuildConfig,
    CurvatureConfig,
    FactorConfig,
    FactorStore,
    NonFiniteError,
    ProjectionConfig,
    ScoreConfig,
    StoreError,
    StoreMismatchError,
    UnsupportedModuleError,
    build_store,
    compute_scores,
    fit_curvature,
)
from tamis.attribution.curvature import Curvature
from tamis.attribution.factors import dense_gradients, low_rank_factors

QUIET = BuildConfig(batch_size=4, shard_size=6, progress=False)
PROJ = ProjectionConfig(d1=3, d2=3, seed=0)


def _store(path, model=None, n=14, **kw):
    return build_store(
        ClassificationTask(),
        model or mlp(),
        classification_data(n),
        path,
        kw.pop("projection", PROJ),
        kw.pop("factors", FactorConfig(1, "float32")),
        QUIET,
        **kw,
    )


class BadShapeTask(ClassificationTask):
    def compute_train_loss(self, batch, model):
        return super().compute_train_loss(batch, model)[:, None]


class NanLossTask(ClassificationTask):
    def compute_train_loss(self, batch, model):
        loss = super().compute_train_loss(batch, model).clone()
        loss[1] = float("nan")
        return loss


class NanGradTask(ClassificationTask):
    def compute_train_loss(self, batch, model):
        out = model(batch[0])
        return torch.sqrt(F.relu(out) * 0).sum(1) + F.cross_entropy(out, batch[1], reduction="none")


def test_loss_of_wrong_shape(tmp_path):
    with pytest.raises(ValueError, match=r"per-example losses of shape \(B,\)"):
        build_store(BadShapeTask(), mlp(), classification_data(5), tmp_path, PROJ, build=QUIET)


def test_empty_dataset(tmp_path):
    empty = TensorDataset(torch.zeros(0, 6), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        build_store(ClassificationTask(), mlp(), empty, tmp_path, PROJ, build=QUIET)


def test_nan_loss_names_examples(tmp_path):
    with pytest.raises(NonFiniteError, match=r"non-finite loss .*\[1\]"):
        build_store(NanLossTask(), mlp(), classification_data(5), tmp_path, PROJ, build=QUIET)


def test_nan_gradient_names_layer(tmp_path):
    with pytest.raises(NonFiniteError, match="non-finite gradient captured at layer '0'"):
        build_store(NanGradTask(), mlp(), classification_data(5), tmp_path, PROJ, build=QUIET)


def test_unsupported_module(tmp_path):
    with pytest.raises(UnsupportedModuleError, match="Tanh"):
        build_store(
            ClassificationTask(["1"]), mlp(), classification_data(5), tmp_path, PROJ, build=QUIET
        )
    with pytest.raises(UnsupportedModuleError, match="no module named"):
        build_store(
            ClassificationTask(["nope"]), mlp(), classification_data(5), tmp_path, PROJ, build=QUIET
        )


def test_grouped_conv_is_refused(tmp_path):
    model = nn.Sequential(nn.Conv2d(2, 4, 3, groups=2), nn.Flatten(), nn.Linear(4, 2))
    data = TensorDataset(torch.randn(3, 2, 3, 3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(UnsupportedModuleError, match="groups=2"):
        build_store(ClassificationTask(), model, data, tmp_path, PROJ, build=QUIET)


def test_projection_larger_than_layer(tmp_path):
    with pytest.raises(
        AttributionError, match=r"d2=8 is larger than layer '0'.*output dimension 5"
    ):
        _store(tmp_path, projection=ProjectionConfig(d1=3, d2=8, clip_to_layer=False))
    store = _store(tmp_path / "clip", projection=ProjectionConfig(d1=3, d2=8))
    assert [lay["d2"] for lay in store.layers] == [5, 3]
    assert [lay["clipped"] for lay in store.layers] == [True, True]
    store = _store(tmp_path / "fits", projection=ProjectionConfig(d1=2, d2=2))
    assert [lay["clipped"] for lay in store.layers] == [False, False]


def test_corrupted_shard(tmp_path):
    store = _store(tmp_path)
    shard = tmp_path / store.manifest["shards"][1]["file"]
    data = bytearray(shard.read_bytes())
    data[-3] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="shard-00001.npy fails its SHA-256 checksum"):
        FactorStore.open(tmp_path)


def test_truncated_shard(tmp_path):
    store = _store(tmp_path)
    shard = tmp_path / store.manifest["shards"][0]["file"]
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(StoreError, match="truncated"):
        FactorStore.open(tmp_path, verify=False)


def test_missing_and_garbled_manifest(tmp_path):
    with pytest.raises(StoreError, match="not a tamis store"):
        FactorStore.open(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(StoreError, match="corrupted"):
        FactorStore.open(tmp_path)


def test_query_against_wrong_store(tmp_path):
    task, model = ClassificationTask(), mlp()
    store = _store(tmp_path, model=model)
    curv = fit_curvature(store, CurvatureConfig(rank=4), progress=False)
    other = mlp(seed=1)
    with pytest.raises(StoreMismatchError, match="another model"):
        compute_scores(
            task, other, classification_data(3), store, curv, ScoreConfig(progress=False)
        )
    wider = mlp(hidden=7)
    with pytest.raises(StoreMismatchError, match="tracks layers"):
        compute_scores(
            task, wider, classification_data(3), store, curv, ScoreConfig(progress=False)
        )
    other_store = _store(tmp_path / "b", model=model, n=10)
    with pytest.raises(StoreMismatchError, match="fitted on another store"):
        compute_scores(
            task, model, classification_data(3), other_store, curv, ScoreConfig(progress=False)
        )


def test_existing_store_is_not_overwritten(tmp_path):
    store = _store(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(StoreMismatchError, match="refusing to overwrite"):
        _store(tmp_path, factors=FactorConfig(None, "float32"))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    again = _store(tmp_path)  # same config: a no-op returning the complete store
    assert again.manifest["shards"] == store.manifest["shards"]


def test_incomplete_store_refused_for_query(tmp_path):
    _store(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["complete"] = False
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="incomplete"):
        FactorStore.open(tmp_path)


def test_curvature_roundtrip_and_corruption(tmp_path):
    store = _store(tmp_path)
    curv = fit_curvature(store, CurvatureConfig(rank=3), progress=False)
    path = curv.save(tmp_path / "curv.safetensors")
    loaded = Curvature.load(path, store)
    torch.testing.assert_close(loaded.blocks[0].eigvecs, curv.blocks[0].eigvecs)
    path.write_bytes(b"garbage")
    with pytest.raises(StoreError, match="cannot read curvature"):
        Curvature.load(path)


def test_bad_configs_name_the_field():
    with pytest.raises(ValueError, match="rank c"):
        FactorConfig(rank=0)
    with pytest.raises(ValueError, match="damping"):
        CurvatureConfig(damping=-1)
    with pytest.raises(ValueError, match="dtype"):
        FactorConfig(dtype="int4")


# -- fuzzing ---------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(
    b=st.integers(1, 3),
    t=st.integers(1, 7),
    d1=st.integers(1, 6),
    d2=st.integers(1, 6),
    c=st.integers(1, 5),
    seed=st.integers(0, 2**16),
)
def test_fuzz_factors_are_best_rank_c(b, t, d1, d2, c, seed):
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(b, t, d1, generator=g, dtype=torch.float64)
    y = torch.randn(b, t, d2, generator=g, dtype=torch.float64)
    f = low_rank_factors(a, y, c)
    full = dense_gradients(a, y)
    s = torch.linalg.svdvals(full)
    err = ((full - f.left @ f.right.transpose(1, 2)) ** 2).sum((1, 2))
    torch.testing.assert_close(err, (s[:, c:] ** 2).sum(1), rtol=1e-7, atol=1e-9)
    assert torch.all((f.energy >= -1e-12) & (f.energy <= 1 + 1e-12))


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n=st.integers(1, 12),
    shard=st.integers(1, 6),
    batch=st.integers(1, 5),
    c=st.sampled_from([1, 2, None]),
    dtype=st.sampled_from(["float16", "bfloat16", "float32", "int8"]),
)
def test_fuzz_build_and_score(tmp_path_factory, n, shard, batch, c, dtype):
    path = tmp_path_factory.mktemp("fuzz")
    model, task = mlp(), ClassificationTask()
    store = build_store(
        task,
        model,
        classification_data(n),
        path,
        PROJ,
        FactorConfig(c, dtype),
        BuildConfig(batch_size=batch, shard_size=shard, progress=False),
    )
    assert store.num_examples == n and len(store.manifest["shards"]) == -(-n // shard)
    curv = fit_curvature(store, CurvatureConfig(rank=2, chunk_size=batch), progress=False)
    res = compute_scores(
        task,
        model,
        classification_data(2, seed=3),
        store,
        curv,
        ScoreConfig(progress=False, top_k=3, chunk_size=shard),
    )
    assert res.scores.shape == (2, n) and torch.isfinite(res.scores).all()
    assert res.helpful.indices.shape == (2, min(3, n))


@settings(max_examples=30, deadline=None)
@given(payload=st.binary(max_size=64))
def test_fuzz_read_idx_never_crashes_uncleanly(tmp_path_factory, payload):
    from tamis.data import read_idx

    path = tmp_path_factory.mktemp("idx") / "x.idx"
    path.write_bytes(payload)
    try:
        read_idx(path)
    except ValueError:
        pass
