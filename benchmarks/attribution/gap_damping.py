"""Probe: does the generalization gap pick the damping (no training horizon needed)?

    .venv/bin/python benchmarks/attribution/gap_damping.py --setting minilm_cls
    .venv/bin/python benchmarks/attribution/gap_damping.py --epochs 3          # variant of (a)
    .venv/bin/python benchmarks/attribution/gap_damping.py --lm-epochs 1       # variant of (b)

Leave-one-out optimism (Takeuchi's information criterion, damped): removing training example
i changes its own loss by about g_i^T (H + lambda)^-1 g_i / N, so the mean gap between held-out
and training loss is about mean_i tau(i, i) / (N rho), with H ~ rho F (rho loss terms per
example) and tau the damped self-influence the store gives. The damping whose predicted gap
equals the measured one is a candidate for ``damping="auto"``: a short training horizon
leaves little gap (heavy damping), a long one a large gap (light damping). For the default
store and EK-FAC curvature of a setting, this writes the predicted gap and the LDS at every
damping of the half-decade sweep, the measured gap, and the damping and LDS the criterion
picks, to ``benchmarks/cache/gap_damping/<setting>.json``. The gap is measured on ``--held-out``
examples the model never saw (disjoint from training; the first 100 are the LDS queries). A
variant of a setting (the ``damping_probe.py`` options) has no ground truth here: its LDS sweep
is read from ``benchmarks/results/attribution_damping_horizon.json``, which that probe wrote
for the same model (same data, hyper-parameters and seed), at the nearest half decade.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS  # noqa: E402
from defaults import DEFAULT_LABEL, _factor_config, _lds, configurations  # noqa: E402
from fisher_damping import CACHE, SETTINGS  # noqa: E402

from tamis.attribution import BuildConfig, ScoreConfig  # noqa: E402
from tamis.attribution.build import build_store  # noqa: E402
from tamis.attribution.curvature import fit_curvature  # noqa: E402
from tamis.attribution.fisher import source_for  # noqa: E402
from tamis.attribution.horizon import mean_loss_terms, with_horizon_damping  # noqa: E402
from tamis.attribution.scoring import compute_scores, self_influence  # noqa: E402
from tamis.attribution.tuning import _with_damping  # noqa: E402

FINE = tuple(float(10 ** (e / 2)) for e in range(-6, 7))  # 1e-3 .. 1e3, half decades


def per_example_losses(task, model, data, batch_size: int) -> np.ndarray:
    """The task's measurement (its loss) of every example, in order."""
    out = []
    with torch.no_grad():
        for lo in range(0, len(data), batch_size):
            batch = data[lo:lo + batch_size]
            out.append(task.compute_measurement(batch, model).reshape(-1).double().numpy())
    return np.concatenate(out)


def solve(pred: dict[float, float], gap: float) -> float:
    """The damping at which the (decreasing) predicted gap equals ``gap``, log-interpolated."""
    xs = sorted(pred)
    if gap >= pred[xs[0]]:
        return xs[0]
    if gap <= pred[xs[-1]]:
        return xs[-1]
    for lo, hi in zip(xs, xs[1:], strict=False):
        if pred[lo] >= gap >= pred[hi]:
            t = (math.log(pred[lo]) - math.log(gap)) / (math.log(pred[lo]) - math.log(pred[hi]))
            return float(math.exp(math.log(lo) + t * (math.log(hi) - math.log(lo))))
    return xs[-1]


def held_out(setting: str, k: int, n: int) -> TensorDataset:
    """``k`` examples of ``setting``'s distribution outside its ``n`` training examples."""
    if setting == "fmnist_mlp":
        from tamis.data import load_fashion_mnist

        te = load_fashion_mnist("test")
        return TensorDataset(torch.tensor(te.images[:k].reshape(k, -1), dtype=torch.float32),
                             torch.tensor(te.labels[:k], dtype=torch.long))
    if setting == "text_lm":
        from text_lm import corpus

        seqs, _ = corpus(64)
        if len(seqs) < n + k:
            raise SystemExit(f"text_lm has {len(seqs)} windows, fewer than n + k = {n + k}")
        seq = seqs[n:n + k]
        return TensorDataset(seq[:, :-1].contiguous(), seq[:, 1:].contiguous())
    import minilm_cls as mc

    texts, labels = mc.corpus()
    x, _ = mc.encode(texts[n:n + k], 32)
    return TensorDataset(x, torch.from_numpy(labels[n:n + k]))


