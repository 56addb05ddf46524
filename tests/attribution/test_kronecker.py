"""K-FAC and EK-FAC curvature over the factored store against brute force on tiny models."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attribution.testable_tasks import (
    ClassificationTask,
    SequenceTask,
    classification_data,
    mlp,
    tiny_lm,
    token_data,
)
from tamis.attribution import Attributor, BuildConfig, ProjectionConfig, ScoreConfig
from tamis.attribution.build import build_store
from tamis.attribution.config import CurvatureConfig, FactorConfig
from tamis.attribution.curvature import Curvature, fit_curvature
from tamis.attribution.errors import AttributionError
from tamis.attribution.fisher import FisherSource

QUIET = BuildConfig(batch_size=5, shard_size=7, compute_dtype="float64", progress=False)
IDENTITY = ProjectionConfig(kind="identity")
N = 12


def _manual_factors(model, data):
    """Per example and layer: inputs a (with the bias column) and output-gradients b."""
    x, y = data.tensors
    lin1, lin2 = model[0], model[2]
    h = lin1(x)
    z = torch.tanh(h)
    logits = lin2(z)
    loss = F.cross_entropy(logits, y, reduction="sum")
    gh, gl = torch.autograd.grad(loss, [h, logits])
    ones = torch.ones(len(x), 1, dtype=x.dtype)
    a = {"0": torch.cat([x, ones], 1), "2": torch.cat([z.detach(), ones], 1)}
    b = {"0": gh, "2": gl}
    return a, b


def _kron_reference(model, data, kind: str, damping: float):
    """Per layer: the dense preconditioner (F_kron + lambda I)^-1 built by brute force."""
    a, b = _manual_factors(model, data)
    out = {}
    for name in ("0", "2"):
        an, bn = a[name].double(), b[name].double()
        cov_a, cov_s = an.T @ an / len(an), bn.T @ bn / len(bn)
        la, qa = torch.linalg.eigh(cov_a)
        ls, qs = torch.linalg.eigh(cov_s)
        basis = torch.kron(qa, qs)  # columns: eigenvectors of A (x) S, row-major vec
        g = g_rows(an, bn)
        eig = torch.kron(la, ls) if kind == "kfac" else ((g @ basis) ** 2).mean(0)
        lam = damping * float(eig.mean())
        f = (basis * eig) @ basis.T
        out[name] = (torch.linalg.inv(f + lam * torch.eye(f.shape[0], dtype=f.dtype)), g)
    return out


def g_rows(an, bn):
    """vec(G_n) = vec(a_n b_n^T) per example, (N, I * O)."""
    return torch.einsum("ni,no->nio", an, bn).reshape(len(an), -1)


@pytest.mark.parametrize("kind", ["kfac", "ekfac"])
def test_kronecker_preconditioner_matches_brute_force(tmp_path, kind):
    model, data = mlp(), classification_data(N)
    att = Attributor(ClassificationTask(), model, tmp_path, method=kind, projection=IDENTITY,
                     dtype="float64", build=QUIET, compute_dtype=torch.float64,
                     curvature=CurvatureConfig(damping=0.3))
    att.fit(data)
    ref = _kron_reference(model, data, kind, 0.3)
    queries = classification_data(4, seed=5)
    a, b = _manual_factors(model, queries)
    q = {name: g_rows(a[name].double(), b[name].double()) for name in ref}
    pre = att.curvature.precondition(q)
    expected = 0
    for name, (inverse, train_rows) in ref.items():
        torch.testing.assert_close(pre[name], q[name] @ inverse, rtol=1e-8, atol=1e-10)
        expected = expected + (q[name] @ inverse) @ train_rows.T
    for kernel in ("reconstruct", "factored"):
        res = att.score(queries, ScoreConfig(kernel=kernel, progress=False))
        torch.testing.assert_close(res.scores, expected, rtol=1e-7, atol=1e-9)


def test_single_example_kronecker_is_exact(tmp_path):
    """With one example and T = 1, A (x) S = vec(G) vec(G)^T: K-FAC = EK-FAC = dense."""
    model, data = mlp(), classification_data(1)
    queries = classification_data(3, seed=9)
    scores = {}
    for method in ("kfac", "ekfac", "logra"):
        att = Attributor(ClassificationTask(), model, tmp_path / method, method=method,
                         projection=IDENTITY, dtype="float64", build=QUIET,
                         compute_dtype=torch.float64, curvature=CurvatureConfig(damping=0.5))
        scores[method] = att.fit(data).score(queries, ScoreConfig(progress=False)).scores
    torch.testing.assert_close(scores["kfac"], scores["logra"], rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(scores["ekfac"], scores["logra"], rtol=1e-8, atol=1e-10)


def _per_layer_fisher(store) -> dict[str, torch.Tensor]:
    cfg = CurvatureConfig(rank=10_000, method="exact", damping=1e-6, damping_mode="absolute")
    curv = fit_curvature(store, cfg, torch.float64, progress=False)
    return {blk.layers[0]: (blk.eigvecs * blk.eigvals) @ blk.eigvecs.T for blk in curv.blocks}


@pytest.mark.parametrize("projection", [IDENTITY, ProjectionConfig(d1=4, d2=3, seed=1)])
def test_ekfac_eigenvalues_are_the_fisher_diagonal_in_the_kronecker_basis(tmp_path, projection):
    """Sequences (rank-T gradients): Lambda = diag(Q^T F Q) exactly, trace(Lambda) = trace(F)."""
    model, data = tiny_lm(), token_data(N)
    task = SequenceTask()
    store = build_store(task, model, data, tmp_path, projection, FactorConfig(None, "float64"),
                        QUIET)
    fisher = _per_layer_fisher(store)
    source = FisherSource(task, model, data, store, "empirical", batch_size=5)
    curv = fit_curvature(store, CurvatureConfig(kind="ekfac"), torch.float64, False, source)
    assert curv.extra["passes"] == 2
    for blk in curv.blocks:
        q = torch.kron(blk.basis_in, blk.basis_out)
        diag = torch.diagonal(q.T @ fisher[blk.layers[0]] @ q)
        torch.testing.assert_close(blk.kron_eigvals.reshape(-1), diag, rtol=1e-8, atol=1e-12)
        assert abs(blk.trace - float(torch.trace(fisher[blk.layers[0]]))) < 1e-8 * blk.trace


def test_true_fisher_kronecker_and_round_trip(tmp_path):
    """EK-FAC of the true Fisher (sampled labels), saved and loaded: the same scores."""
    model, data = mlp(), classification_data(N)
    cfg = CurvatureConfig(fisher="true", n_samples=4, seed=3)
    att = Attributor(ClassificationTask(), model, tmp_path, method="ekfac",
                     projection=ProjectionConfig(d1=3, d2=2), dtype="float64", build=QUIET,
                     compute_dtype=torch.float64, curvature=cfg).fit(data)
    assert att.curvature.kind == "ekfac" and att.curvature.extra["fisher"] == "true"
    queries = classification_data(3, seed=2)
    before = att.score(queries, ScoreConfig(progress=False)).scores
    loaded = Curvature.load(tmp_path / "curvature-ekfac.safetensors", att.store)
    att.curvature = loaded
    torch.testing.assert_close(att.score(queries, ScoreConfig(progress=False)).scores, before)
    assert loaded.blocks[0].shape == (3, 2)
    assert loaded.memory_bytes == att.curvature.memory_bytes > 0
    # the true Fisher differs from the empirical one
    emp = Attributor(ClassificationTask(), model, tmp_path / "emp", method="ekfac",
                     projection=ProjectionConfig(d1=3, d2=2), dtype="float64", build=QUIET,
                     compute_dtype=torch.float64).fit(data)
    assert not torch.allclose(emp.score(queries, ScoreConfig(progress=False)).scores, before)


def test_kronecker_bad_input(tmp_path):
    model, data = mlp(), classification_data(N)
    task = ClassificationTask()
    store = build_store(task, model, data, tmp_path, IDENTITY, FactorConfig(1, "float64"), QUIET)
    with pytest.raises(AttributionError, match="does not keep"):
        fit_curvature(store, CurvatureConfig(kind="kfac"), torch.float64, False)
    source = FisherSource(task, model, data, store, "empirical")
    with pytest.raises(AttributionError, match="per-layer"):
        fit_curvature(store, CurvatureConfig(kind="ekfac", granularity="model"), torch.float64,
                      False, source)
    with pytest.raises(AttributionError, match="asks for fisher='true'"):
        fit_curvature(store, CurvatureConfig(kind="ekfac", fisher="true"), torch.float64,
                      False, source)
    with pytest.raises(ValueError, match="unknown kind"):
        CurvatureConfig(kind="kfc")


def test_identity_up_to_keeps_small_sides_unprojected(tmp_path):
    """Sides no larger than ``identity_up_to`` are the identity: with every side covered the
    scores equal the unprojected store's; with a lower bound only the large sides shrink."""
    from tamis.attribution.projection import layer_spec

    spec = layer_spec("fc", 7, 300, ProjectionConfig(d1=4, d2=4, identity_up_to=10))
    assert (spec.d1, spec.d2, spec.in_identity, spec.out_identity) == (7, 4, True, False)
    model, data = mlp(), classification_data(N)
    queries = classification_data(3, seed=9)
    scores = {}
    for label, proj in (("identity", IDENTITY),
                        ("up_to", ProjectionConfig(d1=2, d2=2, identity_up_to=100))):
        att = Attributor(ClassificationTask(), model, tmp_path / label, method="ekfac",
                         projection=proj, dtype="float64", build=QUIET,
                         compute_dtype=torch.float64, curvature=CurvatureConfig(damping=0.5))
        scores[label] = att.fit(data).score(queries, ScoreConfig(progress=False)).scores
    torch.testing.assert_close(scores["up_to"], scores["identity"], rtol=1e-8, atol=1e-10)
    with pytest.raises(ValueError, match="identity_up_to"):
        ProjectionConfig(identity_up_to=0)
