"""The whitened (curvature-aware) truncation against brute force on a tiny language model."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from attribution.testable_tasks import SequenceTask, tiny_lm, token_data
from tamis.attribution import BuildConfig, ProjectionConfig
from tamis.attribution.build import build_store
from tamis.attribution.config import FactorConfig
from tamis.attribution.factors import low_rank_factors
from tamis.attribution.store import MANIFEST, METRIC_FILE
from tamis.attribution.truncation import whitened_factors, whitening

QUIET = BuildConfig(batch_size=4, shard_size=5, compute_dtype="float64", progress=False)
IDENTITY = ProjectionConfig(kind="identity")
N = 11


def _manual(model, data):
    """Per layer: inputs a (N, T, I+1 with the bias column) and output-gradients b (N, T, O)."""
    (tokens,) = data.tensors
    e = model.emb(tokens[:, :-1])
    h = model.hidden(e)
    z = torch.tanh(h)
    logits = model.out(z)
    loss = F.cross_entropy(logits.transpose(1, 2), tokens[:, 1:], reduction="sum")
    gh, gl = torch.autograd.grad(loss, [h, logits])
    ones = torch.ones(*e.shape[:2], 1, dtype=e.dtype)
    return {"hidden": (torch.cat([e.detach(), ones], 2), gh),
            "out": (torch.cat([z.detach(), ones], 2), gl)}


def _inv_sqrt(c: torch.Tensor, delta: float) -> torch.Tensor:
    vals, vecs = torch.linalg.eigh(c)
    d = delta * float(vals.clamp_min(0).mean())
    return vecs @ torch.diag((vals.clamp_min(0) + d) ** -0.5) @ vecs.T


def _reference(a, b, c: int, delta: float) -> torch.Tensor:
    """SVD of M_A G_n M_S per example, keep c, map back: the obviously right truncation."""
    ma = _inv_sqrt(torch.einsum("nti,ntj->ij", a, a), delta)
    ms = _inv_sqrt(torch.einsum("nti,ntj->ij", b, b), delta)
    out = []
    for an, bn in zip(a, b, strict=True):
        u, s, vh = torch.linalg.svd(ma @ (an.T @ bn) @ ms)
        approx = (u[:, :c] * s[:c]) @ vh[:c]
        out.append(torch.linalg.inv(ma) @ approx @ torch.linalg.inv(ms))
    return torch.stack(out)


def _stop_before_the_end(path) -> None:
    """Make a complete store look like a build killed before its last shard."""
    manifest = json.loads((path / MANIFEST).read_text())
    manifest["complete"] = False
    (path / MANIFEST).write_text(json.dumps(manifest))
    sorted(path.glob("shard-*.json"))[-1].unlink()


def _stored(store, name: str) -> torch.Tensor:
    chunks = list(store.iter_chunks(dtype=torch.float64))
    lay = next(x for x in store.layers if x["name"] == name)
    return torch.cat([ch.dense(name) for ch in chunks]).reshape(-1, lay["d1"], lay["d2"])


@pytest.mark.parametrize("delta", [0.1, 1.0])
def test_whitened_store_matches_brute_force(tmp_path, delta):
    model, data = tiny_lm(), token_data(N)
    store = build_store(SequenceTask(), model, data, tmp_path / "s", IDENTITY,
                        FactorConfig(2, "float64", truncation="whitened",
                                     truncation_damping=delta), QUIET)
    assert store.manifest["truncation"] == {"kind": "whitened", "damping": delta}
    assert (tmp_path / "s" / METRIC_FILE).exists()
    for name, (a, b) in _manual(model, data).items():
        torch.testing.assert_close(_stored(store, name), _reference(a, b, 2, delta),
                                   rtol=1e-7, atol=1e-9)


def test_whitened_truncation_is_exact_at_full_rank_and_resumes(tmp_path):
    model, data = tiny_lm(), token_data(N)
    full = {}
    for trunc in ("frobenius", "whitened"):
        full[trunc] = build_store(SequenceTask(), model, data, tmp_path / trunc, IDENTITY,
                                  FactorConfig(6, "float64", truncation=trunc), QUIET)
    for name in ("hidden", "out"):
        torch.testing.assert_close(_stored(full["whitened"], name),
                                   _stored(full["frobenius"], name), rtol=1e-8, atol=1e-10)
    # a resumed build reuses the saved metric and gives the same rows
    cfg = FactorConfig(2, "float64", truncation="whitened")
    first = build_store(SequenceTask(), model, data, tmp_path / "r", IDENTITY, cfg, QUIET)
    ref = _stored(first, "out")
    _stop_before_the_end(tmp_path / "r")
    again = build_store(SequenceTask(), model, data, tmp_path / "r", IDENTITY, cfg, QUIET)
    torch.testing.assert_close(_stored(again, "out"), ref)


def test_whitened_truncation_beats_frobenius_in_its_metric():
    """Per example, the whitened factors' error in the whitened norm is never larger."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(5, 9, 6, generator=gen, dtype=torch.float64) * torch.linspace(0.1, 3, 6)
    b = torch.randn(5, 9, 4, generator=gen, dtype=torch.float64)
    wa = whitening(torch.einsum("nti,ntj->ij", a, a), 0.1)
    wb = whitening(torch.einsum("nti,ntj->ij", b, b), 0.1)
    g = a.transpose(1, 2) @ b
    white, frob = (whitened_factors(a, b, 2, wa, wb), low_rank_factors(a, b, 2))
    e_w = ((wa.forward @ (g - white.left @ white.right.transpose(1, 2)) @ wb.forward) ** 2)
    e_f = ((wa.forward @ (g - frob.left @ frob.right.transpose(1, 2)) @ wb.forward) ** 2)
    assert bool((e_w.sum((1, 2)) <= e_f.sum((1, 2)) + 1e-10).all())


