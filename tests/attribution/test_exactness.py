"""The four exactness guarantees of the engine, on tiny models in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.func import functional_call, grad, vmap

from attribution.testable_tasks import (
    ClassificationTask,
    SequenceTask,
    TinyCNN,
    classification_data,
    image_data,
    mlp,
    tiny_lm,
    token_data,
)
from tamis.attribution import (
    Attributor,
    BuildConfig,
    CurvatureConfig,
    FactorConfig,
    ProjectionConfig,
    ScoreConfig,
    build_store,
    compute_scores,
    fit_curvature,
)
from tamis.attribution.build import rows_from_capture
from tamis.attribution.capture import GradientCapture, resolve_layers
from tamis.attribution.curvature import Curvature
from tamis.attribution.factors import dense_gradients, low_rank_factors
from tamis.attribution.store import row_layout

F64 = torch.float64
QUIET = BuildConfig(batch_size=7, shard_size=11, compute_dtype="float64", progress=False)
SCORE = ScoreConfig(progress=False, top_k=3, chunk_size=5)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


# 1. LoRIF with c = full rank and r = D equals dense LoGRA ---------------------------------
@pytest.mark.parametrize("granularity", ["layer", "model"])
def test_lorif_full_rank_equals_dense_logra(tmp_path, granularity):
    model, task = tiny_lm(), SequenceTask()
    train, queries = token_data(23), token_data(5, seed=9)
    proj = ProjectionConfig(d1=4, d2=5, seed=3, clip_to_layer=True)
    full_c = 5  # T = 5 positions, d1, d2 <= 5: rank <= 5, so c = 5 is lossless
    curv = dict(rank=10_000, damping=0.1, granularity=granularity)
    results = {}
    for method, c in (("lorif", full_c), ("logra", None)):
        store = build_store(
            task,
            model,
            train,
            tmp_path / method,
            proj,
            FactorConfig(rank=c, dtype="float64"),
            QUIET,
        )
        kind = "lowrank" if method == "lorif" else "dense"
        curvature = fit_curvature(store, CurvatureConfig(kind=kind, **curv), F64, progress=False)
        results[method] = compute_scores(task, model, queries, store, curvature, SCORE, F64)
    err = rel_err(results["lorif"].scores, results["logra"].scores)
    assert err <= 1e-5, err
    assert torch.equal(results["lorif"].helpful.indices, results["logra"].helpful.indices)


def test_randomized_svd_matches_exact_top_r(tmp_path):
    model, task = tiny_lm(vocab=9, width=10), SequenceTask()
    store = build_store(
        task,
        model,
        token_data(60, vocab=9),
        tmp_path / "s",
        ProjectionConfig(d1=6, d2=6, seed=0),
        FactorConfig(rank=3, dtype="float64"),
        QUIET,
    )
    exact = fit_curvature(store, CurvatureConfig(rank=8, method="exact"), F64, progress=False)
    rand = fit_curvature(
        store, CurvatureConfig(rank=8, oversample=10, power_iters=3), F64, progress=False
    )
    assert rand.extra["passes"] == 1 + 3 + 1
    for be, br in zip(exact.blocks, rand.blocks):
        np.testing.assert_allclose(br.eigvals[:4], be.eigvals[:4], rtol=1e-6)
        assert be.damping == pytest.approx(br.damping, rel=1e-12)


# 2. Dense LoGRA with identity projections equals brute-force damped-Fisher influence -----
def _brute_force_grads(model, task, data, names):
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss_one(p, *example):
        batch = tuple(t.unsqueeze(0) for t in example)
        return task.compute_train_loss(batch, lambda x: functional_call(model, p, (x,)))[0]

    g = vmap(grad(loss_one), in_dims=(None, 0, 0))(params, *data.tensors)
    out = {}
    for name in names:
        w = g[f"{name}.weight"].flatten(2)  # (N, O, I)
        b = g[f"{name}.bias"][:, None, :]  # (N, 1, O)
        out[name] = torch.cat([w.transpose(1, 2), b], dim=1).flatten(1)  # rows: inputs, bias
    return out


def _damped_inverse(gs: torch.Tensor, damping: float) -> torch.Tensor:
    n, d = gs.shape
    fisher = gs.T @ gs / n
    lam = damping * torch.trace(fisher) / d
    return torch.linalg.inv(fisher + lam * torch.eye(d, dtype=gs.dtype))


@pytest.mark.parametrize("granularity", ["layer", "model"])
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_identity_logra_equals_brute_force(tmp_path, kind, granularity):
    if kind == "mlp":
        model, train, queries, names = (
            mlp(),
            classification_data(17),
            classification_data(4, seed=5),
            ["0", "2"],
        )
    else:
        model, train, queries, names = (
            TinyCNN().double(),
            image_data(15),
            image_data(4, seed=5),
            ["conv", "fc"],
        )
    task = ClassificationTask()
    attributor = Attributor(
        task,
        model,
        tmp_path,
        method="logra",
        projection=ProjectionConfig(kind="identity"),
        dtype="float64",
        curvature=CurvatureConfig(damping=0.1, granularity=granularity),
        build=QUIET,
        compute_dtype=F64,
    )
    result = attributor.fit(train).score(queries, SCORE)

    gtrain = _brute_force_grads(model, task, train, names)
    gquery = _brute_force_grads(model, task, queries, names)
    if granularity == "model":
        blocks = [
            (torch.cat([gtrain[n] for n in names], 1), torch.cat([gquery[n] for n in names], 1))
        ]
    else:
        blocks = [(gtrain[n], gquery[n]) for n in names]
    expected = sum(q @ _damped_inverse(g, 0.1) @ g.T for g, q in blocks)
    assert rel_err(result.scores, expected) <= 1e-8
    self_inf = attributor.self_influence()
    expected_self = sum(((g @ _damped_inverse(g, 0.1)) * g).sum(1) for g, _ in blocks)
    assert rel_err(self_inf, expected_self) <= 1e-8


# 3. Rank-c factorization error equals the discarded singular values ----------------------
@pytest.mark.parametrize(
    "t,d1,d2,c", [(9, 5, 6, 2), (3, 8, 7, 2), (4, 8, 8, 1), (2, 4, 4, 3), (12, 3, 9, 3)]
)
def test_factorization_error_is_discarded_singular_values(t, d1, d2, c):
    g = torch.Generator().manual_seed(t * 100 + d1)
    a = torch.randn(5, t, d1, generator=g, dtype=F64)
    b = torch.randn(5, t, d2, generator=g, dtype=F64)
    full = dense_gradients(a, b)
    f = low_rank_factors(a, b, c)
    err = ((full - f.left @ f.right.transpose(1, 2)) ** 2).sum((1, 2))
    s = torch.linalg.svdvals(full)
    discarded = (s[:, c:] ** 2).sum(1)
    torch.testing.assert_close(err, discarded, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(f.energy, 1 - discarded / (s**2).sum(1), rtol=1e-9, atol=1e-12)
    assert f.left.shape == (5, d1, c) and f.right.shape == (5, d2, c)


def test_rank_one_inputs_are_lossless_at_c1():
    a = torch.randn(4, 1, 6, dtype=F64)
    b = torch.randn(4, 1, 3, dtype=F64)
    f = low_rank_factors(a, b, 1)
    torch.testing.assert_close(f.left @ f.right.transpose(1, 2), dense_gradients(a, b))
    assert torch.all(f.energy == 1)


# 4. Chunked, sharded and resumed results equal the in-memory result ------------------------
def _in_memory_scores(model, task, train, queries, proj, c, curvature):
    specs = resolve_layers(model, None, proj)
    cap = GradientCapture(model, specs, proj, F64)
    layout = row_layout(list(specs.values()), c)
    rows, _ = rows_from_capture(cap.capture(task.compute_train_loss, train.tensors), layout)
    qcap = cap.capture(task.compute_measurement, queries.tensors)
    q = {n: dense_gradients(x.a, x.b).flatten(1) for n, x in qcap.items()}
    qt = curvature.precondition(q)
    total, off = 0, 0
    for s in specs.values():
        if c is None:
            g = rows[:, off : off + s.dim]
            off += s.dim
        else:
            k = min(c, s.d1, s.d2)
            left = rows[:, off : off + s.d1 * k].reshape(-1, s.d1, k)
            off += s.d1 * k
            right = rows[:, off : off + s.d2 * k].reshape(-1, s.d2, k)
            off += s.d2 * k
            g = (left @ right.transpose(1, 2)).flatten(1)
        total = total + qt[s.name] @ g.T
    return total


class Interrupting(torch.utils.data.Dataset):
    """Fails once when example ``fail_at`` is read, like a job killed mid-build."""

    def __init__(self, base, fail_at):
        self.base, self.fail_at = base, fail_at

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        if i == self.fail_at:
            self.fail_at = None
            raise KeyboardInterrupt("simulated interruption")
        return self.base[i]


@pytest.mark.parametrize("c", [2, None])
def test_chunked_sharded_resumed_equal_in_memory(tmp_path, c):
    model, task = tiny_lm(), SequenceTask()
    train, queries = token_data(29), token_data(6, seed=4)
    proj = ProjectionConfig(d1=4, d2=4, seed=1)
    one = build_store(
        task,
        model,
        train,
        tmp_path / "one",
        proj,
        FactorConfig(c, "float64"),
        BuildConfig(batch_size=64, shard_size=1000, compute_dtype="float64", progress=False),
    )
    curvature = fit_curvature(one, CurvatureConfig(rank=6, method="exact"), F64, progress=False)
    expected = _in_memory_scores(model, task, train, queries, proj, c, curvature)

    flaky = Interrupting(train, fail_at=17)
    small_shards = BuildConfig(batch_size=4, shard_size=5, compute_dtype="float64", progress=False)

    def build_many():
        return build_store(
            task, model, flaky, tmp_path / "many", proj, FactorConfig(c, "float64"), small_shards
        )

    with pytest.raises(KeyboardInterrupt):
        build_many()
    resumed = build_many()
    assert len(resumed.manifest["shards"]) == 6
    for store, chunk in ((one, 1000), (resumed, 3)):
        curv = fit_curvature(
            store, CurvatureConfig(rank=6, method="exact", chunk_size=chunk), F64, progress=False
        )
        for kernel in ("reconstruct", "factored"):
            cfg = ScoreConfig(progress=False, chunk_size=chunk, kernel=kernel, top_k=4)
            got = compute_scores(task, model, queries, store, curv, cfg, F64)
            torch.testing.assert_close(got.scores, expected, rtol=1e-10, atol=1e-12)
            top = torch.topk(expected, 4, dim=1)
            torch.testing.assert_close(got.helpful.values, top.values)
            assert torch.equal(got.helpful.indices, top.indices)
            low = torch.topk(expected, 4, dim=1, largest=False)
            assert torch.equal(got.harmful.indices, low.indices)


def test_isotropic_tail_option(tmp_path):
    model, task = tiny_lm(vocab=9, width=10), SequenceTask()
    store = build_store(task, model, token_data(40, vocab=9), tmp_path / "s",
                        ProjectionConfig(d1=5, d2=5, seed=0), FactorConfig(rank=5, dtype="float64"),
                        QUIET)
    exact = fit_curvature(store, CurvatureConfig(kind="dense"), F64, progress=False)
    full = fit_curvature(store, CurvatureConfig(rank=25, tail="isotropic", method="exact"), F64,
                         progress=False)
    part = fit_curvature(store, CurvatureConfig(rank=6, tail="isotropic", method="exact"), F64,
                         progress=False)
    q = {n: torch.randn(3, 25, dtype=F64) for n in store.layer_names}
    want, got = exact.precondition(q), full.precondition(q)
    for n in store.layer_names:
        torch.testing.assert_close(got[n], want[n])  # r = D: no tail, exact
    for block in part.blocks:
        v, s2, lam, tau = block.eigvecs, block.eigvals, block.damping, block.tail
        assert tau > 0
        proj = v @ v.T
        model_f = v @ torch.diag(s2) @ v.T + tau * (torch.eye(25, dtype=F64) - proj)
        expected = q[block.layers[0]] @ torch.linalg.inv(model_f + lam * torch.eye(25, dtype=F64))
        torch.testing.assert_close(part.precondition(q)[block.layers[0]], expected)
        # trace is preserved by the isotropic tail model
        assert float(torch.trace(model_f)) == pytest.approx(block.trace, rel=1e-9)


@pytest.mark.parametrize("tail", ["none", "isotropic"])
@pytest.mark.parametrize("granularity", ["layer", "model"])
def test_subspace_kernel_equals_reconstruct(tmp_path, tail, granularity):
    model, task = tiny_lm(vocab=9, width=10), SequenceTask()
    store = build_store(task, model, token_data(31, vocab=9), tmp_path / "s",
                        ProjectionConfig(d1=6, d2=5, seed=0), FactorConfig(rank=2, dtype="float64"),
                        QUIET)
    cfg = CurvatureConfig(rank=7, tail=tail, granularity=granularity, cache_projections=True)
    curv = fit_curvature(store, cfg, F64, progress=False)
    queries = token_data(4, vocab=9, seed=11)
    want = {}
    for normalize in ("none", "cosine"):
        want[normalize] = compute_scores(task, model, queries, store, curv,
                                         ScoreConfig(progress=False, normalize=normalize), F64)
        got = compute_scores(task, model, queries, store, curv,
                             ScoreConfig(progress=False, normalize=normalize, kernel="subspace",
                                         chunk_size=4), F64)
        torch.testing.assert_close(got.scores, want[normalize].scores, rtol=1e-9, atol=1e-12)
    saved = Curvature.load(curv.save(tmp_path / "c.safetensors"), store)
    assert all(b.tail == a.tail for a, b in zip(curv.blocks, saved.blocks))
    again = compute_scores(task, model, queries, store, saved,
                           ScoreConfig(progress=False, kernel="subspace"), F64)
    torch.testing.assert_close(again.scores, want["none"].scores, rtol=1e-9, atol=1e-12)
    ident = fit_curvature(store, CurvatureConfig(kind="identity"), F64, progress=False)
    a = compute_scores(task, model, queries, store, ident, ScoreConfig(progress=False), F64)
    b = compute_scores(task, model, queries, store, ident,
                       ScoreConfig(progress=False, kernel="subspace"), F64)
    torch.testing.assert_close(a.scores, b.scores, rtol=1e-9, atol=1e-12)


def test_token_gram_path_in_float32_with_padding_and_repeated_tokens():
    """T < d1, d2 (the token-Gram path) in float32: padded positions (zero output-gradients)
    and repeated inputs make A A^T and B B^T singular; the factors still give the best
    rank-c approximation of G (SVD of the dense G in float64 as the reference)."""
    g = torch.Generator().manual_seed(3)
    a = torch.randn(6, 40, 50, generator=g)
    a[:, 20:25] = a[:, 10:11]  # repeated tokens
    b = torch.randn(6, 40, 60, generator=g) * torch.logspace(0, -3, 40)[None, :, None]
    b[:, 30:] = 0  # padding
    c = 8
    f = low_rank_factors(a, b, c)
    full = dense_gradients(a.double(), b.double())
    u, s, vh = torch.linalg.svd(full)
    best = u[:, :, :c] @ torch.diag_embed(s[:, :c]) @ vh[:, :c]
    approx = (f.left @ f.right.transpose(1, 2)).double()
    assert rel_err(approx, best) <= 1e-4
    kept = (s[:, :c] ** 2).sum(1) / (s**2).sum(1)
    torch.testing.assert_close(f.energy.double(), kept, rtol=1e-5, atol=1e-6)
