"""Shared pieces of the attribution benchmarks: measuring, the tamis grid, anchors, reports.

Runs in the main venv (tamis installed). Anchors run in their own venv as subprocesses of
``anchors.py`` that read the same cached model/data and write scores to .npy.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tamis.attribution import (
    Attributor,
    BuildConfig,
    Curvature,
    CurvatureConfig,
    FactorStore,
    ProjectionConfig,
    ScoreConfig,
    compute_scores,
)
from tamis.attribution.evaluation import lds

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
CACHE = ROOT / "benchmarks" / "cache"
BENCH_PY = ROOT / "benchmarks" / ".venv-bench" / "bin" / "python"
ANCHOR_SCRIPT = Path(__file__).resolve().parent / "anchors.py"
# bergson's pins (torchvision, torchaudio, transformers>=5) clash with the bench venv: it
# runs from its own venv (`make bench-env-bergson`) with its own script
BERGSON_PY = ROOT / "benchmarks" / ".venv-bergson" / "bin" / "python"
BERGSON_SCRIPT = Path(__file__).resolve().parent / "anchor_bergson.py"


# -- measuring ---------------------------------------------------------------------------
def reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS high-water mark of this process (Linux clear_refs 5)."""
    try:
        Path(f"/proc/{os.getpid()}/clear_refs").write_text("5")
    except OSError:
        pass


def peak_rss_mb() -> float:
    """Peak RSS since the last reset (VmHWM), else ru_maxrss, in MiB."""
    try:
        for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def drop_page_cache(folder: Path) -> None:
    """Evict a folder's files from the OS page cache (posix_fadvise DONTNEED, no root)."""
    for f in Path(folder).rglob("*"):
        if f.is_file():
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def environment() -> dict:
    """Machine facts recorded with every result."""
    return {"python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "machine": platform.machine(), "processor": platform.processor() or "unknown",
            "note": "2 CPU cores shared with other jobs; compare timings only as ratios "
                    "within one run", "tamis_commit": _git_head()}


