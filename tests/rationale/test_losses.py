import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tamis.rationale import losses as L


def test_task_loss_ignores_nan_and_binarises():
    pred = torch.tensor([[0.5, 0.9], [0.1, 0.2], [0.3, 0.7]])
    y = torch.tensor([[1.0, float("nan")], [0.0, 0.5], [0.5, 1.0]])
    mse = L.task_loss(pred, y, "regression")
    assert mse[0].item() == pytest.approx(((0.5 - 1) ** 2 + 0.1**2 + 0.2**2) / 3)
    assert mse[1].item() == pytest.approx((0.3**2 + 0.3**2) / 2)
    bce = L.task_loss(pred, y, "binary")
    # aspect 0: rows 0 (pos) and 1 (neg); row 2 (0.5) is ignored
    assert bce[0].item() == pytest.approx((-math.log(0.5) - math.log(0.9)) / 2, rel=1e-5)
    # aspect 1: only row 2 (1.0 -> positive); 0.5 and NaN ignored
    assert bce[1].item() == pytest.approx(-math.log(0.7), rel=1e-5)


def test_sparsity_continuity_by_hand():
    m = torch.tensor([[[1, 1, 0, 0, 1], [0, 0, 0, 0, 0]],
                      [[0, 1, 0, 9, 9], [1, 1, 1, 9, 9]]], dtype=torch.float32)
    pad = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.float32)
    # batch rate: aspect 0 = (3 + 1) / 8, aspect 1 = 3 / 8
    rate = L.selection_rate(m, pad, "batch")
    assert rate.tolist() == pytest.approx([0.5, 0.375])
    per_review = L.selection_rate(m, pad, "review")
    assert per_review.tolist() == pytest.approx([(3 / 5 + 1 / 3) / 2, (0 + 1) / 2])
    alpha = torch.tensor([0.25, 0.25])
    assert L.sparsity_loss(m, pad, alpha).tolist() == pytest.approx([0.25, 0.125])
    # continuity: aspect 0 switches: review0 1->0, 0->1 = 2; review1 0->1, 1->0 = 2 -> 4 / 8
    assert L.continuity_loss(m, pad).tolist() == pytest.approx([4 / 8, 0.0])
    sp, ct = L.per_review_costs(m, pad, alpha.view(1, -1))
    assert sp[0].tolist() == pytest.approx([abs(3 / 5 - 0.25), 0.25])
    assert ct[1].tolist() == pytest.approx([2 / 3, 0.0])


def test_overlap_loss_by_hand():
    m = torch.tensor([[[1, 1, 0, 0], [0, 1, 1, 0]]], dtype=torch.float32)
    pad = torch.ones(1, 4)
    # one shared token out of 4, counted for (0,1) and (1,0)
    assert L.overlap_loss(m, pad).item() == pytest.approx(2 * 1 / 4)


def supcon_reference(z, tau, valid=None):
    b, k, _ = z.shape
    zn = F.normalize(z, dim=-1)
    items = [(i, a) for i in range(b) for a in range(k) if valid is None or valid[i, a]]
    total, count = 0.0, 0
    for i, a in items:
        pos = [(j, c) for j, c in items if c == a and j != i]
        if not pos:
            continue
        denom = sum(math.exp(float(zn[i, a] @ zn[j, c]) / tau)
                    for j, c in items if (j, c) != (i, a))
        s = 0.0
        for j, c in pos:
            s += -math.log(math.exp(float(zn[i, a] @ zn[j, c]) / tau) / denom)
        total += s / len(pos)
        count += 1
    return total / count


