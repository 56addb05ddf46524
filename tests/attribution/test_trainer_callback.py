"""StoreCallback: the store collected inside transformers' Trainer equals build_store's."""

from __future__ import annotations

import copy
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from torch.utils.data import TensorDataset

from tamis.attribution import Attributor, BuildConfig, FactorConfig, preset
from tamis.attribution.build import build_store
from tamis.attribution.errors import AttributionError, StoreError
from tamis.attribution.hf import IGNORE, CausalLMTask, SequenceClassificationTask
from tamis.attribution.store import FactorStore, StoreWriter

transformers = pytest.importorskip("transformers")
from tamis.attribution.trainer import StoreCallback, store_paths  # noqa: E402

torch.set_num_threads(1)

BUILD = BuildConfig(shard_size=4, progress=False)  # several shards, one partial
FACTORS = replace(preset("ekfac").factors, dtype="float32")  # the default preset, exact dtype
VOCAB, WIDTH = 13, 10


def _lm_data(n: int = 7, seed: int = 0) -> TensorDataset:
    """Right-padded token sequences of several lengths, labels -100 on the padding."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (n, WIDTH), generator=g)
    lengths = torch.tensor([WIDTH - (i % 4) * 2 for i in range(n)])
    mask = (torch.arange(WIDTH)[None] < lengths[:, None]).long()
    ids = ids * mask
    labels = torch.where(mask.bool(), ids, torch.full_like(ids, IGNORE))
    labels[0, :3] = IGNORE  # a "prompt" without loss
    return TensorDataset(ids, mask, labels)


def _dicts(data: TensorDataset) -> list[dict]:
    keys = ("input_ids", "attention_mask", "labels")
    return [dict(zip(keys, row)) for row in zip(*data.tensors)]


def _gpt2():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(vocab_size=VOCAB, n_positions=WIDTH, n_embd=16, n_layer=2,
                                  n_head=2, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0)
    return transformers.GPT2LMHeadModel(cfg)


def _bert_cls():
    torch.manual_seed(1)
    cfg = transformers.BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2,
                                  num_attention_heads=2, intermediate_size=24,
                                  max_position_embeddings=WIDTH, num_labels=3,
                                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return transformers.BertForSequenceClassification(cfg)


def _trainer(model, train, tmp_path, **kw):
    args = dict(output_dir=str(tmp_path / "out"), per_device_train_batch_size=2,
                num_train_epochs=2, learning_rate=0.0, use_cpu=True, report_to=[],
                save_strategy="no", logging_strategy="no", dataloader_num_workers=0,
                disable_tqdm=True, seed=0)
    callbacks = kw.pop("callbacks", None)
    args.update(kw)
    return transformers.Trainer(model=model, args=transformers.TrainingArguments(**args),
                                train_dataset=train, callbacks=callbacks)


def _rows(store: FactorStore) -> dict[str, torch.Tensor]:
    """Every layer's reconstructed projected gradients, (N, d1 * d2)."""
    chunks = list(store.iter_chunks(dtype=torch.float64))
    return {name: torch.cat([c.dense(name) for c in chunks]) for name in store.layer_names}


