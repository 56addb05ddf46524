"""The ``tamis demo`` section for pseudo density (a few minutes on 2 CPU cores).

A small GAN on Fashion-MNIST, steered in one extractor's feature space (F_g) and scored in an
independent one (F_e): importance sampling and perturbation in both directions against
truncation and DRS, a short importance-sampled fine-tune, and the 2-D mixture check.
"""

from __future__ import annotations

import html
import time
from pathlib import Path

import numpy as np
import torch

from tamis.data import load_image_dataset
from tamis.density import pipeline as pl
from tamis.density.finetune import finetune_gan
from tamis.density.models import extract
from tamis.density.perturb import perturb_latents
from tamis.density.pseudo_density import pseudo_density
from tamis.density.sampling import (
    discriminator_rejection_sample,
    importance_sample,
    truncate_latents,
)
from tamis.density.toys import gaussian_mixture
from tamis.report import Section
from tamis.report.html import html_table

N_REF = 6_000
N_FAKE = 1_000
N_EVAL_REAL = N_FAKE  # equal real and fake set sizes for PRDC (Naeem et al. 2020)
N_CURVE = 600
FT_STEPS = 30


def _row(name: str, m: dict[str, float], extra: str = "") -> list[object]:
    return [name, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['density']:.3f}",
            f"{m['coverage']:.3f}", f"{m['fd']:.2f}", extra]


def toy_spearman(ks: tuple[int, ...] = (5, 10, 20, 50), n: int = 5000) -> dict[int, float]:
    """Spearman correlation between pseudo density and the true 2-D mixture density per k."""
    from scipy import stats

    x, true = gaussian_mixture(n, seed=0)
    return {k: float(stats.spearmanr(pseudo_density(x, k=k), true).statistic) for k in ks}


