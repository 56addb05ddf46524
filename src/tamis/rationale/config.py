"""``RationaleConfig``: every knob of the rationalization models and their training.

Only the paper's abstract is known (``docs/rationale.md``): every default below that is not
stated there is a reconstruction (note §4) and is marked *assumption* in its help text.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

METHODS = ("interlock_free", "mtm", "rnp", "a2r")
ENCODERS = ("cnn", "gru", "minilm")
EMBEDDINGS = ("glove", "minilm", "random")
TRAINABLE = ("generator", "predictor")


@dataclass(frozen=True)
class Stage:
    """One training stage: what is trained, on which input, for how long.

    Attributes:
        name: label in the history (``"S1"``, ``"S2"``, ``"joint"`` ...).
        epochs: passes over the training set.
        train: the parts whose parameters are updated, a subset of ``("generator",
            "predictor")``; everything else is frozen (eval mode, no gradient step).
        full_text: the predictor reads the full text (no generator) when True; the generator's
            selections otherwise.
        lr_scale: this stage's learning rate is ``lr * lr_scale``.
        contrastive: add the self-supervised contrastive loss (needs ``"generator"`` in
            ``train``; weighted by ``lambda_contrastive``).
        word_dropout: probability of hiding a token from the predictor (full-text stages only),
            so that a predictor trained on full text tolerates masked input.

    """

    name: str
    epochs: int
    train: tuple[str, ...]
    full_text: bool = False
    lr_scale: float = 1.0
    contrastive: bool = False
    word_dropout: float = 0.0

    def validate(self) -> None:
        """Raise ``ValueError`` naming the problem if the stage is inconsistent."""
        if not isinstance(self.epochs, int) or self.epochs < 0:
            raise ValueError(f"stage {self.name!r}: epochs must be an integer >= 0")
        bad = [t for t in self.train if t not in TRAINABLE]
        if bad or not self.train:
            raise ValueError(
                f"stage {self.name!r}: train must be a non-empty subset of {TRAINABLE}, "
                f"got {self.train!r}"
            )
        if self.full_text and "generator" in self.train:
            raise ValueError(f"stage {self.name!r}: a full-text stage cannot train the generator")
        if self.contrastive and "generator" not in self.train:
            raise ValueError(f"stage {self.name!r}: the contrastive loss trains the generator")
        if not 0.0 <= self.word_dropout < 1.0:
            raise ValueError(f"stage {self.name!r}: word_dropout must lie in [0, 1)")
        if self.lr_scale <= 0:
            raise ValueError(f"stage {self.name!r}: lr_scale must be > 0")


@dataclass
class RationaleConfig:
    """Models, losses and schedule of one rationalization run.

    Attributes:
        method: ``"interlock_free"`` (the paper, reconstructed: staged training + contrastive
            loss), ``"mtm"`` (joint multi-aspect masker trained end to end, no staging, no
            contrastive loss), ``"rnp"`` (one generator and predictor per aspect, Lei et al.
            2016), ``"a2r"`` (MTM masker plus A2R's soft-attention predictor and hard-soft gap).
        encoder: ``"cnn"`` (1 layer, same-length output; default, fast on CPU), ``"gru"``
            (bidirectional) or ``"minilm"`` (the pretrained MiniLM-L6 transformer, local files
            only; slow).
        embedding: word vectors: ``"glove"`` (GloVe 6B 50d), ``"minilm"`` (MiniLM's WordPiece
            input embeddings, 384d, subwords averaged per word) or ``"random"``.
        freeze_embeddings: keep the word vectors fixed (default; random embeddings are always
            trained).
        random_embedding_dim: width of ``"random"`` embeddings.
        max_len: longest review in tokens; longer ones are truncated with a warning.
        min_count: words seen fewer times in the training set map to ``<unk>``.
        max_vocab: vocabulary size cap (most frequent words kept), ``<pad>``/``<unk>`` included.
        filters: CNN output channels (note §4.1: 200).
        width: CNN kernel width (odd; note §4.1: 5).
        gru_hidden: GRU units per direction (note §4.1: 100).
        dropout: dropout on encoder outputs during training.
        pooling: predictor pooling over the selected tokens, ``"max"`` (default; assumption:
            the max over a selection equals the full-text max when the selection holds the
            strongest features, so a full-text predictor transfers to selections) or
            ``"mean"``.
        pool_over: where the predictor pools: ``"text"`` (every real position of the masked
            input, default, as FR/RNP: unselected embeddings are zero, so only selected content
            is read, and the mask gets a gradient through each token's own input) or
            ``"selection"`` (selected positions only; measured: the generator then gets almost
            no gradient, since an unselected token's position is never pooled).
        task: ``"regression"`` (sigmoid output, MSE on [0, 1] ratings; default) or
            ``"binary"`` (BCE with >= 0.6 positive, <= 0.4 negative, others ignored).
        selector: ``"softmax"`` (per token K+1 classes, K aspects and "none": disjoint
            rationales, MTM; default) or ``"bernoulli"`` (K independent gates; may overlap).
            ``"rnp"`` always uses one Bernoulli gate per aspect model.
        estimator: ``"gumbel"`` (straight-through Gumbel-softmax, default) or ``"reinforce"``
            (score-function gradient with a moving-average baseline; Lei et al.).
        sparsity: target selection rate alpha_k, one float for all aspects or one per aspect.
        sparsity_reduction: ``"batch"`` (selected / real tokens over the whole batch, FR's
            form; default) or ``"review"`` (mean over reviews of each review's rate).
        task_weight: multiplier of the task loss; ``None`` means 10 for ``"regression"`` and 1
            for ``"binary"``. FR's lambda_s = lambda_c = 10 are relative to a cross-entropy
            task loss; an MSE on [0, 1] ratings has ~10x smaller gradients, and with weight 1
            the regularisers drown the task signal (measured: no learning in 300 S2 steps).
            Adam makes the weight irrelevant in stages without regularisers.
        lambda_sparsity: weight of ``|rate - alpha_k|`` (FR: 10).
        lambda_continuity: weight of the mean absolute change of the mask (FR: 10).
        lambda_overlap: weight of the overlap penalty ``sum_{k != l} mean(m_k m_l)`` (only
            meaningful for the Bernoulli selector).
        lambda_contrastive: weight of the contrastive loss (assumption: 1).
        contrastive_temperature: tau of the contrastive loss (assumption: 0.1).
        contrastive_positives: ``"supcon"`` (positives: the same aspect's rationale in other
            reviews; negatives: other aspects, including the same review's; default) or
            ``"simclr"`` (positive: a second Gumbel sample of the same rationale).
        contrastive_encoder: which encoder embeds rationales for the contrastive loss:
            ``"predictor"`` (the frozen S1 predictor encoder, default) or ``"generator"``.
        projection_dim: output width of the contrastive projection head (2-layer MLP).
        gumbel_tau_start: Gumbel temperature at the first generator epoch.
        gumbel_tau_end: Gumbel temperature at the last generator epoch (exponential decay).
        reinforce_baseline_decay: decay of the REINFORCE moving-average cost baseline.
        a2r_lambda: weight of A2R's hard-soft predictor gap.
        stage1_epochs: interlock_free S1 (predictor warm-up on full text) epochs.
        stage2_epochs: interlock_free S2 (generator, predictor frozen) epochs.
        stage3_epochs: interlock_free S3 (predictor refit on selections, generator frozen).
        stage4_epochs: optional last stage training both at ``stage4_lr_scale * lr``.
        stage4_lr_scale: learning-rate factor of stage 4.
        word_dropout: S1 word dropout probability.
        staged: interlock_free only; False is the "no staging" ablation: one joint stage of
            ``joint_epochs`` with the contrastive loss.
        joint_epochs: epochs of the single joint stage of mtm / rnp / a2r (and of the
            no-staging ablation); default 18 = S1 + S2 + S3.
        stages: explicit schedule overriding every stage field above (any method).
        lr: Adam learning rate (default 5e-3, above the note's 1e-4..1e-3 range: measured on
            1.5k synthetic reviews, L 64, 6 S2 epochs, the generator reaches dev F1 < 8 at 1e-3
            and 45-59 at 5e-3; the literature's 1e-4 assumes 50-300 GPU epochs).
        weight_decay: Adam weight decay.
        batch_size: reviews per step.
        grad_clip: gradient norm clip (0 disables).
        extra: free-form user metadata saved with the model (ignored by training).

    Note:
        With ``contrastive_encoder="predictor"`` the contrastive term reads the predictor's
        encoder; it is frozen in the staged schedule (S2), but in the no-staging ablation the
        encoder is trained jointly and also receives the contrastive gradient.

    """

    method: str = "interlock_free"
    encoder: str = "cnn"
    embedding: str = "glove"
    freeze_embeddings: bool = True
    random_embedding_dim: int = 50
    max_len: int = 128
    min_count: int = 1
    max_vocab: int = 20_000
    filters: int = 200
    width: int = 5
    gru_hidden: int = 100
    dropout: float = 0.1
    pooling: str = "max"
    pool_over: str = "text"
    task: str = "regression"
    selector: str = "softmax"
    estimator: str = "gumbel"
    sparsity: float | tuple[float, ...] = 0.15
    sparsity_reduction: str = "batch"
    task_weight: float | None = None
    lambda_sparsity: float = 10.0
    lambda_continuity: float = 10.0
    lambda_overlap: float = 0.0
    lambda_contrastive: float = 1.0
    contrastive_temperature: float = 0.1
    contrastive_positives: str = "supcon"
    contrastive_encoder: str = "predictor"
    projection_dim: int = 64
    gumbel_tau_start: float = 1.0
    gumbel_tau_end: float = 0.5
    reinforce_baseline_decay: float = 0.9
    a2r_lambda: float = 1.0
    stage1_epochs: int = 5
    stage2_epochs: int = 10
    stage3_epochs: int = 3
    stage4_epochs: int = 0
    stage4_lr_scale: float = 0.1
    word_dropout: float = 0.1
    staged: bool = True
    joint_epochs: int = 18
    stages: tuple[Stage, ...] | None = None
    lr: float = 5e-3
    weight_decay: float = 0.0
    batch_size: int = 64
    grad_clip: float = 5.0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.sparsity, list):
            self.sparsity = tuple(float(s) for s in self.sparsity)
        if self.stages is not None:
            self.stages = tuple(s if isinstance(s, Stage) else _stage(s) for s in self.stages)
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise ``ValueError`` naming the first inconsistent field."""
        choices = {
            "method": METHODS,
            "encoder": ENCODERS,
            "embedding": EMBEDDINGS,
            "pooling": ("max", "mean"),
            "pool_over": ("text", "selection"),
            "task": ("regression", "binary"),
            "selector": ("softmax", "bernoulli"),
            "estimator": ("gumbel", "reinforce"),
            "sparsity_reduction": ("batch", "review"),
            "contrastive_positives": ("supcon", "simclr"),
            "contrastive_encoder": ("predictor", "generator"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        positive_ints = ("max_len", "filters", "gru_hidden", "batch_size", "projection_dim")
        for name in (*positive_ints, "random_embedding_dim", "max_vocab", "min_count", "width"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.width % 2 == 0:
            raise ValueError(f"width must be odd (same-length CNN output), got {self.width}")
        if self.max_vocab < 3:
            raise ValueError("max_vocab must be >= 3 (<pad>, <unk> and one word)")
        rates = self.sparsity if isinstance(self.sparsity, tuple) else (self.sparsity,)
        for a in rates:
            if not 0.0 < float(a) < 1.0:
                raise ValueError(f"sparsity targets must lie in (0, 1), got {self.sparsity!r}")
        for name in ("lambda_sparsity", "lambda_continuity", "lambda_overlap",
                     "lambda_contrastive", "a2r_lambda", "weight_decay", "grad_clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("lr", "contrastive_temperature", "gumbel_tau_start", "gumbel_tau_end",
                     "stage4_lr_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.task_weight is not None and not self.task_weight > 0:
            raise ValueError(f"task_weight must be > 0 or None, got {self.task_weight}")
        if not 0.0 <= self.dropout < 1.0 or not 0.0 <= self.word_dropout < 1.0:
            raise ValueError("dropout and word_dropout must lie in [0, 1)")
        if not 0.0 <= self.reinforce_baseline_decay < 1.0:
            raise ValueError("reinforce_baseline_decay must lie in [0, 1)")
        for name in ("stage1_epochs", "stage2_epochs", "stage3_epochs", "stage4_epochs",
                     "joint_epochs"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {v!r}")
        if self.estimator == "reinforce" and self.method == "a2r":
            raise ValueError("a2r needs the soft selection probabilities: use estimator='gumbel'")
        if self.encoder == "minilm" and self.max_len > 512:
            raise ValueError("the MiniLM encoder reads at most 512 positions: max_len <= 512")
        for st in self.schedule():
            st.validate()
        if sum(st.epochs for st in self.schedule()) == 0:
            raise ValueError("the schedule trains for 0 epochs")

    def task_scale(self) -> float:
        """The task-loss multiplier actually used (``task_weight`` resolved)."""
        if self.task_weight is not None:
            return float(self.task_weight)
        return 10.0 if self.task == "regression" else 1.0

    def alphas(self, k: int) -> tuple[float, ...]:
        """Per-aspect sparsity targets for ``k`` aspects (raises if the count differs)."""
        if isinstance(self.sparsity, tuple):
            if len(self.sparsity) != k:
                raise ValueError(
                    f"sparsity has {len(self.sparsity)} per-aspect targets but the data has "
                    f"{k} aspects"
                )
            out = tuple(float(a) for a in self.sparsity)
        else:
            out = (float(self.sparsity),) * k
        if self.selector == "softmax" and self.method != "rnp" and sum(out) >= 1.0:
            raise ValueError(
                f"the K+1 softmax selector needs sum(sparsity) < 1, got {sum(out):.3f}"
            )
        return out

    def schedule(self) -> tuple[Stage, ...]:
        """The stages this configuration trains, in order."""
        if self.stages is not None:
            return tuple(self.stages)
        gen_pred = ("generator", "predictor")
        if self.method == "interlock_free" and self.staged:
            out = [
                Stage("S1", self.stage1_epochs, ("predictor",), full_text=True,
                      word_dropout=self.word_dropout),
                Stage("S2", self.stage2_epochs, ("generator",),
                      contrastive=self.lambda_contrastive > 0),
                Stage("S3", self.stage3_epochs, ("predictor",)),
                Stage("S4", self.stage4_epochs, gen_pred, lr_scale=self.stage4_lr_scale),
            ]
            return tuple(s for s in out if s.epochs > 0)
        contrastive = self.method == "interlock_free" and self.lambda_contrastive > 0
        return (Stage("joint", self.joint_epochs, gen_pred, contrastive=contrastive),)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict:
        """Plain-JSON form (checkpoint metadata)."""
        d = asdict(self)
        if isinstance(self.sparsity, tuple):
            d["sparsity"] = list(self.sparsity)
        if self.stages is not None:
            d["stages"] = [dict(asdict(s), train=list(s.train)) for s in self.stages]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> RationaleConfig:
        """Inverse of ``to_dict``; unknown keys raise ``ValueError`` naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown RationaleConfig field(s): {unknown}")
        d = dict(d)
        if isinstance(d.get("sparsity"), list):
            d["sparsity"] = tuple(d["sparsity"])
        if d.get("stages") is not None:
            d["stages"] = tuple(_stage(s) for s in d["stages"])
        return cls(**d)


def _stage(d: Any) -> Stage:
    if isinstance(d, Stage):
        return d
    d = dict(d)
    d["train"] = tuple(d.get("train", ()))
    return Stage(**d)
