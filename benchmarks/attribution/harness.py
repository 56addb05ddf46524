"""The run shared by every setting script: arguments, masks, the tamis grid, anchors, tail-patch.

A setting script (``fmnist_mlp.py``, ``text_lm.py``, ``minilm_cls.py``) owns its data, model,
retraining function and task; everything it does with them afterwards is here, so that the
settings are scored by one piece of code:

1. :func:`setting_parser` -- the common command line (grid, anchors, threads, reuse, update);
2. :func:`fixed_masks` -- the saved alpha = 0.5 subsets every method is scored against;
3. :func:`score_grid` -- build, fit and query every tamis configuration (scores kept on disk);
4. :func:`score_anchors` -- the competing libraries, with LDS and the sign check;
5. :func:`add_tail_patch` -- the tail-patch gain of every row from its kept scores;
6. :func:`update_anchors` -- rerun chosen anchors alone against a finished result.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import (
    RESULTS,
    add_lds,
    clear_stores,
    command_line,
    environment,
    run_anchor,
    run_tamis,
    write_results,
)

from tamis.attribution.evaluation import ground_truth, load_masks, make_masks, save_masks

ANCHORS = ["dattri_logra", "dattri_trak", "traker", "kronfluence_ekfac", "bergson"]
TailPatchFn = Callable[[np.ndarray], dict]


def anchor_options(method: str) -> list[dict]:
    """Per-anchor configurations, projection sizes matching the tamis grid's D per layer."""
    if method == "dattri_logra":
        return [{"proj_dim_per_layer": d} for d in (256, 1024, 4096)]
    if method in ("dattri_trak", "traker"):
        return [{"proj_dim": d} for d in (256, 1024, 4096)]
    if method == "bergson":  # p x p per layer: D/layer = 256, 1024, 4096
        return [{"projection_dim": p} for p in (16, 32, 64)]
    return [{}]


