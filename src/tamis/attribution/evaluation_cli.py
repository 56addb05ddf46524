"""``tamis attribute evaluate``: LDS or tail-patch of saved score matrices.

Thin glue over :mod:`tamis.attribution.evaluation`; register it with
``app.command("evaluate")(evaluate)`` on the attribution typer app.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from tamis.attribution.evaluation import lds, load_masks, tail_patch

console = Console()


def _load_scores(path: Path) -> np.ndarray:
    scores = np.load(path)
    if scores.ndim != 2:
        raise typer.BadParameter(f"{path}: scores must be a (Q, N) array, got shape {scores.shape}")
    return scores


def _load_spec(spec: str) -> dict:
    module_name, _, attr = spec.partition(":")
    if not attr:
        raise typer.BadParameter(f"--setup must look like 'package.module:function', got {spec!r}")
    setup = getattr(importlib.import_module(module_name), attr)()
    missing = {"task", "model", "train", "queries"} - set(setup)
    if missing:
        raise typer.BadParameter(f"{spec}() must return a dict with {sorted(missing)} too")
    return setup


def evaluate(
    scores: Annotated[
        list[Path],
        typer.Option(
            "--scores", help="(Q, N) .npy score matrices (positive = helpful); repeat to compare."
        ),
    ],
    metric: Annotated[
        str,
        typer.Option(help="'lds' (needs --masks, --ground-truth) or 'tail-patch' (needs --setup)."),
    ] = "lds",
    masks: Annotated[
        Path | None, typer.Option(help="(M, N) bool .npy subsets (tamis masks).")
    ] = None,
    ground_truth: Annotated[
        Path | None, typer.Option(help="(M, Q) .npy query measurement per retrained subset model.")
    ] = None,
    target: Annotated[
        str,
        typer.Option(
            help="What the ground truth measures: 'loss' (lower is better) or 'gain' "
            "(higher is better, e.g. log-prob)."
        ),
    ] = "loss",
    setup: Annotated[
        str | None,
        typer.Option(
            help="Tail-patch: 'module:function' returning a dict with task, model, train, "
            "queries (and collate_fn)."
        ),
    ] = None,
    k: Annotated[int, typer.Option(help="Tail-patch: examples per gradient step.")] = 10,
    lr: Annotated[float, typer.Option(help="Tail-patch: step size.")] = 1e-2,
    n_random: Annotated[int, typer.Option(help="Tail-patch: random draws for the reference.")] = 5,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples over queries.")] = 2000,
    level: Annotated[float, typer.Option(help="Confidence level of the bootstrap CI.")] = 0.95,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap and random draws.")] = 0,
    output: Annotated[Path | None, typer.Option(help="Write the results here as JSON.")] = None,
    per_query: Annotated[bool, typer.Option(help="Include per-query values in the JSON.")] = False,
) -> None:
    """Score attribution methods: LDS against cached retraining, or tail-patch gain."""
    if metric not in ("lds", "tail-patch"):
        raise typer.BadParameter(f"--metric must be 'lds' or 'tail-patch', got {metric!r}")
    results: dict[str, dict] = {}
    if metric == "lds":
        if masks is None or ground_truth is None:
            raise typer.BadParameter("--metric lds needs --masks and --ground-truth")
        m, truth = load_masks(masks), np.load(ground_truth)
        for path in scores:
            res = lds(
                _load_scores(path),
                m,
                truth,
                target=target,  # type: ignore[arg-type]
                n_boot=n_boot,
                level=level,
                seed=seed,
            )
            results[path.stem] = res.to_dict(per_query)
        columns = ("mean", "ci_low", "ci_high", "n_queries")
    else:
        if setup is None:
            raise typer.BadParameter("--metric tail-patch needs --setup")
        spec = _load_spec(setup)
        for path in scores:
            top = np.argsort(-_load_scores(path), axis=1, kind="stable")[:, :k]
            res = tail_patch(
                spec["task"],
                spec["model"],
                spec["train"],
                spec["queries"],
                top,
                k=k,
                lr=lr,
                n_random=n_random,
                seed=seed,
                collate_fn=spec.get("collate_fn"),
                n_boot=n_boot,
                progress=False,
            )
            results[path.stem] = res.to_dict(per_query)
        columns = ("mean_top", "mean_random", "mean_diff", "ci_low", "ci_high", "win_rate")
    table = Table(title=f"attribution {metric}")
    table.add_column("scores")
    for col in columns:
        table.add_column(col, justify="right")
    for name, res in results.items():
        table.add_row(
            name, *(f"{res[c]:.4g}" if isinstance(res[c], float) else str(res[c]) for c in columns)
        )
    console.print(table)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(
            json.dumps({"metric": metric, "target": target, "results": results}, indent=1)
        )
        console.print(f"wrote {output}")
