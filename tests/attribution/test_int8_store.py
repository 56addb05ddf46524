"""int8 store rows: block quantisation error is bounded, and scores match a float32 store."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attribution.testable_tasks import classification_data, mlp
from tamis.attribution import (
    BuildConfig,
    CurvatureConfig,
    FactorConfig,
    ProjectionConfig,
    ScoreConfig,
    build_store,
    compute_scores,
    fit_curvature,
)
from tamis.attribution.errors import StoreError
from tamis.attribution.examples import ClassificationTask
from tamis.attribution.store import QUANT_BLOCK, stored_length, to_numpy, to_torch


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 5), length=st.integers(1, 300), seed=st.integers(0, 2**16),
       scale=st.sampled_from([1e-3, 1.0, 1e3]))
def test_int8_round_trip_error_is_half_a_step_of_each_block(n, length, seed, scale):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, length, generator=g) * scale
    x[0, : min(length, QUANT_BLOCK)] = 0.0  # an all-zero block decodes to exact zeros
    raw = to_numpy(x, "int8")
    assert raw.dtype == np.int8 and raw.shape == (n, stored_length(length, "int8"))
    back = to_torch(raw, "int8", torch.float32)[:, :length]
    blocks = -(-length // QUANT_BLOCK)
    pad = torch.zeros(n, blocks * QUANT_BLOCK)
    pad[:, :length] = x
    step = pad.reshape(n, blocks, -1).abs().amax(-1, keepdim=True) / 127
    bound = (step * 0.5 * (1 + 1e-5)).expand(-1, -1, QUANT_BLOCK).reshape(n, -1)
    assert torch.all((back - x).abs() <= bound[:, :length] + 1e-12)
    assert torch.all(back[0, : min(length, QUANT_BLOCK)] == 0)


def test_int8_rows_of_a_broken_width_are_named():
    with pytest.raises(StoreError, match="quantisation blocks"):
        to_torch(np.zeros((2, 65), dtype=np.int8), "int8")


@pytest.mark.parametrize("c", [1, 2, None])
def test_int8_store_scores_match_a_float32_store(tmp_path, c):
    model, task = mlp(), ClassificationTask()
    train, queries = classification_data(40), classification_data(5, seed=3)
    proj = ProjectionConfig(d1=4, d2=3, seed=0)
    quiet = BuildConfig(batch_size=8, shard_size=16, progress=False)
    scores = {}
    for dtype in ("float32", "int8"):
        store = build_store(task, model, train, tmp_path / dtype, proj, FactorConfig(c, dtype),
                            quiet)
        curv = fit_curvature(store, CurvatureConfig(kind="lowrank", rank=6), progress=False)
        scores[dtype] = compute_scores(task, model, queries, store, curv,
                                       ScoreConfig(progress=False, top_k=3)).scores
        raw = sum(p.stat().st_size for p in store.path.glob("shard-*.npy"))
        scores[dtype + "_bytes"] = raw
    ref, got = scores["float32"], scores["int8"]
    rel = (got - ref).norm() / ref.norm()
    assert rel < 0.02, rel
    assert np.corrcoef(ref.ravel(), got.ravel())[0, 1] > 0.999


def test_a_preset_in_another_dtype_keeps_its_bytes_per_layer():
    from tamis.attribution.presets import PRESETS, factors_with_dtype

    ek = PRESETS["ekfac"].factors
    assert ek.dtype == "int8" and ek.max_numbers == 7616
    assert stored_length(ek.max_numbers, "int8") <= 64 * 64 * 2  # dense float16 64 x 64 bytes
    f16 = factors_with_dtype(ek, "float16")
    assert f16.dtype == "float16" and f16.max_numbers * 2 <= 64 * 64 * 2
    assert factors_with_dtype(ek, None) is ek
    assert factors_with_dtype(PRESETS["lorif"].factors, "float32").max_numbers is None
