import json
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tamis.rationale.config import RationaleConfig
from tamis.rationale.data import ReviewSet
from tamis.rationale.models import (
    RationaleModel,
    argmax_selection,
    sample_selection,
)
from tamis.rationale.vocab import RationaleTruncationWarning, Vocabulary, embedding_matrix

from .tiny import tiny_set


def make_model(method="interlock_free", encoder="cnn", seed=0, **kw):
    data = tiny_set(20)
    cfg = RationaleConfig(method=method, encoder=encoder, embedding="random", filters=16,
                          width=3, gru_hidden=8, max_len=20, sparsity=0.1, **kw)
    vocab = Vocabulary.build(data.token_lists())
    torch.manual_seed(seed)
    return RationaleModel(vocab, data.aspects, cfg, embedding_matrix(vocab, "random", 50)), data


@pytest.mark.parametrize("method", ["interlock_free", "mtm", "rnp", "a2r"])
def test_shapes(method):
    model, data = make_model(method)
    ids, _ = model.vocab.encode(data.token_lists()[:4], 20)
    pad = (ids > 0).float()
    lg = model.logits(ids, pad)
    assert lg.shape == (4, ids.shape[1], 2 if method == "rnp" else 3)
    sel = model.select(ids, pad, 1.0)
    assert sel.masks.shape == sel.probs.shape == (4, 2, ids.shape[1])
    pred, _ = model.predict_masked(ids, pad, sel.masks)
    assert pred.shape == (4, 2) and ((pred > 0) & (pred < 1)).all()
    masks = model.explain(data)
    assert [m.shape for m in masks] == [(2, len(r.tokens)) for r in data.reviews]
    assert model.predict(data).shape == (20, 2)


@pytest.mark.parametrize("encoder", ["cnn", "gru"])
@pytest.mark.parametrize("pool_over", ["text", "selection"])
@pytest.mark.parametrize("pooling", ["max", "mean"])
def test_predictor_cannot_see_unselected_tokens(encoder, pool_over, pooling):
    model, data = make_model("mtm", encoder, pool_over=pool_over, pooling=pooling)
    model.eval()
    ids, _ = model.vocab.encode(data.token_lists()[:3], 20)
    pad = (ids > 0).float()
    g = torch.Generator().manual_seed(0)
    m = (torch.rand(3, 2, ids.shape[1], generator=g) < 0.4).float() * pad.unsqueeze(1)
    m[:, 0, 2] = 0.0  # token 2 unselected for aspect 0
    m[:, 1, 2] = 1.0  # but selected for aspect 1
    y0, _ = model.predict_masked(ids, pad, m)
    ids2 = ids.clone()
    ids2[:, 2] = (ids2[:, 2] + 3) % (len(model.vocab) - 2) + 2  # another real word
    y1, _ = model.predict_masked(ids2, pad, m)
    assert torch.equal(y0[:, 0], y1[:, 0])
    assert not torch.allclose(y0[:, 1], y1[:, 1])
    # padding never matters: appending pad columns changes nothing
    ids3 = torch.cat([ids, torch.zeros(3, 4, dtype=torch.long)], 1)
    pad3 = torch.cat([pad, torch.zeros(3, 4)], 1)
    m3 = torch.cat([m, torch.ones(3, 2, 4)], 2)
    y3, _ = model.predict_masked(ids3, pad3, m3)
    assert torch.allclose(y0, y3, atol=1e-6)