def variant_state(args) -> dict:
    """A ``damping_probe.py`` variant's model and data (no ground truth), and its sweep."""
    if args.lm_epochs is not None:
        from models import train_lm
        from text_lm import LMTask, setting_data

        n = args.n or 2000
        name = f"text_lm_n{n}_e{args.lm_epochs}"
        sd = setting_data(n, 100, epochs=args.lm_epochs)
        model = train_lm(sd["train_seq"], sd["vocab"], seed=12345, **sd["hp"])
        st = {"name": name, "setting_name": "text_lm", "task": LMTask(), "batch_size": 32,
              "train": TensorDataset(sd["x"], sd["y"]),
              "queries": TensorDataset(sd["xq"], sd["yq"]), "n": n}
    else:
        from fmnist_mlp import setting_data
        from models import train_mlp

        from tamis.attribution.examples import ClassificationTask

        n = args.n or 5000
        name = f"fmnist_n{n}_e{args.epochs}_h{args.hidden}_wd{args.wd:g}_lr{args.lr:g}" + (
            "" if args.optimizer == "adamw" else f"_{args.optimizer}") + (
            f"_m{args.momentum:g}" if args.momentum else "")
        sd = setting_data(n, 100, hidden=args.hidden, epochs=args.epochs)
        hp = {**sd["hp"], "weight_decay": args.wd, "lr": args.lr}
        if args.optimizer != "adamw":
            hp["optimizer"] = args.optimizer
        if args.momentum:
            hp["momentum"] = args.momentum
        model = train_mlp(sd["x"], sd["y"], seed=12345, **hp)
        st = {"name": name, "setting_name": "fmnist_mlp", "task": ClassificationTask(
            ["fc1", "fc2"]), "batch_size": 500, "train": TensorDataset(sd["x"], sd["y"]),
              "queries": TensorDataset(sd["xq"], sd["yq"]), "n": n}
    model.eval()
    rows = json.loads((RESULTS / "attribution_damping_horizon.json").read_text())["rows"]
    row = next((r for r in rows if r["name"] == name), None)
    if row is None:
        raise SystemExit(f"no committed sweep for {name} in attribution_damping_horizon.json")
    st.update(model=model, sweep={float(k): v for k, v in row["sweep"].items()})
    return st


def _nearest(sweep: dict, a: float) -> float:
    return sweep[min(sweep, key=lambda k: abs(math.log(float(k) / a)))]


