"""One training loop for the method and the baselines; the methods are switches.

* ``interlock_free`` (reconstructed, note §4.4): S1 predictor warm-up on full text with word
  dropout; S2 generator with the predictor frozen + sparsity + continuity + contrastive; S3
  predictor refit on the selections with the generator frozen; optional S4 both at a small lr.
* ``mtm``: the multi-aspect masker and predictor trained jointly (no staging, no contrastive).
* ``rnp``: one generator + predictor per aspect trained jointly (Gumbel or REINFORCE).
* ``a2r``: the MTM masker plus a soft-attention predictor; the loss adds its task loss and the
  hard-soft gap.

Checkpoints (``out_dir/checkpoint.pt``) are written atomically after every epoch; ``fit``
continues from the last one, and the result is identical to an uninterrupted run.
"""

from __future__ import annotations

import json
import random
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tamis._io import atomic_path, write_text_atomic
from tamis._progress import track
from tamis.rationale import losses as L
from tamis.rationale.config import RationaleConfig, Stage
from tamis.rationale.models import RationaleModel, argmax_selection, check_aspects
from tamis.rationale.vocab import Vocabulary, embedding_matrix

CHECKPOINT = "checkpoint.pt"


@dataclass
class FitResult:
    """What ``fit`` returns.

    Attributes:
        model: the trained model (eval mode).
        history: one dict per epoch: ``stage``, ``stage_epoch``, ``epoch``, ``tau``, mean
            training ``losses``, training selection ``rate`` per aspect, and with a dev set
            ``dev_rating`` (``metrics.rating_scores``) and, when it has gold rationales,
            ``dev_rationale`` (``metrics.rationale_scores``).
        wall_s: seconds spent in this call.

    """

    model: RationaleModel
    history: list[dict] = field(default_factory=list)
    wall_s: float = 0.0


# ---------------------------------------------------------------------- data checks
def check_reviews(reviews: object, what: str) -> None:
    """Raise ``ValueError`` naming the problem if ``reviews`` cannot be trained on."""
    if not hasattr(reviews, "reviews") or not hasattr(reviews, "aspects"):
        raise TypeError(f"{what} must be a tamis.rationale.data.ReviewSet")
    if len(reviews.reviews) == 0:  # type: ignore[attr-defined]
        raise ValueError(f"{what} has no reviews")
    if not reviews.aspects:  # type: ignore[attr-defined]
        raise ValueError(f"{what} has no aspects")
    y = np.asarray(reviews.ratings(), dtype=np.float64)  # type: ignore[attr-defined]
    k = len(reviews.aspects)  # type: ignore[attr-defined]
    if y.shape != (len(reviews.reviews), k):  # type: ignore[attr-defined]
        raise ValueError(f"{what}: ratings have shape {y.shape}, expected (N, {k})")
    if np.isinf(y).any():
        raise ValueError(f"{what} has infinite ratings")
    bad = (~np.isnan(y)) & ((y < 0) | (y > 1))
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(
            f"{what}: ratings must lie in [0, 1]; review {i} has {reviews.aspects[j]}={y[i, j]}"  # type: ignore[attr-defined]
        )
    missing = np.isnan(y).all(0)
    if missing.any():
        names = [a for a, m in zip(reviews.aspects, missing) if m]  # type: ignore[attr-defined]
        raise ValueError(f"{what}: every rating is missing (NaN) for aspect(s) {names}")
    if all(len(r.tokens) == 0 for r in reviews.reviews):  # type: ignore[attr-defined]
        raise ValueError(f"{what}: every text is empty")


# ---------------------------------------------------------------------- batches
class Encoded:
    """A review set as padded ids, lengths and ratings (encoded once)."""

    def __init__(self, reviews: object, vocab: Vocabulary, max_len: int) -> None:
        self.ids, self.lengths = vocab.encode(
            [r.tokens for r in reviews.reviews], max_len  # type: ignore[attr-defined]
        )
        self.y = torch.tensor(np.asarray(reviews.ratings(), dtype=np.float32))  # type: ignore[attr-defined]

    def __len__(self) -> int:
        return len(self.lengths)

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Ids ``(B, L_b)`` cut to the batch's longest text, pad mask, ratings ``(B, K)``."""
        lens = self.lengths[idx]
        width = max(int(lens.max()), 1)
        pad = (torch.arange(width).unsqueeze(0) < lens.unsqueeze(1)).float()
        return self.ids[idx, :width], pad, self.y[idx]


