"""Fitted timing model of the attribution pipeline: index (build), curvature fit, query.

Measures, in one run and on small grids (one factor varied at a time around a base point,
2 repeats, median), the wall time of

* the store build (``build_store``) on a small sequence model (``--width``-wide tanh
  Linear layers over ``--tokens`` positions, so per-example gradients have rank > 1 and c
  matters) over N, projected D = d1 x d2, c (and dense LoGRA rows) and the number of layers;
* the rank-r curvature fit (``fit_curvature`` kind ``"lowrank"``, randomized SVD with
  2 power iterations = 4 passes) on synthetic LoRIF stores over N, D, r, c and layers;
* one query batch (``score_gradients``, 8 queries) over synthetic LoRIF and dense stores
  over N, D, c and layers, for the LoRIF ``factored`` and ``reconstruct`` kernels and the
  dense store, warm (page cache hot) and cold (the store's files evicted with
  ``drop_page_cache`` before open + score).

Synthetic stores are written through ``StoreWriter`` as ``query_scaling.py`` writes them
(the dense rows are the exact products L R^T of the LoRIF rows). Each component's time is
then fitted by non-negative least squares, weighted by 1 / t (relative errors), on work
units computed from the kernels' sizes::

    t_build = a + flops_model / F_model + flops_factor / F_factor + N L tau
    t_fit   = a + flops_gemm / F_gemm + bytes_rebuilt / B_rebuild + flops_small / F_small
    t_query = a + bytes_read / B_read + flops_gemm / F_gemm + bytes_tmp / B_tmp

The points with the largest N of each component are held out of the fit and predicted.
The fitted coefficients are then used, next to the exact size formulas of
``cost_model.py``, to extrapolate to the 70B x 10M-example scenario of ``docs/scaling.md``.

    .venv/bin/python benchmarks/attribution/timing_model.py

Writes benchmarks/results/attribution_timing_model.{json,md,png}; scratch stores live in
benchmarks/cache/timing_model/ and are deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import nnls
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import CACHE, RESULTS, command_line, drop_page_cache, environment  # noqa: E402
from cost_model import curvature_bytes, store_bytes  # noqa: E402
from query_scaling import header  # noqa: E402

from tamis._io import write_text_atomic  # noqa: E402
from tamis.attribution import (  # noqa: E402
    AttributionTask,
    BuildConfig,
    CurvatureConfig,
    FactorConfig,
    FactorStore,
    ProjectionConfig,
    ScoreConfig,
    build_store,
)
from tamis.attribution.curvature import (  # noqa: E402
    Curvature,
    CurvatureBlock,
    fit_curvature,
    store_identity,
)
from tamis.attribution.projection import LayerSpec  # noqa: E402
from tamis.attribution.scoring import score_gradients  # noqa: E402
from tamis.attribution.store import StoreWriter  # noqa: E402

ROOT = CACHE / "timing_model"
N_QUERIES = 8
OVERSAMPLE = 10
POWER_ITERS = 2


# -- grids -------------------------------------------------------------------------------
def one_at_a_time(base: dict, axes: dict[str, list], extra: list[dict] = ()) -> list[dict]:
    """The base point, each axis varied alone around it, then ``extra`` points (deduplicated)."""
    pts = [dict(base)]
    for key, values in axes.items():
        pts += [{**base, key: v} for v in values]
    pts += [{**base, **e} for e in extra]
    out, seen = [], set()
    for p in pts:
        key = json.dumps(p, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


def median_time(fn: Callable[[], float], repeats: int) -> tuple[float, list[float]]:
    """Median of ``repeats`` calls of ``fn`` (each returns its own seconds)."""
    times = [fn() for _ in range(repeats)]
    return statistics.median(times), times


# -- build -------------------------------------------------------------------------------
class SeqNet(nn.Module):
    """``layers`` tanh Linear(width, width) over (B, T, width) inputs, mean-pooled head."""

    def __init__(self, width: int, layers: int, classes: int = 10) -> None:
        super().__init__()
        self.body = nn.ModuleList([nn.Linear(width, width) for _ in range(layers)])
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for lin in self.body:
            x = torch.tanh(lin(x))
        return self.head(x.mean(1))


class SeqTask(AttributionTask):
    """Cross-entropy of the pooled logits; tracks the body layers only."""

    def compute_train_loss(self, batch: tuple, model: nn.Module) -> torch.Tensor:
        """Per-example cross-entropy."""
        x, y = batch
        return nn.functional.cross_entropy(model(x), y, reduction="none")

    def compute_measurement(self, batch: tuple, model: nn.Module) -> torch.Tensor:
        """The query loss."""
        return self.compute_train_loss(batch, model)

    def tracked_modules(self, model: nn.Module) -> list[str]:
        """``body.0`` ... ``body.{L-1}``."""
        return [f"body.{i}" for i in range(len(model.body))]


def factor_flops(t: int, d1: int, d2: int, c: int | None) -> float:
    """Approximate flops to turn one example's (A, B) of one layer into its store row.

    Mirrors ``factors.low_rank_factors``: dense G = A^T B (2 T d1 d2) for LoGRA; nothing for
    T <= c; thin QRs of A^T and B^T plus a T x T SVD for T < min(d1, d2); else G, its Gram
    matrix on the smaller side and an eigh (counted as 9 m^3).
    """
    if c is None:
        return 2.0 * t * d1 * d2
    if t <= c:
        return 0.0
    if t < min(d1, d2):
        return 6.0 * t * t * (d1 + d2) + 22.0 * t**3
    lo, hi = min(d1, d2), max(d1, d2)
    return 2.0 * t * d1 * d2 + 2.0 * hi * lo * lo + 9.0 * lo**3 + 2.0 * hi * lo * min(c, lo)


def model_flops(t: int, layer_dims: list[tuple[int, int]], d1: int, d2: int) -> float:
    """Forward + input-gradient backward (4 T I O) and the two projections, per example."""
    return sum(4.0 * t * i * o + 2.0 * t * (i * d1 + o * d2) for i, o in layer_dims)


def build_point(p: dict, width: int, tokens: int, repeats: int) -> dict:
    """Time ``build_store`` for one grid point (fresh store folder each repeat)."""
    torch.manual_seed(0)
    model = SeqNet(width, p["L"])
    g = torch.Generator().manual_seed(1)
    data = torch.utils.data.TensorDataset(torch.randn(p["N"], tokens, width, generator=g),
                                          torch.randint(0, 10, (p["N"],), generator=g))
    path = ROOT / "build"
    proj = ProjectionConfig(d1=p["d1"], d2=p["d2"], seed=0)
    cfg = BuildConfig(batch_size=64, shard_size=4096, progress=False)

    def once() -> float:
        shutil.rmtree(path, ignore_errors=True)
        t0 = time.perf_counter()
        build_store(SeqTask(), model, data, path, proj, FactorConfig(rank=p["c"]), cfg)
        return time.perf_counter() - t0

    t, times = median_time(once, repeats)
    bpe = FactorStore.open(path, verify=False).bytes_per_example
    shutil.rmtree(path, ignore_errors=True)
    in_dim = width + 1  # bias column
    dims = [(in_dim, width)] * p["L"]
    return {**p, "t_s": t, "times_s": times, "bytes_per_example": bpe,
            "flops_model": p["N"] * model_flops(tokens, dims, p["d1"], p["d2"]),
            "flops_factor": p["N"] * p["L"] * factor_flops(tokens, p["d1"], p["d2"], p["c"]),
            "example_layers": p["N"] * p["L"]}


BUILD_UNITS = ["one", "flops_model", "flops_factor", "example_layers"]


# -- synthetic stores --------------------------------------------------------------------
def specs_for(layers: int, d1: int, d2: int) -> list[LayerSpec]:
    """``layers`` identical projected layers of a nominal 1024 x 1024 linear map."""
    return [LayerSpec(f"layer{i}", 1024, 1024, d1, d2, False, False) for i in range(layers)]


def write_stores(root: Path, specs: list[LayerSpec], n: int, c: int, dense: bool,
                 shard: int = 4096) -> None:
    """LoRIF rank-c rows (and, with ``dense``, their exact products) with decaying spectra."""
    proj = ProjectionConfig(d1=specs[0].d1, d2=specs[0].d2, seed=0)
    w_lo = StoreWriter(root / "lorif", header(specs, c, n, shard, proj), overwrite=True)
    w_de = (StoreWriter(root / "dense", header(specs, None, n, shard, proj), overwrite=True)
            if dense else None)
    for index, start in enumerate(range(0, n, shard)):
        m = min(shard, n - start)
        g = torch.Generator().manual_seed(index)
        lo_parts, de_parts = [], []
        for s in specs:
            sa = torch.arange(1, s.d1 + 1, dtype=torch.float32) ** -0.5
            sb = torch.arange(1, s.d2 + 1, dtype=torch.float32) ** -0.5
            left = torch.randn(m, s.d1, c, generator=g) * sa[None, :, None]
            right = torch.randn(m, s.d2, c, generator=g) * sb[None, :, None]
            lo_parts += [left.reshape(m, -1), right.reshape(m, -1)]
            if dense:
                de_parts.append((left @ right.transpose(1, 2)).reshape(m, -1))
        energy = {s.name: float(m) for s in specs}
        w_lo.write_shard(index, start, torch.cat(lo_parts, 1).half().numpy(), energy)
        if w_de is not None:
            w_de.write_shard(index, start, torch.cat(de_parts, 1).half().numpy(), energy)
    shards = -(-n // shard)
    w_lo.finish(shards)
    if w_de is not None:
        w_de.finish(shards)


# -- curvature ---------------------------------------------------------------------------
def curvature_units(n: int, d: int, r: int, c: int, layers: int) -> dict:
    """Work of the randomized SVD (first pass, 2 power passes, projection pass) per layer.

    Every pass rebuilds the chunk's N x D rows from the factors (bytes_rebuilt, float32)
    and multiplies them twice by a D x k basis (k = r + oversampling); between passes a
    D x k QR, and at the end a k x k eigh and the D x k x k rotation (flops_small).
    """
    k = r + OVERSAMPLE
    passes = 2 + POWER_ITERS
    gemm = (2 + POWER_ITERS) * 4.0 * n * d * k + (2.0 * n * d * k + 2.0 * n * k * k)
    rebuild = passes * (4.0 * n * d + 2.0 * n * d * c)  # write + the rank-c product flops/2
    small = (1 + POWER_ITERS) * 4.0 * d * k * k + 2.0 * d * k * k + 10.0 * k**3
    return {"passes": passes, "flops_gemm": layers * gemm, "bytes_rebuilt": layers * rebuild,
            "flops_small": layers * small}


def curvature_point(p: dict, repeats: int) -> dict:
    """Time the lowrank fit on a synthetic LoRIF store written for this point."""
    root = ROOT / "curv"
    shutil.rmtree(root, ignore_errors=True)
    specs = specs_for(p["L"], p["d1"], p["d2"])
    write_stores(root, specs, p["N"], p["c"], dense=False)
    store = FactorStore.open(root / "lorif", verify=False)
    cfg = CurvatureConfig(kind="lowrank", rank=p["r"], oversample=OVERSAMPLE,
                          power_iters=POWER_ITERS, chunk_size=4096)
    passes = []

    def once() -> float:
        t0 = time.perf_counter()
        curv = fit_curvature(store, cfg, torch.float32, progress=False)
        passes.append(curv.extra["passes"])
        return time.perf_counter() - t0

    t, times = median_time(once, repeats)
    shutil.rmtree(root, ignore_errors=True)
    d = p["d1"] * p["d2"]
    units = curvature_units(p["N"], d, p["r"], p["c"], p["L"])
    assert passes[0] == units["passes"], (passes, units)
    return {**p, "D": d, "t_s": t, "times_s": times, **units}


CURV_UNITS = ["one", "flops_gemm", "bytes_rebuilt", "flops_small"]


# -- query -------------------------------------------------------------------------------
def identity_curvature(store: FactorStore) -> Curvature:
    """The identity preconditioner bound to ``store`` (query preconditioning is O(nq D r),
    independent of N, and not what is timed here)."""
    blocks = [CurvatureBlock([lay["name"]], [lay["d1"] * lay["d2"]], 1.0, 1.0)
              for lay in store.layers]
    return Curvature("identity", {}, blocks, store_identity(store))


def query_units(kernel: str, n: int, d1: int, d2: int, c: int, layers: int) -> dict:
    """Bytes read from the store, big-GEMM flops and float32 intermediates of one batch.

    dense: q G^T (2 nq N D); reconstruct: G = L R^T for every row (N D floats written,
    2 N D c flops) then q G^T; factored: (nq d1 x d2) @ (d2 x N c) (2 nq N D c flops,
    nq d1 N c floats written), then contracted with L.
    """
    d, nq = d1 * d2, N_QUERIES
    if kernel == "dense":
        read, gemm, tmp = 2.0 * n * d, 2.0 * nq * n * d, 4.0 * n * d
    elif kernel == "reconstruct":
        read, gemm = 2.0 * n * c * (d1 + d2), 2.0 * nq * n * d
        tmp = 4.0 * n * d + 4.0 * n * c * (d1 + d2)
    else:
        read, gemm = 2.0 * n * c * (d1 + d2), 2.0 * nq * n * d * c
        tmp = 4.0 * nq * d1 * n * c + 8.0 * n * c * (d1 + d2)
    return {"bytes_read": layers * read, "flops_gemm": layers * gemm, "bytes_tmp": layers * tmp}


QUERY_UNITS = ["one", "bytes_read", "flops_gemm", "bytes_tmp"]


def time_query(path: Path, queries: dict, cfg: ScoreConfig, cold: bool) -> float:
    """Open + score once; with ``cold`` the store's files are evicted first."""
    if cold:
        drop_page_cache(path)
    t0 = time.perf_counter()
    store = FactorStore.open(path, verify=False)
    score_gradients(queries, store, identity_curvature(store), cfg)
    return time.perf_counter() - t0


