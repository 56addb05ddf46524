"""The full pseudo-density demonstration on Fashion-MNIST, with numbers over several seeds.

Steers in F_g, scores in the independent F_e (metrics vs 10,000 test images):
  1. each technique (importance sampling, perturbation, fine-tuning) in fidelity and diversity
     mode against the untouched model and the baselines (truncation, DRS; temperature for DDPM);
  2. the importance-sampling P/R curve (tau swept) against the truncation curve;
  3. FD in F_e before/after a short importance-sampled fine-tune, w on both sides of 1;
  4. the 2-D mixture: Spearman(pseudo density, true density) for several k.

    .venv/bin/python benchmarks/density/train_checkpoints.py     # once (or use the committed)
    .venv/bin/python benchmarks/density/demonstration.py [--seeds 3] [--ft-steps 100]

Writes benchmarks/results/density_demonstration.{json,md} and density_demo_*.png.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from tamis.data import load_fashion_mnist
from tamis.density import pipeline as pl
from tamis.density.finetune import finetune_gan
from tamis.density.models import extract, load_checkpoint
from tamis.density.perturb import perturb_latents
from tamis.density.sampling import (
    discriminator_rejection_sample,
    importance_sample,
    temperature_noise,
    truncate_latents,
)

RESULTS = Path(__file__).resolve().parents[1] / "results"
METRICS = ("precision", "recall", "density", "coverage", "fd")


def mean_sd(rows: list[dict]) -> dict:
    return {k: (float(np.mean([r[k] for r in rows])), float(np.std([r[k] for r in rows])))
            for k in rows[0]}


def fmt(ms: dict, keys=METRICS) -> list[str]:
    return [f"{ms[k][0]:.3f} ± {ms[k][1]:.3f}" for k in keys]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--n", type=int, default=1500, help="samples per setting")
    ap.add_argument("--ft-steps", type=int, default=100)
    ap.add_argument("--ft-ws", default="0.2,0.5,0.67,1,1.5,2,5")
    ap.add_argument("--ddpm-n", type=int, default=300)
    ap.add_argument("--markdown-only", action="store_true",
                    help="re-render the markdown from the existing JSON")
    args = ap.parse_args()
    if args.markdown_only:
        result = json.loads((RESULTS / "density_demonstration.json").read_text())
        (RESULTS / "density_demonstration.md").write_text(markdown(result, args.seeds))
        return
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    models = pl.load_models(train)
    g, d, f_g, f_e = models.generator, models.discriminator, models.steer, models.evaluate
    for net in (g, d, f_g, f_e):
        for p in net.parameters():
            p.requires_grad_(False)
    rng = np.random.default_rng(0)
    ref = pl.images_tensor(train)[np.sort(rng.choice(len(train), 10_000, replace=False))]
    real_eval = extract(f_e, pl.images_tensor(test)).numpy()
    steer = pl.fit_steering(f_g, ref)
    ref_density = steer.density.reference_density
    dim, shape, n = g.cfg.latent_dim, (1, 28, 28), args.n

    def ev(images: torch.Tensor) -> dict:
        m = pl.evaluate_images(f_e, real_eval, images)
        with torch.no_grad():
            m["pred_density_Fg"] = float(steer.scorer(images).mean())
        m["knn_density_Fg"] = float(steer.density.score(extract(f_g, images).numpy()).mean())
        return m

    with torch.no_grad():
        own = steer.scorer(pl.generate(g, pl.latent_sampler(dim, 999)(5000))).numpy()
    tau = float(np.median(own))
    tau_pct = float((ref_density < tau).mean() * 100)

    # 1. techniques x directions x seeds
    tech: dict[str, list[dict]] = {}
    accept: dict[str, list[float]] = {}

    def add(name: str, m: dict) -> None:
        tech.setdefault(name, []).append(m)

    for seed in range(args.seeds):
        z = pl.latent_sampler(dim, 100 + seed)(n)
        add("baseline", ev(pl.generate(g, z)))
        for label, w in (("fidelity", 20.0), ("diversity", 0.05)):
            res = importance_sample(g, pl.latent_sampler(dim, 200 + seed), steer.scorer, n,
                                    tau=tau, w=w, batch_size=512, image_shape=shape, seed=seed)
            add(f"IS {label} (w={w:g})", ev(res.samples))
            accept.setdefault(f"IS {label} (w={w:g})", []).append(res.acceptance_rate)
        for label in ("fidelity", "diversity"):
            for eps in (0.15, 0.3):
                pr = perturb_latents(z, g, steer.scorer, direction=label, epsilon=eps,
                                     steps=10, image_shape=shape)
                add(f"perturb {label} (eps={eps:g})",
                    ev(pl.generate(g, pr.latents)))
        add("truncation psi=0.7", ev(pl.generate(g, truncate_latents(z, 0.7))))
        drs = discriminator_rejection_sample(g, pl.latent_sampler(dim, 300 + seed), d, n,
                                             seed=seed, image_shape=shape)
        add("DRS (gamma=p80)", ev(drs.samples))
        accept.setdefault("DRS (gamma=p80)", []).append(drs.acceptance_rate)
        print(f"seed {seed} techniques done ({time.perf_counter() - t0:.0f} s)", flush=True)

    # 2. P/R curves
    curve_is, curve_tr = [], []
    for q in (0.1, 0.3, 0.5, 0.7, 0.9):
        t_q = float(np.quantile(own, q))
        res = importance_sample(g, pl.latent_sampler(dim, 400), steer.scorer, n, tau=t_q,
                                w=100.0, batch_size=512)
        m = ev(res.samples)
        curve_is.append({"tau": t_q, "ref_percentile": float((ref_density < t_q).mean() * 100),
                         "acceptance": res.acceptance_rate, **m})
    z = pl.latent_sampler(dim, 100)(n)
    for psi in (0.3, 0.5, 0.7, 0.8, 0.9, 1.0):
        curve_tr.append({"psi": psi, **ev(pl.generate(g, truncate_latents(z, psi)))})
    print(f"curves done ({time.perf_counter() - t0:.0f} s)", flush=True)

    # 3. fine-tuning sweep over w, seeds
    ft: dict[float, list[dict]] = {}
    for w in [float(x) for x in args.ft_ws.split(",")]:
        for seed in range(args.seeds):
            g2, d2 = copy.deepcopy(g), copy.deepcopy(d)
            for net in (g2, d2):
                net.train()
                for p in net.parameters():
                    p.requires_grad_(True)
            torch.manual_seed(seed)
            finetune_gan(g2, d2, ref, ref_density, pl.latent_sampler(dim, 500 + seed), tau=tau,
                         w_real=w, scorer=steer.scorer, steps=args.ft_steps, lr=2e-4, seed=seed)
            g2.eval()
            ft.setdefault(w, []).append(ev(pl.generate(g2, pl.latent_sampler(dim, 100 + seed)(n))))
        print(f"fine-tune w={w} done ({time.perf_counter() - t0:.0f} s)", flush=True)

    # 4. DDPM (if its checkpoint exists): temperature vs IS vs perturbation of x_T
    ddpm_rows = {}
    ckpt = pl.CHECKPOINTS / "ddpm.safetensors"
    if ckpt.exists():
        ddpm = load_checkpoint(ckpt)
        for p in ddpm.parameters():
            p.requires_grad_(False)

        def gen_ddpm(x_t: torch.Tensor) -> torch.Tensor:
            return ddpm.sample(x_t, steps=10)

        def noise(seed: int):  # noqa: ANN202
            gen = torch.Generator().manual_seed(seed)
            return lambda b: torch.randn(b, 1, 28, 28, generator=gen)

        m_n = args.ddpm_n
        x_t = noise(700)(m_n)
        with torch.no_grad():
            base_ddpm = torch.cat([gen_ddpm(b) for b in x_t.split(100)])
            own_d = steer.scorer(base_ddpm).numpy()
        tau_d = float(np.median(own_d))
        ddpm_rows["baseline"] = ev(base_ddpm)
        with torch.no_grad():
            ddpm_rows["temperature 0.8"] = ev(torch.cat([
                gen_ddpm(b) for b in temperature_noise((m_n, 1, 28, 28), 0.8,
                                                       torch.Generator().manual_seed(700))
                .split(100)]))
        for label, w in (("fidelity", 20.0), ("diversity", 0.05)):
            res = importance_sample(gen_ddpm, noise(701), steer.scorer, m_n, tau=tau_d, w=w,
                                    batch_size=100)
            ddpm_rows[f"IS {label} (w={w:g})"] = ev(res.samples)
        ddpm_rows["baseline, first 100"] = ev(base_ddpm[:100])
        for label in ("fidelity", "diversity"):
            pr = perturb_latents(x_t[:100], gen_ddpm, steer.scorer, direction=label,
                                 epsilon=0.1, steps=5, batch_size=50)
            with torch.no_grad():
                ddpm_rows[f"perturb {label} (eps=0.1), same 100"] = ev(gen_ddpm(pr.latents))
        print(f"ddpm done ({time.perf_counter() - t0:.0f} s)", flush=True)

    plot(curve_is, curve_tr, RESULTS / "density_demo_pr_curve.png")
    result = {
        "command": "python benchmarks/density/demonstration.py " + " ".join(sys.argv[1:]),
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
        "threads": 1, "seconds": time.perf_counter() - t0, "models": models.source,
        "tau": tau, "tau_reference_percentile": tau_pct, "n_per_setting": n,
        "techniques": {k: mean_sd(v) for k, v in tech.items()},
        "acceptance": {k: float(np.mean(v)) for k, v in accept.items()},
        "curve_importance": curve_is, "curve_truncation": curve_tr,
        "finetune": {str(w): mean_sd(v) for w, v in ft.items()}, "ft_steps": args.ft_steps,
        "ddpm": ddpm_rows,
        "toy_spearman": toy(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "density_demonstration.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "density_demonstration.md").write_text(markdown(result, args.seeds))
    print(markdown(result, args.seeds))


def toy() -> dict:
    from tamis.density.demo import toy_spearman

    return {str(k): v for k, v in toy_spearman((3, 5, 10, 20, 50, 100), n=5000).items()}


def plot(curve_is: list, curve_tr: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.5, 3.6), dpi=110)
    ax.plot([c["recall"] for c in curve_is], [c["precision"] for c in curve_is], "o-",
            label="importance sampling (w=100, tau swept)")
    for c in curve_is:
        ax.annotate(f"p{c['ref_percentile']:.0f}", (c["recall"], c["precision"]), fontsize=7)
    ax.plot([c["recall"] for c in curve_tr], [c["precision"] for c in curve_tr], "s--",
            label="truncation (psi)")
    for c in curve_tr:
        ax.annotate(f"{c['psi']:g}", (c["recall"], c["precision"]), fontsize=7)
    ax.set_xlabel("recall (F_e, k=5)")
    ax.set_ylabel("precision (F_e, k=5)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def markdown(r: dict, seeds: int) -> str:
    head = "| setting | precision | recall | density | coverage | FD (F_e) |"
    sep = "|---|---|---|---|---|---|"
    lines = [
        "# Pseudo density on Fashion-MNIST: demonstration numbers",
        "",
        f"Reproduce: `{r['command']}` ({r['seconds'] / 60:.0f} min, 1 thread, "
        f"{r['machine']['platform']}). Models: {r['models']}.",
        "",
        "Steering: pseudo density (k=20) of 10,000 training images in F_g, through the MLP "
        "predictor. Scoring: independent extractor F_e, k=5, against the 10,000 test images; "
        "FD = Frechet distance in F_e (not Inception FID). tau = median predicted density of "
        f"the GAN's own samples = reference percentile p{r['tau_reference_percentile']:.0f}. "
        f"{r['n_per_setting']} samples per setting; mean ± s.d. over {seeds} seeds.",
        "",
        "## 1. Techniques, fidelity vs diversity (GAN)",
        "",
        head + " pred. density F_g | k-NN density F_g |",
        sep + "---|---|",
    ]
    for name, ms in r["techniques"].items():
        extra = [f"{ms['pred_density_Fg'][0]:.3f}", f"{ms['knn_density_Fg'][0]:.3f}"]
        acc = r["acceptance"].get(name)
        label = name + (f" (acc. {acc:.2f})" if acc is not None else "")
        lines.append("| " + " | ".join([label, *fmt(ms), *extra]) + " |")
    lines += ["", "## 2. P/R curve: importance sampling (tau swept) vs truncation", "",
              "![P/R](density_demo_pr_curve.png)", "",
              "| curve | knob | precision | recall | density | coverage | acceptance |",
              "|---|---|---|---|---|---|---|"]
    for c in r["curve_importance"]:
        lines.append(f"| IS w=100 | tau=p{c['ref_percentile']:.0f} | {c['precision']:.3f} | "
                     f"{c['recall']:.3f} | {c['density']:.3f} | {c['coverage']:.3f} | "
                     f"{c['acceptance']:.2f} |")
    for c in r["curve_truncation"]:
        lines.append(f"| truncation | psi={c['psi']:g} | {c['precision']:.3f} | "
                     f"{c['recall']:.3f} | {c['density']:.3f} | {c['coverage']:.3f} | 1 |")
    lines += ["", f"## 3. Importance-sampled fine-tuning ({r['ft_steps']} steps, w_fake = 1/w, "
              "tau as above)", "", head.replace("setting", "w_real"), sep]
    for w, ms in r["finetune"].items():
        lines.append("| " + " | ".join([w, *fmt(ms)]) + " |")
    if r["ddpm"]:
        lines += ["", "## DDPM (deterministic DDIM, 10 steps; one seed)", "", head, sep]
        for name, m in r["ddpm"].items():
            lines.append("| " + " | ".join([name, *(f"{m[k]:.3f}" for k in METRICS)]) + " |")
    lines += ["", "## 4. 2-D mixture (12 unequal Gaussians + ring, 5,000 points)", "",
              "| k | " + " | ".join(r["toy_spearman"]) + " |",
              "|---" * (len(r["toy_spearman"]) + 1) + "|",
              "| Spearman | " + " | ".join(f"{v:.3f}" for v in r["toy_spearman"].values())
              + " |"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
