"""The losses of rationalization (pure tensor functions, note §4.5-4.6).

Shapes: masks ``m`` are ``(B, K, L)`` in [0, 1] (hard straight-through values in training);
``pad`` is ``(B, L)`` with 1 on real tokens. Every per-aspect term is returned as a ``(K,)``
vector so callers weight and sum aspects explicitly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812


def task_loss(pred: torch.Tensor, target: torch.Tensor, task: str = "regression") -> torch.Tensor:
    """Per-aspect task loss ``(K,)``; NaN targets (missing ratings) are ignored.

    ``pred``: ``(B, K)`` outputs in (0, 1) (sigmoid). ``"regression"``: MSE against the rating.
    ``"binary"``: BCE against ``rating >= 0.6``; ratings strictly between 0.4 and 0.6 are
    ignored, as in the FR/MGR binarised Beer sets.
    """
    valid = ~torch.isnan(target)
    y = torch.nan_to_num(target, nan=0.0)
    if task == "regression":
        per = (pred - y) ** 2
    elif task == "binary":
        valid = valid & ((y >= 0.6) | (y <= 0.4))
        p = pred.clamp(1e-6, 1 - 1e-6)
        per = F.binary_cross_entropy(p, (y >= 0.6).to(p.dtype), reduction="none")
    else:
        raise ValueError(f"task must be 'regression' or 'binary', got {task!r}")
    w = valid.to(pred.dtype)
    return (per * w).sum(0) / w.sum(0).clamp(min=1.0)


def selection_rate(m: torch.Tensor, pad: torch.Tensor, reduction: str = "batch") -> torch.Tensor:
    """Selected share of real tokens per aspect ``(K,)``.

    ``"batch"``: selected / real tokens over the batch; ``"review"``: mean of per-review rates.
    """
    p = pad.unsqueeze(1).to(m.dtype)
    if reduction == "batch":
        return (m * p).sum((0, 2)) / p.sum((0, 2)).clamp(min=1.0)
    if reduction == "review":
        return ((m * p).sum(2) / p.sum(2).clamp(min=1.0)).mean(0)
    raise ValueError(f"reduction must be 'batch' or 'review', got {reduction!r}")


def sparsity_loss(
    m: torch.Tensor, pad: torch.Tensor, alpha: torch.Tensor, reduction: str = "batch"
) -> torch.Tensor:
    """``|rate_k - alpha_k|`` per aspect ``(K,)`` (the collapse-guarded form of note §4.5)."""
    if reduction == "review":
        p = pad.unsqueeze(1).to(m.dtype)
        rate = (m * p).sum(2) / p.sum(2).clamp(min=1.0)
        return (rate - alpha).abs().mean(0)
    return (selection_rate(m, pad, reduction) - alpha).abs()


def continuity_loss(m: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """Mean ``|m_t - m_{t-1}|`` over consecutive real-token pairs, per aspect ``(K,)``."""
    p = pad.to(m.dtype)
    both = (p[:, 1:] * p[:, :-1]).unsqueeze(1)
    diff = (m[:, :, 1:] - m[:, :, :-1]).abs() * both
    return diff.sum((0, 2)) / p.sum().clamp(min=1.0)


def overlap_loss(m: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
    """``sum_{k != l} mean_t(m_k m_l)`` over real tokens (scalar; Bernoulli selector only)."""
    p = pad.unsqueeze(1).to(m.dtype)
    mm = m * p
    gram = torch.einsum("bkl,bjl->kj", mm, mm) / p.sum().clamp(min=1.0)
    return gram.sum() - gram.diagonal().sum()


def per_review_costs(
    m: torch.Tensor, pad: torch.Tensor, alpha: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-review sparsity and continuity costs ``(B, K)`` (REINFORCE rewards)."""
    p = pad.unsqueeze(1).to(m.dtype)
    n = p.sum(2).clamp(min=1.0)
    rate = (m * p).sum(2) / n
    both = p[:, :, 1:] * p[:, :, :-1]
    cont = ((m[:, :, 1:] - m[:, :, :-1]).abs() * both).sum(2) / n
    return (rate - alpha).abs(), cont