def query_points(p: dict, repeats: int, with_dense: bool) -> list[dict]:
    """Every kernel on the stores of one grid point, cold then warm, ``repeats`` times."""
    root = ROOT / "query"
    shutil.rmtree(root, ignore_errors=True)
    specs = specs_for(p["L"], p["d1"], p["d2"])
    write_stores(root, specs, p["N"], p["c"], dense=with_dense)
    g = torch.Generator().manual_seed(123)
    queries = {s.name: torch.randn(N_QUERIES, s.dim, generator=g) for s in specs}
    runs = [("factored", "lorif", "factored"), ("reconstruct", "lorif", "reconstruct")]
    if with_dense:
        runs.append(("dense", "dense", "reconstruct"))
    rows = []
    for kernel, sub, score_kernel in runs:
        cfg = ScoreConfig(kernel=score_kernel, chunk_size=4096, top_k=10, keep_scores=False,
                          progress=False, normalize="none")
        path = root / sub
        times = {"cold": [], "warm": []}
        for _ in range(repeats):
            times["cold"].append(time_query(path, queries, cfg, cold=True))
            times["warm"].append(time_query(path, queries, cfg, cold=False))
        units = query_units(kernel, p["N"], p["d1"], p["d2"], p["c"], p["L"])
        for cache in ("cold", "warm"):
            rows.append({**p, "kernel": kernel, "cache": cache,
                         "D": p["d1"] * p["d2"], "t_s": statistics.median(times[cache]),
                         "times_s": times[cache], **units})
    shutil.rmtree(root, ignore_errors=True)
    return rows