def setting_parser(doc: str, name: str, **defaults: Any) -> argparse.ArgumentParser:
    """The arguments every setting takes; ``defaults`` overrides the setting's own values."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--subsets", type=int, default=50)
    p.add_argument("--seeds", type=int, default=1, help="retraining seeds averaged per subset")
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--n-queries", type=int, default=100)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--D", type=int, nargs="+", default=[256, 1024, 4096])
    p.add_argument("--c", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--r", type=int, nargs="+", default=[32, 128, 512])
    p.add_argument("--tail-c", type=int, nargs="*", default=[1, 8],
                   help="c values that also get a 'lorif+tail' row (isotropic tail)")
    p.add_argument("--anchors", nargs="*", default=ANCHORS, choices=ANCHORS)
    p.add_argument("--anchor-timeout", type=int, default=900,
                   help="seconds per anchor configuration; a timeout is recorded as its error")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reuse-anchors", action="store_true",
                   help="read back anchor configurations kept by an earlier run on the same "
                        "model.pt instead of rerunning them")
    p.add_argument("--update-anchors", nargs="+", metavar="METHOD", choices=ANCHORS,
                   help="rerun only these anchors on the cached model/masks/ground truth and "
                        f"replace their rows in benchmarks/results/attribution_{name}.json")
    p.set_defaults(**defaults)
    return p


DATA_FILES = ("train_x", "train_y", "query_x", "query_y")


def save_data(cache: Path, *tensors: torch.Tensor) -> None:
    """Write train_x, train_y, query_x, query_y as .npy: what the anchor scripts read back."""
    for name, t in zip(DATA_FILES, tensors, strict=True):
        np.save(cache / f"{name}.npy", t.numpy())


def load_data(cache: Path) -> tuple[torch.Tensor, ...]:
    """The (train_x, train_y, query_x, query_y) tensors written by :func:`save_data`."""
    return tuple(torch.from_numpy(np.load(cache / f"{name}.npy")) for name in DATA_FILES)


def fixed_masks(cache: Path, n: int, subsets: int) -> np.ndarray:
    """The (subsets, n) alpha = 0.5 training masks, made once (seed 0) and saved in the cache."""
    path = cache / f"masks-M{subsets}-N{n}.npy"
    if path.exists():
        return load_masks(path)
    masks = make_masks(n, subsets, alpha=0.5, seed=0)
    save_masks(path, masks)
    return masks


def with_tail_rows(rows: list[dict], tail_c: list[int]) -> list[dict]:
    """The grid plus a 'lorif+tail' (isotropic tail) copy of each LoRIF row whose c is chosen."""
    return rows + [{**r, "method": "tamis lorif+tail"} for r in rows
                   if r["method"] == "tamis lorif" and not r.get("skip") and r["c"] in tail_c]


def score_grid(rows: list[dict], task: Any, model: torch.nn.Module, train: Any, queries: Any,
               cache: Path, batch_size: int, collate_fn: Any = None) -> None:
    """Run every tamis row (skips kept as such); scores saved to ``cache``, errors recorded."""
    workdir = cache / "stores"
    for spec in rows:
        if spec.get("skip"):
            continue
        print("tamis", spec, flush=True)
        try:
            # a row may carry its own relative damping (default: the library's); its scores
            # file then says so, the default rows keep their names
            damp = {"damping": spec["damping"]} if spec.get("damping") is not None else {}
            scores, info = run_tamis(spec, task, model, train, queries, workdir, batch_size,
                                     collate_fn, **damp)
            spec.update(info)
            tag = f"-damp{spec['damping']:g}" if damp else ""
            fname = cache / (f"scores-{spec['method'].split()[-1]}-D{spec['D']}-c{spec['c']}"
                             f"-r{spec['r']}{tag}.npy")
            np.save(fname, scores)
            spec["_scores_file"] = str(fname)
        except Exception as exc:  # record, never drop
            spec["error"] = f"{type(exc).__name__}: {exc}"
        print("  ->", spec.get("error", "ok"), spec.get("rank_c_energy", ""), flush=True)
    clear_stores(workdir)


def add_grid_lds(rows: list[dict], masks: np.ndarray, truth: np.ndarray) -> None:
    """LDS of every tamis row whose scores were kept."""
    for spec in rows:
        if spec.get("_scores_file") and not spec.get("error"):
            add_lds(spec, np.load(spec["_scores_file"]), masks, truth)


def reference_scores(cache: Path, rows: list[dict]) -> np.ndarray | None:
    """tamis dense LoGRA scores at the largest D (the anchors' sign check), if kept."""
    d_max = max((r["D"] for r in rows if r.get("method") == "tamis logra"), default=None)
    path = cache / f"scores-logra-D{d_max}-cNone-rNone.npy"
    return np.load(path) if path.exists() else None


def score_anchors(name: str, methods: list[str], cache: Path, masks: np.ndarray,
                  truth: np.ndarray, timeout: int, reference: np.ndarray | None = None,
                  reuse: bool = False, wait_s: float = 0.0,
                  options: Callable[[str], list[dict]] = anchor_options) -> list[dict]:
    """Run each anchor configuration (see ``common.run_anchor``); LDS and the sign check.

    The sign check is the mean per-query Pearson correlation with ``reference`` (tamis dense
    LoGRA); it must be positive when the anchor's scores follow the convention.
    """
    rows = []
    for method in methods:
        for opts in options(method):
            print("anchor", method, opts, flush=True)
            info = run_anchor(name, method, cache, opts, timeout, reuse=reuse, wait_s=wait_s)
            if "scores_path" in info:
                s_anchor = np.load(info["scores_path"])
                add_lds(info, s_anchor, masks, truth)
                if reference is not None:
                    info["mean_pearson_with_tamis_logra"] = float(np.mean(
                        [np.corrcoef(s_anchor[i], reference[i])[0, 1]
                         for i in range(len(reference))]))
            rows.append(info)
            print("  ->", info.get("lds", info.get("error", "")[-300:]), flush=True)
    return rows


def add_tail_patch(rows: list[dict], tail_patch_fn: TailPatchFn, k: int = 10) -> None:
    """Tail-patch gain of every scored row, from its top-``k`` training examples per query."""
    for r in rows:
        path = r.get("scores_path") or r.get("_scores_file")
        if r.get("skip") or r.get("error") or not path:
            continue
        top = np.argsort(-np.load(path), axis=1, kind="stable")[:, :k]
        r["tail_patch"] = tail_patch_fn(top)


def plain_train_throughput(step: Callable[[int], None], n: int, batch_size: int,
                           repeats: int = 2) -> float:
    """Examples per second of plain training: ``step(lo)`` trains on batch ``[lo, lo+bs)``."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for lo in range(0, n, batch_size):
            step(lo)
        times.append(time.perf_counter() - t0)
    return n / min(times)


def finish(name: str, meta: dict, rows: list[dict],
           md_extra: Callable[[list[dict]], str] = lambda rows: "") -> Path:
    """Targets, then JSON + markdown + Pareto plot under benchmarks/results/."""
    from targets import targets_report

    meta.setdefault("command", command_line())
    meta.setdefault("environment", environment())
    notes = targets_report(rows, meta)
    meta["targets"] = notes["targets"]
    extra = md_extra(rows)
    base = write_results(name, meta, rows, notes["markdown"] + ("\n\n" + extra if extra else ""))
    print(notes["markdown"])
    return base


def update_anchors(name: str, methods: list[str], cache: Path, timeout: int,
                   tail_patch_fn: TailPatchFn,
                   md_extra: Callable[[list[dict]], str] = lambda rows: "",
                   reuse: bool = False,
                   load_truth: Callable[[dict], tuple[np.ndarray, np.ndarray]] | None = None,
                   anchor_rows: Callable[..., list[dict]] | None = None) -> Path:
    """Rerun only ``methods`` (anchors) and replace their rows in an existing result.

    Reads ``benchmarks/results/attribution_<name>.json``; the masks and the ground truth
    come from the cache (the ground truth's key is rebuilt from the stored ``meta``; it is
    never recomputed: a missing one is an error). Each anchor gets LDS, the sign check and
    the tail-patch exactly as in the full run; the old rows of those methods are replaced in
    place and the JSON/md/png and the targets are rewritten. The tamis grid is not rerun.

    A setting whose ground truth is cached differently passes ``load_truth(meta) -> (masks,
    truth)``; one whose anchors are run differently (options, timeouts, notes) passes
    ``anchor_rows(methods, masks, truth, reference) -> rows`` in place of
    :func:`score_anchors`.
    """
    res = json.loads((RESULTS / f"attribution_{name}.json").read_text())
    meta, rows = res["meta"], res["rows"]
    if load_truth is not None:
        masks, truth = load_truth(meta)
    else:
        masks = load_masks(cache / f"masks-M{meta['n_subsets']}-N{meta['setting']['n']}.npy")

        def no_retrain(mask: np.ndarray, seed: int) -> np.ndarray:
            raise RuntimeError(f"ground truth of {name} is not cached under {cache}: run the "
                               "full benchmark first")

        truth = ground_truth(no_retrain, masks, cache, meta["setting"],
                             n_seeds=meta["n_seeds_per_subset"], progress=False)
    if anchor_rows is not None:
        new = anchor_rows(methods, masks, truth, reference_scores(cache, rows))
    else:
        new = score_anchors(name, methods, cache, masks, truth, timeout,
                            reference_scores(cache, rows), reuse=reuse)
    add_tail_patch(new, tail_patch_fn)
    at = next((i for i, r in enumerate(rows) if r.get("method") in methods), len(rows))
    kept = [r for r in rows if r.get("method") not in methods]
    at -= sum(1 for r in rows[:at] if r.get("method") in methods)
    rows = kept[:at] + new + kept[at:]
    meta.setdefault("anchor_updates", []).append(
        {"command": command_line(), "methods": list(methods), "environment": environment(),
         "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    done = "\n".join(f"- `{u['command']}` ({u['date_utc']}): rows of {', '.join(u['methods'])} "
                     "rerun alone on the cached model, masks and ground truth"
                     for u in meta["anchor_updates"])
    return finish(name, meta, rows,
                  lambda rows: f"Anchor updates after the run above:\n\n{done}\n\n"
                  + md_extra(rows))