def _assert_same_rows(got: FactorStore, want: FactorStore, rows=None) -> None:
    a, b = _rows(got), _rows(want)
    assert list(a) == list(b)
    for name in a:
        x = a[name] if rows is None else a[name][rows]
        scale = b[name].abs().max()
        torch.testing.assert_close(x, b[name], rtol=1e-4, atol=1e-5 * float(scale),
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_lm_store_equals_build_store_and_scores_match(tmp_path):
    """lr = 0 (weights fixed), gradient accumulation 2 over 4 micro-batches, shuffled, two
    epochs (only the last collected): rows, manifest and scores equal build_store's."""
    data = _lm_data(7)
    model = _gpt2()
    trainer = _trainer(model, _dicts(data), tmp_path, gradient_accumulation_steps=2)
    cb = StoreCallback(tmp_path / "cb", factors=FACTORS, build=BUILD)
    cb.attach(trainer)
    trainer.train()
    seen = [i for _, idx in cb.order for i in idx]
    assert sorted(seen) == list(range(7)) and seen != list(range(7))  # one epoch, shuffled
    task = CausalLMTask()
    ref = build_store(task, model, data, tmp_path / "ref", factors=FACTORS, build=BUILD,
                      projection=preset("ekfac").projection, preset="ekfac")
    got = FactorStore.open(tmp_path / "cb")
    for key in StoreWriter.KEYS:
        assert got.manifest.get(key) == ref.manifest.get(key), key
    assert got.manifest["collected"]["loss_weights"] == "token sum / num_items_in_batch"
    assert not (tmp_path / "cb" / "collect-scratch.npy").exists()
    _assert_same_rows(got, ref)
    # Attributor reuses the collected store (no rebuild) and scores like the reference.
    queries = _lm_data(3, seed=5)
    att = Attributor(task, model, tmp_path / "cb", dtype="float32", build=BUILD).fit(data)
    assert "collected" in FactorStore.open(tmp_path / "cb").manifest
    want = Attributor(task, model, tmp_path / "ref", dtype="float32", build=BUILD).fit(data)
    s, r = att.score(queries).scores, want.score(queries).scores
    torch.testing.assert_close(s, r, rtol=1e-4, atol=1e-5 * float(r.abs().max()))


def test_rows_use_the_weights_of_the_step_each_example_was_trained_on(tmp_path):
    """lr > 0: every row equals build_store at the weights before that example's step."""
    data = _lm_data(6, seed=2)
    model = _gpt2()
    snapshots = {}

    class Snapshot(transformers.TrainerCallback):
        def on_step_begin(self, args, state, control, model=None, **kw):
            snapshots[state.global_step + 1] = copy.deepcopy(model.state_dict())

    trainer = _trainer(model, _dicts(data), tmp_path, learning_rate=0.05, num_train_epochs=1,
                       callbacks=[Snapshot()])
    cb = StoreCallback(tmp_path / "cb", factors=FACTORS, build=BUILD)
    cb.attach(trainer)
    trainer.train()
    got = FactorStore.open(tmp_path / "cb")
    assert len(cb.order) == 3
    task = CausalLMTask()
    for step, idx in cb.order:
        net = _gpt2()
        net.load_state_dict(snapshots[step])
        sub = TensorDataset(*(t[idx] for t in data.tensors))
        ref = build_store(task, net, sub, tmp_path / f"ref{step}", factors=FACTORS,
                          build=BUILD, projection=preset("ekfac").projection)
        _assert_same_rows(got, ref, rows=torch.tensor(idx))
    assert snapshots[1]["lm_head.weight"].ne(model.state_dict()["lm_head.weight"]).any()


def test_sequence_classifier_every_epoch(tmp_path):
    """A BERT classifier, batch 3 over 7 examples (a short last batch), both epochs kept;
    gradient accumulation 2 with the Trainer dividing the loss by the accumulation steps
    (2, then 1 for the last step): the scale read at the loss tap undoes it."""
    data = _lm_data(7, seed=3)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 1])
    cls = TensorDataset(data.tensors[0].clamp_min(1), torch.ones_like(data.tensors[1]), labels)
    model = _bert_cls()
    trainer = _trainer(model, _dicts(cls), tmp_path, per_device_train_batch_size=3,
                       gradient_accumulation_steps=2)
    trainer.model_accepts_loss_kwargs = False  # the Trainer then divides by the GA steps
    cb = StoreCallback(tmp_path / "cb", factors=FACTORS, build=BUILD, collect="every_epoch")
    cb.attach(trainer)
    trainer.train()
    paths = store_paths(tmp_path / "cb")
    assert [p.name for p in paths] == ["epoch-0", "epoch-1"]
    ref = build_store(SequenceClassificationTask(), model, cls, tmp_path / "ref",
                      factors=FACTORS, build=BUILD, projection=preset("ekfac").projection)
    for p in paths:
        got = FactorStore.open(p)
        assert got.manifest["collected"]["loss_weights"] == "batch mean"
        _assert_same_rows(got, ref)


def test_when_end_builds_with_the_final_weights(tmp_path):
    data = _lm_data(5, seed=4)
    model = _gpt2()
    trainer = _trainer(model, _dicts(data), tmp_path, learning_rate=0.05)
    trainer.add_callback(StoreCallback(tmp_path / "cb", factors=FACTORS, build=BUILD,
                                       when="end"))
    trainer.train()  # no index column needed
    got = FactorStore.open(tmp_path / "cb")
    ref = build_store(CausalLMTask(), model, data, tmp_path / "ref", factors=FACTORS,
                      build=BUILD, projection=preset("ekfac").projection)
    assert got.manifest["model_fingerprint"] == ref.manifest["model_fingerprint"]
    assert got.manifest["collected"]["weights"] == "final"
    _assert_same_rows(got, ref)


def test_bad_input_names_the_fix(tmp_path):
    data = _dicts(_lm_data(4))
    trainer = _trainer(_gpt2(), data, tmp_path, remove_unused_columns=False)
    trainer.add_callback(StoreCallback(tmp_path / "a"))  # no attach: no index column
    with pytest.raises(AttributionError, match=r"no 'index'.*attach\(trainer\)"):
        trainer.train()
    trainer = _trainer(_gpt2(), list(_lm_data(4).tensors[0]), tmp_path)
    StoreCallback(tmp_path / "b").attach(trainer)
    with pytest.raises(TypeError, match="needs dict examples"):
        trainer.train()
    with pytest.raises(ValueError, match="when='end'"):
        StoreCallback(tmp_path / "c", factors=FactorConfig(truncation="whitened"))
    trainer = _trainer(_gpt2(), data, tmp_path, max_steps=1)  # stops mid-epoch
    StoreCallback(tmp_path / "d").attach(trainer)
    with pytest.raises(StoreError, match="2 of 4 examples"):
        trainer.train()
    trainer = _trainer(_gpt2(), data, tmp_path, label_smoothing_factor=0.1)
    StoreCallback(tmp_path / "e").attach(trainer)
    with pytest.raises(AttributionError, match="model's own loss"):
        trainer.train()


def test_import_tamis_attribution_does_not_import_transformers():
    code = ("import sys, tamis.attribution as a; assert 'transformers' not in sys.modules; "
            "a.StoreCallback; assert 'transformers' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
