"""When do fidelity/diversity steering move recall and coverage the expected way?

Two studies, both scored exactly like ``demonstration.py`` (F_g steers, F_e scores, equal-size
PRDC with k=5 against M real test images per seed, paired deltas over seeds):

1. **Strength sweep on the bundled GAN.** Importance sampling with the paper's rule for
   ``w`` on both sides of 1 (the paper's code uses the extreme w = 100 / 0.01), and latent
   perturbation with small budgets. Common random numbers: the baseline is the first n
   candidates of the latent stream that every importance sampler of that seed draws from,
   and perturbation starts from the baseline's latents. Everything runs through the library's
   ``importance_sample`` and ``perturb_latents``.
2. **Oracle generators.** A "generator" whose samples are held-out *real* training images,
   drawn with probability proportional to ``rho_pix ** alpha`` (``rho_pix``: pseudo density
   in a 50-d pixel PCA space, independent of F_g and F_e; ``alpha = 2`` makes it
   mode-imbalanced like a mode-seeking GAN), then a fraction ``pi`` of its samples replaced
   by samples of the bundled GAN. Importance sampling is the library's acceptance rule
   (``importance_accept``) applied to the candidates' predicted densities. This separates the
   two things a real generator mixes: how realistic its samples are, and how its mass is
   spread over the real modes.

    .venv/bin/python benchmarks/density/direction_regimes.py [--seeds 3] [--n 2000]

Writes benchmarks/results/density_regimes.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from tamis._io import atomic_path, write_text_atomic
from tamis.density import pipeline as pl
from tamis.density.metrics import prdc
from tamis.density.models import extract
from tamis.density.perturb import perturb_latents
from tamis.density.pseudo_density import PseudoDensity
from tamis.density.sampling import importance_accept, importance_sample

sys.path.insert(0, str(Path(__file__).resolve().parent))
from protocol import setup, single_thread  # noqa: E402

RESULTS = Path(__file__).resolve().parents[1] / "results"
KEYS = ("precision", "recall", "density", "coverage")
ORDER = ("precision", "density", "recall", "coverage")  # the order of the direction checks
WS = (20.0, 5.0, 2.0, 0.5, 0.3, 0.1, 0.05)


def paired(rows: list[dict], base: list[dict]) -> dict:
    """Mean and s.d. over seeds of ``row - base`` per metric."""
    d = {k: [r[k] - b[k] for r, b in zip(rows, base, strict=True)] for k in rows[0]}
    return {k: (float(np.mean(v)), float(np.std(v))) for k, v in d.items()}


def expected(name_w: float, delta: dict) -> list[bool]:
    """Fidelity (w > 1) raises P, D and lowers R, C; diversity (w < 1) the reverse."""
    s = 1 if name_w > 1 else -1
    return [delta["precision"][0] * s > 0, delta["density"][0] * s > 0,
            delta["recall"][0] * s < 0, delta["coverage"][0] * s < 0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--n", type=int, default=2000, help="samples = reals per PRDC evaluation")
    ap.add_argument("--eps", default="0.05,0.1", help="perturbation budgets")
    ap.add_argument("--parts", default="gan,oracle")
    ap.add_argument("--results", type=Path, default=RESULTS)
    args = ap.parse_args()
    single_thread()
    t0 = time.perf_counter()
    parts = set(args.parts.split(","))
    proto = setup()
    g, f_e, steer = proto.models.generator, proto.models.evaluate, proto.steer
    dim, n = g.cfg.latent_dim, args.n

    def score(fake_feats: np.ndarray, seed: int) -> dict:
        return prdc(real=proto.reals(seed, len(fake_feats)), fake=fake_feats, k=5)

    def predicted(x: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return torch.cat([steer.scorer(b) for b in x.split(1024)]).numpy()

    with torch.no_grad():
        tau = float(np.median(predicted(pl.generate(g, pl.latent_sampler(dim, 999)(5000)))))
    result: dict = {"machine": platform.platform(), "n": n, "tau": tau}
    command = "python benchmarks/density/direction_regimes.py " + " ".join(sys.argv[1:])
    if "gan" in parts:
        result["gan"] = gan_sweep(g, steer.scorer, f_e, score, tau, args)
        print(f"gan sweep done ({time.perf_counter() - t0:.0f} s)", flush=True)
    if "oracle" in parts:
        rest = np.setdiff1d(np.arange(len(proto.train)), proto.ref_idx)
        real = pl.images_tensor(proto.train)[rest[:20_000]]
        result["oracle"] = oracle(real, g, predicted, f_e, score, args)
        result["oracle_seeds"] = args.seeds
        print(f"oracle done ({time.perf_counter() - t0:.0f} s)", flush=True)
    result["seconds"] = time.perf_counter() - t0
    out = args.results / "density_regimes.json"
    old = json.loads(out.read_text()) if out.exists() else {}
    commands = old.pop("commands", {})
    if "command" in old:  # results written before per-part commands were kept
        commands["gan,oracle"] = old.pop("command")
    result = {**old, **result, "commands": {**commands, ",".join(sorted(parts)): command}}
    args.results.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, json.dumps(result, indent=2))
    write_text_atomic(args.results / "density_regimes.md", markdown(result))
    plot(result, args.results / "density_regimes.png")
    print(markdown(result))


def gan_sweep(g, scorer, f_e, score, tau: float, args) -> dict:  # noqa: ANN001
    """IS with w on both sides of 1, and small perturbation budgets, on the bundled GAN."""
    dim, n, shape = g.cfg.latent_dim, args.n, (1, 28, 28)
    rows: dict[str, list[dict]] = {}
    acc: dict[str, list[float]] = {}
    for seed in range(args.seeds):
        # common random numbers: w = 1 accepts every candidate, so the baseline is the first n
        # candidates of the very latent stream each importance sampler below draws from
        base = importance_sample(g, pl.latent_sampler(dim, 200 + seed), scorer, n, tau=tau,
                                 w=1.0, batch_size=512, image_shape=shape, seed=seed)
        z = base.latents
        rows.setdefault("baseline", []).append(score(extract(f_e, base.samples).numpy(), seed))
        for w in WS:
            res = importance_sample(g, pl.latent_sampler(dim, 200 + seed), scorer, n, tau=tau,
                                    w=w, batch_size=512, image_shape=shape, seed=seed)
            rows.setdefault(f"IS w={w:g}", []).append(score(extract(f_e, res.samples).numpy(),
                                                            seed))
            acc.setdefault(f"IS w={w:g}", []).append(res.acceptance_rate)
        for eps in (float(e) for e in args.eps.split(",")):
            for direction in ("fidelity", "diversity"):
                pr = perturb_latents(z, g, scorer, direction=direction, epsilon=eps, steps=10,
                                     image_shape=shape)
                rows.setdefault(f"perturb {direction} eps={eps:g}", []).append(
                    score(extract(f_e, pl.generate(g, pr.latents)).numpy(), seed))
        print(f"  gan seed {seed} done", flush=True)
    return {"seeds": args.seeds,
            "rows": {k: {m: (float(np.mean([r[m] for r in v])), float(np.std([r[m] for r in v])))
                         for m in KEYS} for k, v in rows.items()},
            "delta": {k: paired(v, rows["baseline"]) for k, v in rows.items() if k != "baseline"},
            "acceptance": {k: float(np.mean(v)) for k, v in acc.items()}}


def pixel_density(x: torch.Tensor, dims: int = 50, k: int = 20) -> np.ndarray:
    """Pseudo density of images in a ``dims``-d PCA of their pixels (independent of F_g, F_e)."""
    flat = x.reshape(len(x), -1).numpy().astype(np.float64)
    mu = flat.mean(0)
    _, _, vt = np.linalg.svd(flat[:10_000] - mu, full_matrices=False)
    proj = ((flat - mu) @ vt[:dims].T).astype(np.float32)
    return PseudoDensity(k=k).fit(proj).reference_density


def oracle(real: torch.Tensor, g, predicted, f_e, score, args) -> dict:  # noqa: ANN001
    """IS on generators made of held-out real images (mode-biased) mixed with GAN samples."""
    pool = len(real)
    real_pred, real_fe = predicted(real), extract(f_e, real).numpy()
    gan_x = pl.generate(g, pl.latent_sampler(g.cfg.latent_dim, 7)(pool))
    gan_pred, gan_fe = predicted(gan_x), extract(f_e, gan_x).numpy()
    rho_pix = pixel_density(real)
    # how realistic are the GAN's samples at each level of predicted density? (tenths of the
    # pool by predicted density, each scored against the same number of test images)
    edges = np.quantile(gan_pred, np.linspace(0, 1, 11))
    tenths = []
    for i in range(10):
        idx = np.flatnonzero((gan_pred >= edges[i]) & (gan_pred <= edges[i + 1]))[: args.n]
        tenths.append({"predicted_density": [float(edges[i]), float(edges[i + 1])],
                       **score(gan_fe[idx], 0)})
    out: dict = {"gan_tenths": tenths}
    for alpha in (0.0, 2.0):
        p = rho_pix**alpha / (rho_pix**alpha).sum()
        for pi in (0.0, 0.25, 0.5, 1.0):
            name = f"alpha={alpha:g}, pi={pi:g}"
            rows: dict[str, list[dict]] = {}
            for seed in range(args.seeds):
                rng = np.random.default_rng(50 + seed)
                n_gan = int(round(pi * pool))
                r_idx = rng.choice(pool, pool - n_gan, p=p)
                g_idx = rng.choice(pool, n_gan, replace=False)
                dens = np.concatenate([real_pred[r_idx], gan_pred[g_idx]])
                feats = np.concatenate([real_fe[r_idx], gan_fe[g_idx]])
                tau = float(np.median(dens))
                order = rng.permutation(len(dens))
                rows.setdefault("baseline", []).append(score(feats[order[: args.n]], seed))
                for w in WS:
                    keep = order[importance_accept(dens[order], tau, w, rng)][: args.n]
                    rows.setdefault(f"{w:g}", []).append(score(feats[keep], seed))
            out[name] = {
                "baseline": {m: float(np.mean([r[m] for r in rows["baseline"]])) for m in KEYS},
                "delta": {k: paired(v, rows["baseline"]) for k, v in rows.items()
                          if k != "baseline"}}
            print(f"  oracle {name} done", flush=True)
    return out


def _cell(d: dict) -> str:
    return " | ".join(f"{d[k][0]:+.3f} ± {d[k][1]:.3f}" for k in ORDER)


def _checks(w: float, d: dict) -> str:
    return ", ".join("yes" if ok else "**no**" for ok in expected(w, d))


def markdown(r: dict) -> str:
    lines = [
        "# Pseudo density: when do recall and coverage move the expected way?", "",
        "Reproduce (1 thread): " + "; ".join(f"`{c}`" for c in r["commands"].values())
        + f". Machine: {r['machine']}. "
        f"{r['n']} samples per setting scored against {r['n']} real test images in F_e "
        "(PRDC, k = 5); paired Δ to the baseline, mean ± s.d. over seeds. "
        "Expected: fidelity (w > 1, +ε) raises precision/density and lowers recall/coverage; "
        "diversity (w < 1, −ε) the reverse.", ""]
    if "gan" in r:
        gr = r["gan"]
        b = gr["rows"]["baseline"]
        lines += ["## 1. Strength sweep on the bundled GAN", "",
                  f"{gr['seeds']} seeds. Baseline: "
                  + ", ".join(f"{k} {b[k][0]:.3f}" for k in KEYS)
                  + f"; tau = {r['tau']:.3f} (median predicted density of the GAN's samples).",
                  "", "| setting | acceptance | Δ precision | Δ density | Δ recall | Δ coverage"
                  " | as expected (P, D, R, C) |", "|---|---|---|---|---|---|---|"]
        for name, d in gr["delta"].items():
            w = (float(name.split("=")[1]) if name.startswith("IS")
                 else (2.0 if "fidelity" in name else 0.5))
            a = gr["acceptance"].get(name)
            lines.append(f"| {name} | {'' if a is None else f'{a:.2f}'} | {_cell(d)} | "
                         f"{_checks(w, d)} |")
    if "oracle" in r:
        lines += ["", "## 2. Oracle generators: held-out real images, mode-biased by "
                  "alpha, with a fraction pi of GAN samples", "",
                  "alpha = 0: real images drawn uniformly (a perfect generator); alpha = 2: "
                  "drawn ∝ (pixel-PCA pseudo density)², a mode-imbalanced generator. "
                  f"pi = 1 is the GAN alone. {r['oracle_seeds']} seeds; the baseline is the "
                  "first n candidates, importance sampling keeps the accepted ones among the "
                  "same candidates in the same order.", "",
                  "| generator | base P / R / C | w | Δ precision | Δ density | Δ recall | "
                  "Δ coverage | as expected (P, D, R, C) |", "|---|---|---|---|---|---|---|---|"]
        for name, o in r["oracle"].items():
            if name == "gan_tenths":
                continue
            b = o["baseline"]
            for w in ("20", "2", "0.5", "0.1"):
                d = o["delta"][w]
                lines.append(f"| {name} | {b['precision']:.3f} / {b['recall']:.3f} / "
                             f"{b['coverage']:.3f} | {w} | {_cell(d)} | "
                             f"{_checks(float(w), d)} |")
    if "gan_tenths" in r.get("oracle", {}):
        lines += ["", "### The bundled GAN's samples by predicted density (tenths of 20,000 "
                  "samples; each tenth's first n scored against n test images)", "",
                  "| tenth | predicted density | precision | recall | density | coverage |",
                  "|---|---|---|---|---|---|"]
        for i, t in enumerate(r["oracle"]["gan_tenths"]):
            lo, hi = t["predicted_density"]
            lines.append(f"| {i + 1} | {lo:.2f}–{hi:.2f} | " + " | ".join(
                f"{t[k]:.3f}" for k in KEYS) + " |")
    return "\n".join(lines) + "\n"


def plot(r: dict, path: Path) -> None:
    """Δrecall and Δcoverage against w for the GAN and the oracle generators."""
    if "oracle" not in r and "gan" not in r:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=110)
    curves = {}
    if "gan" in r:
        curves["bundled GAN (IS)"] = {float(k.split("=")[1]): v
                                      for k, v in r["gan"]["delta"].items()
                                      if k.startswith("IS")}
    for name, o in r.get("oracle", {}).items():
        if name == "gan_tenths":
            continue
        if name.endswith("pi=0") or name.endswith("pi=0.5"):
            curves[f"oracle {name}"] = {float(k): v for k, v in o["delta"].items()}
    for ax, key in zip(axes, ("recall", "coverage"), strict=True):
        for label, c in curves.items():
            ws = sorted(c)
            ax.errorbar(ws, [c[w][key][0] for w in ws], yerr=[c[w][key][1] for w in ws],
                        fmt="o-", label=label, capsize=2)
        ax.axhline(0, color="grey", lw=0.8)
        ax.axvline(1, color="grey", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_xlabel("importance weight w (< 1 diversity, > 1 fidelity)")
        ax.set_ylabel(f"Δ {key} vs no sampling (F_e, k=5)")
    axes[0].legend(fontsize=6)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


if __name__ == "__main__":
    main()
