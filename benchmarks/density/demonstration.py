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

from tamis._io import atomic_path, write_text_atomic
from tamis.density import pipeline as pl
from tamis.density.finetune import finetune_gan
from tamis.density.metrics import frechet_distance, prdc
from tamis.density.models import extract, load_checkpoint
from tamis.density.perturb import perturb_latents
from tamis.density.sampling import (
    discriminator_rejection_sample,
    importance_sample,
    temperature_noise,
    truncate_latents,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from protocol import setup, single_thread  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results"
METRICS = ("precision", "recall", "density", "coverage", "fd")


def mean_sd(rows: list[dict]) -> dict:
    return {k: (float(np.mean([r[k] for r in rows])), float(np.std([r[k] for r in rows])))
            for k in rows[0]}


def fmt(ms: dict, keys=METRICS) -> list[str]:
    return [f"{ms[k][0]:.3f} ± {ms[k][1]:.3f}" for k in keys]


def paired_delta(rows: list[dict], base: list[dict], keys=METRICS) -> dict:
    """Mean and s.d. over seeds of the per-seed difference ``row - baseline`` (same reals)."""
    return {k: (float(np.mean([r[k] - b[k] for r, b in zip(rows, base, strict=True)])),
                float(np.std([r[k] - b[k] for r, b in zip(rows, base, strict=True)])))
            for k in keys}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--n", type=int, default=2000,
                    help="samples per setting = real test images per PRDC evaluation")
    ap.add_argument("--ft-steps", type=int, default=100)
    ap.add_argument("--ft-ws", default="0.2,0.5,0.67,1,1.5,2,5")
    ap.add_argument("--ddpm-n", type=int, default=500)
    ap.add_argument("--ddpm-perturb-n", type=int, default=200)
    ap.add_argument("--ddim-steps", type=int, default=20)
    ap.add_argument("--ddpm-ft-steps", type=int, default=200)
    ap.add_argument("--ddpm-ft-ws", default="0.2,0.5,1,2,5")
    ap.add_argument("--ddpm-ft-lr", type=float, default=1e-4)
    ap.add_argument("--ddpm-ft-ema", type=float, default=0.99,
                    help="EMA decay of the fine-tuned weights (0 = sample the raw weights)")
    ap.add_argument("--parts", default="gan,curves,finetune,ddpm,ddpm_finetune,toy",
                    help="parts to run; the others are kept from the existing JSON")
    ap.add_argument("--markdown-only", action="store_true",
                    help="re-render the markdown from the existing JSON")
    ap.add_argument("--ddpm-seeds", default="",
                    help="comma-separated DDPM seeds (default: 0..seeds-1); lets the seeds run "
                         "as separate processes, combined with --merge-ddpm")
    ap.add_argument("--merge-ddpm", default="",
                    help="comma-separated result folders of per-seed DDPM runs to combine")
    ap.add_argument("--results", type=Path, default=RESULTS, help="output folder")
    args = ap.parse_args()
    results = args.results
    out_json = results / "density_demonstration.json"
    if args.merge_ddpm:
        merge_ddpm(out_json, [Path(x) for x in args.merge_ddpm.split(",")])
        return
    if args.markdown_only:
        result = json.loads(out_json.read_text())
        write_text_atomic(results / "density_demonstration.md", markdown(result))
        return
    parts = set(args.parts.split(","))
    single_thread()
    t0 = time.perf_counter()
    proto = setup()
    models, steer, test_feats = proto.models, proto.steer, proto.test_feats
    g, d, f_g, f_e = models.generator, models.discriminator, models.steer, models.evaluate
    ref = pl.images_tensor(proto.train)[proto.ref_idx]
    ddpm_seeds = ([int(x) for x in args.ddpm_seeds.split(",")] if args.ddpm_seeds
                  else list(range(args.seeds)))
    ref_density = steer.density.reference_density
    dim, shape, n = g.cfg.latent_dim, (1, 28, 28), args.n

    def ev(images: torch.Tensor, seed: int) -> dict:
        f = extract(f_e, images).numpy()
        real = proto.reals(seed, len(f))  # FD below uses all 10,000 test images
        m = prdc(real=real, fake=f, k=5)
        m["fd"] = frechet_distance(real=test_feats, fake=f)
        with torch.no_grad():
            m["pred_density_Fg"] = float(torch.cat([steer.scorer(b) for b in
                                                    images.split(1024)]).mean())
        m["knn_density_Fg"] = float(steer.density.score(extract(f_g, images).numpy()).mean())
        return m

    with torch.no_grad():
        own = steer.scorer(pl.generate(g, pl.latent_sampler(dim, 999)(5000))).numpy()
    tau = float(np.median(own))
    tau_pct = float((ref_density < tau).mean() * 100)
    result: dict = {}  # only what this run computes; merged into the JSON on disk at the end
    result.update({
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count()},
        "threads": 1, "models": models.source, "tau": tau, "tau_reference_percentile": tau_pct,
        "n_per_setting": n, "seeds": args.seeds, "protocol": "equal-size",
    })
    commands: dict = {}
    timings: dict = {}
    grids: dict[str, torch.Tensor] = {}

    # 1. techniques x directions x seeds
    if "gan" in parts:
        t1 = time.perf_counter()
        tech: dict[str, list[dict]] = {}
        accept: dict[str, list[float]] = {}

        def add(name: str, m: dict, images: torch.Tensor, seed: int) -> None:
            tech.setdefault(name, []).append(m)
            if seed == 0:
                grids[name] = images[:36]

        for seed in range(args.seeds):
            z = pl.latent_sampler(dim, 100 + seed)(n)
            x = pl.generate(g, z)
            add("baseline", ev(x, seed), x, seed)
            for label, w in (("fidelity", 20.0), ("diversity", 0.05)):
                res = importance_sample(g, pl.latent_sampler(dim, 200 + seed), steer.scorer, n,
                                        tau=tau, w=w, batch_size=512, image_shape=shape,
                                        seed=seed)
                add(f"IS {label} (w={w:g})", ev(res.samples, seed), res.samples, seed)
                accept.setdefault(f"IS {label} (w={w:g})", []).append(res.acceptance_rate)
            for label in ("fidelity", "diversity"):
                for eps in (0.15, 0.3):
                    pr = perturb_latents(z, g, steer.scorer, direction=label, epsilon=eps,
                                         steps=10, image_shape=shape)
                    x = pl.generate(g, pr.latents)
                    add(f"perturb {label} (eps={eps:g})", ev(x, seed), x, seed)
            x = pl.generate(g, truncate_latents(z, 0.7))
            add("truncation psi=0.7", ev(x, seed), x, seed)
            drs = discriminator_rejection_sample(g, pl.latent_sampler(dim, 300 + seed), d, n,
                                                 seed=seed, image_shape=shape)
            add("DRS (gamma=p80)", ev(drs.samples, seed), drs.samples, seed)
            accept.setdefault("DRS (gamma=p80)", []).append(drs.acceptance_rate)
            print(f"seed {seed} techniques done ({time.perf_counter() - t0:.0f} s)", flush=True)
        result["techniques"] = {k: mean_sd(v) for k, v in tech.items()}
        result["techniques_delta"] = {k: paired_delta(v, tech["baseline"])
                                      for k, v in tech.items() if k != "baseline"}
        result["acceptance"] = {k: float(np.mean(v)) for k, v in accept.items()}
        result["techniques_per_seed_baseline"] = tech["baseline"]
        save_grids(grids, results / "density_demo_grid_gan.png",
                   "GAN, seed 0 (perturbation rows: the same latents as baseline)")
        timings["gan"] = time.perf_counter() - t1

    # 2. P/R curves (3 seeds, equal-size reals per seed)
    if "curves" in parts:
        t1 = time.perf_counter()
        qs, psis = (0.1, 0.3, 0.5, 0.7, 0.9), (0.3, 0.5, 0.7, 0.8, 0.9, 1.0)
        c_is: dict[float, list[dict]] = {}
        c_tr: dict[float, list[dict]] = {}
        for seed in range(args.seeds):
            for q in qs:
                t_q = float(np.quantile(own, q))
                res = importance_sample(g, pl.latent_sampler(dim, 400 + seed), steer.scorer, n,
                                        tau=t_q, w=100.0, batch_size=512, seed=seed)
                c_is.setdefault(q, []).append({"acceptance": res.acceptance_rate,
                                               **ev(res.samples, seed)})
            z = pl.latent_sampler(dim, 100 + seed)(n)
            for psi in psis:
                c_tr.setdefault(psi, []).append(ev(pl.generate(g, truncate_latents(z, psi)),
                                                   seed))
        result["curve_importance"] = [
            {"q": q, "tau": float(np.quantile(own, q)),
             "ref_percentile": float((ref_density < np.quantile(own, q)).mean() * 100),
             **mean_sd(v)} for q, v in c_is.items()]
        result["curve_truncation"] = [{"psi": psi, **mean_sd(v)} for psi, v in c_tr.items()]
        plot(result["curve_importance"], result["curve_truncation"],
             results / "density_demo_pr_curve.png")
        timings["curves"] = time.perf_counter() - t1
        print(f"curves done ({time.perf_counter() - t0:.0f} s)", flush=True)

    # 3. fine-tuning sweep over w, seeds; "before" = the untouched GAN on the same latents
    if "finetune" in parts:
        t1 = time.perf_counter()
        ft: dict[str, list[dict]] = {}
        ft_grids: dict[str, torch.Tensor] = {}
        for seed in range(args.seeds):
            x = pl.generate(g, pl.latent_sampler(dim, 100 + seed)(n))
            ft.setdefault("before (no fine-tune)", []).append(ev(x, seed))
            if seed == 0:
                ft_grids["before (no fine-tune)"] = x[:36]
        for w in [float(x) for x in args.ft_ws.split(",")]:
            for seed in range(args.seeds):
                g2, d2 = copy.deepcopy(g), copy.deepcopy(d)
                for net in (g2, d2):
                    net.train()
                    for p in net.parameters():
                        p.requires_grad_(True)
                torch.manual_seed(seed)
                finetune_gan(g2, d2, ref, ref_density, pl.latent_sampler(dim, 500 + seed),
                             tau=tau, w_real=w, scorer=steer.scorer, steps=args.ft_steps,
                             lr=2e-4, seed=seed)
                g2.eval()
                x = pl.generate(g2, pl.latent_sampler(dim, 100 + seed)(n))
                ft.setdefault(f"{w:g}", []).append(ev(x, seed))
                if seed == 0 and w in (0.2, 1.0, 5.0):
                    ft_grids[f"fine-tuned w_real={w:g}"] = x[:36]
            print(f"fine-tune w={w} done ({time.perf_counter() - t0:.0f} s)", flush=True)
        result["finetune"] = {k: mean_sd(v) for k, v in ft.items()}
        ctrl = ft.get("1")
        result["finetune_delta_vs_w1"] = ({k: paired_delta(v, ctrl) for k, v in ft.items()
                                           if k != "1"} if ctrl else {})
        result["finetune_delta_vs_before"] = {
            k: paired_delta(v, ft["before (no fine-tune)"]) for k, v in ft.items()
            if k != "before (no fine-tune)"}
        result["ft_steps"] = args.ft_steps
        save_grids(ft_grids, results / "density_demo_grid_finetune.png",
                   f"GAN fine-tuned {args.ft_steps} steps, seed 0 (same latents)")
        timings["finetune"] = time.perf_counter() - t1

    # 4. DDPM: temperature vs IS vs perturbation of x_T, several seeds
    ckpt = pl.CHECKPOINTS / "ddpm.safetensors"
    if "ddpm" in parts and ckpt.exists():
        t1 = time.perf_counter()
        ddpm = load_checkpoint(ckpt)
        pl.freeze(ddpm)
        steps = args.ddim_steps

        def gen_ddpm(x_t: torch.Tensor) -> torch.Tensor:
            return ddpm.sample(x_t, steps=steps)

        def sample_all(x_t: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return torch.cat([gen_ddpm(b) for b in x_t.split(100)])

        def noise(seed: int):  # noqa: ANN202
            gen = torch.Generator().manual_seed(seed)
            return lambda b: torch.randn(b, 1, 28, 28, generator=gen)

        m_n, m_p = args.ddpm_n, args.ddpm_perturb_n
        with torch.no_grad():
            own_d = steer.scorer(sample_all(noise(699)(m_n))).numpy()
        tau_d = float(np.median(own_d))
        rows: dict[str, list[dict]] = {}
        dgrids: dict[str, torch.Tensor] = {}
        dacc: dict[str, list[float]] = {}

        def dadd(name: str, x: torch.Tensor, seed: int) -> None:
            rows.setdefault(name, []).append(ev(x, seed))
            if seed == 0:
                dgrids[name] = x[:36]

        for seed in ddpm_seeds:
            x_t = noise(700 + seed)(m_n)
            base = sample_all(x_t)
            dadd("baseline", base, seed)
            dadd("temperature 0.8", sample_all(temperature_noise(
                (m_n, 1, 28, 28), 0.8, torch.Generator().manual_seed(700 + seed))), seed)
            for label, w in (("fidelity", 20.0), ("diversity", 0.05)):
                res = importance_sample(gen_ddpm, noise(710 + seed), steer.scorer, m_n,
                                        tau=tau_d, w=w, batch_size=100, seed=seed)
                dadd(f"IS {label} (w={w:g})", res.samples, seed)
                dacc.setdefault(f"IS {label} (w={w:g})", []).append(res.acceptance_rate)
            dadd(f"baseline, first {m_p}", base[:m_p], seed)
            for label in ("fidelity", "diversity"):
                pr = perturb_latents(x_t[:m_p], gen_ddpm, steer.scorer, direction=label,
                                     epsilon=0.1, steps=5, batch_size=50)
                dadd(f"perturb {label} (eps=0.1), same {m_p}", sample_all(pr.latents), seed)
            print(f"ddpm seed {seed} done ({time.perf_counter() - t0:.0f} s)", flush=True)
        result["ddpm_raw"] = {"rows": rows, "acceptance": dacc, "seeds": ddpm_seeds}
        result["ddpm_setup"] = {"n": m_n, "perturb_n": m_p, "ddim_steps": steps, "tau": tau_d,
                                "config": ddpm.cfg.to_dict()}
        result.update(ddpm_summary(result["ddpm_raw"], m_p))
        if dgrids:
            save_grids(dgrids, results / "density_demo_grid_ddpm.png",
                       f"DDPM (DDIM {steps} steps), seed 0")
        timings["ddpm"] = time.perf_counter() - t1

    # 5. DDPM fine-tuning: weighted real sampling under the unchanged denoising loss (no fake
    # side); tau = median reference density; control = the unweighted fine-tune (w = 1)
    if "ddpm_finetune" in parts and ckpt.exists():
        t1 = time.perf_counter()
        result.update(ddpm_finetune(ckpt, ref, ref_density, ev, ddpm_seeds, args))
        timings["ddpm_finetune"] = time.perf_counter() - t1

    if "toy" in parts:
        result["toy_spearman"] = toy()
    commands[",".join(sorted(parts))] = ("python benchmarks/density/demonstration.py "
                                         + " ".join(sys.argv[1:]))
    timings[",".join(sorted(parts)) + " (total)"] = time.perf_counter() - t0
    # re-read just before writing, so runs of different parts (even concurrent) all survive
    old = json.loads(out_json.read_text()) if out_json.exists() else {}
    old = {k: v for k, v in old.items() if k not in ("command", "seconds")}
    if old.get("protocol") != "equal-size":  # results of the old protocol are not mixed in
        old = {}
    result["commands"] = {**old.get("commands", {}), **commands}
    result["part_seconds"] = {**old.get("part_seconds", {}), **timings}
    result = {**old, **result}
    results.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_json, json.dumps(result, indent=2))
    write_text_atomic(results / "density_demonstration.md", markdown(result))
    print(markdown(result))