def supcon_loss(
    z: torch.Tensor, temperature: float = 0.1, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Self-supervised contrastive loss across aspects (note §4.6, SupCon form).

    Anchors are all ``(i, k)``; the positives of ``(i, k)`` are ``(j, k)`` for ``j != i`` (the
    same aspect in other reviews); the denominator runs over every ``(j, l) != (i, k)``, so the
    other aspects of the same review are negatives. Similarity is cosine over ``tau``. The loss
    is the mean over anchors (with at least one positive) of the mean over positives of
    ``-log softmax``.

    Args:
        z: ``(B, K, D)`` rationale representations.
        temperature: tau.
        valid: optional ``(B, K)`` bool; invalid rows (e.g. empty selections) are neither
            anchors nor candidates.

    """
    b, k, d = z.shape
    zf = F.normalize(z.reshape(b * k, d), dim=-1)
    labels = torch.arange(k, device=z.device).repeat(b)
    ok = (torch.ones(b * k, dtype=torch.bool, device=z.device) if valid is None
          else valid.reshape(-1))
    sim = zf @ zf.T / temperature
    eye = torch.eye(b * k, dtype=torch.bool, device=z.device)
    cand = ok.unsqueeze(0) & ok.unsqueeze(1) & ~eye
    sim = sim.masked_fill(~cand, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = cand & (labels.unsqueeze(0) == labels.unsqueeze(1))
    n_pos = pos.sum(1)
    anchors = ok & (n_pos > 0)
    if not anchors.any():
        return z.sum() * 0.0
    per = -(log_prob.masked_fill(~pos, 0.0)).sum(1) / n_pos.clamp(min=1)
    return per[anchors].mean()


def simclr_loss(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """SimCLR-style ablation: the positive of ``(i, k, view v)`` is ``(i, k, other view)``.

    The negatives are the other aspects' rationales ``(j, l, any view)`` with ``l != k``
    (including the same review); the same aspect in other reviews is left out of the
    denominator, so the loss only separates aspects. Mean over valid anchors of both views.
    """
    b, k, d = z1.shape
    z = F.normalize(torch.cat([z1, z2], 0).reshape(2 * b * k, d), dim=-1)
    n = b * k
    labels = torch.arange(k, device=z.device).repeat(2 * b)
    item = torch.arange(n, device=z.device).repeat(2)
    ok = (torch.ones(2 * n, dtype=torch.bool, device=z.device) if valid is None
          else valid.reshape(-1).repeat(2))
    sim = z @ z.T / temperature
    same_label = labels.unsqueeze(0) == labels.unsqueeze(1)
    pos = item.unsqueeze(0) == item.unsqueeze(1)
    pos = pos & ~torch.eye(2 * n, dtype=torch.bool, device=z.device)
    cand = (pos | ~same_label) & ok.unsqueeze(0) & ok.unsqueeze(1)
    sim = sim.masked_fill(~cand, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = pos & cand
    anchors = ok & pos.any(1)
    if not anchors.any():
        return z.sum() * 0.0
    per = -(log_prob.masked_fill(~pos, 0.0)).sum(1)
    return per[anchors].mean()


def hard_soft_gap(hard: torch.Tensor, soft: torch.Tensor, task: str = "regression") -> torch.Tensor:
    """A2R's gap between the hard- and soft-selection predictors, per aspect ``(K,)``.

    Regression: mean squared difference of the outputs. Binary: Jensen-Shannon divergence of
    the two Bernoulli outputs (A2R uses JS between predictive distributions).
    """
    if task == "regression":
        return ((hard - soft) ** 2).mean(0)
    p = torch.stack([hard, 1 - hard], -1).clamp(1e-6, 1)
    q = torch.stack([soft, 1 - soft], -1).clamp(1e-6, 1)
    mid = 0.5 * (p + q)
    js = 0.5 * (p * (p / mid).log()).sum(-1) + 0.5 * (q * (q / mid).log()).sum(-1)
    return js.mean(0)
