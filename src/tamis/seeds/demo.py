"""The ``tamis demo`` section for reliable seeds (about a minute on 2 CPU cores).

Loads the shipped shapes-world base model, generates a prompts x seeds grid judged by the exact
checker, mines a small grid (held-out prompts x a few seeds) to show per-seed placement heatmaps
and the chi-square test that the seed matters, and shows the committed arms table and a
before/after grid when those results / a fine-tuned checkpoint are shipped.
"""

from __future__ import annotations

import html
import time
from pathlib import Path

import numpy as np

from tamis.report import Section
from tamis.report.html import html_table

RESULTS = Path(__file__).resolve().parents[3] / "benchmarks" / "results"
FT_DIR = Path(__file__).resolve().parent / "checkpoints" / "world_ft"


def save_grid(images: np.ndarray, rows: int, path: Path, scale: int = 4) -> None:
    """Write ``images`` (N, H, W, 3) as a ``rows`` x N/rows PNG grid, upscaled ``scale`` x."""
    from PIL import Image

    n, h, w, _ = images.shape
    cols = -(-n // rows)
    canvas = np.full((rows * (h + 2), cols * (w + 2), 3), 255, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        canvas[r * (h + 2) + 1:r * (h + 2) + 1 + h, c * (w + 2) + 1:c * (w + 2) + 1 + w] = im
    big = np.kron(canvas, np.ones((scale, scale, 1), np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(big).save(path)


def _heatmap_png(maps: dict[int, np.ndarray], path: Path, scale: int = 12) -> None:
    """Per-seed heatmaps side by side (grey levels normalised per seed)."""
    tiles = []
    for h in maps.values():
        t = (255 * (1 - h / max(h.max(), 1))).astype(np.uint8)
        tiles.append(np.stack([t] * 3, -1))
    save_grid(np.stack(tiles), 1, path, scale)


def demo_section(out_dir: Path, data_dir: Path | None = None) -> Section:
    """Run the reliable-seeds demonstration and return its report section.

    Args:
        out_dir: folder for the PNG pictures (``seeds_*.png``).
        data_dir: unused (the shapes world needs no data); kept for the demo interface.

    Returns:
        The report :class:`~tamis.report.Section` (with ``error`` set if the checkpoint is
        missing).

    """
    import torch

    from tamis.seeds import stats
    from tamis.seeds.generation import initial_latents
    from tamis.seeds.world.captions import world_prompts
    from tamis.seeds.world.checker import ExactChecker
    from tamis.seeds.world.model import ShapesWorldGenerator

    title = "Reliable seeds (tamis.seeds)"
    t0 = time.time()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    try:
        gen = ShapesWorldGenerator.load_default()  # the folder's measured sampling defaults
    except FileNotFoundError as err:
        return Section(title=title, error=f"shipped checkpoint missing: {err}")
    checker = ExactChecker()
    out_dir = Path(out_dir)
    ev = world_prompts("eval")
    prompts = [ev["numerical"][0], ev["numerical"][6], ev["spatial"][0], ev["spatial"][61]]
    seeds = list(range(4))
    texts = [p.text for p in prompts for _ in seeds]
    questions = [p.question for p in prompts for _ in seeds]
    lat = initial_latents(seeds * len(prompts), gen.latent_shape())
    images = gen.generate(texts, lat)
    verdicts = checker.judge(images, questions)
    save_grid(images, len(prompts), out_dir / "seeds_grid.png")
    rows = []
    for i, p in enumerate(prompts):
        cells = verdicts[i * len(seeds):(i + 1) * len(seeds)]
        rows.append([p.text] + [("ok " if v.correct else "x ") + str(v.answer) for v in cells])
    body = [
        "<p>The shipped shapes-world base model (1.41M-parameter pixel-space UNet, DDIM "
        f"{gen.settings.steps} steps, guidance {gen.settings.guidance:g}) on held-out prompts "
        "(rows) x seeds 0-3 (columns), judged by the exact checker (answer = judged count, or "
        "whether the relation holds).</p>",
        '<img src="seeds_grid.png" alt="prompts x seeds grid">',
        html_table(["prompt"] + [f"seed {s}" for s in seeds], rows),
    ]
    # a small mining run: where each seed puts objects, and whether the seed matters
    mine_prompts = ev["numerical"][::3] + ev["spatial"][::30]
    mseeds = list(range(6))
    obs = []
    for s in mseeds:
        ims = gen.generate([p.text for p in mine_prompts],
                           initial_latents([s] * len(mine_prompts), gen.latent_shape()))
        for p, v in zip(mine_prompts, checker.judge(ims, [p.question for p in mine_prompts]),
                        strict=True):
            obs.append(stats.Observation(p.category, s, p.text, v.correct, v.positions))
    maps = stats.placement_heatmaps(obs, bins=8)
    _heatmap_png(maps, out_dir / "seeds_heatmaps.png")
    ent = stats.placement_entropy(maps)
    acc = stats.seed_reliability([stats.Observation("all", o.seed, o.prompt, o.correct)
                                  for o in obs])["all"]
    chi = stats.chi_square([stats.Observation("all", o.seed, o.prompt, o.correct)
                            for o in obs])["all"]
    body += [
        f"<p>Placement heatmaps of seeds 0-5 ({len(mine_prompts)} held-out prompts each; dark "
        "= many object centres): a seed tends to put objects in the same places.</p>",
        '<img src="seeds_heatmaps.png" alt="per-seed placement heatmaps">',
        html_table(["seed", "accuracy"], [[s, f"{c['accuracy']:.2f}"] for s, c in acc.items()]),
        f"<p>Seed x correct chi-square over all these images: chi2 = {chi['chi2']:.1f}, "
        f"dof {chi['dof']}, p = {chi['p']:.3g}; placement entropy {html.escape(str(ent))}.</p>",
    ]
    arms_md = RESULTS / "seeds_arms.md"
    if arms_md.exists():
        body.append("<h3>Arms (committed results)</h3><pre>" + html.escape(arms_md.read_text())
                    + "</pre>")
    else:
        body.append("<p>No committed arms results (benchmarks/results/seeds_arms.md is "
                    "missing): run benchmarks/seeds/arms.py.</p>")
    if (FT_DIR / "world_model.json").exists():
        ft = ShapesWorldGenerator.load(FT_DIR, steps=gen.settings.steps,
                                       guidance=gen.settings.guidance)
        after = ft.generate(texts, lat)
        save_grid(after, len(prompts), out_dir / "seeds_grid_after.png")
        acc_b = np.mean([v.correct for v in verdicts])
        acc_a = np.mean([v.correct for v in checker.judge(after, questions)])
        body += [f"<p>After top-seed fine-tuning (same prompts and seeds): accuracy "
                 f"{acc_b:.2f} -> {acc_a:.2f}.</p>",
                 '<img src="seeds_grid_after.png" alt="after fine-tuning">']
    else:
        body.append("<p>No fine-tuned checkpoint is shipped (checkpoints/world_ft): no "
                    "before/after grid.</p>")
    elapsed = time.time() - t0
    console = [
        f"grid accuracy {np.mean([v.correct for v in verdicts]):.2f} on {len(verdicts)} images",
        f"seed chi2 {chi['chi2']:.1f} (p {chi['p']:.3g}) over {len(obs)} mined images",
        f"time {elapsed:.0f} s",
    ]
    return Section(title=title, body_html="\n".join(body), console=console)