def ddpm_finetune(ckpt: Path, ref: torch.Tensor, ref_density: np.ndarray, ev, seeds: list,
                  args: argparse.Namespace) -> dict:  # noqa: ANN001
    """Fine-tune the DDPM on weighted real batches for each w and seed; score like the rest."""
    from tamis.density.finetune import finetune_with_loss

    base = load_checkpoint(ckpt)
    steps, n = args.ddim_steps, args.ddpm_n
    tau_r = float(np.median(ref_density))

    def sample(model, seed: int) -> torch.Tensor:  # noqa: ANN001
        x_t = torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(700 + seed))
        with torch.no_grad():
            return torch.cat([model.sample(b, steps=steps) for b in x_t.split(100)])

    rows: dict[str, list[dict]] = {}
    grids: dict[str, torch.Tensor] = {}
    for seed in seeds:
        x = sample(base.eval(), seed)
        rows.setdefault("before (no fine-tune)", []).append(ev(x, seed))
        if seed == seeds[0]:
            grids["before (no fine-tune)"] = x[:36]
    for w in [float(v) for v in args.ddpm_ft_ws.split(",")]:
        for seed in seeds:
            model = copy.deepcopy(base).train()
            for p in model.parameters():
                p.requires_grad_(True)
            torch.manual_seed(seed)
            # the checkpoint holds EMA weights, so fine-tune with an EMA too (started from them)
            finetune_with_loss(model.loss, model.parameters(), ref, ref_density, tau=tau_r, w=w,
                               steps=args.ddpm_ft_steps, batch_size=64, lr=args.ddpm_ft_lr,
                               seed=seed, ema_decay=args.ddpm_ft_ema or None)
            x = sample(model.eval(), seed)
            rows.setdefault(f"{w:g}", []).append(ev(x, seed))
            if seed == seeds[0] and w in (0.2, 1.0, 5.0):
                grids[f"fine-tuned w_real={w:g}"] = x[:36]
        print(f"ddpm fine-tune w={w} done", flush=True)
    save_grids(grids, args.results / "density_demo_grid_ddpm_finetune.png",
               f"DDPM fine-tuned {args.ddpm_ft_steps} steps (DDIM {steps}), seed {seeds[0]}")
    ctrl = rows.get("1")
    return {
        "ddpm_finetune": {k: mean_sd(v) for k, v in rows.items()},
        "ddpm_finetune_delta_vs_w1": ({k: paired_delta(v, ctrl) for k, v in rows.items()
                                       if k not in ("1", "before (no fine-tune)")}
                                      if ctrl else {}),
        "ddpm_finetune_delta_vs_before": {
            k: paired_delta(v, rows["before (no fine-tune)"]) for k, v in rows.items()
            if k != "before (no fine-tune)"},
        "ddpm_finetune_setup": {"steps": args.ddpm_ft_steps, "lr": args.ddpm_ft_lr,
                                "ema": args.ddpm_ft_ema, "batch_size": 64,
                                "tau": tau_r, "tau_reference_percentile": 50.0, "n": n,
                                "ddim_steps": steps, "seeds": seeds},
    }


