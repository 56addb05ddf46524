"""True-Fisher and exact-GGN curvature against brute force on tiny models."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attribution.testable_tasks import (
    ClassificationTask,
    SequenceTask,
    classification_data,
    mlp,
    tiny_lm,
    token_data,
)
from tamis.attribution import Attributor, BuildConfig, ProjectionConfig
from tamis.attribution.build import build_store
from tamis.attribution.config import CurvatureConfig, FactorConfig
from tamis.attribution.curvature import fit_curvature
from tamis.attribution.errors import AttributionError, NonFiniteError
from tamis.attribution.fisher import FisherSource

QUIET = BuildConfig(batch_size=5, shard_size=7, compute_dtype="float64", progress=False)
IDENTITY = ProjectionConfig(kind="identity")
N = 12


def _store(tmp_path, model, data, projection=IDENTITY, task=None):
    return build_store(task or ClassificationTask(), model, data, tmp_path, projection,
                       FactorConfig(None, "float64"), QUIET)


def _dense_f(curv) -> torch.Tensor:
    (block,) = curv.blocks
    v, s = block.eigvecs.double(), block.eigvals.double()
    return (v * s) @ v.T


def _fit(store, source=None, **kw) -> torch.Tensor:
    cfg = CurvatureConfig(rank=10_000, method="exact", granularity="model",
                          damping=1e-6, damping_mode="absolute", **kw)
    return _dense_f(fit_curvature(store, cfg, torch.float64, progress=False, source=source))


def _layout_grad(model: nn.Module, out: torch.Tensor) -> torch.Tensor:
    """d out / d params in the store's layout: per Linear, [W^T ; b] flattened (in+1, O)."""
    lins = [m for m in model if isinstance(m, nn.Linear)]
    params = [p for m in lins for p in (m.weight, m.bias)]
    grads = torch.autograd.grad(out, params, retain_graph=True)
    parts = []
    for i in range(len(lins)):
        gw, gb = grads[2 * i], grads[2 * i + 1]
        parts.append(torch.cat([gw.T, gb[None, :]], 0).reshape(-1))
    return torch.cat(parts)


def _brute_ggn(model: nn.Module, data) -> torch.Tensor:
    """(1/N) sum_i J_i^T (diag p_i - p_i p_i^T) J_i from per-class autograd Jacobians."""
    x, _ = data.tensors
    total = None
    for i in range(len(x)):
        logits = model(x[i:i + 1])[0]
        jac = torch.stack([_layout_grad(model, logits[k]) for k in range(logits.numel())])
        p = torch.softmax(logits.detach(), 0)
        h = torch.diag(p) - torch.outer(p, p)
        g = jac.T @ h @ jac
        total = g if total is None else total + g
    return total / len(x)


def _brute_empirical(model: nn.Module, data) -> torch.Tensor:
    x, y = data.tensors
    rows = [_layout_grad(model, F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]))
            for i in range(len(x))]
    g = torch.stack(rows)
    return g.T @ g / len(x)


def test_exact_ggn_matches_brute_force(tmp_path):
    model, data = mlp(), classification_data(N)
    store = _store(tmp_path, model, data)
    source = FisherSource(ClassificationTask(), model, data, store, "ggn", batch_size=5)
    got = _fit(store, source, fisher="ggn")
    want = _brute_ggn(model, data)
    assert got.shape == want.shape == (7 * 5 + 6 * 3,) * 2
    torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-8)
    # and the empirical Fisher (the stored gradients) is the observed-label second moment
    torch.testing.assert_close(_fit(store), _brute_empirical(model, data), atol=1e-10,
                               rtol=1e-8)


def test_monte_carlo_true_fisher_converges_to_ggn_as_one_over_sqrt_samples(tmp_path):
    model, data = mlp(), classification_data(N)
    store = _store(tmp_path, model, data)
    task = ClassificationTask()
    ggn = _fit(store, FisherSource(task, model, data, store, "ggn"), fisher="ggn")
    samples = [1, 4, 16, 64, 256]
    errs = []
    for s in samples:
        src = FisherSource(task, model, data, store, "true", n_samples=s, seed=3)
        est = _fit(store, src, fisher="true", n_samples=s)
        errs.append(float(torch.linalg.matrix_norm(est - ggn) / torch.linalg.matrix_norm(ggn)))
    slope = np.polyfit(np.log(samples), np.log(errs), 1)[0]
    assert -0.75 < slope < -0.3, (errs, slope)
    assert errs[-1] < errs[0] / 5


