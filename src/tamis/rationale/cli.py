"""``tamis rationale train|evaluate|explain``: multi-aspect rationalization from the command line.

Data files are JSONL (``tamis.rationale.data``: ``text`` or ``tokens``, ``ratings`` per aspect,
optional gold ``rationales``). A model is a folder with ``model.safetensors`` + ``model.json``
(written by ``train``); ``explain`` without ``--model`` uses the shipped demo checkpoint.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="Interlock-free multi-aspect rationalization: train, evaluate, explain.",
    no_args_is_help=True,
)
console = Console()

DEMO_MODEL = Path(__file__).resolve().parent / "checkpoints" / "demo"


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code=1)


def _read(path: Path, what: str, aspects: tuple[str, ...] | None = None) -> Any:  # noqa: ANN401
    from tamis.rationale.data import read_jsonl

    if not path.exists():
        _fail(f"{what} file {path} does not exist")
    try:
        return read_jsonl(path, aspects=aspects)
    except ValueError as err:
        _fail(f"{what}: {err}")


def _load_model(path: Path | None) -> Any:  # noqa: ANN401
    from tamis.rationale.models import RationaleModel

    if path is None:
        path = DEMO_MODEL
        if not (path / "model.json").exists():
            _fail(f"no --model given and the demo checkpoint {path} is missing "
                  "(benchmarks/rationale/train_demo_model.py writes it)")
    try:
        return RationaleModel.load(path)
    except (FileNotFoundError, ValueError) as err:
        _fail(str(err))


def parse_value(text: str) -> Any:  # noqa: ANN401
    """A ``--set`` value: JSON if it parses (numbers, booleans, lists), else the raw string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def build_config(
    config: Path | None, overrides: dict[str, Any], sets: list[str]
) -> Any:  # noqa: ANN401
    """``RationaleConfig`` from an optional JSON file, explicit options, then ``--set k=v``.

    Raises:
        ValueError: unknown fields, malformed ``--set`` items or invalid values (named).

    """
    from tamis.rationale.config import RationaleConfig

    base: dict[str, Any] = {}
    if config is not None:
        try:
            base = json.loads(config.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"cannot read the configuration file {config}: {err}") from err
        if not isinstance(base, dict):
            raise ValueError(f"{config} must hold a JSON object of RationaleConfig fields")
    base.update({k: v for k, v in overrides.items() if v is not None})
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects key=value, got {item!r}")
        base[key.strip()] = parse_value(value)
    if isinstance(base.get("sparsity"), list):
        base["sparsity"] = tuple(base["sparsity"])
    return RationaleConfig.from_dict(base)


def _sparsity(text: str | None) -> float | tuple[float, ...] | None:
    if text is None:
        return None
    try:
        parts = [float(p) for p in text.split(",")]
    except ValueError:
        _fail(f"a sparsity takes one number or a comma list, got {text!r}")
    return parts[0] if len(parts) == 1 else tuple(parts)


def _fmt(x: object, digits: int = 4) -> str:
    if x is None or not isinstance(x, (int, float)) or not math.isfinite(float(x)):
        return "-"
    return f"{float(x):.{digits}f}"


def scores_table(scores: dict, aspects: tuple[str, ...]) -> Table:
    """Per-aspect rich table: MSE, accuracy, and with gold rationales S/P/R/F1 (percent)."""
    table = Table(title="per-aspect scores")
    cols = ["aspect", "MSE", "acc"]
    rat = scores.get("rationale")
    if rat:
        cols += ["S %", "P", "R", "F1"]
    for c in cols:
        table.add_column(c, justify="right" if c != "aspect" else "left")
    for a in (*aspects, "_all"):
        rating = scores["rating"].get(a, {})
        row = [a, _fmt(rating.get("mse")), _fmt(rating.get("accuracy"))]
        if rat:
            r = rat.get(a, {})
            row += [_fmt(r.get(key), 1) for key in ("sparsity", "precision", "recall", "f1")]
        table.add_row(*row)
    return table