def ddpm_summary(raw: dict, m_p: int) -> dict:
    rows, dacc = raw["rows"], raw["acceptance"]
    return {
        "ddpm": {k: mean_sd(v) for k, v in rows.items()},
        "ddpm_delta": {k: paired_delta(v, rows[f"baseline, first {m_p}"] if "same" in k
                                       else rows["baseline"])
                       for k, v in rows.items() if not k.startswith("baseline")},
        "ddpm_acceptance": {k: float(np.mean(v)) for k, v in dacc.items()},
        "ddpm_seeds": raw["seeds"],
    }


def merge_ddpm(out_json: Path, dirs: list[Path]) -> None:
    """Combine per-seed DDPM runs (same settings, other folders) into the main results."""
    parts = [json.loads((d / "density_demonstration.json").read_text()) for d in dirs]
    raw: dict = {"rows": {}, "acceptance": {}, "seeds": []}
    for p in sorted(parts, key=lambda p: p["ddpm_raw"]["seeds"]):
        if p["ddpm_setup"] != parts[0]["ddpm_setup"]:
            raise ValueError("DDPM runs with different settings cannot be merged")
        raw["seeds"] += p["ddpm_raw"]["seeds"]
        for key in ("rows", "acceptance"):
            for k, v in p["ddpm_raw"][key].items():
                raw[key].setdefault(k, []).extend(v)
    result = json.loads(out_json.read_text()) if out_json.exists() else {}
    result.update({"ddpm_raw": raw, "ddpm_setup": parts[0]["ddpm_setup"],
                   **ddpm_summary(raw, parts[0]["ddpm_setup"]["perturb_n"])})
    for p in parts:
        result.setdefault("commands", {}).update(
            {f"ddpm seed(s) {p['ddpm_raw']['seeds']}": c for c in p["commands"].values()})
        result.setdefault("part_seconds", {}).update(
            {f"ddpm seed(s) {p['ddpm_raw']['seeds']}": p["part_seconds"].get("ddpm", 0.0)})
    result["commands"]["ddpm merge"] = ("python benchmarks/density/demonstration.py "
                                        "--merge-ddpm " + ",".join(str(d) for d in dirs))
    for d in dirs:
        grid = d / "density_demo_grid_ddpm.png"
        if grid.exists():
            with atomic_path(out_json.parent / grid.name) as tmp:
                tmp.write_bytes(grid.read_bytes())
    write_text_atomic(out_json, json.dumps(result, indent=2))
    write_text_atomic(out_json.parent / "density_demonstration.md", markdown(result))