def summarize() -> None:
    """``benchmarks/results/attribution_damping_gap.{md,json}`` from the cached runs."""
    from tamis._io import write_text_atomic

    probe = {r["name"]: r for r in json.loads(
        (RESULTS / "attribution_damping_horizon.json").read_text())["rows"]}
    runs = [json.loads(f.read_text()) for f in sorted((CACHE / "gap_damping").glob("*.json"))]
    runs = [r for r in runs if "held_out" in r and r["name"] in probe]
    runs.sort(key=lambda r: probe[r["name"]]["lr_sum"])
    rows, lines = [], []
    for r in runs:
        h = probe[r["name"]]
        sweep = {float(k): v for k, v in h["sweep"].items()}
        fallback = _nearest(sweep, 1.0 / r["rho"])  # the no-horizon rule, 1 / rho
        rows.append({"name": r["name"], "steps": h["steps"], "lr_sum": h["lr_sum"],
                     "rho": r["rho"], "best_damping": h["best_damping"],
                     "best_lds": h["best_lds"], "horizon_shortfall": h["best_lds"] - h["lds_rule"],
                     "fallback_shortfall": h["best_lds"] - fallback,
                     "train_loss": r["train_loss"], "held_out_loss": r["held_out_loss"],
                     "gap": r["gap"], "gap_pick": r["pick"],
                     "gap_lds": _nearest(sweep, r["pick"]),
                     "gap_shortfall": h["best_lds"] - _nearest(sweep, r["pick"]),
                     "gap_pick_closed_form": r.get("pick_closed_form"),
                     "gap_lds_live": r["lds_pick"] if r["lds_source"] == "live" else None})
        x = rows[-1]
        lines.append(
            f"| {x['name']} | {x['steps']} | {x['lr_sum']:.3g} | {x['best_damping']:.3g} "
            f"({x['best_lds']:.3f}) | {x['horizon_shortfall']:.3f} | "
            f"{x['fallback_shortfall']:.3f} | {x['train_loss']:.3f} / {x['held_out_loss']:.3f} "
            f"({x['gap']:+.3f}) | {x['gap_pick']:.3g} ({x['gap_lds']:.3f}, "
            f"**{x['gap_shortfall']:.3f}**"
            + (f"; at the exact pick {x['gap_lds_live']:.3f}" if x["gap_lds_live"] else "")
            + ") | "
            + (f"{x['gap_pick_closed_form']:.3g}" if x["gap_pick_closed_form"] else "-") + " |")
    ok = sum(x["gap_shortfall"] <= 0.02 for x in rows)
    head = [
        "# Does the generalization gap pick the damping? (held-out loss, no horizon)", "",
        "Command per row: `.venv/bin/python benchmarks/attribution/gap_damping.py` with the "
        "row's `damping_probe.py` options (`--setting S`, or `--epochs E [--n N] [--hidden H] "
        "[--lr LR] [--optimizer sgd [--momentum B]]`, `--lm-epochs E`); "
        "`gap_damping.py --summarize` writes this table. Default EK-FAC store and curvature; "
        "the gap is the mean loss on 1,000 held-out examples minus the mean training loss; "
        "the rule picks the relative damping a at which mean_i tau_a(i, i) / (N rho) equals "
        "it (damped leave-one-out optimism, Takeuchi's criterion). LDS at the nearest half "
        "decade of the probe's committed sweep (same model, data and seed).", "",
        f"Within 0.02 of the best damping: gap rule {ok} of {len(rows)}; horizon rule "
        f"{sum(x['horizon_shortfall'] <= 0.02 for x in rows)}; no-horizon fallback 1 / rho "
        f"{sum(x['fallback_shortfall'] <= 0.02 for x in rows)}.", "",
        "| setting | steps | S | best damping (LDS) | horizon rule shortfall | 1 / rho shortfall "
        "| train / held-out loss (gap) | gap rule: damping (LDS, shortfall) | closed form "
        "Σ Λ/(Λ+λ) |", "|---|---|---|---|---|---|---|---|---|"]
    write_text_atomic(RESULTS / "attribution_damping_gap.md", "\n".join(head + lines) + "\n")
    write_text_atomic(RESULTS / "attribution_damping_gap.json", json.dumps(
        {"rows": rows}, indent=1) + "\n")
    print("\n".join(head + lines))


