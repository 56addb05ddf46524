"""Probe: which statistic of the store and curvature predicts the best damping?

    .venv/bin/python benchmarks/attribution/damping_probe.py --setting fmnist_mlp
    .venv/bin/python benchmarks/attribution/damping_probe.py --setting fmnist_mlp --epochs 3

For the default store and EK-FAC curvature of a setting (or a variant of setting (a) with
other training hyper-parameters, with its own ground truth), the LDS over a fine damping
sweep and, per layer, the EK-FAC eigenvalues Lambda and the rotated mean gradient
M = Q_A^T mean_n(G_n) Q_S (one more pass), so the coherence M^2 / Lambda of every
eigen-direction can be compared with the damping that the sweep picks. Writes
``benchmarks/cache/damping_probe/<name>.{json,npz}``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from defaults import DEFAULT_LABEL, _lds, configurations, lr_sum, run_tamis  # noqa: E402
from fisher_damping import CACHE, SETTINGS, save_model  # noqa: E402
from harness import fixed_masks, save_data  # noqa: E402

from tamis.attribution import ScoreConfig  # noqa: E402
from tamis.attribution.evaluation import ground_truth  # noqa: E402
from tamis.attribution.examples import ClassificationTask  # noqa: E402
from tamis.attribution.factors import dense_gradients  # noqa: E402
from tamis.attribution.fisher import FisherSource  # noqa: E402
from tamis.attribution.scoring import compute_scores  # noqa: E402
from tamis.attribution.tuning import _with_damping  # noqa: E402

FINE = tuple(float(10 ** (e / 2)) for e in range(-6, 7))  # 1e-3 .. 1e3, half decades


def fmnist_variant(n: int, epochs: int, hidden: int, wd: float, lr: float,
                   optimizer: str = "adamw", momentum: float = 0.0) -> dict:
    """Setting (a) with other hyper-parameters, its own cache and ground truth."""
    from fmnist_mlp import setting_data
    from models import train_mlp

    name = f"fmnist_n{n}_e{epochs}_h{hidden}_wd{wd:g}_lr{lr:g}" + (
        "" if optimizer == "adamw" else f"_{optimizer}") + (f"_m{momentum:g}" if momentum else "")
    cache = CACHE / "damping_probe" / name
    cache.mkdir(parents=True, exist_ok=True)
    sd = setting_data(n, 100, hidden=hidden, epochs=epochs)
    hp = {**sd["hp"], "weight_decay": wd, "lr": lr}
    if optimizer != "adamw":
        hp["optimizer"] = optimizer
    if momentum:
        hp["momentum"] = momentum
    x, y, xq, yq = sd["x"], sd["y"], sd["xq"], sd["yq"]
    save_data(cache, x, y, xq, yq)
    model = train_mlp(x, y, seed=12345, **hp)
    model.eval()
    masks = fixed_masks(cache, n, 50)

    def retrain(mask: np.ndarray, seed: int) -> np.ndarray:
        import torch.nn.functional as F

        sub = train_mlp(x[torch.from_numpy(mask)], y[torch.from_numpy(mask)], seed=seed, **hp)
        with torch.no_grad():
            return F.cross_entropy(sub(xq), yq, reduction="none").numpy()

    setting = {**sd["setting"], **hp, "variant": name}
    truth = ground_truth(retrain, masks, cache, setting, n_seeds=3)
    save_model(cache, model, {"arch": "mlp", "hidden": hidden})
    return {"name": name, "setting": setting, "task": ClassificationTask(["fc1", "fc2"]),
            "model": model, "train": TensorDataset(x, y), "queries": TensorDataset(xq, yq),
            "masks": masks, "truth": truth, "batch_size": 500, "seeds": 3, "cache": cache}


def text_lm_variant(n: int, epochs: int) -> dict:
    """Setting (b) with other epochs / N, its own cache and retrained ground truth."""
    from models import train_lm
    from text_lm import LMTask, setting_data

    name = f"text_lm_n{n}_e{epochs}"
    cache = CACHE / "damping_probe" / name
    cache.mkdir(parents=True, exist_ok=True)
    sd = setting_data(n, 100, epochs=epochs)
    save_data(cache, sd["x"], sd["y"], sd["xq"], sd["yq"])
    model = train_lm(sd["train_seq"], sd["vocab"], seed=12345, **sd["hp"])
    model.eval()
    masks = fixed_masks(cache, n, 50)
    setting = {**sd["setting"], "variant": name}
    truth = ground_truth(sd["retrain"], masks, cache, setting, n_seeds=1)
    return {"name": name, "setting": setting, "task": LMTask(), "model": model,
            "train": TensorDataset(sd["x"], sd["y"]),
            "queries": TensorDataset(sd["xq"], sd["yq"]), "masks": masks, "truth": truth,
            "batch_size": 32, "seeds": 1, "cache": cache}


def direction_stats(st: dict, store, curv) -> dict[str, dict[str, np.ndarray]]:
    """Per layer: EK-FAC eigenvalues and the squared rotated mean gradient."""
    src = FisherSource(st["task"], st["model"], st["train"], store, "empirical", 1, 0,
                       st["batch_size"], None)
    bases = {b.layers[0]: (b.basis_in.double(), b.basis_out.double()) for b in curv.blocks}
    sums = {name: torch.zeros(qa.shape[0], qs.shape[0], dtype=torch.float64)
            for name, (qa, qs) in bases.items()}
    quart = {name: torch.zeros_like(v) for name, v in sums.items()}
    token_energy = {name: 0.0 for name in sums}
    tokens = 0
    sq = {name: torch.zeros_like(v) for name, v in sums.items()}
    n = 0
    for items in src.iter_captures(torch.float64):
        captured, _ = items[0]
        first = next(iter(captured.values())).a
        n += first.shape[0]
        tokens += first.shape[0] * first.shape[1]
        for name, cap in captured.items():
            qa, qs = bases[name]
            token_energy[name] += float(((cap.a ** 2).sum(-1) * (cap.b ** 2).sum(-1)).sum())
            g = dense_gradients(cap.a @ qa, cap.b @ qs)
            sums[name] += g.sum(0)
            g2 = g * g
            sq[name] += g2.sum(0)
            quart[name] += (g2 * g2).sum(0)
    return {b.layers[0]: {"lam": b.kron_eigvals.double().numpy(),
                          "m2": ((sums[b.layers[0]] / n) ** 2).numpy(),
                          "neff": (sq[b.layers[0]] ** 2 / quart[b.layers[0]].clamp_min(1e-300)
                                   ).numpy(),
                          "damping_1x": b.trace / b.dim,
                          # Hessian / per-example Fisher of a mean-over-tokens loss: T times
                          # the per-token energy over the per-example energy (1 without tokens)
                          "r": tokens / n * token_energy[b.layers[0]]
                          / float(sq[b.layers[0]].sum()),
                          } for b in curv.blocks}


def horizon_damping(store, curv, stats: dict, lr_total: float, batch_size: int) -> dict:
    """Per layer: the absolute damping of Adam's unrolled horizon (see docs/attribution.md),
    lambda = sqrt(F_coord / B) / (S r), F_coord = trace(F) / (I O) of the layer, r the
    Hessian-to-Fisher ratio of a loss averaged over T tokens (T x per-token energy / energy)."""
    dims = {lay["name"]: lay["in_dim"] * lay["out_dim"] for lay in store.layers}
    out = {}
    for b in curv.blocks:
        name = b.layers[0]
        f_coord = b.trace / dims[name]
        out[name] = (f_coord / batch_size) ** 0.5 / (lr_total * stats[name]["r"])
    return out


def _at(sweep: dict, a: float) -> float:
    """LDS at the sweep point nearest to ``a`` in log scale (half-decade grid)."""
    return sweep[min(sweep, key=lambda k: abs(np.log10(k) - np.log10(a)))]


def _geo(d: dict) -> float:
    return float(np.exp(np.mean(np.log(list(d.values())))))


def summarize() -> None:
    """Table of every probed setting: best damping against the training horizon."""
    from common import RESULTS

    from tamis._io import write_text_atomic

    def row(name: str, setting: dict, sweep: dict, adam: dict | None, rho: float) -> dict:
        steps, total = lr_sum(setting)
        best = max(sweep, key=sweep.get)
        sgd = setting.get("optimizer") == "sgd"  # the rule is then an absolute damping
        eff = total / (1.0 - setting.get("momentum", 0.0)) if sgd else total
        return {"name": name, "n": setting["n"], "epochs": setting["epochs"],
                "lr": setting["lr"], "steps": steps, "lr_sum": total, "best_damping": best,
                "best_lds": sweep[best], "lds_1x": sweep[1.0],
                "lds_horizon": _at(sweep, 1 / total), "rho": rho, "rule": 1 / (eff * rho),
                "rule_mode": "absolute" if sgd else "relative", "momentum":
                setting.get("momentum", 0.0),
                "lds_rule": (adam["gd_absolute"]["lds"] if sgd else
                             _at(sweep, 1 / (total * rho))), "sweep": sweep, "adam": adam}

    # rows of earlier runs (their caches may be gone) first, then every cached run
    out = RESULTS / "attribution_damping_horizon.json"
    by_name = {}
    for r in json.loads(out.read_text())["rows"] if out.exists() else []:
        setting = {"name": "text_lm" if r["name"].startswith("text_lm") else
                   ("minilm_cls" if r["name"] == "minilm_cls" else "fmnist_mlp"),
                   "n": r["n"], "epochs": r["epochs"], "lr": r["lr"],
                   "batch_size": {"text_lm": 32, "minilm_cls": 32}.get(r["name"], 500)}
        # loss terms per example (rho): the LM averages its 64 next characters, else 1
        rho = r.get("rho") or (64 if setting["name"] == "text_lm" else 1)
        sweep = {float(k): v for k, v in r["sweep"].items()}
        by_name[r["name"]] = {**row(r["name"], setting, sweep, r.get("adam"), rho),
                              "steps": r["steps"], "lr_sum": r["lr_sum"]}
        by_name[r["name"]]["lds_horizon"] = _at(sweep, 1 / r["lr_sum"])
        by_name[r["name"]]["rule"] = 1 / (r["lr_sum"] * rho)
        by_name[r["name"]]["lds_rule"] = _at(sweep, by_name[r["name"]]["rule"])
    for path in sorted((CACHE / "damping_probe").glob("*.json")):
        r = json.loads(path.read_text())
        sweep = {float(k): v for k, v in r["sweep"].items()}
        rho = r.get("loss_terms") or (r["setting"].get("ctx", 1)
                                      if r["setting"]["name"] == "text_lm" else 1)
        by_name[r["name"]] = row(r["name"], r["setting"], sweep, r.get("horizon"), rho)
    rows = list(by_name.values())
    rows.sort(key=lambda r: r["lr_sum"])
    lines = ["| setting | n | epochs | lr | steps | S = sum of lr | best damping (LDS) | "
             "LDS at 1x (shortfall) | LDS at 1/S (shortfall) | rho | LDS at the shipped "
             "rule 1/(S rho) (shortfall) | LDS at the Adam-horizon "
             "damping (shortfall), its geometric-mean relative value |", "|---" * 12 + "|"]
    for r in rows:
        mode = " (absolute, SGD)" if r.get("rule_mode") == "absolute" else ""
        lines.append(
            f"| {r['name']} | {r['n']} | {r['epochs']} | {r['lr']:g} | {r['steps']} | "
            f"{r['lr_sum']:.3g} | {r['best_damping']:.3g} ({r['best_lds']:.3f}) | "
            f"{r['lds_1x']:.3f} ({r['best_lds'] - r['lds_1x']:.3f}) | "
            f"{r['lds_horizon']:.3f} ({r['best_lds'] - r['lds_horizon']:.3f}) | "
            f"{r['rho']:g} | {r['rule']:.3g}{mode}: {r['lds_rule']:.3f} "
            f"({r['best_lds'] - r['lds_rule']:.3f}) | "
            + (f"{r['adam']['lds']:.3f} ({r['best_lds'] - r['adam']['lds']:.3f}), "
               f"{_geo(r['adam']['relative']):.3g} |" if r.get("adam") else "- |"))
    md = ("# Best damping against the training horizon\n\n"
          "Commands: `.venv/bin/python benchmarks/attribution/damping_probe.py --setting S` "
          "for (a) fmnist_mlp, (b) text_lm, (c) minilm_cls; variants of (a) with "
          "`--epochs E [--n N] [--hidden H] [--lr LR] [--optimizer sgd [--momentum B]]` (own "
          "retrained ground truth, 50 subsets x 3 seeds), of (b) with `--lm-epochs E` "
          "(50 subsets); this "
          "table `damping_probe.py --summarize`. Default store and EK-FAC "
          "curvature of each setting (the ekfac preset), damping relative to the mean "
          "eigenvalue swept over half decades 1e-3 .. 1e3. S is the sum of the learning rate "
          "over the optimizer steps (AdamW, or plain SGD where the name ends in _sgd), by each "
          "setting's own schedule. For SGD the rule is an absolute damping with S / "
          "(1 - momentum). "
          "rho: loss terms per example (64 next characters in (b), 1 for the classifiers); "
          "1/(S rho) is the rule `Attributor(..., horizon=TrainingHorizon(S))` applies. LDS at "
          "a rule = the sweep point nearest to its value (half-decade grid).\n\n"
          + "\n".join(lines) + "\n")
    write_text_atomic(RESULTS / "attribution_damping_horizon.md", md)
    write_text_atomic(RESULTS / "attribution_damping_horizon.json",
                      json.dumps({"rows": rows}, indent=1, default=str))
    print(md)


def main() -> None:
    """Sweep and statistics of one setting or variant."""
    p = argparse.ArgumentParser()
    p.add_argument("--setting", default="fmnist_mlp")
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--epochs", type=int, default=None, help="variant of (a)")
    p.add_argument("--lm-epochs", type=int, default=None, help="variant of (b)")
    p.add_argument("--optimizer", default="adamw", choices=("adamw", "sgd"),
                   help="optimizer of a variant of (a)")
    p.add_argument("--momentum", type=float, default=0.0, help="SGD momentum (variant of (a))")
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--wd", type=float, default=1e-3)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--summarize", action="store_true", help="write the results table")
    args = p.parse_args()
    if args.summarize:
        summarize()
        return
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    if args.lm_epochs is not None:
        st = text_lm_variant(args.n if args.n != 5000 else 2000, args.lm_epochs)
    elif args.epochs is not None:
        st = fmnist_variant(args.n, args.epochs, args.hidden, args.wd, args.lr, args.optimizer,
                            args.momentum)
    else:
        a = argparse.Namespace(n_train=None, seeds=None, n_queries=100, subsets=50,
                               truth_reverse=False)
        st = SETTINGS[args.setting](a)
        st["name"] = args.setting
    spec = next(s for s in configurations(args.setting != "fmnist_mlp" or bool(args.lm_epochs))
                if s["label"] == DEFAULT_LABEL)
    out_dir = CACHE / "damping_probe"
    row, store, curv = run_tamis(st, spec, out_dir / "stores" / st["name"], args.threads)
    sc = ScoreConfig(progress=False, top_k=1, batch_size=st["batch_size"])
    sweep = {}
    for a in FINE:
        s = compute_scores(st["task"], st["model"], st["queries"], store,
                           _with_damping(curv, a), sc, torch.float32).scores
        sweep[a] = _lds(s, st["masks"], st["truth"])["lds"]
    stats = direction_stats(st, store, curv)
    steps, total = lr_sum(st["setting"])
    lam = horizon_damping(store, curv, stats, total, st["setting"]["batch_size"])
    hc = replace(curv, blocks=[replace(b, damping=lam[b.layers[0]]) for b in curv.blocks])
    s_h = compute_scores(st["task"], st["model"], st["queries"], store, hc, sc,
                         torch.float32).scores
    horizon = {"lds": _lds(s_h, st["masks"], st["truth"])["lds"],
               "relative": {b.layers[0]: lam[b.layers[0]] / (b.trace / b.dim)
                            for b in curv.blocks},
               "r": {k: v["r"] for k, v in stats.items()}}
    # gradient descent's own horizon: absolute damping 1 / (S rho) in every layer (no Adam)
    from tamis.attribution.horizon import mean_loss_terms as _terms

    rho = _terms(st["task"], st["train"], batch_size=st["batch_size"])
    total_eff = total / (1.0 - st["setting"].get("momentum", 0.0))  # heavy-ball horizon
    gd = replace(curv, blocks=[replace(b, damping=1.0 / (total_eff * rho)) for b in curv.blocks])
    s_gd = compute_scores(st["task"], st["model"], st["queries"], store, gd, sc,
                          torch.float32).scores
    horizon["gd_absolute"] = {"lds": _lds(s_gd, st["masks"], st["truth"])["lds"],
                              "relative": {b.layers[0]: 1.0 / (total_eff * rho) / (b.trace / b.dim)
                                           for b in curv.blocks}}
    np.savez(out_dir / f"{st['name']}.npz",
             **{f"{k}/{f}": v[f] for k, v in stats.items() for f in ("lam", "m2", "neff")})
    from tamis.attribution.horizon import mean_loss_terms

    res = {"name": st["name"], "setting": st["setting"], "sweep": sweep,
           "loss_terms": mean_loss_terms(st["task"], st["train"], batch_size=st["batch_size"]),
           "damping_1x": {k: v["damping_1x"] for k, v in stats.items()},
           "horizon": horizon, "n_train": len(st["train"]), "wall_s": time.perf_counter() - t0}
    (out_dir / f"{st['name']}.json").write_text(json.dumps(res, indent=1, default=str))
    best = max(sweep, key=sweep.get)
    print(st["name"], "horizon", json.dumps(horizon), flush=True)
    print(st["name"], "best", best, round(sweep[best], 3), "at 1x", round(sweep[1.0], 3),
          json.dumps({f"{k:g}": round(v, 3) for k, v in sweep.items()}), flush=True)


if __name__ == "__main__":
    main()