@app.command()
def train(
    data: Annotated[Path, typer.Option(help="Training reviews (JSONL).")],
    out: Annotated[Path, typer.Option(help="Run folder: checkpoints, model, history.json.")],
    dev: Annotated[Path | None, typer.Option(help="Dev reviews (JSONL), scored per epoch.")] = None,
    method: Annotated[
        str | None, typer.Option(help="interlock_free | mtm | rnp | a2r.")
    ] = None,
    encoder: Annotated[str | None, typer.Option(help="cnn | gru | minilm.")] = None,
    embedding: Annotated[str | None, typer.Option(help="glove | minilm | random.")] = None,
    sparsity: Annotated[
        str | None, typer.Option(help="Target selection rate, one or per aspect (0.15,0.12).")
    ] = None,
    max_len: Annotated[int | None, typer.Option(help="Longest text (tokens).")] = None,
    lr: Annotated[float | None, typer.Option(help="Adam learning rate.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Reviews per step.")] = None,
    config: Annotated[
        Path | None, typer.Option(help="JSON file of RationaleConfig fields (options win).")
    ] = None,
    set_: Annotated[
        list[str], typer.Option("--set", help="Any RationaleConfig field: key=value (JSON).")
    ] = [],  # noqa: B006 - typer needs a literal default
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    threads: Annotated[int, typer.Option(help="torch CPU threads.")] = 1,
    progress: Annotated[bool, typer.Option(help="Progress bars.")] = True,
) -> None:
    """Train a rationale model; rerunning with the same --out resumes from its checkpoint."""
    import torch

    from tamis.rationale.training import evaluate as evaluate_model
    from tamis.rationale.training import fit

    torch.set_num_threads(threads)
    try:
        cfg = build_config(config, dict(
            method=method, encoder=encoder, embedding=embedding, sparsity=_sparsity(sparsity),
            max_len=max_len, lr=lr, batch_size=batch_size,
        ), set_)
    except (ValueError, TypeError) as err:
        _fail(f"configuration: {err}")
    train_set = _read(data, "training data")
    dev_set = _read(dev, "dev data", tuple(train_set.aspects)) if dev is not None else None

    def log(entry: dict) -> None:
        msg = f"{entry['stage']} epoch {entry['epoch']}: " + ", ".join(
            f"{k} {v:.4f}" for k, v in entry["losses"].items())
        f1 = entry.get("dev_rationale", {}).get("_all", {}).get("f1")
        if f1 is not None:
            msg += f" | dev F1 {f1:.3f}"
        console.print(msg)

    try:
        result = fit(train_set, cfg, dev=dev_set, out_dir=out, seed=seed, progress=progress,
                     log=log)
    except ValueError as err:
        _fail(str(err))
    console.print(f"model written to {out} ({result.wall_s:.1f} s)")
    if dev_set is not None:
        console.print(scores_table(evaluate_model(result.model, dev_set), result.model.aspects))


@app.command()
def evaluate(
    model: Annotated[Path, typer.Option(help="Model folder written by train.")],
    data: Annotated[Path, typer.Option(help="Reviews to score (JSONL).")],
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Also write the scores as JSON here.")
    ] = None,
    target_sparsity: Annotated[
        str | None,
        typer.Option(help="First shift the selection threshold so each aspect selects this "
                          "percent (one or per aspect, e.g. 15 or 18,15,12)."),
    ] = None,
    calibrate_on: Annotated[
        Path | None,
        typer.Option(help="Texts for --target-sparsity (JSONL; default: --data; ratings and "
                          "gold rationales are not used)."),
    ] = None,
) -> None:
    """Per-aspect rating and rationale scores of a model on a JSONL file."""
    from tamis._io import write_text_atomic
    from tamis.rationale.training import calibrate_sparsity
    from tamis.rationale.training import evaluate as evaluate_model

    m = _load_model(model)
    reviews = _read(data, "data", tuple(m.aspects))
    try:
        if target_sparsity is not None:
            target = _sparsity(target_sparsity)
            calib = _read(calibrate_on, "calibration data", tuple(m.aspects)) if (
                calibrate_on is not None) else reviews
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                rates = calibrate_sparsity(m, calib, target)  # type: ignore[arg-type]
            for w in caught:
                console.print(f"[yellow]warning:[/] {w.message}")
            console.print("calibrated selection (percent): " + ", ".join(
                f"{a} {r:.2f}" for a, r in zip(m.aspects, rates)))
        scores = evaluate_model(m, reviews)
    except ValueError as err:
        _fail(str(err))
    console.print(scores_table(scores, m.aspects))
    if json_out is not None:
        write_text_atomic(json_out, json.dumps(scores, indent=1))
        console.print(f"scores written to {json_out}")


@app.command()
def explain(
    model: Annotated[
        Path | None, typer.Option(help="Model folder (default: the shipped demo model).")
    ] = None,
    text: Annotated[str | None, typer.Option(help="One review text to explain.")] = None,
    data: Annotated[Path | None, typer.Option(help="Reviews to explain (JSONL).")] = None,
    html: Annotated[Path | None, typer.Option(help="Also write highlighted HTML here.")] = None,
    limit: Annotated[int, typer.Option(help="Explain at most this many reviews of --data.")] = 20,
) -> None:
    """Highlight each aspect's rationale (terminal, and HTML with --html)."""
    from tamis._io import write_text_atomic
    from tamis.rationale.data import tokenize
    from tamis.rationale.explain import render_html, render_terminal

    if (text is None) == (data is None):
        _fail("give exactly one of --text or --data")
    m = _load_model(model)
    if text is not None:
        tokens = [tokenize(text)]
        if not tokens[0]:
            _fail("the text is empty (no tokens)")
    else:
        assert data is not None
        reviews = _read(data, "data", tuple(m.aspects))
        tokens = [list(r.tokens) for r in reviews.reviews[: max(limit, 0)]]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        masks, preds = m.explain_and_predict(tokens)
    for w in caught:
        console.print(f"[yellow]warning:[/] {w.message}")
    items = []
    for toks, mk, y in zip(tokens, masks, preds):
        caption = "predicted: " + ", ".join(f"{a} {v:.2f}" for a, v in zip(m.aspects, y))
        render_terminal(toks, mk, m.aspects, console)
        console.print(caption)
        items.append({"tokens": toks, "masks": mk, "caption": caption})
    if html is not None:
        write_text_atomic(html, render_html(items, m.aspects))
        console.print(f"HTML written to {html}")