# -- fitting -----------------------------------------------------------------------------
def fit(rows: list[dict], units: list[str], held: Callable[[dict], bool]) -> dict:
    """NNLS of t on the work units, weighted by 1/t, on the rows not held out."""
    def design(rs: list[dict]) -> np.ndarray:
        return np.array([[1.0 if u == "one" else float(r[u]) for u in units] for r in rs])

    train = [r for r in rows if not held(r)]
    test = [r for r in rows if held(r)]
    x, t = design(train), np.array([r["t_s"] for r in train])
    scale = np.abs(x).max(0)
    scale[scale == 0] = 1.0
    w = 1.0 / t
    coef, _ = nnls((x / scale) * w[:, None], t * w)
    coef = coef / scale
    pred_all = design(rows) @ coef
    for r, pr in zip(rows, pred_all, strict=True):
        r["predicted_s"] = float(pr)
        r["held_out"] = bool(held(r))
        r["rel_error"] = float(pr / r["t_s"] - 1.0)
    pred = x @ coef
    ss_res = float(((t - pred) ** 2).sum())
    ss_tot = float(((t - t.mean()) ** 2).sum())
    lt, lp = np.log(t), np.log(np.maximum(pred, 1e-12))
    r2_log = 1.0 - float(((lt - lp) ** 2).sum()) / float(((lt - lt.mean()) ** 2).sum())

    def errs(rs: list[dict]) -> dict:
        e = [abs(r["rel_error"]) for r in rs]
        return {"n": len(e), "median": float(np.median(e)) if e else None,
                "max": float(max(e)) if e else None}

    return {"units": units, "coef": dict(zip(units, coef.tolist(), strict=True)),
            "r2": 1.0 - ss_res / ss_tot, "r2_log": r2_log, "fit_points": len(train),
            "fit_error": errs(train), "held_out_error": errs(test)}