def main() -> None:
    """Predicted and measured gap, and LDS over the sweep, for one setting or variant."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--setting", choices=sorted(SETTINGS), default="fmnist_mlp")
    p.add_argument("--held-out", type=int, default=1000, help="examples the gap is measured on")
    p.add_argument("--n", type=int, default=None, help="training examples of a variant")
    p.add_argument("--epochs", type=int, default=None, help="variant of (a)")
    p.add_argument("--lm-epochs", type=int, default=None, help="variant of (b)")
    p.add_argument("--optimizer", default="adamw", choices=("adamw", "sgd"))
    p.add_argument("--momentum", type=float, default=0.0)
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
    if args.epochs is not None or args.lm_epochs is not None:
        st = variant_state(args)
    else:
        a = argparse.Namespace(n_train=None, n_queries=100, subsets=50, seeds=None,
                               truth_reverse=False)
        st = SETTINGS[args.setting](a)
        st.update(name=args.setting, setting_name=args.setting, n=len(st["train"]))
    task, model, train, queries, bs = (st["task"], st["model"], st["train"], st["queries"],
                                       st["batch_size"])
    spec = next(s for s in configurations(st["setting_name"] != "fmnist_mlp")
                if s["label"] == DEFAULT_LABEL)
    work = CACHE / "gap_damping" / st["name"]
    store = build_store(task, model, train, work / "store", spec["proj"], _factor_config(spec),
                        BuildConfig(batch_size=bs, progress=False), overwrite=True)
    cfg = with_horizon_damping(replace(spec["curv"], fisher_batch_size=bs), None, task, train,
                               batch_size=bs)[0]
    curv = fit_curvature(store, cfg, torch.float32, False,
                         source_for(cfg, task, model, train, store))
    rho = mean_loss_terms(task, train, None, bs)
    n = store.num_examples
    train_loss = per_example_losses(task, model, train, bs)
    held = held_out(st["setting_name"], args.held_out, st["n"])
    held_loss = per_example_losses(task, model, held, bs)
    gap = float(held_loss.mean() - train_loss.mean())
    gap_q = float(per_example_losses(task, model, queries, bs).mean() - train_loss.mean())
    score_cfg = ScoreConfig(progress=False, top_k=1, batch_size=bs)

    def lds_at(a: float) -> float:
        if "sweep" in st:  # a variant: the committed sweep, nearest half decade
            return st["sweep"][min(st["sweep"], key=lambda k: abs(math.log(k / a)))]
        scores = compute_scores(task, model, queries, store, _with_damping(curv, a),
                                score_cfg, torch.float32).scores
        return _lds(scores, st["masks"], st["truth"])["lds"]

    pred, closed, sweep = {}, {}, {}
    for a in FINE:
        damped = _with_damping(curv, a)
        tau = self_influence(store, damped, chunk_size=256, progress=False)
        pred[a] = float(tau.double().mean()) / (n * rho)
        # the same from the curvature alone: sum Lambda / (Lambda + lambda) (EK-FAC, empirical)
        closed[a] = sum(float((b.kron_eigvals.double() / (b.kron_eigvals.double() + b.damping))
                              .sum()) for b in damped.blocks) / (n * rho)
        sweep[a] = lds_at(a)
        print(f"damping {a:g}: predicted gap {pred[a]:.4g}, LDS {sweep[a]:.3f}", flush=True)
    pick = solve(pred, gap) if gap > 0 else FINE[-1]
    lds_pick = lds_at(pick)
    pick_closed = solve(closed, gap) if gap > 0 else FINE[-1]
    best = max(sweep, key=sweep.get)
    out = {"name": st["name"], "n": n, "rho": rho, "held_out": args.held_out,
           "train_loss": float(train_loss.mean()), "held_out_loss": float(held_loss.mean()),
           "gap": gap, "gap_on_queries": gap_q, "pick_on_queries": solve(pred, gap_q)
           if gap_q > 0 else FINE[-1], "predicted_gap": pred, "closed_form_gap": closed,
           "pick_closed_form": pick_closed, "lds_pick_closed_form": lds_at(pick_closed),
           "sweep": sweep, "pick": pick,
           "lds_pick": lds_pick, "best": best, "best_lds": sweep[best],
           "shortfall": sweep[best] - lds_pick, "lds_source": "committed sweep" if "sweep" in st
           else "live", "wall_s": time.perf_counter() - t0}
    work.mkdir(parents=True, exist_ok=True)
    (work.parent / f"{st['name']}.json").write_text(json.dumps(out, indent=1))
    curves = ("predicted_gap", "sweep", "closed_form_gap")
    print(json.dumps({k: v for k, v in out.items() if k not in curves}))


if __name__ == "__main__":
    main()
