"""The attribution section of ``tamis demo``: LoRIF on a small Fashion-MNIST CNN."""

from __future__ import annotations

import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from tamis.attribution.build import build_store  # noqa: E402
from tamis.attribution.config import (  # noqa: E402
    BuildConfig,
    CurvatureConfig,
    FactorConfig,
    ProjectionConfig,
    ScoreConfig,
)
from tamis.attribution.curvature import fit_curvature  # noqa: E402
from tamis.attribution.examples import TaskBundle, fashion_cnn  # noqa: E402
from tamis.attribution.horizon import TrainingHorizon  # noqa: E402
from tamis.attribution.methods import Attributor  # noqa: E402
from tamis.attribution.scoring import ScoreResult, compute_scores  # noqa: E402
from tamis.report import Section  # noqa: E402
from tamis.report.html import html_table  # noqa: E402

RANKS = (1, 2, 4)
DEFAULT_ROW = "default (EK-FAC)"
SHOWN_QUERIES = 5
SHOWN_EXAMPLES = 5


def _topk_figure(bundle: TaskBundle, result: ScoreResult, path: Path, heading: str) -> None:
    classes = bundle.info["classes"]
    xq, yq = bundle.queries.tensors
    xt, yt = bundle.train.tensors
    cols = 1 + 2 * SHOWN_EXAMPLES
    fig, axes = plt.subplots(SHOWN_QUERIES, cols, figsize=(cols * 1.15, SHOWN_QUERIES * 1.35))
    for r in range(SHOWN_QUERIES):
        panels = [(xq[r], f"query\n{classes[yq[r]]}", "black")]
        for j in result.helpful.indices[r, :SHOWN_EXAMPLES].tolist():
            panels.append((xt[j], f"+ #{j}\n{classes[yt[j]]}", "tab:green"))
        for j in result.harmful.indices[r, :SHOWN_EXAMPLES].tolist():
            panels.append((xt[j], f"- #{j}\n{classes[yt[j]]}", "tab:red"))
        for ax, (img, title, color) in zip(axes[r], panels):
            ax.imshow(img[0].numpy(), cmap="gray_r")
            ax.set_title(title, fontsize=6.5, color=color)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(f"{heading}: query | 5 most helpful (+) | 5 most harmful (-)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _size_figure(rows: list[dict], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 2.6))
    names = [r["method"] for r in rows]
    ax.barh(names, [r["bytes_per_example"] for r in rows], color="tab:blue")
    ax.set_xlabel("store bytes per training example (measured on disk)")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _agreement(a: torch.Tensor, b: torch.Tensor, k: int = 10) -> tuple[float, float]:
    rho = float(np.mean([spearmanr(x, y).statistic for x, y in zip(a.numpy(), b.numpy())]))
    top_a = torch.topk(a, k, dim=1).indices
    top_b = torch.topk(b, k, dim=1).indices
    overlap = np.mean([len(set(x.tolist()) & set(y.tolist())) / k for x, y in zip(top_a, top_b)])
    return rho, float(overlap)


def compare_stores(
    bundle: TaskBundle, work: Path, ranks: tuple[int, ...] = RANKS, d: int = 32, rank_r: int = 64
) -> tuple[list[dict], dict[str, ScoreResult]]:
    """Build dense LoGRA and LoRIF (each c in ``ranks``) stores and score the queries.

    Returns one row per method (store bytes per example measured on disk, curvature bytes,
    build seconds, retained energy of the convolutions, agreement with LoGRA) and the scores.
    """
    proj = ProjectionConfig(d1=d, d2=d, seed=0, clip_to_layer=True)
    build = BuildConfig(batch_size=250, shard_size=2500)
    score_cfg = ScoreConfig(top_k=SHOWN_EXAMPLES)
    results, rows = {}, []
    for method, c in [("LoGRA (dense)", None)] + [(f"LoRIF c={c}", c) for c in ranks]:
        t0 = time.perf_counter()
        store = build_store(bundle.task, bundle.model, bundle.train, work / f"store-{c or 'dense'}",
                            proj, FactorConfig(rank=c, dtype="float16"), build, overwrite=True)
        t_build = time.perf_counter() - t0
        kind = "dense" if c is None else "lowrank"
        # the largest c also with r = D, which separates factor error from curvature error
        for r in [rank_r] + ([None] if c == max(ranks) else []):
            name = method if r == rank_r else f"{method}, r=D"
            curv = fit_curvature(store, CurvatureConfig(kind=kind, rank=r or 1_000_000))
            results[name] = compute_scores(bundle.task, bundle.model, bundle.queries, store,
                                           curv, score_cfg)
            energy = store.energy()
            rows.append({"method": name, "c": c, "d": d, "r": (r or "D") if c else None,
                         "n_train": store.num_examples, "dtype": "float16",
                         "bytes_per_example": store.bytes_per_example,
                         "numbers_per_example": store.manifest["row_length"],
                         "curvature_bytes": curv.memory_bytes, "build_s": t_build,
                         "energy": energy,
                         "energy_conv": min(v for k, v in energy.items() if k.startswith("conv"))})
    # the library's default: Attributor(task, model, path) (EK-FAC preset), given the
    # training run's horizon (sum of the lr) as StoreCallback would record it
    t0 = time.perf_counter()
    default = Attributor(bundle.task, bundle.model, work / "store-default", build=build,
                         horizon=TrainingHorizon(bundle.info["lr_sum"])).fit(
        bundle.train, overwrite=True)
    t_build = time.perf_counter() - t0
    results[DEFAULT_ROW] = default.score(bundle.queries, score_cfg)
    energy = default.store.energy()
    rows.append({"method": DEFAULT_ROW, "c": default.store.rank, "d": None, "r": None,
                 "n_train": default.store.num_examples, "dtype": default.store.dtype,
                 "bytes_per_example": default.store.bytes_per_example,
                 "numbers_per_example": default.store.manifest["row_length"],
                 "curvature_bytes": default.curvature.memory_bytes, "build_s": t_build,
                 "damping": default.damping_rule["damping"],
                 "energy": energy,
                 "energy_conv": min(v for k, v in energy.items() if k.startswith("conv"))})
    ref = results["LoGRA (dense)"].scores
    for r in rows:
        r["ratio_vs_dense"] = rows[0]["bytes_per_example"] / r["bytes_per_example"]
        r["spearman_vs_logra"], r["top10_overlap_vs_logra"] = _agreement(
            results[r["method"]].scores, ref
        )
    return rows, results


def demo_section(out_dir: Path, data_dir: Path | None = None, n_train: int = 5000) -> Section:
    """Train the demo CNN, build LoRIF (c = 1, 2, 4), dense LoGRA and default stores."""
    torch.manual_seed(0)
    work = Path(out_dir) / "attribution"
    bundle = fashion_cnn(
        cache_dir=work / "cache", data_dir=data_dir, n_train=n_train, n_queries=100, epochs=3
    )
    console = []
    if bundle.info["notice"]:
        console.append(f"[yellow]notice:[/] {bundle.info['notice']}")
    console.append(
        f"model: SmallCNN on {len(bundle.train)} {bundle.info['dataset']} images, "
        f"test accuracy {bundle.info['test_accuracy']:.3f}"
    )
    rows, results = compare_stores(bundle, work)
    default_damping = next(r["damping"] for r in rows if r["method"] == DEFAULT_ROW)
    header = ["method", "numbers/example", "bytes/example (disk)", "smaller than dense",
              "curvature KiB", "min conv energy kept", "Spearman vs LoGRA", "top-10 overlap",
              "build s"]
    table = [[r["method"], r["numbers_per_example"], f"{r['bytes_per_example']:.0f}",
              f"{r['ratio_vs_dense']:.1f}x", f"{r['curvature_bytes'] / 1024:.0f}",
              f"{r['energy_conv']:.3f}", f"{r['spearman_vs_logra']:.3f}",
              f"{r['top10_overlap_vs_logra']:.2f}", f"{r['build_s']:.1f}"] for r in rows]
    _topk_figure(bundle, results[DEFAULT_ROW], Path(out_dir) / "attribution_topk.png",
                 "tamis default (EK-FAC)")
    _size_figure(rows, Path(out_dir) / "attribution_store_size.png")
    for line in table:
        console.append(
            f"{line[0]:>14}: {line[2]:>6} bytes/example ({line[3]} smaller), "
            f"Spearman vs LoGRA {line[6]}, top-10 overlap {line[7]}"
        )
    notice = f"<p><b>Notice:</b> {bundle.info['notice']}</p>" if bundle.info["notice"] else ""
    body = f"""{notice}
<p>A small CNN (two convolutions, two linear layers) trained on {len(bundle.train)}
{bundle.info["dataset"]} images (test accuracy {bundle.info["test_accuracy"]:.3f}). Every layer is
tracked with a two-sided Gaussian projection of at most 32 x 32 per layer. LoRIF stores rank-c
factors of each projected per-example gradient (exact rank 1 for the linear layers; the
convolutions' gradients sum over positions and are truncated at c); its curvature is the top-64
eigenspace of the damped empirical Fisher (Woodbury). Dense LoGRA stores every d1 x d2 gradient
and inverts the full damped Fisher per layer. The last row is the library's default,
<code>Attributor(task, model, path, horizon=TrainingHorizon(S))</code> (the training run's sum of
learning rates, S = {bundle.info["lr_sum"]:.3g}, which <code>StoreCallback</code> records by
itself; damping {default_damping:.3g} x mean eigenvalue): EK-FAC curvature in the unprojected
space of every layer side of at most 1,024, up to 32 int8 factor pairs per layer but never more
bytes than a dense float16 64 x 64 gradient (chosen by LDS on three settings, see
<code>docs/attribution.md</code>); the pictures show its most helpful and harmful training
images. The other rows use a 32 x 32 projection, so the default's store (unprojected on these
small layers) is the largest here. Scores are for {len(bundle.queries)} test images;
positive = the training image helps (lowers the query's loss).</p>
<img src="attribution_topk.png" alt="most helpful and harmful training images">
{html_table(header, table)}
<img src="attribution_store_size.png" alt="store size per example">
<p>Reproduce from the shell: <code>tamis attribute build --store s</code> (the default) or
<code>tamis attribute build --store s --method lorif --d1 32 --d2 32 --rank-c 1</code> (the
paper's LoRIF row), then <code>tamis attribute query --store s</code>.</p>"""
    return Section("Training-data attribution (LoRIF)", body, console)