def rates(f: dict) -> dict:
    """Coefficients as rates: GFLOP/s for flop units, GB/s for byte units, us for counts."""
    out = {}
    for u, c in f["coef"].items():
        if u == "one":
            out["intercept_s"] = c
        elif u.startswith("flops"):
            out[f"{u}_gflop_s"] = (1.0 / c / 1e9) if c > 0 else float("inf")
        elif u.startswith("bytes"):
            out[f"{u}_gb_s"] = (1.0 / c / 1e9) if c > 0 else float("inf")
        else:
            out[f"{u}_us"] = c * 1e6
    return out


def predict(f: dict, units: dict) -> float:
    """Seconds predicted by fit ``f`` for the work ``units`` (intercept included)."""
    return sum(c * (1.0 if u == "one" else units[u]) for u, c in f["coef"].items())


# -- extrapolation -----------------------------------------------------------------------
# Llama-2/3-70B shapes (assumed here, not from the paper): hidden 8192, MLP 28672, 8 KV
# heads of 128 -> q, k, v, o, gate, up, down per block, 80 blocks.
HIDDEN, MLP_DIM, KV = 8192, 28672, 1024
BLOCK = [(HIDDEN, HIDDEN), (HIDDEN, KV), (HIDDEN, KV), (HIDDEN, HIDDEN), (HIDDEN, MLP_DIM),
         (HIDDEN, MLP_DIM), (MLP_DIM, HIDDEN)]