def save_grids(grids: dict[str, torch.Tensor], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(grids)
    cols = 4
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.8 * rows), dpi=100,
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, name in zip(axes.ravel(), names, strict=False):
        x = grids[name][:, 0].detach().cpu().numpy()
        side, nrow = x.shape[1], 6
        canvas = np.ones((nrow * (side + 1), nrow * (side + 1)))
        for i in range(min(len(x), nrow * nrow)):
            r, c = divmod(i, nrow)
            canvas[r * (side + 1): r * (side + 1) + side,
                   c * (side + 1): c * (side + 1) + side] = x[i]
        ax.imshow(canvas, cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(name, fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def toy() -> dict:
    from tamis.density.demo import toy_spearman

    return {str(k): v for k, v in toy_spearman((3, 5, 10, 20, 50, 100), n=5000).items()}


def _m(v: object) -> float:
    return float(v[0]) if isinstance(v, list | tuple) else float(v)


def plot(curve_is: list, curve_tr: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=110)
    for ax, (xk, yk) in zip(axes, (("recall", "precision"), ("coverage", "density")),
                            strict=True):
        ax.errorbar([_m(c[xk]) for c in curve_is], [_m(c[yk]) for c in curve_is],
                    xerr=[c[xk][1] for c in curve_is], yerr=[c[yk][1] for c in curve_is],
                    fmt="o-", label="importance sampling (w=100, tau swept)")
        for c in curve_is:
            ax.annotate(f"p{c['ref_percentile']:.0f}", (_m(c[xk]), _m(c[yk])), fontsize=7)
        ax.errorbar([_m(c[xk]) for c in curve_tr], [_m(c[yk]) for c in curve_tr],
                    xerr=[c[xk][1] for c in curve_tr], yerr=[c[yk][1] for c in curve_tr],
                    fmt="s--", label="truncation (psi)")
        for c in curve_tr:
            ax.annotate(f"{c['psi']:g}", (_m(c[xk]), _m(c[yk])), fontsize=7)
        ax.set_xlabel(f"{xk} (F_e, k=5)")
        ax.set_ylabel(f"{yk} (F_e, k=5)")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _sign(v: float, want: int) -> str:
    return "yes" if v * want > 0 else "**no**"


def markdown(r: dict) -> str:
    seeds = r.get("seeds", 3)
    head = "| setting | precision | recall | density | coverage | FD (F_e) |"
    sep = "|---|---|---|---|---|---|"
    lines = [
        "# Pseudo density on Fashion-MNIST: demonstration numbers",
        "",
        "Reproduce (1 thread each; `part_seconds` in the JSON gives the wall time per part):",
        "",
        *[f"* `{c}`" for c in r.get("commands", {}).values()],
        "",
        f"Machine: {r['machine']['platform']}. Models: {r['models']}.",
        "",
        "**Protocol.** Steering: pseudo density (k=20) of 10,000 training images in F_g, "
        "through the MLP predictor. Scoring: the independent extractor F_e. **Equal sizes:** "
        "every set of M generated images is scored by PRDC (k=5) against M real test images "
        "(the first M of a fixed random permutation of the 10,000 test images, one "
        "permutation per seed, the same for every setting of that seed); FD = Frechet distance "
        "in F_e against all 10,000 test images (not Inception FID). tau = median predicted "
        "density of the GAN's own samples = reference percentile "
        f"p{r['tau_reference_percentile']:.0f}. {r['n_per_setting']} samples per setting; "
        f"mean ± s.d. over {seeds} seeds. Δ columns: mean ± s.d. over seeds of the paired "
        "per-seed difference to the baseline (same reals).",
        "",
    ]
    if "techniques" in r:
        lines += ["## 1. Techniques, fidelity vs diversity (GAN)", "",
                  "![GAN samples](density_demo_grid_gan.png)", "",
                  head + " pred. density F_g | k-NN density F_g |", sep + "---|---|"]
        for name, ms in r["techniques"].items():
            extra = [f"{ms['pred_density_Fg'][0]:.3f}", f"{ms['knn_density_Fg'][0]:.3f}"]
            acc = r["acceptance"].get(name)
            label = name + (f" (acc. {acc:.2f})" if acc is not None else "")
            lines.append("| " + " | ".join([label, *fmt(ms), *extra]) + " |")
        lines += ["", "### Direction check (paired Δ vs baseline; expected: fidelity raises "
                  "precision/density and lowers recall/coverage, diversity the reverse)", "",
                  "| setting | Δ precision | Δ density | Δ recall | Δ coverage | ΔFD | "
                  "as expected (P, D, R, C) |", "|---|---|---|---|---|---|---|"]
        lines += _delta_rows(r["techniques_delta"])
    if "curve_importance" in r:
        lines += ["", "## 2. P/R curve: importance sampling (tau swept) vs truncation", "",
                  "![P/R](density_demo_pr_curve.png)", "",
                  "| curve | knob | precision | recall | density | coverage | acceptance |",
                  "|---|---|---|---|---|---|---|"]
        for c in r["curve_importance"]:
            lines.append(f"| IS w=100 | tau=p{c['ref_percentile']:.0f} | "
                         + " | ".join(f"{c[k][0]:.3f} ± {c[k][1]:.3f}" for k in
                                      ("precision", "recall", "density", "coverage"))
                         + f" | {c['acceptance'][0]:.2f} |")
        for c in r["curve_truncation"]:
            lines.append(f"| truncation | psi={c['psi']:g} | "
                         + " | ".join(f"{c[k][0]:.3f} ± {c[k][1]:.3f}" for k in
                                      ("precision", "recall", "density", "coverage"))
                         + " | 1 |")
    if "finetune" in r:
        lines += ["", f"## 3. Importance-sampled fine-tuning ({r['ft_steps']} steps, "
                  "w_fake = 1/w, tau as above)", "",
                  "![fine-tuned samples](density_demo_grid_finetune.png)", "",
                  head.replace("setting", "w_real"), sep]
        for w, ms in r["finetune"].items():
            lines.append("| " + " | ".join([w, *fmt(ms)]) + " |")
        lines += ["", "Paired Δ against the unweighted fine-tune (w_real = 1, same steps, "
                  "seeds and latents); fidelity = w > 1, diversity = w < 1:", "",
                  "| w_real | Δ precision | Δ density | Δ recall | Δ coverage | ΔFD | "
                  "as expected (P, D, R, C) |", "|---|---|---|---|---|---|---|"]
        lines += _delta_rows({k: v for k, v in r["finetune_delta_vs_w1"].items()
                              if not k.startswith("before")},
                             want_of=lambda k: 1 if float(k) > 1 else -1)
        lines += ["", "Paired ΔFD against the model before fine-tuning:", "",
                  "| w_real | ΔFD vs before |", "|---|---|"]
        for k, v in r["finetune_delta_vs_before"].items():
            lines.append(f"| {k} | {v['fd'][0]:+.2f} ± {v['fd'][1]:.2f} |")
    if r.get("ddpm"):
        st = r["ddpm_setup"]
        cfg = st["config"]
        lines += ["", f"## 4. DDPM (channels {cfg['channels']}, T={cfg['timesteps']} "
                  f"{cfg.get('schedule', 'linear')} schedule, deterministic DDIM "
                  f"{st['ddim_steps']} steps; seeds {r.get('ddpm_seeds')}; {st['n']} samples "
                  "per setting, "
                  f"perturbation on {st['perturb_n']})", "",
                  "![DDPM samples](density_demo_grid_ddpm.png)", "", head, sep]
        for name, ms in r["ddpm"].items():
            acc = r.get("ddpm_acceptance", {}).get(name)
            label = name + (f" (acc. {acc:.2f})" if acc is not None else "")
            lines.append("| " + " | ".join([label, *fmt(ms)]) + " |")
        lines += ["", "| setting | Δ precision | Δ density | Δ recall | Δ coverage | ΔFD | "
                  "as expected (P, D, R, C) |", "|---|---|---|---|---|---|---|"]
        lines += _delta_rows(r["ddpm_delta"])
    if r.get("ddpm_finetune"):
        st = r["ddpm_finetune_setup"]
        lines += ["", f"### 4b. DDPM importance-sampled fine-tuning ({st['steps']} steps of "
                  f"batch {st['batch_size']}, Adam lr {st['lr']:g}, sampled from an EMA of "
                  f"the fine-tuned weights (decay {st.get('ema', 0):g}, 0 = raw weights); real "
                  "batches drawn with "
                  "weight w_real above tau = median reference density, 1 below; the unchanged "
                  f"denoising loss, no fake side; {st['n']} samples, DDIM {st['ddim_steps']}, "
                  f"seeds {st['seeds']})", "",
                  "![DDPM fine-tuned samples](density_demo_grid_ddpm_finetune.png)", "",
                  head.replace("setting", "w_real"), sep]
        for w, ms in r["ddpm_finetune"].items():
            lines.append("| " + " | ".join([w, *fmt(ms)]) + " |")
        lines += ["", "Paired Δ against the unweighted fine-tune (w_real = 1):", "",
                  "| w_real | Δ precision | Δ density | Δ recall | Δ coverage | ΔFD | "
                  "as expected (P, D, R, C) |", "|---|---|---|---|---|---|---|"]
        lines += _delta_rows(r["ddpm_finetune_delta_vs_w1"],
                             want_of=lambda k: 1 if float(k) > 1 else -1)
        lines += ["", "Paired ΔFD against the DDPM before fine-tuning:", "",
                  "| w_real | ΔFD vs before |", "|---|---|"]
        for k, v in r["ddpm_finetune_delta_vs_before"].items():
            lines.append(f"| {k} | {v['fd'][0]:+.2f} ± {v['fd'][1]:.2f} |")
    if "toy_spearman" in r:
        lines += ["", "## 5. 2-D mixture (12 unequal Gaussians + ring, 5,000 points)", "",
                  "| k | " + " | ".join(r["toy_spearman"]) + " |",
                  "|---" * (len(r["toy_spearman"]) + 1) + "|",
                  "| Spearman | " + " | ".join(f"{v:.3f}" for v in r["toy_spearman"].values())
                  + " |"]
    return "\n".join(lines) + "\n"


def _want(name: str) -> int:
    if "fidelity" in name or "truncation" in name or "temperature" in name or "DRS" in name:
        return 1
    return -1


def _delta_rows(deltas: dict, want_of=_want) -> list[str]:  # noqa: ANN001
    out = []
    for name, dl in deltas.items():
        want = want_of(name)
        checks = ", ".join(_sign(dl[k][0], s * want) for k, s in
                           (("precision", 1), ("density", 1), ("recall", -1), ("coverage", -1)))
        out.append(f"| {name} | " + " | ".join(
            f"{dl[k][0]:+.3f} ± {dl[k][1]:.3f}" for k in
            ("precision", "density", "recall", "coverage"))
            + f" | {dl['fd'][0]:+.2f} ± {dl['fd'][1]:.2f} | {checks} |")
    return out


if __name__ == "__main__":
    main()