def _git_head() -> str:
    """The repository's HEAD commit, with '+dirty' when src/ has uncommitted changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "src/tamis/attribution"],
                               cwd=ROOT, capture_output=True, text=True, timeout=10).stdout
        return head + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def dims_for(d_nominal: int) -> tuple[int, int]:
    """(d1, d2) for a nominal D per layer: square up to 1024, then d2 = 32 and d1 = D / 32."""
    side = int(round(d_nominal ** 0.5))
    if side * side == d_nominal and side <= 32:
        return side, side
    return d_nominal // 32, 32


# -- the tamis grid ----------------------------------------------------------------------
# Stores already built in this process, keyed by their folder: configurations that differ
# only in the curvature (r, tail) or the scoring (grad_dot) share one store, whose build
# time and peak RSS are measured once, when it is written, and reported on every row.
_BUILT: dict[str, dict] = {}


def clear_stores(workdir: Path) -> None:
    """Delete every store of ``workdir`` built by :func:`run_tamis`."""
    for key in list(_BUILT):
        if Path(key).parent == Path(workdir):
            shutil.rmtree(key, ignore_errors=True)
            del _BUILT[key]

def tamis_grid(d_list: list[int], c_list: list[int], r_list: list[int], n_train: int,
               max_rank_per_example: int | None) -> list[dict]:
    """The tamis method grid, with meaningless combinations skipped and the reason kept."""
    rows: list[dict] = []
    for d in d_list:
        rows.append({"method": "tamis logra", "D": d, "c": None, "r": None})
        rows.append({"method": "tamis grad_dot", "D": d, "c": 1, "r": None})
        for c in c_list:
            for r in r_list:
                skip = None
                if r >= d:
                    skip = f"r={r} >= D={d}: the low-rank curvature would be full rank"
                elif r > n_train:
                    skip = f"r={r} > N={n_train}"
                elif max_rank_per_example is not None and c > max_rank_per_example:
                    skip = (f"c={c} > rank of a per-example gradient ({max_rank_per_example}): "
                            "identical scores to c=1 with a larger store")
                rows.append({"method": "tamis lorif", "D": d, "c": c, "r": r, "skip": skip})
    return rows


def run_tamis(spec: dict, task: Any, model: torch.nn.Module, train: Any, queries: Any,
              workdir: Path, batch_size: int, collate_fn: Any = None,
              damping: float | None = None) -> tuple[np.ndarray, dict]:
    """Build, fit and query one tamis configuration; every cost figure measured."""
    method = spec["method"].split()[-1]
    tail = "none"
    if method.endswith("+tail"):  # "lorif+tail": CurvatureConfig(tail="isotropic")
        method, tail = method.removesuffix("+tail"), "isotropic"
    d1, d2 = dims_for(spec["D"])
    proj = ProjectionConfig(d1=d1, d2=d2, seed=0, clip_to_layer=True)
    c_store = None if method == "logra" else (spec["c"] or 1)
    path = workdir / f"store-D{spec['D']}-c{c_store}"
    reset_peak_rss()
    att = Attributor(task, model, path, method=method, projection=proj,
                     rank_c=spec["c"] or 1, rank_r=spec["r"] or 64, dtype="float16",
                     curvature=CurvatureConfig(rank=spec["r"] or 64,
                                               damping=CurvatureConfig.damping
                                               if damping is None else damping,
                                               tail=tail),
                     build=BuildConfig(batch_size=batch_size, shard_size=4096, progress=False))
    from tamis.attribution import build_store, fit_curvature

    built = _BUILT.get(str(path))
    if built is None:
        shutil.rmtree(path, ignore_errors=True)
        t0 = time.perf_counter()
        store = build_store(task, model, train, path, proj, att.factors, att.build_config,
                            collate_fn)
        built = {"build_s": time.perf_counter() - t0, "build_peak_rss_mb": peak_rss_mb(),
                 "built_for": spec["method"]}
        _BUILT[str(path)] = built
    else:
        store = FactorStore.open(path, verify=False)
    t_build = built["build_s"]
    t0 = time.perf_counter()
    curv = fit_curvature(store, att.curvature_config, torch.float32, progress=False)
    t_curv = time.perf_counter() - t0
    curv_file = curv.save(path / f"curvature-{curv.kind}.safetensors")
    cfg = ScoreConfig(progress=False, top_k=10, batch_size=batch_size,
                      normalize="none")
    # cold: reopen from disk after evicting the store and curvature from the page cache
    drop_page_cache(path)
    t0 = time.perf_counter()
    store_c = FactorStore.open(path, verify=False)
    curv_c = Curvature.load(curv_file, store_c)
    t_open = time.perf_counter() - t0
    t0 = time.perf_counter()
    cold = compute_scores(task, model, queries, store_c, curv_c, cfg, torch.float32, collate_fn)
    t_cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    warm = compute_scores(task, model, queries, store_c, curv_c, cfg, torch.float32, collate_fn)
    t_warm = time.perf_counter() - t0
    n_train = store.num_examples
    layers = {lay["name"]: [lay["d1"], lay["d2"]] for lay in store.layers}
    info = {
        **{k: v for k, v in spec.items() if k != "skip"},
        "d1_d2_per_layer": layers,
        "D_per_layer_actual": {k: a * b for k, (a, b) in layers.items()},
        "store_bytes_per_example": store.bytes_per_example,
        "store_bytes_total": store.disk_bytes,
        "curvature_bytes": curv.memory_bytes,
        "build_s": t_build, "curvature_fit_s": t_curv,
        "index_throughput_ex_per_s": n_train / t_build,
        "query_cold": {"open_s": t_open, "query_grad_s": cold.timings["query_gradients_s"],
                       "load_s": cold.timings["load_s"], "compute_s": cold.timings["compute_s"],
                       "total_s": t_cold + t_open},
        "query_warm": {"query_grad_s": warm.timings["query_gradients_s"],
                       "load_s": warm.timings["load_s"], "compute_s": warm.timings["compute_s"],
                       "total_s": t_warm},
        "peak_rss_mb": max(peak_rss_mb(), built["build_peak_rss_mb"]),
        "store_shared_with_earlier_row": built.get("uses", 0) > 0,
        "curvature_tail": tail,
        "rank_c_energy": store.energy(),
    }
    scores = warm.scores.numpy().astype(np.float64)
    if not np.allclose(scores, cold.scores.numpy(), atol=1e-5, rtol=1e-4):
        info["warning"] = "cold and warm scores differ"
    built["uses"] = built.get("uses", 0) + 1
    curv_file.unlink(missing_ok=True)
    return scores, info


# -- anchors -----------------------------------------------------------------------------
def run_anchor(setting: str, method: str, cache: Path, options: dict, timeout: int,
               reuse: bool = False, wait_s: float = 0.0) -> dict:
    """Run one competing library in its venv; return its info dict (or its error).

    ``bergson`` runs anchor_bergson.py in benchmarks/.venv-bergson, every other method
    anchors.py in benchmarks/.venv-bench.

    With ``reuse``, a configuration whose scores and info were kept by an earlier run on the
    same cached model (same model.pt checksum) is read back instead of rerun; ``wait_s``
    waits that long for a concurrent ``--anchors-only`` run to keep them before running it.
    """
    out = cache / "anchors" / method
    out.mkdir(parents=True, exist_ok=True)
    tag = "-".join(f"{k}{v}" for k, v in sorted(options.items())) or "default"
    kept, kept_info = out / f"scores-{tag}.npy", out / f"info-{tag}.json"
    model_sha = file_sha(cache / "model.pt")
    deadline = time.time() + wait_s
    while reuse:
        if kept_info.exists():  # scores kept, or the error of a failed run
            info = json.loads(kept_info.read_text())
            if info.get("model_sha256") == model_sha and (kept.exists() or "error" in info):
                info["reused_from_earlier_run"] = True
                return info
        if time.time() > deadline:
            break
        time.sleep(10)
    for f in ("scores.npy", "info.json"):
        (out / f).unlink(missing_ok=True)
    if method == "bergson":
        python, cmd_tail = BERGSON_PY, [str(BERGSON_SCRIPT)]
        missing = "bergson venv missing (make bench-env-bergson)"
    else:
        python, cmd_tail = BENCH_PY, [str(ANCHOR_SCRIPT), "--method", method]
        missing = "bench venv missing"
    if not python.exists():
        return {"method": method, **options, "error": f"{missing}: {python}"}
    cmd = [str(python), *cmd_tail, "--setting", setting, "--cache", str(cache),
           "--out", str(out), "--options", json.dumps(options)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": str(Path(__file__).resolve().parent)}
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        failed = {"method": method, **options, "error": f"timed out after {timeout} s"}
    else:
        failed = None
        if proc.returncode != 0 or not (out / "scores.npy").exists():
            tail = (proc.stderr or proc.stdout)[-3000:]
            failed = {"method": method, **options, "error": f"exit {proc.returncode}: {tail}"}
    if failed is not None:
        kept.unlink(missing_ok=True)
        kept_info.write_text(json.dumps({**failed, "model_sha256": model_sha}, indent=1))
        return failed
    wall = time.perf_counter() - t0
    info = json.loads((out / "info.json").read_text())
    info.update(method=method, subprocess_wall_s=wall, model_sha256=model_sha)
    shutil.copyfile(out / "scores.npy", kept)  # one file per configuration (tail-patch)
    info["scores_path"] = str(kept)
    kept_info.write_text(json.dumps(info, indent=1))
    return info


def file_sha(path: Path) -> str:
    """SHA-256 of a file (identifies the cached model the anchors scored)."""
    import hashlib

    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# -- reporting ---------------------------------------------------------------------------
def add_lds(info: dict, scores: np.ndarray, masks: np.ndarray, truth: np.ndarray) -> dict:
    """Attach LDS (mean, CI) of ``scores`` to ``info``."""
    if not np.isfinite(scores).all():
        info["error"] = (info.get("error") or "") + " non-finite scores"
        return info
    res = lds(scores, masks, truth, target="loss", n_boot=2000, seed=0)
    info["lds"] = res.to_dict()
    return info


def _fmt(x: Any, nd: int = 3) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{nd}g}" if abs(x) < 1e4 else f"{x:.3e}"
    return str(x)


def markdown_table(rows: list[dict], train_throughput: float) -> str:
    """The results as a markdown table (one row per method configuration)."""
    head = ("| method | D/layer | c | r | LDS (95% CI) | tail-patch gain top-k minus random "
            "(95% CI) | bytes/ex | curv. bytes | build s | index thr. / train thr. | "
            "query cold (load+compute) s | query warm s | peak RSS MiB |")
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        if r.get("skip"):
            continue
        if r.get("error"):
            err = r["error"].strip().splitlines()[-1][:120].replace("|", "/")
            lines.append(f"| {r['method']} | {_fmt(r.get('D'))} | | | ERROR: {err} |" + " |" * 8)
            continue
        ld = r.get("lds", {})
        ci = (f"{ld.get('mean', float('nan')):.3f} "
              f"({ld.get('ci_low', 0):.3f}, {ld.get('ci_high', 0):.3f})")
        thr = r.get("index_throughput_ex_per_s")
        rel = f"{thr / train_throughput:.2f}" if thr else "-"
        qc, qw = r.get("query_cold", {}), r.get("query_warm", {})
        cold = "-"
        if "load_s" in qc:
            cold = (f"{qc['total_s']:.3f} ({qc['load_s']:.3f}+{qc['compute_s']:.3f})")
        warm = f"{qw.get('total_s', 0):.3f}" if qw else "-"
        tp = r.get("tail_patch")
        tps = (f"{tp['mean_diff']:.3g} ({tp['ci_low']:.3g}, {tp['ci_high']:.3g})" if tp else "-")
        name = r["method"] + (f" ({r['config']})" if r.get("config") else "")
        lines.append(
            f"| {name} | {_fmt(r.get('D'))} | {_fmt(r.get('c'))} | {_fmt(r.get('r'))} | {ci} "
            f"| {tps} "
            f"| {_fmt(r.get('store_bytes_per_example'))} | {_fmt(r.get('curvature_bytes'))} "
            f"| {_fmt(r.get('build_s'))} | {rel} | {cold} | {warm} "
            f"| {_fmt(r.get('peak_rss_mb'))} |")
    skipped = [r for r in rows if r.get("skip")]
    if skipped:
        lines.append("")
        lines.append("Skipped combinations: " + "; ".join(
            f"{r['method']} D={r['D']} c={r['c']} r={r['r']} ({r['skip']})" for r in skipped))
    return "\n".join(lines)


def pareto_plot(rows: list[dict], path: Path, title: str) -> None:
    """LDS against bytes per example, one marker per method family, Pareto front drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    fams: dict[str, list[tuple[float, float, float, float]]] = {}
    for r in rows:
        if r.get("skip") or r.get("error") or "lds" not in r:
            continue
        if not r.get("store_bytes_per_example"):
            continue
        ld = r["lds"]
        fams.setdefault(r["method"], []).append(
            (r["store_bytes_per_example"], ld["mean"], ld["ci_low"], ld["ci_high"]))
    for fam, pts in sorted(fams.items()):
        pts.sort()
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        err = [[p[1] - p[2] for p in pts], [p[3] - p[1] for p in pts]]
        line = ax.errorbar(xs, ys, yerr=err, fmt="o", alpha=0.5, label=fam, capsize=2)
        front, best = [], -np.inf
        for x, y in zip(xs, ys, strict=True):
            if y > best:
                front.append((x, y))
                best = y
        ax.plot([p[0] for p in front], [p[1] for p in front], "-",
                color=line[0].get_color())
    ax.set_xscale("log")
    ax.set_xlabel("store bytes per training example (measured on disk, log)")
    ax.set_ylabel("LDS (Spearman, mean over queries, 95% CI)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_results(name: str, meta: dict, rows: list[dict], md_extra: str = "") -> Path:
    """Write ``attribution_<name>.json``, ``.md`` and ``.png`` under benchmarks/results/."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    base = RESULTS / f"attribution_{name}"
    base.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1,
                                                    default=float))
    table = markdown_table(rows, meta["train_throughput_ex_per_s"])
    md = (f"# Attribution benchmark: {name}\n\nCommand: `{meta['command']}`\n\n"
          f"{meta.get('description', '')}\n\nEnvironment: {json.dumps(meta['environment'])}\n\n"
          f"Plain training throughput (same model, batch {meta['batch_size']}): "
          f"{meta['train_throughput_ex_per_s']:.0f} examples/s.\n\n{table}\n\n{md_extra}\n")
    base.with_suffix(".md").write_text(md)
    pareto_plot(rows, base.with_suffix(".png"), f"{name}: LDS vs bytes per example")
    return base


def command_line() -> str:
    """The command that produced this run, relative to the repository root."""
    return " ".join([".venv/bin/python", *[str(a) for a in sys.argv]])