def extrapolate(fits: dict, n: int, tokens: int, ranks: list[int]) -> dict:
    """The 70B x N scenario with the fitted coefficients, next to the exact sizes."""
    d1 = d2 = 64
    layers = 80 * len(BLOCK)
    dims = BLOCK * 80
    lorif_lay, dense_lay = [(d1, d2, 1)] * layers, [(d1, d2, None)] * layers
    params = sum(i * o for i, o in dims)
    out: dict = {"N": n, "tokens_per_example": tokens, "layers": layers, "d1": d1, "d2": d2,
                 "params_in_tracked_linears": params,
                 "store_bytes_per_example": {"lorif_c1": store_bytes(lorif_lay),
                                             "dense": store_bytes(dense_lay)},
                 "curvature_bytes": {"lowrank_r256": curvature_bytes([(d1, d2)] * layers,
                                                                     "lowrank"),
                                     "dense": curvature_bytes([(d1, d2)] * layers, "dense")}}
    build = {}
    for name, c in (("lorif_c1", 1), ("dense", None)):
        u = {"flops_model": n * model_flops(tokens, dims, d1, d2),
             "flops_factor": n * layers * factor_flops(tokens, d1, d2, c),
             "example_layers": n * layers}
        build[name] = {**u, "s": predict(fits["build"], u)}
    out["build"] = build
    cu = curvature_units(n, d1 * d2, 256, 1, layers)
    curv = {"lowrank_r256": {**cu, "s": predict(fits["curvature"], cu)}}
    # dense LoGRA: one pass accumulating G^T G (2 N D^2 per layer) at the fitted GEMM rate,
    # the rows rebuilt as in a lowrank pass, then a D x D eigh per layer (~9 D^3): derived
    # from the lowrank fit's coefficients, not measured
    dd = d1 * d2
    du = {"flops_gemm": layers * 2.0 * n * dd * dd, "bytes_rebuilt": layers * 6.0 * n * dd,
          "flops_small": layers * 9.0 * dd**3}
    curv["dense_logra_derived"] = {**du, "s": predict(fits["curvature"], du)}
    out["curvature"] = curv
    query = {}
    for kernel in ("factored", "reconstruct", "dense"):
        u = query_units(kernel, n, d1, d2, 1, layers)
        query[kernel] = {**u, **{cache: predict(fits[f"query_{cache}"], u)
                                 for cache in ("cold", "warm")}}
    out["query"] = query
    out["ranks"] = {}
    for w in ranks:  # everything streams shards: each rank does 1/W of every pass
        out["ranks"][w] = {
            "build_lorif_h": build["lorif_c1"]["s"] / w / 3600,
            "build_dense_h": build["dense"]["s"] / w / 3600,
            "curvature_lowrank_h": curv["lowrank_r256"]["s"] / w / 3600,
            "curvature_dense_h": curv["dense_logra_derived"]["s"] / w / 3600,
            **{f"query_{k}_{cache}_s": query[k][cache] / w
               for k in ("factored", "reconstruct", "dense") for cache in ("cold", "warm")}}
    return out