@pytest.mark.parametrize("selector", ["softmax", "bernoulli"])
def test_straight_through_gumbel_is_hard_with_gradients(selector):
    torch.manual_seed(0)
    c = 4 if selector == "softmax" else 3
    logits = torch.randn(2, 7, c, requires_grad=True)
    pad = torch.ones(2, 7)
    pad[1, 5:] = 0
    sel = sample_selection(logits, pad, selector, 0.5, "gumbel")
    m = sel.masks
    assert set(torch.unique(m.detach()).tolist()) <= {0.0, 1.0}
    if selector == "softmax":
        assert (m.detach().sum(1) <= 1).all()  # disjoint aspects
    assert (m.detach()[1, :, 5:] == 0).all()
    (m * torch.randn_like(m)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    r = sample_selection(logits.detach(), pad, selector, 0.5, "reinforce")
    assert set(torch.unique(r.masks).tolist()) <= {0.0, 1.0}
    assert r.logp.shape == ((2, 1) if selector == "softmax" else (2, 3))


def test_reinforce_logp_matches_categorical():
    torch.manual_seed(1)
    logits = torch.randn(1, 5, 3)
    pad = torch.ones(1, 5)
    sel = sample_selection(logits, pad, "softmax", 1.0, "reinforce")
    m = sel.masks[0]  # (K=2, L)
    idx = torch.where(m.sum(0) > 0, m.argmax(0), torch.full((5,), 2))
    ref = torch.distributions.Categorical(logits=logits[0]).log_prob(idx).sum()
    assert sel.logp.item() == pytest.approx(ref.item(), rel=1e-5)


def test_argmax_selection_and_offset():
    logits = torch.tensor([[[2.0, 0.0, 1.0], [0.0, 0.5, 1.0], [0.0, 0.0, 3.0]]])
    pad = torch.ones(1, 3)
    m = argmax_selection(logits, pad, "softmax", torch.zeros(2))
    assert m[0].tolist() == [[1, 0, 0], [0, 0, 0]]
    m = argmax_selection(logits, pad, "softmax", torch.tensor([0.0, 0.6]))
    assert m[0].tolist() == [[1, 0, 0], [0, 1, 0]]
    mb = argmax_selection(logits[..., :2] - 1, pad, "bernoulli", torch.zeros(2))
    assert mb[0].tolist() == [[1, 0, 0], [0, 0, 0]]


@pytest.mark.parametrize("selector", ["softmax", "bernoulli"])
def test_initial_selection_rate_is_alpha(selector):
    model, data = make_model("mtm", selector=selector)
    ids, _ = model.vocab.encode(data.token_lists(), 20)
    pad = (ids > 0).float()
    torch.manual_seed(0)
    rates = []
    with torch.no_grad():
        for _ in range(20):
            m = model.select(ids, pad, 1.0).masks
            rates.append(float((m.sum((0, 2)) / pad.sum()).mean()))
    assert abs(np.mean(rates) - 0.1) < 0.04


def test_save_load_identical(tmp_path):
    model, data = make_model("a2r")
    model.offset.copy_(torch.tensor([0.3, -0.2]))
    model.eval()
    m0, y0 = model.explain_and_predict(data)
    model.save(tmp_path / "m")
    loaded = RationaleModel.load(tmp_path / "m")
    m1, y1 = loaded.explain_and_predict(data)
    assert np.array_equal(y0, y1) and all(np.array_equal(a, b) for a, b in zip(m0, m1))
    assert loaded.aspects == model.aspects and loaded.vocab == model.vocab
    assert torch.equal(loaded.offset, model.offset)


def test_load_errors(tmp_path):
    model, data = make_model()
    model.save(tmp_path / "a")
    with pytest.raises(ValueError,
                       match=r"aspect mismatch.*\['look', 'smell'\].*\['look', 'taste'\]"):
        RationaleModel.load(tmp_path / "a", aspects=("look", "taste"))
    other = Vocabulary.build([["zz"]])
    with pytest.raises(ValueError, match="vocabulary mismatch.*fingerprint"):
        RationaleModel.load(tmp_path / "a", vocab=other)
    # a model file trained on another vocabulary next to this description
    model2, _ = make_model()
    model2.vocab = Vocabulary.build([["q"]])
    model2.save(tmp_path / "b")
    (tmp_path / "a" / "model.safetensors").write_bytes((tmp_path / "b" / "model.safetensors")
                                                      .read_bytes())
    with pytest.raises(ValueError, match="different models"):
        RationaleModel.load(tmp_path / "a")
    model.save(tmp_path / "c")
    raw = (tmp_path / "c" / "model.safetensors").read_bytes()
    (tmp_path / "c" / "model.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match="corrupted checkpoint"):
        RationaleModel.load(tmp_path / "c")
    (tmp_path / "c" / "model.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupted model file"):
        RationaleModel.load(tmp_path / "c")
    with pytest.raises(FileNotFoundError):
        RationaleModel.load(tmp_path / "nothing")
    meta = json.loads((tmp_path / "b" / "model.json").read_text())
    meta["aspects"] = ["look", "palate"]
    (tmp_path / "b" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="different models"):
        RationaleModel.load(tmp_path / "b")


def test_explain_bad_inputs():
    model, data = make_model()
    other = ReviewSet(("look", "taste"), [])
    with pytest.raises(ValueError, match=r"unknown to the model: \['taste'\]"):
        model.explain(other)
    with pytest.raises(ValueError, match="is a string"):
        model.explain(["a plain string"])
    masks = model.explain([[], ["w1"]])
    assert masks[0].shape == (2, 0) and masks[1].shape == (2, 1)
    assert np.isfinite(model.predict([[]])).all()
    with pytest.warns(RationaleTruncationWarning):
        masks = model.explain([["w1"] * 30])
    assert masks[0].shape == (2, 20)


def test_minilm_encoder_forward():
    model, data = make_model("mtm", "minilm")
    ids, _ = model.vocab.encode(data.token_lists()[:2], 20)
    pad = (ids > 0).float()
    with torch.no_grad():
        pred, h = model.predict_masked(ids, pad, model.masks(ids, pad))
    assert pred.shape == (2, 2) and h.shape[-1] == 384


@settings(max_examples=15, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["look", "good", "w1", "zzz", "", "é", "<pad>"]),
                         max_size=25), min_size=1, max_size=5))
def test_explain_predict_fuzz(token_lists):
    model, _ = FUZZ_MODEL
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RationaleTruncationWarning)
        masks, preds = model.explain_and_predict(token_lists)
    assert preds.shape == (len(token_lists), 2) and np.isfinite(preds).all()
    for toks, m in zip(token_lists, masks):
        assert m.shape == (2, min(len(toks), 20)) and m.dtype == bool
        assert not (m[0] & m[1]).any()  # the K+1 softmax selector is disjoint


FUZZ_MODEL = make_model()