# ---------------------------------------------------------------------- schedule helpers
def gumbel_tau(cfg: RationaleConfig, gen_epoch: int, gen_epochs: int) -> float:
    """Gumbel temperature of a generator epoch: exponential from start (first) to end (last)."""
    if gen_epochs <= 1:
        return cfg.gumbel_tau_start
    frac = min(gen_epoch, gen_epochs - 1) / (gen_epochs - 1)
    return cfg.gumbel_tau_start * (cfg.gumbel_tau_end / cfg.gumbel_tau_start) ** frac


def _epoch_plan(stages: Sequence[Stage]) -> list[tuple[int, int, int]]:
    """(stage index, epoch within stage, generator-epoch index or -1) for every epoch."""
    plan, g = [], 0
    for si, st in enumerate(stages):
        for e in range(st.epochs):
            if "generator" in st.train:
                plan.append((si, e, g))
                g += 1
            else:
                plan.append((si, e, -1))
    return plan


def _set_trainable(model: RationaleModel, stage: Stage) -> list[torch.nn.Parameter]:
    trainable: list[torch.nn.Parameter] = []
    frozen_emb = model.cfg.embedding != "random" and model.cfg.freeze_embeddings
    for part in ("generator", "predictor"):
        on = part in stage.train
        for mod in model.part(part):
            mod.train(on)
            for name, p in mod.named_parameters():
                is_emb = name.endswith("embed.weight")
                p.requires_grad_(on and not (is_emb and frozen_emb))
                if p.requires_grad:
                    trainable.append(p)
    return trainable


# ---------------------------------------------------------------------- one step
def step_loss(
    model: RationaleModel, ids: torch.Tensor, pad: torch.Tensor, y: torch.Tensor,
    stage: Stage, tau: float, state: dict,
) -> tuple[torch.Tensor, dict[str, float], torch.Tensor | None]:
    """The total loss of one batch in one stage, its parts, and the training masks."""
    cfg = model.cfg
    b, length = ids.shape
    k = len(model.aspects)
    logs: dict[str, float] = {}
    if stage.full_text:
        m = pad.unsqueeze(1).expand(b, k, length)
        if stage.word_dropout > 0:
            keep = (torch.rand(b, k, length) >= stage.word_dropout).to(pad.dtype)
            m = m * keep
        pred, _ = model.predict_masked(ids, pad, m)
        task = L.task_loss(pred, y, cfg.task)
        logs["task"] = float(task.sum().detach())
        return cfg.task_scale() * task.sum(), logs, None
    train_gen = "generator" in stage.train
    if train_gen:
        sel = model.select(ids, pad, tau, cfg.estimator)
        m = sel.masks
    else:  # a frozen generator hands the predictor its evaluation (argmax) selections
        with torch.no_grad():
            logits = model.logits(ids, pad)
        m = argmax_selection(logits, pad, model.selector, torch.zeros(k))
        sel = None
    pred, hidden = model.predict_masked(ids, pad, m)
    task = L.task_loss(pred, y, cfg.task)
    alpha_k = torch.tensor(model.alphas, dtype=m.dtype)
    sp = L.sparsity_loss(m, pad, alpha_k, cfg.sparsity_reduction)
    ct = L.continuity_loss(m, pad)
    total = cfg.task_scale() * task.sum()
    logs.update(task=float(task.sum().detach()), sparsity=float(sp.sum().detach()),
                continuity=float(ct.sum().detach()))
    if train_gen:
        assert sel is not None
        if cfg.estimator == "reinforce":
            total = total + _reinforce_loss(model, pred, y, m, pad, sel.logp, alpha_k, state)
        else:
            total = total + cfg.lambda_sparsity * sp.sum() + cfg.lambda_continuity * ct.sum()
            if cfg.lambda_overlap > 0 and k > 1:
                ov = L.overlap_loss(m, pad)
                total = total + cfg.lambda_overlap * ov
                logs["overlap"] = float(ov.detach())
        if stage.contrastive and cfg.lambda_contrastive > 0:
            valid = (m * pad.unsqueeze(1)).sum(2) > 0.5
            if cfg.contrastive_positives == "supcon":
                z = model.represent(ids, pad, m, hidden)
                ctr = L.supcon_loss(z, cfg.contrastive_temperature, valid)
            else:
                m2 = model.select(ids, pad, tau, "gumbel").masks
                valid = valid & ((m2 * pad.unsqueeze(1)).sum(2) > 0.5)
                z1 = model.represent(ids, pad, m, hidden)
                z2 = model.represent(ids, pad, m2)
                ctr = L.simclr_loss(z1, z2, cfg.contrastive_temperature, valid)
            total = total + cfg.lambda_contrastive * ctr
            logs["contrastive"] = float(ctr.detach())
    if model.soft_predictor is not None:
        probs = sel.probs if sel is not None else m
        soft, _ = model.soft_predictor(ids, pad, probs)
        soft_task = L.task_loss(soft, y, cfg.task)
        gap = L.hard_soft_gap(pred, soft, cfg.task)
        total = total + cfg.task_scale() * (soft_task.sum() + cfg.a2r_lambda * gap.sum())
        logs.update(soft_task=float(soft_task.sum().detach()), gap=float(gap.sum().detach()))
    logs["total"] = float(total.detach())
    return total, logs, m.detach()