# -- plot and report ---------------------------------------------------------------------
def plot(components: dict[str, list[dict]], fits: dict, path: Path) -> None:
    """Measured against predicted seconds per component, log-log, held-out points marked."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(9.5, 8.5))
    markers = {"factored": "o", "reconstruct": "s", "dense": "^"}
    for ax, (name, rows) in zip(axes.flat, components.items(), strict=False):
        groups: dict[str, list[dict]] = {}
        for r in rows:
            groups.setdefault(r.get("kernel") or ("dense" if r.get("c") is None and
                                                    name == "build" else "lorif"), []).append(r)
        for g, rs in groups.items():
            for held, face in ((False, None), (True, "none")):
                sel = [r for r in rs if r["held_out"] == held]
                if not sel:
                    continue
                ax.scatter([r["predicted_s"] for r in sel], [r["t_s"] for r in sel],
                           marker=markers.get(g, "o"), facecolors=face,
                           edgecolors="C3" if held else None, s=36 if held else 22,
                           label=f"{g}{' (held out)' if held else ''}")
        lo = min(min(r["t_s"], r["predicted_s"]) for r in rows) * 0.7
        hi = max(max(r["t_s"], r["predicted_s"]) for r in rows) * 1.4
        ax.plot([lo, hi], [lo, hi], "k:", lw=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        f = fits[name]
        ho = f["held_out_error"]
        ax.set_title(f"{name}: R2 {f['r2']:.3f}, held-out err med {100 * ho['median']:.0f}% "
                     f"max {100 * ho['max']:.0f}%", fontsize=8)
        ax.set_xlabel("predicted s (fitted model)")
        ax.set_ylabel("measured s (median of repeats)")
        ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _g(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 1e5 else f"{x:.3e}"


def report(result: dict) -> str:
    """The markdown report."""
    fits, ex = result["fits"], result["extrapolation"]
    lines = ["# Attribution timing model (fitted)", "",
             f"Command: `{result['command']}`"
             + (f" (fits and report redone from its JSON with `{result['refit_command']}`)"
                if result.get("refit_command") else ""), "",
             f"Environment: {json.dumps(result['environment'])}", "",
             f"Wall time of the run: {result['wall_s']:.0f} s. {result['description']}", "",
             "## Fitted coefficients", "",
             "NNLS weighted by 1/t (minimises relative error). Rates are 1 / coefficient. "
             "R2 on the fitted points (seconds; and on log seconds). Held-out points: the "
             "largest N of each component, not used in the fit.", "",
             "| component | model | coefficients as rates | R2 (log) | fit points, rel. err. "
             "median / max | held-out points, rel. err. median / max |",
             "|---|---|---|---|---|---|"]
    for name, f in fits.items():
        rt = ", ".join(f"{k} {_g(v)}" if np.isfinite(v) else f"{k} - (coefficient 0)"
                       for k, v in f["rates"].items())
        fe, he = f["fit_error"], f["held_out_error"]
        lines.append(f"| {name} | {f['formula']} | {rt} | {f['r2']:.3f} ({f['r2_log']:.3f}) "
                     f"| {fe['n']}, {100 * fe['median']:.0f}% / {100 * fe['max']:.0f}% "
                     f"| {he['n']}, {100 * he['median']:.0f}% / {100 * he['max']:.0f}% |")
    lines += ["", "![measured vs predicted](attribution_timing_model.png)", "",
              "## Measured points", ""]
    for name, rows in result["points"].items():
        keys = [k for k in ("kernel", "cache", "N", "d1", "d2", "c", "r", "L") if k in rows[0]]
        lines += [f"### {name}", "", "| " + " | ".join(keys) + " | measured s | predicted s | "
                  "rel. err. | held out |", "|" + "---|" * (len(keys) + 4)]
        for r in rows:
            vals = " | ".join(str(r.get(k)) for k in keys)
            lines.append(f"| {vals} | {r['t_s']:.3f} | {r['predicted_s']:.3f} "
                         f"| {100 * r['rel_error']:+.0f}% | {'yes' if r['held_out'] else ''} |")
        lines.append("")
    bpe, cb = ex["store_bytes_per_example"], ex["curvature_bytes"]
    lines += [
        f"## Extrapolation: 70B model, {ex['N']:,} examples, {ex['layers']} modules at "
        f"{ex['d1']} x {ex['d2']}, float16", "",
        f"Assumed: Llama-2/3-70B linear shapes ({ex['params_in_tracked_linears'] / 1e9:.1f}B "
        f"parameters in the tracked modules), {ex['tokens_per_example']} tokens per example, "
        f"{N_QUERIES} queries per batch. Sizes are exact formulas: store LoRIF c=1 "
        f"{bpe['lorif_c1']:,} B/example ({bpe['lorif_c1'] * ex['N'] / 1e12:.2f} TB), dense "
        f"{bpe['dense']:,} B/example ({bpe['dense'] * ex['N'] / 1e12:.1f} TB); curvature "
        f"lowrank r=256 {cb['lowrank_r256'] / 1e9:.2f} GB, dense {cb['dense'] / 1e9:.1f} GB. "
        "Times use the coefficients fitted above on this shared 2-core CPU (one thread); "
        "W ranks divide every streamed pass by W (the store sharded, each rank on its own "
        "disk and cores; all-reduces not modelled). **These coefficients do not transfer to "
        "GPUs or to other disks**: the table says how the work grows, not how long a real "
        "cluster takes.", "",
        "| W ranks | build LoRIF c=1, h | build dense, h | curvature lowrank r=256, h | "
        "curvature dense (derived), h | query LoRIF factored cold / warm, s | query LoRIF "
        "reconstruct cold / warm, s | query dense cold / warm, s |",
        "|---|---|---|---|---|---|---|---|"]
    for w, r in ex["ranks"].items():
        lines.append(
            f"| {w} | {_g(r['build_lorif_h'])} | {_g(r['build_dense_h'])} "
            f"| {_g(r['curvature_lowrank_h'])} | {_g(r['curvature_dense_h'])} "
            f"| {_g(r['query_factored_cold_s'])} / {_g(r['query_factored_warm_s'])} "
            f"| {_g(r['query_reconstruct_cold_s'])} / {_g(r['query_reconstruct_warm_s'])} "
            f"| {_g(r['query_dense_cold_s'])} / {_g(r['query_dense_warm_s'])} |")
    q = ex["query"]
    lines += ["", "Work behind the table (W = 1): build model flops "
              f"{ex['build']['lorif_c1']['flops_model']:.3e}, factorisation flops "
              f"{ex['build']['lorif_c1']['flops_factor']:.3e}; curvature GEMM flops "
              f"{ex['curvature']['lowrank_r256']['flops_gemm']:.3e} (lowrank) vs "
              f"{ex['curvature']['dense_logra_derived']['flops_gemm']:.3e} (dense); query "
              f"bytes read {q['factored']['bytes_read']:.3e} (LoRIF) vs "
              f"{q['dense']['bytes_read']:.3e} (dense), GEMM flops "
              f"{q['factored']['flops_gemm']:.3e} (factored), "
              f"{q['reconstruct']['flops_gemm']:.3e} (reconstruct / dense).", "",
              "Ratios from the fitted model (W = 1): storage dense / LoRIF c=1 "
              f"{bpe['dense'] / bpe['lorif_c1']:.0f}x (exact); query dense / LoRIF factored "
              f"{q['dense']['cold'] / q['factored']['cold']:.1f}x cold, "
              f"{q['dense']['warm'] / q['factored']['warm']:.1f}x warm; dense / LoRIF "
              f"reconstruct {q['dense']['cold'] / q['reconstruct']['cold']:.1f}x cold, "
              f"{q['dense']['warm'] / q['reconstruct']['warm']:.1f}x warm. At c = 1 the "
              "factored kernel does as many GEMM flops as the dense one (2 nq N D), so the "
              "speed-up is the saved read and decode time only; how large it is depends on "
              "the machine's flop rate against its read bandwidth.", "",
              "The paper's claims, as it states them (abstract): storage and query I/O from "
              "O(D) to O(c sqrt(D)) per layer per sample, Hessian memory from O(D^2) to "
              "O(D r), up to 20x storage reduction and query-time speed-up vs LoGRA on "
              "0.1B-70B models with millions of examples. It gives no timing model."]
    return "\n".join(lines) + "\n"


# -- main --------------------------------------------------------------------------------
def main() -> None:
    """Measure the three grids, fit, extrapolate, plot and write the results."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply every grid's N (a quick check with e.g. 0.25)")
    p.add_argument("--only", nargs="*", default=["build", "curvature", "query"])
    p.add_argument("--refit", action="store_true",
                   help="no measuring: refit, extrapolate and report the points of the JSON")
    args = p.parse_args()
    base = RESULTS / "attribution_timing_model"
    if args.refit:
        old = json.loads(base.with_suffix(".json").read_text())
        analyse(old["points"], {**old, "refit_command": command_line()}, base)
        return
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()

    def sc(n: int) -> int:
        return max(64, int(n * args.scale))

    shutil.rmtree(ROOT, ignore_errors=True)
    ROOT.mkdir(parents=True)
    points: dict[str, list[dict]] = {}
    grids = {
        "build": one_at_a_time(
            {"N": sc(1024), "d1": 64, "d2": 64, "c": 4, "L": 2},
            {"N": [sc(512), sc(2048), sc(8192)], "d1,d2": [(32, 32), (128, 64)],
             "c": [1, 16, None], "L": [1, 4]},
            [{"c": None, "d1": 128, "d2": 64}, {"c": None, "N": sc(8192)}]),
        "curvature": one_at_a_time(
            {"N": sc(4096), "d1": 64, "d2": 64, "r": 128, "c": 1, "L": 1},
            {"N": [sc(2048), sc(8192), sc(32768)], "d1,d2": [(32, 32), (128, 64)],
             "r": [64, 256], "c": [4], "L": [2]}),
        "query": one_at_a_time(
            {"N": sc(16384), "d1": 64, "d2": 64, "c": 1, "L": 2},
            {"N": [sc(8192), sc(32768), sc(131072)], "d1,d2": [(32, 32), (128, 64)],
             "c": [4, 16], "L": [1, 4]}),
    }
    for name, pts in grids.items():  # "d1,d2" axis values -> two keys
        for q in pts:
            if "d1,d2" in q:
                q["d1"], q["d2"] = q.pop("d1,d2")
        grids[name] = [dict(t) for t in {json.dumps(q, sort_keys=True): q
                                         for q in pts}.values()]
    try:
        if "build" in args.only:
            points["build"] = []
            for q in grids["build"]:
                points["build"].append(build_point(q, args.width, args.tokens, args.repeats))
                print("build", q, f"{points['build'][-1]['t_s']:.2f} s", flush=True)
        if "curvature" in args.only:
            points["curvature"] = []
            for q in grids["curvature"]:
                points["curvature"].append(curvature_point(q, args.repeats))
                print("curvature", q, f"{points['curvature'][-1]['t_s']:.2f} s", flush=True)
        if "query" in args.only:
            rows = []
            for q in grids["query"]:
                # the dense twin only where it stays small (<= 0.6 GB): not at the largest N
                dense = q["N"] * q["L"] * q["d1"] * q["d2"] * 2 <= 6e8
                new = query_points(q, args.repeats, dense)
                rows += new
                print("query", q, " ".join(f"{r['kernel']}/{r['cache']} {r['t_s']:.2f}"
                                           for r in new), flush=True)
            points["query_cold"] = [r for r in rows if r["cache"] == "cold"]
            points["query_warm"] = [r for r in rows if r["cache"] == "warm"]
    finally:
        shutil.rmtree(ROOT, ignore_errors=True)
    result = {"command": command_line(), "environment": environment(),
              "description": (
                  f"Build: SeqNet (tanh Linear({args.width}, {args.width}) x L over "
                  f"T = {args.tokens} positions, batch 64), float16 store. Curvature: lowrank "
                  f"r, oversampling {OVERSAMPLE}, {POWER_ITERS} power iterations, chunk 4096, "
                  "synthetic LoRIF stores. Query: one batch of 8 queries, identity "
                  "preconditioner, chunk 4096, top-10, synthetic stores (dense = exact "
                  "products). One thread, median of "
                  f"{args.repeats} repeats; one factor varied at a time around a base point."),
              "grids": grids, "wall_s": time.perf_counter() - t_start}
    analyse(points, result, base)