def demo_section(out_dir: Path, data_dir: Path | None = None) -> Section:
    """Run the pseudo-density demonstration and return its report section.

    Args:
        out_dir: folder for the PNG pictures (``density_*.png``).
        data_dir: Fashion-MNIST folder (default: Debian's); falls back to sklearn digits.

    Returns:
        The report :class:`~tamis.report.Section`.

    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    console: list[str] = []
    train = load_image_dataset("train", data_dir)
    test = load_image_dataset("test", data_dir)
    models = pl.load_models(train, log=console.append)
    g, d, f_g, f_e = models.generator, models.discriminator, models.steer, models.evaluate
    pl.freeze(g, d, f_g, f_e)
    rng = np.random.default_rng(0)
    ref = pl.images_tensor(train)[np.sort(rng.choice(len(train), min(N_REF, len(train)),
                                                     replace=False))]
    test_x = pl.images_tensor(test)
    pick = np.sort(np.random.default_rng(1000).permutation(len(test_x))[:N_EVAL_REAL])
    real_eval = extract(f_e, test_x[pick]).numpy()
    steer = pl.fit_steering(f_g, ref)
    latent_dim = g.cfg.latent_dim
    shape = tuple(ref.shape[1:])

    rows: list[list[object]] = []
    grids: list[tuple[str, str]] = []

    def record(name: str, images: torch.Tensor, extra: str = "", grid: bool = False) -> dict:
        m = pl.evaluate_images(f_e, real_eval, images)
        rows.append(_row(name, m, extra))
        if grid:
            fname = f"density_{name.split(' ')[0].lower()}_{len(grids)}.png"
            pl.save_grid(images, out_dir / fname, name)
            grids.append((fname, name))
        return m

    z = pl.latent_sampler(latent_dim, 1)(N_FAKE)
    base_images = pl.generate(g, z)
    base = record("baseline", base_images, grid=True)
    results = {"baseline": base}
    with torch.no_grad():
        gen_scores = steer.scorer(base_images).numpy()
    ref_density = steer.density.reference_density

    def tau_at(q: float) -> tuple[float, float]:
        """Threshold at quantile q of the model's own scores, and its reference percentile."""
        tau = float(np.quantile(gen_scores, q))
        return tau, float((ref_density < tau).mean() * 100)

    tau_mid, pct_mid = tau_at(0.5)
    timing = {"setup": time.perf_counter() - t0}
    for label, w in (("fidelity", 20.0), ("diversity", 0.05)):
        res = importance_sample(g, pl.latent_sampler(latent_dim, 2), steer.scorer, N_FAKE,
                                tau=tau_mid, w=w, batch_size=512, image_shape=shape)
        results[f"is_{label}"] = record(
            f"IS {label} (w={w:g})", res.samples,
            f"acceptance {res.acceptance_rate:.2f}, {res.candidates_per_sample:.2f} cand./sample",
            grid=True,
        )
    for label in ("fidelity", "diversity"):
        pr = perturb_latents(z, g, steer.scorer, direction=label, epsilon=0.3, steps=10,
                             image_shape=shape)
        moved = pr.final_scores.mean() - pr.initial_scores.mean()
        results[f"perturb_{label}"] = record(
            f"perturb {label} (eps=0.3)", pl.generate(g, pr.latents),
            f"predicted density {pr.initial_scores.mean():.2f} -> "
            f"{pr.final_scores.mean():.2f} ({moved:+.2f})", grid=True,
        )
    record("truncation psi=0.7", pl.generate(g, truncate_latents(z, 0.7)))
    drs = discriminator_rejection_sample(g, pl.latent_sampler(latent_dim, 3), d, N_FAKE,
                                         gamma_percentile=80, image_shape=shape)
    record("DRS (gamma=p80)", drs.samples, f"acceptance {drs.acceptance_rate:.2f}")
    timing["techniques"] = time.perf_counter() - t0 - sum(timing.values())

    # P/R curves: tau swept (IS fidelity, w=100) against truncation psi
    curve_is, curve_tr = [], []
    for q in (0.1, 0.3, 0.5, 0.7, 0.9):
        tau, pct = tau_at(q)
        res = importance_sample(g, pl.latent_sampler(latent_dim, int(100 * q)), steer.scorer,
                                N_CURVE, tau=tau, w=100.0, batch_size=512)
        m = pl.evaluate_images(f_e, real_eval, res.samples)
        curve_is.append((f"p{pct:.0f}", m["precision"], m["recall"]))
    for psi in (0.4, 0.6, 0.8, 0.9, 1.0):
        m = pl.evaluate_images(f_e, real_eval,
                               pl.generate(g, truncate_latents(z[:N_CURVE], psi)))
        curve_tr.append((f"{psi:g}", m["precision"], m["recall"]))
    _plot_curves(curve_is, curve_tr, out_dir / "density_pr_curve.png")
    timing["curves"] = time.perf_counter() - t0 - sum(timing.values())

    # short importance-sampled fine-tune, both directions (fresh copies of the GAN)
    ft_rows = []
    for w in (1.0, 5.0, 0.2):
        g2, d2 = _copy(g, d)
        finetune_gan(g2, d2, ref, ref_density, pl.latent_sampler(latent_dim, 5), tau=tau_mid,
                     w_real=w, scorer=steer.scorer, steps=FT_STEPS, batch_size=64, lr=2e-4,
                     seed=0)
        g2.eval()
        m = pl.evaluate_images(f_e, real_eval, pl.generate(g2, z))
        ft_rows.append(_row(f"fine-tune w_real={w:g}, w_fake={1 / w:g}", m,
                            f"{FT_STEPS} steps"))
    timing["finetune"] = time.perf_counter() - t0 - sum(timing.values())
    spear = toy_spearman()
    timing["toy"] = time.perf_counter() - t0 - sum(timing.values())
    digits_html, digits_console = diffusers_digits_part(out_dir)
    timing["diffusers digits"] = time.perf_counter() - t0 - sum(timing.values())
    elapsed = time.perf_counter() - t0

    header = ["setting", "precision", "recall", "density", "coverage", "FD (F_e)", "notes"]
    body = [
        f"<p>Models: {html.escape(models.source)}. A DCGAN on {html.escape(train.name)}; "
        f"steering with the pseudo density of {len(ref):,} training images in extractor F_g "
        "(k=20) "
        "through the MLP predictor; all metrics in an <em>independent</em> extractor F_e "
        f"(k=5) against a fixed random subset of {len(real_eval)} test images, {N_FAKE} "
        "samples per row (equal sizes, as PRDC assumes). "
        "FD is the Frechet distance in F_e (not Inception FID). The GAN's samples sit below "
        f"the real data's density, so tau is the median predicted density of its own samples "
        f"(= reference percentile p{pct_mid:.0f}), giving about 2 candidates per sample.</p>",
        html_table(header, rows),
        "<div>" + "".join(f'<img src="{f}" alt="{html.escape(t)}" style="width:220px">'
                          for f, t in grids) + "</div>",
        "<h3>Precision-recall: importance sampling (tau swept, w=100) vs truncation</h3>",
        '<img src="density_pr_curve.png" alt="P/R curves" style="width:420px">',
        f"<h3>Importance-sampled fine-tuning ({FT_STEPS} steps, same tau, one seed)</h3>",
        html_table(header, ft_rows),
        "<h3>2-D mixture: Spearman(pseudo density, true density)</h3>",
        html_table(["k", *map(str, spear)], [["rho_s", *(f"{v:.3f}" for v in spear.values())]]),
        "<p>Full multi-seed numbers: <code>benchmarks/results/density_demonstration.md"
        "</code>.</p>",
        digits_html,
    ]
    b, fi, di = results["baseline"], results["is_fidelity"], results["is_diversity"]
    console += [
        f"models: {models.source}",
        f"precision {b['precision']:.3f} -> IS fidelity {fi['precision']:.3f}, "
        f"IS diversity {di['precision']:.3f}",
        f"recall    {b['recall']:.3f} -> IS fidelity {fi['recall']:.3f}, "
        f"IS diversity {di['recall']:.3f}",
        "2-D Spearman(pseudo, true) " + ", ".join(f"k={k}: {v:.3f}" for k, v in spear.items()),
        *digits_console,
        "time " + ", ".join(f"{k} {v:.0f} s" for k, v in timing.items())
        + f", total {elapsed:.0f} s",
    ]
    return Section(title="Pseudo density (tamis.density)", body_html="\n".join(body),
                   console=console)