def _reinforce_loss(
    model: RationaleModel, pred: torch.Tensor, y: torch.Tensor, m: torch.Tensor,
    pad: torch.Tensor, logp: torch.Tensor, alpha: torch.Tensor, state: dict,
) -> torch.Tensor:
    """Score-function generator loss ``(cost - baseline) * log p(mask)``.

    The cost is per review (softmax selector, summed over aspects) or per review and aspect
    (Bernoulli gates); the baseline is a moving average of the batch-mean cost.
    """
    cfg = model.cfg
    with torch.no_grad():
        valid = ~torch.isnan(y)
        err = torch.where(valid, (pred - torch.nan_to_num(y)) ** 2, torch.zeros_like(pred))
        if cfg.task == "binary":
            p = pred.clamp(1e-6, 1 - 1e-6)
            t = (torch.nan_to_num(y) >= 0.6).to(p.dtype)
            bce = -(t * p.log() + (1 - t) * (1 - p).log())
            err = torch.where(valid, bce, torch.zeros_like(pred))
        sp, ct = L.per_review_costs(m, pad, alpha.view(1, -1))
        cost = cfg.task_scale() * err + cfg.lambda_sparsity * sp + cfg.lambda_continuity * ct
        if logp.shape[1] == 1:
            cost = cost.sum(1, keepdim=True)
        mean = cost.mean(0)
        base = state.get("baseline")
        base = mean if base is None else (
            cfg.reinforce_baseline_decay * base + (1 - cfg.reinforce_baseline_decay) * mean
        )
        state["baseline"] = base
        adv = cost - base
    return (adv * logp).mean(0).sum()


# ---------------------------------------------------------------------- evaluation
def evaluate(model: RationaleModel, reviews: object, batch_size: int = 256) -> dict:
    """Dev/test scores of a model on a review set.

    Returns ``{"rating": rating_scores(...)}`` plus ``"rationale": rationale_scores(...)`` over
    the annotated reviews when the set has gold rationales.
    """
    from tamis.rationale.metrics import rating_scores, rationale_scores

    check_aspects(model.aspects, tuple(reviews.aspects), "the evaluation data")  # type: ignore[attr-defined]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        masks, preds = model.explain_and_predict(reviews, batch_size)
    out: dict = {"rating": rating_scores(preds, reviews.ratings(), model.aspects)}  # type: ignore[attr-defined]
    pred_m, gold_m = [], []
    for i, mk in enumerate(masks):
        g = reviews.gold_masks(i)  # type: ignore[attr-defined]
        if g is None:
            continue
        g = np.asarray(g, dtype=bool)[:, : mk.shape[1]]
        pred_m.append(mk)
        gold_m.append(g)
    if pred_m:
        out["rationale"] = rationale_scores(pred_m, gold_m, model.aspects)
    return out


