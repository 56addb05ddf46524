"""Side by side at defaults: every curvature a user can pick, and Kronfluence at its defaults.

    .venv/bin/python benchmarks/attribution/defaults.py --setting fmnist_mlp
    .venv/bin/python benchmarks/attribution/defaults.py --setting text_lm

One run per setting, on the data, model, masks and retrained ground truth of the setting's
own benchmark script (the ground-truth cache is shared through ``fisher_damping.SETTINGS``):

* ``tamis defaults``: ``Attributor(task, model, path)`` with nothing else (the ``ekfac``
  preset of :mod:`tamis.attribution.presets`; with no horizon its damping is 1 / rho, the
  horizon rule at S = 1);
* ``tamis defaults + training horizon``: the same, given the training run's sum of learning
  rates S (``Attributor(..., horizon=TrainingHorizon(S))``; StoreCallback records it): the
  damping is the horizon rule 1 / (S rho) of :mod:`tamis.attribution.horizon`;
* ``tamis lorif (paper preset)``: 64 x 64 projection clipped to each layer, c = 1, r = 256,
  empirical Fisher, damping 1 x mean eigenvalue;
* ``tamis tuned``: :func:`tamis.attribution.tune` (kinds EK-FAC and K-FAC) on the default
  store with its own retraining budget
  (``--tune-subsets`` subsets drawn with another seed than the evaluation masks), then scored
  on the evaluation masks;
* ``tamis logra`` (dense D x D inverse, same projection and Fisher) and ``tamis grad_dot``;
* ``tamis ekfac`` / ``tamis kfac``: the Kronecker curvatures over the factored store, with the
  default projection and with no projection (Kronfluence's space), true and empirical Fisher;
* ``kronfluence_ekfac`` / ``kronfluence_kfac`` at their defaults (damping 0.1 x mean
  eigenvalue), run from benchmarks/.venv-bench.

Every tamis curvature row also reports the LDS over a damping sweep (the curvature is fitted
once; damping does not change its eigenbasis), so the damping default can be read off.
Writes benchmarks/results/attribution_defaults_<setting>.{json,md}.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, environment, run_anchor  # noqa: E402
from fisher_damping import CACHE, SETTINGS  # noqa: E402

from tamis._io import write_text_atomic  # noqa: E402
from tamis.attribution import (  # noqa: E402
    BuildConfig,
    CurvatureConfig,
    FactorConfig,
    ProjectionConfig,
    ScoreConfig,
    fit_curvature,
)
from tamis.attribution.build import build_store  # noqa: E402
from tamis.attribution.evaluation import lds, lds_difference  # noqa: E402
from tamis.attribution.fisher import source_for  # noqa: E402
from tamis.attribution.horizon import TrainingHorizon, with_horizon_damping  # noqa: E402
from tamis.attribution.presets import PRESETS  # noqa: E402
from tamis.attribution.scoring import compute_scores  # noqa: E402
from tamis.attribution.tuning import TuneConfig, _with_damping, tune  # noqa: E402

SWEEP = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)  # x mean eigenvalue
DEFAULT_PROJ = ProjectionConfig()
NO_PROJ = ProjectionConfig(kind="identity")
PROJ_256 = ProjectionConfig(d1=256, d2=256)
AUTO_PROJ = ProjectionConfig(identity_up_to=1024)  # sides <= 1024 unprojected, larger to 64
TUNED_LABEL = "tamis tuned (tune() on the default store: kind, Fisher, damping)"
DEFAULT_LABEL = "tamis defaults (Attributor(task, model, path): ekfac preset)"
HORIZON_LABEL = ("tamis defaults + training horizon (Attributor(..., horizon=TrainingHorizon(S))"
                 ": damping 1 / (S rho))")


def configurations(sequence: bool) -> list[dict]:
    """The tamis rows: label, store (projection, c, dense) and curvature config."""
    ek = PRESETS["ekfac"]
    rows = [
        {"label": DEFAULT_LABEL, "proj": ek.projection, "c": ek.factors.rank,
         "max_numbers": ek.factors.max_numbers, "dtype": ek.factors.dtype,
         "curv": ek.curvature, "zero_arg": True},
        {"label": HORIZON_LABEL, "proj": ek.projection, "c": ek.factors.rank,
         "max_numbers": ek.factors.max_numbers, "dtype": ek.factors.dtype,
         "curv": ek.curvature, "horizon": True},
        {"label": "tamis lorif (paper preset)", "proj": DEFAULT_PROJ, "c": 1,
         "curv": CurvatureConfig()},
        {"label": "tamis lorif, true Fisher", "proj": DEFAULT_PROJ, "c": 1,
         "curv": CurvatureConfig(fisher="true")},
        {"label": "tamis lorif, granularity=model", "proj": DEFAULT_PROJ, "c": 1,
         "curv": CurvatureConfig(granularity="model")},
        {"label": "tamis logra (dense)", "proj": DEFAULT_PROJ, "c": None,
         "curv": CurvatureConfig(kind="dense")},
        {"label": "tamis grad_dot", "proj": DEFAULT_PROJ, "c": 1,
         "curv": CurvatureConfig(kind="identity")},
    ]
    rows += [
        {"label": "tamis lorif, 256 x 256 projection", "proj": PROJ_256, "c": 1,
         "curv": CurvatureConfig()},
        {"label": "tamis lorif, unprojected, c=1", "proj": NO_PROJ, "c": 1,
         "curv": CurvatureConfig()},
    ]
    for fisher in ("true", "empirical"):
        rows.append({"label": f"tamis ekfac, {fisher} Fisher, projected", "proj": DEFAULT_PROJ,
                     "c": 1, "curv": CurvatureConfig(kind="ekfac", fisher=fisher)})
    rows.append({"label": "tamis ekfac, true Fisher, 256 x 256 projection", "proj": PROJ_256,
                 "c": 1, "curv": CurvatureConfig(kind="ekfac", fisher="true")})
    for c in ((1, 8) if sequence else (1,)):
        for kind in ("ekfac", "kfac"):
            rows.append({"label": f"tamis {kind}, true Fisher, unprojected, c={c}",
                         "proj": NO_PROJ, "c": c,
                         "curv": CurvatureConfig(kind=kind, fisher="true")})
    rows.append({"label": "tamis ekfac, empirical Fisher, unprojected, c=1", "proj": NO_PROJ,
                 "c": 1, "curv": CurvatureConfig(kind="ekfac", fisher="empirical")})
    for c in ((1, 8) if sequence else (1,)):
        rows.append({"label": f"tamis ekfac, true Fisher, sides <= 1024 unprojected, c={c}",
                     "proj": AUTO_PROJ, "c": c,
                     "curv": CurvatureConfig(kind="ekfac", fisher="true")})
    rows.append({"label": "tamis ekfac, empirical Fisher, sides <= 1024 unprojected, c=8",
                 "proj": AUTO_PROJ, "c": 8,
                 "curv": CurvatureConfig(kind="ekfac", fisher="empirical")})
    if sequence:
        rows.append({"label": "tamis ekfac, true Fisher, projected, c=8", "proj": DEFAULT_PROJ,
                     "c": 8, "curv": CurvatureConfig(kind="ekfac", fisher="true")})
        for c in (16, 32):
            rows.append({"label": f"tamis ekfac, true Fisher, unprojected, c={c}",
                         "proj": NO_PROJ, "c": c,
                         "curv": CurvatureConfig(kind="ekfac", fisher="true")})
        for c in (1, 8):  # curvature-aware truncation of the per-example gradients
            for proj, name in ((AUTO_PROJ, "sides <= 1024 unprojected"),
                               (DEFAULT_PROJ, "projected")):
                for td in (0.1, 1.0):
                    rows.append({"label": f"tamis ekfac, empirical Fisher, {name}, c={c}, "
                                          f"whitened truncation (delta {td:g})",
                                 "proj": proj, "c": c, "trunc": ("whitened", td),
                                 "curv": CurvatureConfig(kind="ekfac", fisher="empirical")})
    for c in ((8, 16) if sequence else (16,)):  # factor pairs capped by dense 64 x 64 size
        rows.append({"label": f"tamis ekfac, empirical Fisher, sides <= 1024 unprojected, "
                              f"c={c}, <= 4096 numbers / layer",
                     "proj": AUTO_PROJ, "c": c, "max_numbers": 4096,
                     "curv": CurvatureConfig(kind="ekfac", fisher="empirical")})
    if sequence:  # int8 factors: twice the pairs in the bytes of the float16 default
        for c in (16, 32):
            rows.append({"label": f"tamis ekfac, empirical Fisher, sides <= 1024 unprojected, "
                                  f"c={c}, int8, <= 8192 numbers / layer",
                         "proj": AUTO_PROJ, "c": c, "max_numbers": 8192, "dtype": "int8",
                         "curv": CurvatureConfig(kind="ekfac", fisher="empirical")})
    return rows


def _lds(scores: torch.Tensor, masks, truth) -> dict:
    out = lds(scores.numpy().astype(np.float64), masks, truth, target="loss", n_boot=1000,
              seed=0)
    return {"lds": out.mean, "ci": [out.ci_low, out.ci_high],
            "per_query": out.to_dict(per_query=True)["per_query"]}


PAIRED_ANCHOR = "kronfluence_ekfac (defaults)"


def paired_lines(rows: list[dict], anchor: str = PAIRED_ANCHOR) -> list[str]:
    """Markdown rows: each method's LDS minus the anchor's, paired over the same queries.

    Only rows that kept their per-query LDS (those measured since it is recorded) appear;
    empty when the anchor has none.
    """
    ref = next((r for r in rows if r["method"] == anchor and r.get("per_query")), None)
    if ref is None:
        return []
    def rho(row: dict) -> np.ndarray:  # JSON null = a query without a defined LDS
        return np.array([np.nan if x is None else x for x in row["per_query"]])

    b = rho(ref)
    out = [f"| method | LDS - {anchor} [95% CI], paired over queries | queries ahead |",
           "|---|---|---|"]
    for r in rows:
        if r is ref or not r.get("per_query") or len(r["per_query"]) != len(b):
            continue
        d = lds_difference(rho(r), b, n_boot=1000)
        out.append(f"| {r['method']} | {d['diff']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}] | "
                   f"{d['wins']:.0%} of {d['n_queries']} |")
    return out


def _store_bytes(store) -> float:
    return sum(p.stat().st_size for p in store.path.glob("shard-*.npy")) / store.num_examples


def _factor_config(spec: dict) -> FactorConfig:
    kind, delta = spec.get("trunc", ("frobenius", 1.0))
    return FactorConfig(spec["c"], spec.get("dtype", "float16"), truncation=kind,
                        truncation_damping=delta,
                        max_numbers=spec.get("max_numbers"))


def lr_sum(setting: dict) -> tuple[int, float]:
    """Optimizer steps and the sum of the learning rate over them, by the setting's own
    schedule: constant AdamW in (a), one-cycle in (b), warm-up + linear decay in (c)."""
    n, bs, epochs, lr = setting["n"], setting["batch_size"], setting["epochs"], setting["lr"]
    steps = epochs * (-(-n // bs))
    name = setting["name"]
    if name == "fmnist_mlp":
        return steps, steps * lr
    if name == "text_lm":
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
        total = 0.0
        for _ in range(steps):
            total += opt.param_groups[0]["lr"]
            opt.step()
            sched.step()
        return steps, total
    warm = max(1, steps // 10)
    return steps, sum(lr * min((s + 1) / warm, max(0.0, (steps - s) / max(1, steps - warm)))
                      for s in range(steps))


def run_tamis(st: dict, spec: dict, work: Path, threads: int) -> tuple[dict, object, object]:
    """Build, fit, score one row; LDS at its damping and over the sweep."""
    task, model, train, queries = st["task"], st["model"], st["train"], st["queries"]
    bs = st["batch_size"]
    t0 = time.perf_counter()
    store = build_store(task, model, train, work / spec["label"].replace(" ", "_").replace(
        ",", "").replace("/", "_"), spec["proj"], _factor_config(spec),
        BuildConfig(batch_size=bs, progress=False), overwrite=True)
    t_build = time.perf_counter() - t0
    cfg = replace(spec["curv"], fisher_batch_size=bs)
    if spec.get("horizon") or spec.get("zero_arg"):  # what Attributor does with / without S
        horizon = TrainingHorizon(lr_sum(st["setting"])[1]) if spec.get("horizon") else None
        cfg = with_horizon_damping(cfg, horizon, task, train, batch_size=bs)[0]
    t0 = time.perf_counter()
    curv = fit_curvature(store, cfg, torch.float32, False,
                         source_for(cfg, task, model, train, store))
    t_fit = time.perf_counter() - t0
    score_cfg = ScoreConfig(progress=False, top_k=1, batch_size=bs)
    t0 = time.perf_counter()
    res = compute_scores(task, model, queries, store, curv, score_cfg, torch.float32)
    t_query = time.perf_counter() - t0
    row = {"method": spec["label"], "kind": cfg.kind, "fisher": cfg.fisher,
           "projection": spec["proj"].kind, "c": spec["c"], "damping": cfg.damping,
           **_lds(res.scores, st["masks"], st["truth"]),
           "bytes_per_example": _store_bytes(store), "curvature_bytes": curv.memory_bytes,
           "build_s": t_build, "fit_s": t_fit, "query_s": t_query,
           "passes": curv.extra.get("passes")}
    if cfg.kind in ("lowrank", "kfac", "ekfac"):
        row["sweep"] = {}
        for a in SWEEP:
            s = compute_scores(task, model, queries, store, _with_damping(curv, a), score_cfg,
                               torch.float32).scores
            row["sweep"][a] = _lds(s, st["masks"], st["truth"])["lds"]
    print(f"{spec['label']}: LDS {row['lds']:.3f} build {t_build:.1f}s fit {t_fit:.1f}s "
          f"query {t_query:.2f}s" + (f" sweep {row['sweep']}" if "sweep" in row else ""),
          flush=True)
    return row, store, curv


def run_tuned(st: dict, store, n_subsets: int, label: str = TUNED_LABEL) -> dict:
    """tune() on its own masks (seed 1), then the chosen curvature on the evaluation masks."""
    task, model, train, queries = st["task"], st["model"], st["train"], st["queries"]
    t0 = time.perf_counter()
    cfg = TuneConfig(n_subsets=n_subsets, seed=1, n_seeds=1, kinds=("ekfac", "kfac"))
    result = tune(task, model, train, queries, store, st["retrain"], cfg,
                  cache_dir=st["cache"] / "tune", setting={**st["setting"], "tune_seed": 1},
                  progress=False)
    t_tune = time.perf_counter() - t0
    curv_cfg = result.curvature_config(CurvatureConfig(fisher_batch_size=st["batch_size"]))
    curv = fit_curvature(store, curv_cfg, torch.float32, False,
                         source_for(curv_cfg, task, model, train, store))
    s = compute_scores(task, model, queries, store, curv,
                       ScoreConfig(progress=False, top_k=1), torch.float32).scores
    row = {"method": label, "kind": curv_cfg.kind, "fisher": curv_cfg.fisher,
           "projection": "preset", "c": store.rank, "damping": curv_cfg.damping,
           "rank": curv_cfg.rank,
           **_lds(s, st["masks"], st["truth"]), "bytes_per_example": _store_bytes(store),
           "curvature_bytes": curv.memory_bytes, "tune_s": t_tune,
           "tune_subsets": n_subsets, "tuning_lds": result.best["lds"]}
    print(f"tuned: {curv_cfg.kind} {curv_cfg.fisher} r={curv_cfg.rank} "
          f"damping={curv_cfg.damping:g}: LDS "
          f"{row['lds']:.3f} (tuning LDS {result.best['lds']:.3f}, {t_tune:.0f}s)", flush=True)
    return row


def _fmt_ci(r: dict) -> str:
    if "lds" not in r:
        return "error: " + r.get("error", "?")[-80:].replace("\n", " ")
    return f"{r['lds']:.3f} [{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]"


def write(rows: list[dict], args, st: dict, wall: float, previous: dict | None = None
          ) -> None:
    """JSON + markdown table (``previous``: the earlier results a ``--only`` run extends)."""
    head = ("| method | LDS [95% CI] | best of damping sweep (at) | bytes / example | "
            "curvature bytes | build s | fit s | query s |")
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        sweep = r.get("sweep")
        best = (f"{max(sweep.values()):.3f} ({max(sweep, key=sweep.get):g})" if sweep
                else "-")
        bpe = r.get("bytes_per_example")
        lines.append(
            f"| {r['method']} | {_fmt_ci(r)} | {best} | "
            f"{'-' if bpe is None else f'{bpe:.0f}'} | {r.get('curvature_bytes', '-')} | "
            f"{r.get('build_s', 0):.1f} | {r.get('fit_s', 0):.1f} | {r.get('query_s', 0):.2f} |")
    sweep_rows = [r for r in rows if r.get("sweep")]
    sweep_head = "| method | " + " | ".join(f"x{a:g}" for a in SWEEP) + " |"
    sweep_lines = [sweep_head, "|---" * (len(SWEEP) + 1) + "|"]
    for r in sweep_rows:
        sweep_lines.append(f"| {r['method']} | " + " | ".join(
            f"{r['sweep'][a]:.3f}" for a in SWEEP) + " |")
    cmd = f".venv/bin/python benchmarks/attribution/defaults.py --setting {args.setting}" + (
        " --skip " + " ".join(repr(x) for x in args.skip) if args.skip else "")
    name = f"attribution_defaults_{args.setting}"
    commands = [cmd]
    if args.only is not None:
        cmd += (" --only " + " ".join(repr(x) for x in args.only)
                + f" --tune-subsets {args.tune_subsets} --anchors " + " ".join(args.anchors)
                + (" --tune-also " + " ".join(repr(x) for x in args.tune_also)
                   if args.tune_also else ""))
        meta = (previous or {}).get("meta", {})
        commands = list(dict.fromkeys(  # a repeated command is listed once
            meta.get("commands", [meta["command"]] if "command" in meta else []) + [cmd]))
    md = (f"# Side by side at defaults, setting {args.setting}\n\n"
          "Command" + ("s (later ones rerun or add the rows they match)" if len(commands) > 1
                       else "") + ": " + "; ".join(f"`{c}`" for c in commands) + ". "
          f"{args.subsets} evaluation subsets (alpha = 0.5), "
          f"{st['seeds']} retraining seed(s) each, LDS of the query loss (1000 bootstrap "
          f"draws); wall time {wall:.0f} s, {args.threads} thread(s). Kronfluence runs from "
          "benchmarks/.venv-bench at its defaults (its build s = factor fitting, its query s "
          "= pairwise scores, which recompute every training gradient). 'tuned' = "
          f"`tune()` on {args.tune_subsets} separate retrained subsets (seed 1).\n\n"
          + "\n".join(lines) + "\n\n## LDS over the damping sweep (x mean eigenvalue)\n\n"
          + "\n".join(sweep_lines) + "\n")
    paired = paired_lines(rows)
    if paired:
        md += ("\n## Paired against Kronfluence EK-FAC at its defaults\n\n"
               "The same queries under both methods: the CI of the per-query difference "
               "(bootstrap over queries) says ahead (above 0), behind, or tied.\n\n"
               + "\n".join(paired) + "\n")
    write_text_atomic(RESULTS / f"{name}.md", md)
    clean = [{k: v for k, v in r.items() if k != "scores_path"} for r in rows]
    write_text_atomic(RESULTS / f"{name}.json", json.dumps(
        {"meta": {"command": cmd, "commands": commands, "setting": st["setting"],
                  "environment": environment(),
                  "wall_s": wall, "subsets": args.subsets}, "rows": clean},
        indent=1, default=str))
    print(md)


def main() -> None:
    """Run every row of one setting and write the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--setting", choices=["fmnist_mlp", "text_lm", "minilm_cls"],
                   default="fmnist_mlp")
    p.add_argument("--subsets", type=int, default=50)
    p.add_argument("--seeds", type=int, default=None)
    p.add_argument("--n-train", type=int, default=None)
    p.add_argument("--n-queries", type=int, default=100)
    p.add_argument("--tune-subsets", type=int, default=16)
    p.add_argument("--anchors", nargs="*", default=["kronfluence_ekfac", "kronfluence_kfac"])
    p.add_argument("--only", nargs="*", default=None, help="run only rows whose label "
                   "contains one of these strings")
    p.add_argument("--skip", nargs="*", default=[], help="skip rows whose label contains one "
                   "of these strings (minilm_cls: 'lorif, unprojected' needs D x (r + 10) floats "
                   "per layer at D = 590,208 and ran out of the 24 GB)")
    p.add_argument("--tune-also", nargs="*", default=[], help="also tune() on the stores of "
                   "rows whose label contains one of these")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    args.truth_reverse = False
    torch.set_num_threads(args.threads)
    t_all = time.perf_counter()
    st = SETTINGS[args.setting](args)
    work = CACHE / "defaults" / args.setting
    rows, default_store, tune_stores = [], None, {}
    for spec in configurations(args.setting != "fmnist_mlp"):
        if args.only and not any(o in spec["label"] for o in args.only):
            continue
        if any(o in spec["label"] for o in args.skip):
            rows.append({"method": spec["label"], "error": "skipped (--skip)"})
            continue
        row, store, _ = run_tamis(st, spec, work, args.threads)
        rows.append(row)
        if spec["label"] == DEFAULT_LABEL:
            default_store = store
        if any(t in spec["label"] for t in args.tune_also):
            tune_stores[spec["label"]] = store
    if default_store is not None and args.tune_subsets:
        rows.append(run_tuned(st, default_store, args.tune_subsets))
    for label, store in tune_stores.items():
        if args.tune_subsets:
            name = label.removeprefix("tamis ")
            rows.append(run_tuned(st, store, args.tune_subsets,
                                  f"tamis tuned (tune() on the {name} store)"))
    for method in args.anchors:
        info = run_anchor(args.setting, method, st["cache"], {}, 3600, reuse=True)
        if "scores_path" in info:
            scores = torch.from_numpy(np.load(info["scores_path"]))
            info.update(_lds(scores, st["masks"], st["truth"]))
        info.update(method=f"{method} (defaults)", build_s=info.get("build_s", 0),
                    fit_s=0.0, query_s=(info.get("query_warm") or {}).get("total_s", 0))
        print(method, _fmt_ci(info), flush=True)
        rows.append(info)
    previous = None
    path = RESULTS / f"attribution_defaults_{args.setting}.json"
    if args.only is not None and path.exists():
        previous = json.loads(path.read_text())
        rows = _merged(rows, previous["rows"])
    write(rows, args, st, time.perf_counter() - t_all, previous)


def _merged(rows: list[dict], old: list[dict]) -> list[dict]:
    """With ``--only``: the previous table's rows, those rerun replaced, new ones inserted
    before the tuned and anchor rows (so a partial rerun never drops measured rows)."""
    for r in old:  # JSON keys are strings; the sweep is keyed by the damping factor
        if r.get("sweep"):
            r["sweep"] = {float(k): v for k, v in r["sweep"].items()}
    new = {r["method"]: r for r in rows}
    out = [new.pop(r["method"], r) for r in old]
    tuned = ("tamis tuned", "tamis lorif tuned")
    cut = next((i for i, r in enumerate(out) if r["method"].startswith(tuned)
                or "(defaults)" in r["method"] and not r["method"].startswith("tamis")),
               len(out))
    return out[:cut] + list(new.values()) + out[cut:]


if __name__ == "__main__":
    main()