DIGITS = Path(__file__).resolve().parent / "checkpoints" / "digits"
N_DIGITS = 300


def diffusers_digits_part(out_dir: Path, n: int = N_DIGITS, steps: int = 10) -> tuple[str, list]:
    """Importance sampling on a diffusers DDPMPipeline opened by path (the 8x8 digits model).

    Steering in the digits F_g (pseudo density of the 1,198 training digits, k = 10), scoring
    in the independent F_e against ``n`` test digits; deterministic DDIM with ``steps`` steps.
    Returns the HTML block and console lines ("" and a notice if the checkpoint is missing).
    """
    from tamis.data.images import load_digits_images
    from tamis.density.adapters import DiffusersGenerator
    from tamis.density.models import load_checkpoint
    from tamis.density.sampling import importance_accept

    if not (DIGITS / "ddpm" / "model_index.json").exists():
        return "", [f"diffusers digits part skipped: {DIGITS / 'ddpm'} is missing"]
    split = lambda name: torch.from_numpy(  # noqa: E731
        load_digits_images(name, test_fraction=1 / 3).images[:, None])
    train, test = split("train"), split("test")
    f_g = load_checkpoint(DIGITS / "extractor_steer.safetensors")
    f_e = load_checkpoint(DIGITS / "extractor_eval.safetensors")
    pl.freeze(f_g, f_e)
    steer = pl.fit_steering(f_g, train, k=10)
    gen = DiffusersGenerator.from_pretrained(DIGITS / "ddpm", num_inference_steps=steps)
    real = extract(f_e, test[:n]).numpy()
    z = gen.sample_latents(4 * n, seed=1)
    with torch.no_grad():
        pool = torch.cat([gen(b) for b in z.split(300)])
        scores = steer.scorer(pool)
    tau = float(scores[:n].median())
    rows, picks = [], {"baseline": pool[:n]}
    rng = np.random.default_rng(0)
    for label, w in (("IS fidelity (w=20)", 20.0), ("IS diversity (w=0.05)", 0.05)):
        keep = np.flatnonzero(importance_accept(scores, tau, w, rng))[:n]
        picks[label] = pool[torch.from_numpy(keep)]
    for label, images in picks.items():
        rows.append(_row(label, pl.evaluate_images(f_e, real, images)))
    rr = pl.evaluate_images(f_e, real, train[:n])
    rows.append(_row("real vs real (training digits)", rr))
    pl.save_grid(torch.cat([v[:16] for v in picks.values()]), out_dir / "density_digits.png",
                 "rows: baseline, IS fidelity, IS diversity", nrow=16, rows=3)
    header = ["setting", "precision", "recall", "density", "coverage", "FD (F_e)", "notes"]
    html_block = "\n".join([
        "<h3>Your own diffusers pipeline: an 8x8 digits DDPM opened by path</h3>",
        "<p><code>DiffusersGenerator.from_pretrained(dir)</code> on the bundled digits "
        "<code>DDPMPipeline</code> (deterministic DDIM, "
        f"{steps} steps); steering in the digits F_g, metrics in the independent F_e against "
        f"{n} test digits, {n} samples per row. This generator's coverage is close to the "
        "real data's, the regime the paper's claims presume; the 3-seed study with all three "
        "techniques is <code>benchmarks/results/density_digits_directions.md</code>.</p>",
        html_table(header, rows),
        '<img src="density_digits.png" alt="digits samples" style="width:640px">',
    ])
    cov = {k: r[4] for k, r in zip(picks, rows, strict=False)}
    return html_block, [f"digits DDPM (diffusers, by path): coverage baseline {cov['baseline']}, "
                        f"real vs real {rr['coverage']:.3f}"]


def _copy(g: torch.nn.Module, d: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module]:
    import copy

    g2, d2 = copy.deepcopy(g), copy.deepcopy(d)
    for net in (g2, d2):
        net.train()
        for p in net.parameters():
            p.requires_grad_(True)
    return g2, d2


def _plot_curves(curve_is: list, curve_tr: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 3.4), dpi=100)
    ax.plot([c[2] for c in curve_is], [c[1] for c in curve_is], "o-", label="IS (tau = ref. pct)")
    for pct, p, r in curve_is:
        ax.annotate(pct, (r, p), fontsize=7)
    ax.plot([c[2] for c in curve_tr], [c[1] for c in curve_tr], "s--", label="truncation (psi)")
    for psi, p, r in curve_tr:
        ax.annotate(psi, (r, p), fontsize=7)
    ax.set_xlabel("recall (F_e)")
    ax.set_ylabel("precision (F_e)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