FORMULAS = {
    "build": ("a + flops_model / F_model + flops_factor / F_factor + N L tau", BUILD_UNITS),
    "curvature": ("a + flops_gemm / F_gemm + bytes_rebuilt / B_rebuild + "
                  "flops_small / F_small", CURV_UNITS),
    "query_cold": ("a + bytes_read / B_read + flops_gemm / F_gemm + bytes_tmp / B_tmp",
                   QUERY_UNITS),
    "query_warm": ("a + bytes_read / B_read + flops_gemm / F_gemm + bytes_tmp / B_tmp",
                   QUERY_UNITS),
}


def analyse(points: dict[str, list[dict]], result: dict, base: Path) -> None:
    """Fit every component, extrapolate, write the JSON, plot and markdown report."""
    fits = {}
    for name, rows in points.items():
        formula, units = FORMULAS[name]
        # held out: the largest N of each kernel (dense stores stop at a smaller N)
        top: dict = {}
        for r in rows:
            top[r.get("kernel")] = max(top.get(r.get("kernel"), 0), r["N"])
        f = fit(rows, units, lambda r, top=top: r["N"] == top[r.get("kernel")])
        f["formula"] = formula
        f["rates"] = rates(f)
        fits[name] = f
        print(name, json.dumps(f["rates"]), f"R2 {f['r2']:.3f}",
              "held-out", json.dumps(f["held_out_error"]), flush=True)
    result = {**result, "points": points, "fits": fits}
    if len(fits) == 4:
        result["extrapolation"] = extrapolate(fits, 10_000_000, 512, [1, 8, 64, 512])
    RESULTS.mkdir(parents=True, exist_ok=True)
    write_text_atomic(base.with_suffix(".json"), json.dumps(result, indent=1, default=str))
    if len(fits) == 4:
        plot(points, fits, base.with_suffix(".png"))
        write_text_atomic(base.with_suffix(".md"), report(result))
        print(report(result))

if __name__ == "__main__":
    main()