def selection_percent(model: RationaleModel, reviews: object) -> np.ndarray:
    """Per-aspect selection rate in percent, micro-averaged over tokens (note §7.2)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        masks = model.explain(reviews)
    sel = np.zeros(len(model.aspects))
    n = 0
    for mk in masks:
        sel += mk.sum(1)
        n += mk.shape[1]
    return 100.0 * sel / max(n, 1)


# ---------------------------------------------------------------------- checkpoints
def _rng_state() -> dict:
    return {
        "torch": torch.get_rng_state(),
        "numpy": json.dumps(np.random.get_state()[1].tolist()),
        "numpy_pos": int(np.random.get_state()[2]),
        "python": json.dumps(random.getstate()[1]),
    }


def _set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    keys = np.array(json.loads(s["numpy"]), dtype=np.uint32)
    np.random.set_state(("MT19937", keys, s["numpy_pos"], 0, 0.0))
    random.setstate((3, tuple(json.loads(s["python"])), None))


def _save_checkpoint(out_dir: Path, payload: dict) -> None:
    with atomic_path(out_dir / CHECKPOINT, suffix=".pt") as tmp:
        torch.save(payload, tmp)


def _load_checkpoint(path: Path) -> dict:
    try:
        ck = torch.load(path, weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means a bad file
        raise ValueError(
            f"corrupted checkpoint file {path}: {err}; delete it to restart the run"
        ) from err
    if not isinstance(ck, dict) or ck.get("format") != "tamis.rationale.checkpoint":
        raise ValueError(f"{path} is not a tamis.rationale training checkpoint")
    return ck


# ---------------------------------------------------------------------- fit
def fit(
    train: object, cfg: RationaleConfig | None = None, dev: object | None = None,
    out_dir: str | Path | None = None, seed: int = 0, progress: bool = True,
    stop_after: int | None = None, log: object | None = None,
) -> FitResult:
    """Train the configured method on ``train``; evaluate on ``dev`` after each epoch.

    Args:
        train: the training ``ReviewSet`` (its vocabulary becomes the model's).
        cfg: the configuration (default ``RationaleConfig()``).
        dev: optional ``ReviewSet`` with the same aspects, scored every epoch.
        out_dir: checkpoints here after every epoch (atomic) and the final model
            (``model.safetensors`` + ``model.json``) and ``history.json``; a rerun with the
            same data and configuration continues from the last checkpoint.
        seed: seeds model initialisation, batch order, Gumbel noise and dropout.
        progress: rich progress bars.
        stop_after: train at most this many epochs in this call (time-sliced jobs); a later
            call resumes. The returned model is then the partially trained one.
        log: optional callable receiving each epoch's history dict (e.g. a log-file writer).

    Raises:
        ValueError: bad data (no reviews, ratings outside [0, 1] or all missing for an
            aspect, every text empty), dev aspects that differ, a checkpoint from another
            configuration, vocabulary or aspect set, or a corrupted checkpoint file.

    """
    t0 = time.perf_counter()
    cfg = cfg or RationaleConfig()
    check_reviews(train, "the training set")
    aspects = tuple(train.aspects)  # type: ignore[attr-defined]
    cfg.alphas(len(aspects))
    if dev is not None:
        check_aspects(aspects, tuple(dev.aspects), "the dev set")  # type: ignore[attr-defined]
    vocab = Vocabulary.build(
        [r.tokens for r in train.reviews], cfg.min_count, cfg.max_vocab  # type: ignore[attr-defined]
    )
    out = Path(out_dir) if out_dir is not None else None
    ck = None
    if out is not None and (out / CHECKPOINT).exists():
        ck = _load_checkpoint(out / CHECKPOINT)
        _check_resume(ck, cfg, vocab, aspects, seed, out)

    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    matrix = None if ck is not None else embedding_matrix(
        vocab, cfg.embedding, cfg.random_embedding_dim, seed
    )
    model = RationaleModel(vocab, aspects, cfg, matrix, pretrained=ck is None)
    data = Encoded(train, vocab, cfg.max_len)
    stages = cfg.schedule()
    plan = _epoch_plan(stages)
    gen_epochs = sum(1 for p in plan if p[2] >= 0)
    history: list[dict] = []
    start = 0
    state: dict = {}
    opt_state = None
    if ck is not None:
        model.load_state_dict(ck["model"])
        history = list(ck["history"])
        start = int(ck["next_epoch"])
        opt_state = ck.get("optimizer")
        if ck.get("baseline") is not None:
            state["baseline"] = ck["baseline"]
        _set_rng_state(ck["rng"])

    optimizer: torch.optim.Optimizer | None = None
    current_stage = -1
    done_now = 0
    for epoch in range(start, len(plan)):
        if stop_after is not None and done_now >= stop_after:
            break
        si, se, gi = plan[epoch]
        stage = stages[si]
        params = _set_trainable(model, stage)
        if si != current_stage:
            optimizer = torch.optim.Adam(
                params, lr=cfg.lr * stage.lr_scale, weight_decay=cfg.weight_decay
            )
            if opt_state is not None and se > 0:
                optimizer.load_state_dict(opt_state)
            opt_state = None
            current_stage = si
        tau = gumbel_tau(cfg, gi, gen_epochs) if gi >= 0 else cfg.gumbel_tau_end
        entry = _train_epoch(model, data, stage, tau, optimizer, state, cfg, seed, epoch,
                             progress)
        entry.update(stage=stage.name, stage_epoch=se, epoch=epoch, tau=tau)
        if dev is not None:
            scores = evaluate(model, dev)
            entry["dev_rating"] = scores["rating"]
            if "rationale" in scores:
                entry["dev_rationale"] = scores["rationale"]
        entry["wall_s"] = time.perf_counter() - t0
        history.append(entry)
        done_now += 1
        if log is not None:
            log(entry)  # type: ignore[operator]
        if out is not None:
            _save_checkpoint(out, {
                "format": "tamis.rationale.checkpoint",
                "config": cfg.to_dict(),
                "aspects": list(aspects),
                "vocab_fingerprint": vocab.fingerprint(),
                "seed": seed,
                "next_epoch": epoch + 1,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict() if optimizer is not None else None,
                "baseline": state.get("baseline"),
                "rng": _rng_state(),
                "history": history,
            })
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    finished = len(history) >= len(plan)
    if out is not None and finished:
        model.save(out)
        write_text_atomic(out / "history.json", json.dumps(history, indent=1))
    return FitResult(model, history, time.perf_counter() - t0)


def _check_resume(
    ck: dict, cfg: RationaleConfig, vocab: Vocabulary, aspects: tuple[str, ...], seed: int,
    out: Path,
) -> None:
    if ck["config"] != cfg.to_dict():
        diff = sorted(k for k in cfg.to_dict() if ck["config"].get(k) != cfg.to_dict()[k])
        raise ValueError(
            f"{out / CHECKPOINT} was written with another configuration (fields differ: "
            f"{diff}); use another out_dir or the same configuration"
        )
    if tuple(ck["aspects"]) != aspects:
        raise ValueError(
            f"{out / CHECKPOINT} was trained on aspects {ck['aspects']}, the training set has "
            f"{list(aspects)}"
        )
    if ck["vocab_fingerprint"] != vocab.fingerprint():
        raise ValueError(
            f"{out / CHECKPOINT} was trained with vocabulary fingerprint "
            f"{ck['vocab_fingerprint']}, the training set gives {vocab.describe()}: "
            "another training set"
        )
    if int(ck["seed"]) != seed:
        raise ValueError(f"{out / CHECKPOINT} was trained with seed {ck['seed']}, not {seed}")


def _train_epoch(
    model: RationaleModel, data: Encoded, stage: Stage, tau: float,
    optimizer: torch.optim.Optimizer | None, state: dict, cfg: RationaleConfig, seed: int,
    epoch: int, progress: bool,
) -> dict:
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(len(data), generator=g)
    batches = [order[s : s + cfg.batch_size] for s in range(0, len(data), cfg.batch_size)]
    sums: dict[str, float] = {}
    sel = torch.zeros(len(model.aspects))
    n_tok = 0.0
    params = [p for grp in optimizer.param_groups for p in grp["params"]] if optimizer else []
    for idx in track(batches, f"{stage.name} epoch", total=len(batches), enabled=progress):
        ids, pad, y = data.batch(idx)
        loss, logs, m = step_loss(model, ids, pad, y, stage, tau, state)
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
        for key, v in logs.items():
            sums[key] = sums.get(key, 0.0) + v * len(idx)
        if m is not None:
            sel += (m * pad.unsqueeze(1)).sum((0, 2))
            n_tok += float(pad.sum())
    entry: dict = {"losses": {k: v / len(data) for k, v in sums.items()}}
    if n_tok:
        entry["rate"] = dict(zip(model.aspects, (100.0 * sel / n_tok).tolist()))
    return entry


# ---------------------------------------------------------------------- sparsity matching
@torch.no_grad()
def token_logits(model: RationaleModel, reviews: object, batch_size: int = 256) -> np.ndarray:
    """Generator logits of every real token of ``reviews``, stacked: ``(T, C)``."""
    tokens = model._tokens(reviews)
    was = model.training
    model.eval()
    ids_all, lengths = model.vocab.encode(tokens, model.cfg.max_len, warn=False)
    rows = []
    for s in range(0, len(tokens), batch_size):
        lens = lengths[s : s + batch_size]
        width = max(int(lens.max()) if len(lens) else 1, 1)
        pad = (torch.arange(width).unsqueeze(0) < lens.unsqueeze(1)).float()
        lg = model.logits(ids_all[s : s + batch_size, :width], pad)
        rows.append(lg[pad > 0].numpy())
    model.train(was)
    return np.concatenate(rows, 0) if rows else np.zeros((0, 1), np.float32)


def _rates(logits: np.ndarray, offset: np.ndarray, selector: str) -> np.ndarray:
    k = offset.shape[0]
    if selector == "softmax":
        shifted = logits.copy()
        shifted[:, :k] += offset
        win = shifted.argmax(1)
        return 100.0 * np.array([(win == a).mean() for a in range(k)])
    return 100.0 * ((logits + offset) > 0).mean(0)


def fit_offsets(
    logits: np.ndarray, target: np.ndarray, selector: str, offset: np.ndarray | None = None,
    tol: float = 0.5, rounds: int = 10,
) -> np.ndarray:
    """Per-aspect offsets so that each aspect selects ``target`` percent of the tokens.

    ``logits`` are token logits ``(N, K+1)`` (softmax selector: argmax with the offsets added
    to the K aspect logits, "none" unshifted) or ``(N, K)`` (Bernoulli gates: logit + offset
    > 0). Bisection per aspect over the logits' range, in Gauss-Seidel rounds (the K+1 argmax
    couples the aspects), starting from ``offset`` (zeros by default).
    """
    k = len(target)
    offset = np.zeros(k) if offset is None else np.asarray(offset, np.float64).copy()
    rate = _rates(logits, offset, selector)
    # an offset beyond the logits' range changes nothing more: bisect over that range
    span = float(logits.max() - logits.min()) + float(np.abs(offset).max()) + 1.0
    for _ in range(rounds):
        if (np.abs(rate - target) <= tol).all():
            break
        for a in range(k):
            lo, hi = -span, span
            for _ in range(60):
                offset[a] = (lo + hi) / 2
                r = _rates(logits, offset, selector)[a]
                if abs(r - target[a]) <= tol / 4:
                    break
                if r < target[a]:
                    lo = offset[a]
                else:
                    hi = offset[a]
        rate = _rates(logits, offset, selector)
    return offset


def calibrate_sparsity(
    model: RationaleModel, reviews: object, target: float | Sequence[float],
    tol: float = 0.5, rounds: int = 10,
) -> np.ndarray:
    """Shift the aspect logits at inference so each aspect selects ``target`` percent.

    This is an inference-time threshold on the generator: a per-aspect offset added to the
    aspect logits before the argmax (``model.offset``, saved with the model). It is found by
    bisection per aspect on the cached token logits of ``reviews``, in Gauss-Seidel rounds
    because the K+1 argmax couples the aspects. Training-time alpha tuning (FR/MGR) is the
    alternative; this one is deterministic and needs no retraining. ``target`` is in percent
    (e.g. 15.0), one value or one per aspect.

    Returns:
        the achieved selection percentages per aspect (a warning says so when some aspect
        stays outside ``tol``, e.g. because of ties between tokens).

    """
    k = len(model.aspects)
    tgt = np.broadcast_to(np.asarray(target, dtype=np.float64), (k,)).copy()
    if ((tgt <= 0) | (tgt >= 100)).any():
        raise ValueError(f"target must be in percent (0, 100), got {target!r}")
    logits = token_logits(model, reviews).astype(np.float64)
    if logits.shape[0] == 0:
        raise ValueError("calibrate_sparsity needs reviews with at least one token")
    offset = fit_offsets(logits, tgt, model.selector, model.offset.numpy(), tol, rounds)
    model.offset.copy_(torch.from_numpy(offset.astype(np.float32)))
    rate = selection_percent(model, reviews)
    if not (np.abs(rate - tgt) <= tol).all():
        warnings.warn(
            f"calibrate_sparsity reached {np.round(rate, 2).tolist()} for target "
            f"{tgt.tolist()} (tolerance {tol})",
            stacklevel=2,
        )
    return rate
