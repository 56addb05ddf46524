"""The ``tamis demo`` section for multi-aspect rationalization (a few seconds on 2 CPU cores).

Loads the small model shipped in ``checkpoints/demo/`` (trained by
``benchmarks/rationale/train_demo_model.py``), highlights a few fresh synthetic reviews per
aspect, scores it on 300 more, and shows the benchmark tables committed in
``benchmarks/results/rationale_*.json`` when they are present (a clean install has none).
"""

from __future__ import annotations

import html
import json
import math
import time
import warnings
from pathlib import Path

from tamis.report import Section
from tamis.report.html import html_table

MODEL_DIR = Path(__file__).resolve().parent / "checkpoints" / "demo"
RESULTS_DIR = Path(__file__).resolve().parents[3] / "benchmarks" / "results"
N_SHOW = 4
N_SCORE = 300


def _f(x: object) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.1f}"


def _benchmark_tables(results_dir: Path) -> tuple[str, list[str]]:
    """HTML for the committed interlocking and matched-sparsity tables (or a note)."""
    parts, console = [], []
    inter = results_dir / "rationale_interlocking.json"
    if inter.exists():
        data = json.loads(inter.read_text())  # {world: {method: {rho: {"f1": [mean, sd]}}}}
        for world, methods in data.items():
            rhos = sorted({r for m in methods.values() for r in m}, key=float)
            rows = []
            for m, cells in methods.items():
                row = [m]
                for r in rhos:
                    f1 = cells.get(r, {}).get("f1")
                    if not f1:
                        row.append("-")
                        continue
                    sd = f" +- {_f(f1[1])}" if f1[1] is not None and math.isfinite(f1[1]) else ""
                    row.append(f"{_f(f1[0])}{sd} (n={cells[r].get('n', 1)})")
                rows.append(row)
            parts.append(f"<h3>Interlocking, world {html.escape(world)}: test F1 at matched "
                         "sparsity vs rating correlation</h3>"
                         + html_table(["method", *(f"rho = {r}" for r in rhos)], rows))
            console.append(f"interlocking table (world {world}): {len(rows)} methods x "
                           f"{len(rhos)} correlations")
    matched = results_dir / "rationale_matched.json"
    if matched.exists():
        data = json.loads(matched.read_text())
        for rho, block in data.items():
            rows = []
            for m, b in block.items():
                if m.startswith("_"):
                    continue
                rows.append([m, b["n"], *(f"{_f(v[0])} +- {_f(v[1])}" for v in b["f1"].values()),
                             f"{_f(b['macro'][0])} +- {_f(b['macro'][1])}"])
            aspects = next((list(b["f1"]) for m, b in block.items() if not m.startswith("_")),
                           [])
            gap = block.get("_gap")
            note = (f"<p>gap to the best baseline ({html.escape(gap['best_baseline'])}): "
                    f"{gap['macro']:+.1f} macro F1 points</p>" if gap else "")
            parts.append(f"<h3>Matched sparsity, rho = {html.escape(rho)}</h3>"
                         + html_table(["method", "seeds", *aspects, "macro"], rows) + note)
        console.append(f"matched-sparsity tables for rho in {list(data)}")
    if not parts:
        note = ("no committed benchmark results found (benchmarks/results/rationale_*.json); "
                "run benchmarks/rationale/interlocking.py and matched_sparsity.py")
        return f"<p>{html.escape(note)}</p>", [note]
    return "".join(parts), console


def demo_section(out_dir: Path, data_dir: Path | None = None) -> Section:
    """Highlight synthetic reviews with the shipped model and show the benchmark tables.

    Args:
        out_dir: the report folder (unused: the section has no pictures).
        data_dir: unused (the demo needs no data set; the corpus is generated).

    Returns:
        The report :class:`~tamis.report.Section`.

    """
    import torch

    from tamis.rationale.data import SyntheticConfig, synthetic_reviews
    from tamis.rationale.explain import render_html
    from tamis.rationale.metrics import rating_scores, rationale_scores
    from tamis.rationale.models import RationaleModel

    t0 = time.perf_counter()
    torch.manual_seed(0)
    model = RationaleModel.load(MODEL_DIR)
    info_path = MODEL_DIR / "training.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    corpus = info.get("corpus", {})
    cfg = SyntheticConfig(n_reviews=N_SHOW + N_SCORE, aspects=tuple(model.aspects),
                          correlation=float(corpus.get("correlation", 0.5)),
                          shortcut=float(corpus.get("shortcut", 0.5)),
                          max_len=int(model.cfg.max_len), seed=2024)
    reviews = synthetic_reviews(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        masks = model.explain(reviews)
        preds = model.predict(reviews)
    items = []
    for i in range(N_SHOW):
        r = reviews.reviews[i]
        cap = "true / predicted rating: " + ", ".join(
            f"{a} {t:.2f} / {p:.2f}" for a, t, p in zip(model.aspects, r.ratings, preds[i]))
        items.append({"tokens": r.tokens, "masks": masks[i], "caption": cap})
    gold = [reviews.gold_masks(i)[:, : masks[i].shape[1]] for i in range(len(reviews))]
    sl = slice(N_SHOW, len(reviews))
    rat = rationale_scores(masks[sl], gold[sl], model.aspects)
    rt = rating_scores(preds[sl], reviews.ratings()[sl], model.aspects)
    rows = [[a, _f(rat[a]["sparsity"]), _f(rat[a]["precision"]), _f(rat[a]["recall"]),
             _f(rat[a]["f1"]), _f(rat[a]["leakage"]), f"{rt[a]['mse']:.4f}"]
            for a in model.aspects]
    tables, tconsole = _benchmark_tables(RESULTS_DIR)
    body = (
        "<p>The shipped demo model (method <code>interlock_free</code>, CNN encoder, frozen "
        "GloVe 50d; <code>benchmarks/rationale/train_demo_model.py</code>) on fresh synthetic "
        f"reviews (rating correlation {cfg.correlation:g}, shortcut {cfg.shortcut:g}). The "
        "benchmark is synthetic: no Beer/Hotel number can be reproduced offline.</p>"
        + render_html(items, model.aspects)
        + f"<h3>Scores on {N_SCORE} synthetic reviews (percent; MSE on [0, 1] ratings)</h3>"
        + html_table(["aspect", "S", "P", "R", "F1", "leakage", "MSE"], rows)
        + tables
    )
    console = [f"demo model: test F1 {_f(rat['_all']['f1'])} (macro), sparsity "
               f"{_f(rat['_all']['sparsity'])}%, MSE {rt['_all']['mse']:.4f}",
               *tconsole, f"rationale section: {time.perf_counter() - t0:.1f} s"]
    return Section(title="Multi-aspect rationalization (tamis.rationale)", body_html=body,
                   console=console)
