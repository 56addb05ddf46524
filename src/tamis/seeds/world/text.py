"""A word-level tokenizer over the world's closed vocabulary and a small text encoder.

The tokenizer lower-cases, splits commas off words and maps every word to an id; unknown words
map to ``[UNK]`` (never an error: a prompt with a typo still generates, and the record keeps the
text). Every sequence starts with ``[BOS]`` and is padded or truncated to ``max_length``; the
empty caption (classifier-free guidance's unconditional input) is ``[BOS]`` + padding.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from tamis._io import write_text_atomic

SPECIALS = ("[PAD]", "[UNK]", "[BOS]")


class WordTokenizer:
    """Closed-vocabulary word tokenizer (ids 0-2 are ``[PAD]``, ``[UNK]``, ``[BOS]``)."""

    def __init__(self, words: Sequence[str], max_length: int = 16) -> None:
        """Build from a word list (duplicates and special tokens are rejected)."""
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2, got {max_length}")
        words = list(words)
        if len(set(words)) != len(words):
            raise ValueError("the vocabulary has duplicate words")
        if set(words) & set(SPECIALS):
            raise ValueError(f"the vocabulary must not contain the special tokens {SPECIALS}")
        self.words = list(SPECIALS) + words
        self.ids = {w: i for i, w in enumerate(self.words)}
        self.max_length = max_length

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included."""
        return len(self.words)

    @staticmethod
    def split(text: str) -> list[str]:
        """Lower-case and split into words and commas."""
        return re.findall(r"[a-z0-9]+|,", text.lower())

    def encode(self, text: str) -> list[int]:
        """Ids of one text: ``[BOS]`` + words, padded/truncated to ``max_length``."""
        ids = [self.ids["[BOS]"]] + [self.ids.get(w, self.ids["[UNK]"]) for w in self.split(text)]
        ids = ids[: self.max_length]
        return ids + [self.ids["[PAD]"]] * (self.max_length - len(ids))

    def decode(self, ids: Sequence[int]) -> str:
        """Words of the ids, special tokens dropped (commas re-attached)."""
        words = [self.words[i] for i in ids if self.words[i] not in SPECIALS]
        return " ".join(words).replace(" ,", ",")

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        """Batch of ids ``(B, max_length)`` (int64)."""
        if isinstance(texts, str):
            raise TypeError("pass a list of texts, not a single string")
        return torch.tensor([self.encode(t) for t in texts], dtype=torch.long)

    def save(self, path: str | Path) -> None:
        """Write the vocabulary as JSON (atomic)."""
        data = {"words": self.words[len(SPECIALS):], "max_length": self.max_length}
        write_text_atomic(path, json.dumps(data, indent=1))

    @classmethod
    def load(cls, path: str | Path) -> WordTokenizer:
        """Read a tokenizer written by :meth:`save`."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(data["words"], int(data["max_length"]))


class TextEncoder(nn.Module):
    """Token + position embeddings and a small ``nn.TransformerEncoder`` (no masking).

    Output: ``(B, max_length, dim)``, the UNet's cross-attention context.
    """

    def __init__(self, vocab_size: int, max_length: int = 16, dim: int = 64, layers: int = 2,
                 heads: int = 4) -> None:
        """Create the encoder (``dim`` must be divisible by ``heads``)."""
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.config = {"vocab_size": vocab_size, "max_length": max_length, "dim": dim,
                       "layers": layers, "heads": heads}
        self.tok = nn.Embedding(vocab_size, dim)
        self.pos = nn.Parameter(torch.zeros(1, max_length, dim))
        nn.init.normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=0.0,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Encode ids ``(B, L)`` into ``(B, L, dim)``."""
        return self.norm(self.encoder(self.tok(ids) + self.pos[:, : ids.shape[1]]))