def simclr_reference(z1, z2, tau, valid=None):
    b, k, _ = z1.shape
    views = [F.normalize(z1, dim=-1), F.normalize(z2, dim=-1)]
    items = [(v, i, a) for v in range(2) for i in range(b) for a in range(k)
             if valid is None or valid[i, a]]
    total, count = 0.0, 0
    for v, i, a in items:
        def s(x, y):
            return math.exp(float(views[x[0]][x[1], x[2]] @ views[y[0]][y[1], y[2]]) / tau)
        pos = (1 - v, i, a)
        denom = sum(s((v, i, a), o) for o in items if o == pos or o[2] != a)
        total += -math.log(s((v, i, a), pos) / denom)
        count += 1
    return total / count


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_supcon_matches_double_loop(tau):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4, 3, 5, generator=g, dtype=torch.float64)
    assert L.supcon_loss(z, tau).item() == pytest.approx(supcon_reference(z, tau), rel=1e-9)
    valid = torch.ones(4, 3, dtype=torch.bool)
    valid[1, 2] = valid[3, 0] = False
    got = L.supcon_loss(z, tau, valid).item()
    assert got == pytest.approx(supcon_reference(z, tau, valid.numpy()), rel=1e-9)


def test_simclr_matches_double_loop():
    g = torch.Generator().manual_seed(1)
    z1 = torch.randn(3, 2, 4, generator=g, dtype=torch.float64)
    z2 = torch.randn(3, 2, 4, generator=g, dtype=torch.float64)
    assert L.simclr_loss(z1, z2, 0.2).item() == pytest.approx(
        simclr_reference(z1, z2, 0.2), rel=1e-9)
    valid = torch.ones(3, 2, dtype=torch.bool)
    valid[0, 1] = False
    assert L.simclr_loss(z1, z2, 0.2, valid).item() == pytest.approx(
        simclr_reference(z1, z2, 0.2, valid.numpy()), rel=1e-9)


def test_supcon_gradient_pulls_aspects_apart():
    """A gradient step raises same-aspect similarity and lowers cross-aspect similarity."""
    g = torch.Generator().manual_seed(2)
    z = torch.randn(6, 3, 8, generator=g, dtype=torch.float64, requires_grad=True)

    def sims(x):
        zn = F.normalize(x.detach(), dim=-1)
        same = np.mean([float(zn[i, a] @ zn[j, a]) for a in range(3)
                        for i in range(6) for j in range(6) if i != j])
        cross = np.mean([float(zn[i, a] @ zn[i, c]) for i in range(6)
                         for a in range(3) for c in range(3) if a != c])
        return same, cross

    same0, cross0 = sims(z)
    loss0 = L.supcon_loss(z, 0.1)
    loss0.backward()
    z2 = (z - 0.05 * z.grad).detach()
    same1, cross1 = sims(z2)
    assert L.supcon_loss(z2, 0.1).item() < loss0.item()
    assert same1 > same0 and cross1 < cross0


def test_supcon_degenerate_inputs():
    z = torch.randn(1, 3, 4)  # one review: no positives at all
    assert L.supcon_loss(z, 0.1).item() == 0.0
    valid = torch.zeros(2, 3, dtype=torch.bool)
    assert L.supcon_loss(torch.randn(2, 3, 4), 0.1, valid).item() == 0.0


def test_hard_soft_gap():
    h = torch.tensor([[0.2, 0.9], [0.4, 0.5]])
    s = torch.tensor([[0.3, 0.9], [0.2, 0.5]])
    assert L.hard_soft_gap(h, s).tolist() == pytest.approx([(0.01 + 0.04) / 2, 0.0])
    js = L.hard_soft_gap(h, s, "binary")
    assert js[1].item() == pytest.approx(0.0, abs=1e-9) and js[0].item() > 0
    p, q = 0.2, 0.3
    mid = [(p + q) / 2, (2 - p - q) / 2]
    ref = 0.5 * (p * math.log(p / mid[0]) + (1 - p) * math.log((1 - p) / mid[1])) + 0.5 * (
        q * math.log(q / mid[0]) + (1 - q) * math.log((1 - q) / mid[1]))
    p, q = 0.4, 0.2
    mid = [(p + q) / 2, (2 - p - q) / 2]
    ref2 = 0.5 * (p * math.log(p / mid[0]) + (1 - p) * math.log((1 - p) / mid[1])) + 0.5 * (
        q * math.log(q / mid[0]) + (1 - q) * math.log((1 - q) / mid[1]))
    assert js[0].item() == pytest.approx((ref + ref2) / 2, rel=1e-5)