@settings(max_examples=25, deadline=None)
@given(d=st.integers(1, 6), delta=st.floats(1e-3, 10.0), seed=st.integers(0, 1000))
def test_whitening_inverts(d, delta, seed):
    x = torch.randn(8, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    w = whitening(x.T @ x, delta)
    torch.testing.assert_close(w.forward @ w.inverse, torch.eye(d, dtype=torch.float64),
                               rtol=1e-6, atol=1e-6)


def test_truncation_bad_input(tmp_path):
    with pytest.raises(ValueError, match="truncation must be"):
        FactorConfig(2, truncation="svd")
    with pytest.raises(ValueError, match="truncation_damping"):
        FactorConfig(2, truncation="whitened", truncation_damping=0)
    with pytest.raises(ValueError, match="square"):
        whitening(torch.zeros(2, 3), 1.0)
    with pytest.raises(ValueError, match="non-finite"):
        whitening(torch.full((2, 2), float("nan")), 1.0)
    model, data = tiny_lm(), token_data(N)
    cfg = FactorConfig(2, "float64", truncation="whitened")
    build_store(SequenceTask(), model, data, tmp_path / "c", IDENTITY, cfg, QUIET)
    _stop_before_the_end(tmp_path / "c")
    (tmp_path / "c" / METRIC_FILE).write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="truncation metric"):
        build_store(SequenceTask(), model, data, tmp_path / "c", IDENTITY, cfg, QUIET)


def test_max_numbers_caps_factor_pairs_per_layer(tmp_path):
    """A layer keeps max(1, max_numbers // (d1 + d2)) pairs at most, and the capped store is
    the plain store of that rank."""
    model, data = tiny_lm(), token_data(N)
    capped = build_store(SequenceTask(), model, data, tmp_path / "cap", IDENTITY,
                         FactorConfig(5, "float64", max_numbers=3 * 14), QUIET)
    # hidden: d1 = 7 (6 + bias), d2 = 6 -> 42 // 13 = 3; out: d1 = 7, d2 = 7 -> 42 // 14 = 3
    assert {x["name"]: x["rank"] for x in capped.layers} == {"hidden": 3, "out": 3}
    plain = build_store(SequenceTask(), model, data, tmp_path / "plain", IDENTITY,
                        FactorConfig(3, "float64"), QUIET)
    for name in ("hidden", "out"):
        torch.testing.assert_close(_stored(capped, name), _stored(plain, name))
    tiny = build_store(SequenceTask(), model, data, tmp_path / "one", IDENTITY,
                       FactorConfig(5, "float64", max_numbers=1), QUIET)
    assert all(x["rank"] == 1 for x in tiny.layers)
    with pytest.raises(ValueError, match="max_numbers"):
        FactorConfig(2, max_numbers=0)
