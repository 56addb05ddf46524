"""The three techniques and the baselines on tiny 1-D / 2-D toys with known answers."""

import numpy as np
import pytest
import torch
from torch import nn

from tamis.density.finetune import (
    finetune_gan,
    finetune_with_loss,
    importance_weights,
    weighted_sampler,
)
from tamis.density.perturb import perturb_latents
from tamis.density.sampling import (
    discriminator_rejection_sample,
    expected_acceptance,
    importance_accept,
    importance_sample,
    temperature_noise,
    truncate_latents,
)


def identity(z):
    return z


def gauss_score(x):
    """A differentiable 'density': high near the origin."""
    return torch.exp(-(x**2).sum(dim=1))


def test_perturbation_moves_density_monotonically_in_epsilon():
    z = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    means = {}
    for eps in [0.05, 0.1, 0.2]:
        for direction in ["fidelity", "diversity"]:
            res = perturb_latents(z, identity, gauss_score, direction=direction, epsilon=eps,
                                  steps=10)
            assert (res.latents - z).abs().max() <= eps + 1e-6
            means[direction, eps] = res.final_scores.mean().item()
            base = res.initial_scores.mean().item()
    assert base < means["fidelity", 0.05] < means["fidelity", 0.1] < means["fidelity", 0.2]
    assert base > means["diversity", 0.05] > means["diversity", 0.1] > means["diversity", 0.2]


@pytest.mark.parametrize("rule", ["sign", "grad", "l2"])
def test_perturbation_rules_and_zero_budget(rule):
    z = torch.randn(16, 3, generator=torch.Generator().manual_seed(1))
    res = perturb_latents(z, identity, gauss_score, epsilon=0.3, steps=5, step_rule=rule,
                          random_start=True, batch_size=5)
    assert (res.final_scores >= res.initial_scores - 0.05).float().mean() > 0.8
    same = perturb_latents(z, identity, gauss_score, epsilon=0.0)
    torch.testing.assert_close(same.latents, z)


def test_acceptance_rule_and_rate_match_theory():
    rng = np.random.default_rng(0)
    scores = rng.random(200_000)  # P(score > 0.7) = 0.3
    for w in [4.0, 0.25]:
        acc = importance_accept(scores, 0.7, w, rng)
        p = 0.3 if w > 1 else 0.7
        assert acc.mean() == pytest.approx(expected_acceptance(p, w), abs=0.005)
        if w > 1:
            assert acc[scores > 0.7].all()
        else:
            assert acc[scores < 0.7].all()
    assert importance_accept(scores[:10], 0.5, 1.0, rng).all()


def test_importance_sampling_reweights_1d_toy():
    gen = torch.Generator().manual_seed(0)

    def sampler(b):
        return torch.randn(b, 1, generator=gen)

    def score(x):
        return -x[:, 0].abs()  # "density" high near 0

    res = importance_sample(identity, sampler, score, 4000, tau=-1.0, w=10.0, batch_size=512)
    # q = p * a with a = 1 inside |x| < 1, 1/10 outside: P_q(|x| < 1) = .683 / (.683 + .0317)
    inside = (res.samples.abs() < 1).float().mean().item()
    assert inside == pytest.approx(0.683 / (0.683 + 0.317 / 10), abs=0.02)
    assert res.acceptance_rate == pytest.approx(0.683 + 0.317 / 10, abs=0.02)
    assert res.candidates_per_sample == pytest.approx(1 / res.acceptance_rate)
    div = importance_sample(identity, sampler, score, 2000, tau=-1.0, w=0.1, batch_size=512)
    assert (div.samples.abs() < 1).float().mean().item() < 0.3


def test_importance_sampling_gives_up_cleanly():
    with pytest.raises(RuntimeError, match="accepted"):
        importance_sample(identity, lambda b: torch.zeros(b, 1), lambda x: x[:, 0], 10,
                          tau=5.0, w=1e9, batch_size=8, max_candidates=64)


def test_truncation_and_temperature():
    z = torch.ones(2, 3)
    torch.testing.assert_close(truncate_latents(z, 0.5), 0.5 * z)
    torch.testing.assert_close(truncate_latents(z, 0.0, mean=torch.zeros(3)), torch.zeros(2, 3))
    t = temperature_noise((20000,), 0.5, torch.Generator().manual_seed(0))
    assert t.std().item() == pytest.approx(0.5, abs=0.01)
    with pytest.raises(ValueError):
        truncate_latents(z, -1)


def test_drs_prefers_high_discriminator_scores():
    gen = torch.Generator().manual_seed(0)
    res = discriminator_rejection_sample(identity, lambda b: torch.randn(b, 1, generator=gen),
                                         lambda x: x[:, 0], 1000, gamma_percentile=80)
    assert res.samples.mean().item() > 0.5  # D prefers positive x
    assert 0 < res.acceptance_rate < 1