def test_true_fisher_lorif_at_full_rank_equals_dense_logra(tmp_path):
    data, queries = classification_data(15), classification_data(4, seed=9)
    proj = ProjectionConfig(d1=4, d2=3)
    common = dict(projection=proj, dtype="float64", build=QUIET, compute_dtype=torch.float64)
    cfg = dict(fisher="true", n_samples=2, damping=1e-3, method="exact")
    lorif = Attributor(ClassificationTask(), mlp(), tmp_path / "lorif", method="lorif",
                       curvature=CurvatureConfig(rank=1000, **cfg), **common).fit(data)
    logra = Attributor(ClassificationTask(), mlp(), tmp_path / "logra", method="logra",
                       curvature=CurvatureConfig(kind="dense", **cfg), **common).fit(data)
    assert lorif.curvature.extra["fisher"] == "true"
    a, b = lorif.score(queries).scores, logra.score(queries).scores
    torch.testing.assert_close(torch.as_tensor(a), torch.as_tensor(b), rtol=1e-7, atol=1e-9)
    emp = Attributor(ClassificationTask(), mlp(), tmp_path / "emp", method="logra",
                     curvature=CurvatureConfig(kind="dense", damping=1e-3), **common).fit(data)
    assert not torch.allclose(torch.as_tensor(emp.score(queries).scores), torch.as_tensor(b))


def test_nystrom_single_pass_recovers_a_low_rank_fisher(tmp_path):
    model, data = mlp(d_in=12, hidden=8, classes=3), classification_data(9, d_in=12)
    store = _store(tmp_path, model, data)
    exact = fit_curvature(store, CurvatureConfig(rank=6, method="exact"), torch.float64,
                          progress=False)
    nys = fit_curvature(store, CurvatureConfig(rank=6, method="nystrom", oversample=6),
                        torch.float64, progress=False)
    assert nys.extra["passes"] == 1
    for be, bn in zip(exact.blocks, nys.blocks):
        torch.testing.assert_close(bn.eigvals, be.eigvals, rtol=1e-6, atol=1e-9)
        # same subspace: |V_e^T V_n| has singular values 1
        sv = torch.linalg.svdvals(be.eigvecs.T @ bn.eigvecs)
        assert float(sv.min()) > 1 - 1e-6


def test_true_fisher_on_a_sequence_model_and_nystrom_source(tmp_path):
    model, data = tiny_lm(), token_data(10)
    store = _store(tmp_path, model, data, ProjectionConfig(d1=3, d2=4), SequenceTask())
    src = FisherSource(SequenceTask(), model, data, store, "true", n_samples=2, batch_size=4)
    curv = fit_curvature(store, CurvatureConfig(rank=4, method="nystrom", fisher="true",
                                                n_samples=2), torch.float64, False, src)
    assert curv.extra["passes"] == 1 and curv.extra["fisher_examples"] == 10
    for block in curv.blocks:
        assert torch.isfinite(block.eigvals).all() and float(block.eigvals[0]) > 0


class _NoSampling(SequenceTask):
    compute_sampled_loss = ClassificationTask.compute_sampled_loss  # -> compute_logits


class _NaNSampled(ClassificationTask):
    def compute_sampled_loss(self, batch, model, generator):
        return super().compute_sampled_loss(batch, model, generator) * math.nan


def test_bad_fisher_configurations(tmp_path):
    model, data = tiny_lm(), token_data(6)
    store = _store(tmp_path / "lm", model, data, ProjectionConfig(d1=3, d2=3), SequenceTask())
    with pytest.raises(AttributionError, match="implement compute_sampled_loss"):
        fit_curvature(store, CurvatureConfig(fisher="true"), torch.float64, False,
                      FisherSource(_NoSampling(), model, data, store, "true"))
    with pytest.raises(AttributionError, match="implement compute_logits"):
        fit_curvature(store, CurvatureConfig(fisher="ggn"), torch.float64, False,
                      FisherSource(_NoSampling(), model, data, store, "ggn"))
    with pytest.raises(AttributionError, match="pass source=FisherSource"):
        fit_curvature(store, CurvatureConfig(fisher="true"), torch.float64, False)
    with pytest.raises(ValueError, match="n_samples must be an integer >= 1"):
        CurvatureConfig(fisher="true", n_samples=0)
    with pytest.raises(AttributionError, match="n_samples must be an integer >= 1"):
        FisherSource(SequenceTask(), model, data, store, "true", n_samples=0)
    cls_model, cls_data = mlp(), classification_data(6)
    cls_store = _store(tmp_path / "cls", cls_model, cls_data)
    with pytest.raises(NonFiniteError, match="true-Fisher pass"):
        fit_curvature(cls_store, CurvatureConfig(fisher="true"), torch.float64, False,
                      FisherSource(_NaNSampled(), cls_model, cls_data, cls_store, "true"))
    with pytest.raises(AttributionError, match="tracks layers"):
        FisherSource(ClassificationTask(["0"]), cls_model, cls_data, cls_store, "true")