def test_weights_and_sampler():
    d = np.array([0.5, 1.5, 2.0, 0.2])
    np.testing.assert_array_equal(importance_weights(d, 1.0, 3.0), [1, 3, 3, 1])
    s = weighted_sampler(d, 1.0, 3.0, num_samples=80_000)
    counts = np.bincount(np.array(list(s)), minlength=4) / 80_000
    np.testing.assert_allclose(counts, [1 / 8, 3 / 8, 3 / 8, 1 / 8], atol=0.01)


def test_gan_fixed_point_on_1d_toy():
    """q ~ p * w_real / w_fake: a 1-D GAN fine-tuned with w = 3 puts more mass where rho >= tau."""
    torch.manual_seed(0)
    real = torch.randn(4000, 1)
    dens = np.exp(-real[:, 0].numpy() ** 2)  # high near 0
    tau = float(np.median(dens))
    g = nn.Sequential(nn.Linear(1, 32), nn.ReLU(), nn.Linear(32, 1))
    d = nn.Sequential(nn.Linear(1, 32), nn.ReLU(), nn.Linear(32, 1))
    gen = torch.Generator().manual_seed(1)

    def sampler(b):
        return torch.randn(b, 1, generator=gen)

    def frac_inside():
        with torch.no_grad():
            x = g(sampler(4000))
        return (torch.exp(-x[:, 0] ** 2) >= tau).float().mean().item()

    finetune_gan(g, d, real, dens, sampler, tau=tau, w_real=1.0, steps=300, batch_size=128,
                 lr=2e-3)
    base = frac_inside()
    hist = finetune_gan(g, d, real, dens, sampler, tau=tau, w_real=3.0, steps=300,
                        batch_size=128, lr=2e-3, scorer=lambda x: torch.exp(-x[:, 0] ** 2))
    assert frac_inside() > base + 0.1
    assert 0 < np.mean(hist.fake_acceptance) < 1


def test_finetune_with_loss_sees_weighted_batches():
    data = torch.arange(4.0).view(4, 1)
    seen = []
    param = torch.zeros(1, requires_grad=True)

    def loss_fn(batch):
        seen.append(batch.clone())
        return (param * batch).sum()

    finetune_with_loss(loss_fn, [param], data, [0.1, 0.1, 0.1, 9.0], tau=1.0, w=100.0,
                       steps=50, batch_size=4)
    vals = torch.cat(seen)[:, 0]
    assert (vals == 3).float().mean() > 0.9


def test_finetune_with_loss_ema_matches_a_hand_written_average():
    """The EMA option equals a plain loop: Adam steps, then ema = d * ema + (1 - d) * param."""
    data = torch.linspace(-1, 1, 8).view(8, 1)
    dens = np.linspace(0.5, 1.5, 8)

    def run(ema_decay):
        torch.manual_seed(0)
        lin = torch.nn.Linear(1, 1)
        seen = []

        def loss_fn(batch):
            seen.append(batch.clone())
            return ((lin(batch) - 2 * batch) ** 2).mean()

        finetune_with_loss(loss_fn, lin.parameters(), data, dens, tau=1.0, w=3.0, steps=20,
                           batch_size=4, lr=0.05, ema_decay=ema_decay)
        return lin, seen

    got, _ = run(0.9)
    raw, batches = run(None)
    # reference: replay the same batches with Adam and a hand-written average
    torch.manual_seed(0)
    ref = torch.nn.Linear(1, 1)
    opt = torch.optim.Adam(ref.parameters(), lr=0.05)
    avg = [p.detach().clone() for p in ref.parameters()]
    for b in batches:
        loss = ((ref(b) - 2 * b) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        avg = [0.9 * a + 0.1 * p.detach() for a, p in zip(avg, ref.parameters(), strict=True)]
    for g, a, p_raw, p_ref in zip(got.parameters(), avg, raw.parameters(), ref.parameters(),
                                  strict=True):
        torch.testing.assert_close(g.detach(), a, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(p_raw.detach(), p_ref.detach())
    assert not torch.allclose(got.weight, raw.weight)  # the average differs from the raw end


def test_finetune_with_loss_rejects_a_bad_ema_decay():
    param = torch.zeros(1, requires_grad=True)
    with pytest.raises(ValueError, match="ema_decay"):
        finetune_with_loss(lambda b: (param * b).sum(), [param], torch.ones(4, 1), [1.0] * 4,
                           tau=1.0, w=2.0, steps=1, batch_size=2, ema_decay=1.0)
