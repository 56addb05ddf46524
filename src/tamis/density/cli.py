"""``tamis density score|sample|finetune|evaluate``: the library from the command line.

Features are ``.npy`` arrays ``(N, D)``; models are tamis safetensors checkpoints (the bundled
Fashion-MNIST demo models by default).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import numpy as np
import torch
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

app = typer.Typer(
    help="Pseudo density: score, steer and evaluate generative models.", no_args_is_help=True
)
console = Console()


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
    )


_F = TypeVar("_F", bound=Callable[..., None])


def _one_line_errors(fn: _F) -> _F:
    """Answer a library error with one line naming the problem and exit code 2.

    No traceback, as ``tamis attribute`` does; typer's own usage errors pass through.
    """

    @functools.wraps(fn)
    def wrapper(*args: object, **kwargs: object) -> None:
        try:
            fn(*args, **kwargs)
        except (ValueError, FileNotFoundError, OSError, KeyError) as err:
            if isinstance(err, typer.BadParameter):
                raise
            msg = err.args[0] if isinstance(err, KeyError) and err.args else err
            console.print(f"[red]error:[/] {msg}", soft_wrap=True, highlight=False)
            raise typer.Exit(code=2) from None

    return wrapper  # type: ignore[return-value]


_NPY_MAGIC = b"\x93NUMPY"


def _load_npy(path: Path, what: str) -> np.ndarray:
    """A 2-D float feature array from a ``.npy`` file, or ``ValueError`` naming the problem."""
    if not path.exists():
        raise FileNotFoundError(f"{what} file {path} does not exist")
    if path.is_dir():
        raise ValueError(f"{what} path {path} is a directory, not a .npy file")
    with open(path, "rb") as fh:
        head = fh.read(len(_NPY_MAGIC))
    if head != _NPY_MAGIC:
        raise ValueError(f"{what} file {path} is not a .npy array (no NumPy header); save "
                         "features with numpy.save")
    try:
        arr = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        if "allow_pickle" in str(err):
            raise ValueError(f"{what} file {path} holds Python objects (a pickled object "
                             "array), not numeric features") from None
        raise ValueError(f"{what} file {path} is a corrupted or truncated .npy ({err})") from None
    if arr.dtype.kind not in "fiub":
        raise ValueError(f"{what} file {path} holds dtype {arr.dtype}, not numbers")
    if arr.ndim != 2:
        raise ValueError(f"{what} file {path} has shape {arr.shape}; features must be (N, D)")
    return arr


@app.command()
@_one_line_errors
def score(
    reference: Annotated[
        Path, typer.Argument(help="Reference (real) features, .npy of shape (N, D).")
    ],
    out: Annotated[Path, typer.Option(help="Where to write the densities (.npy).")] = Path(
        "densities.npy"
    ),
    queries: Annotated[
        Path | None, typer.Option(help="Score these features instead (.npy).")
    ] = None,
    k: Annotated[int, typer.Option(help="Nearest neighbours.")] = 20,
    power: Annotated[float, typer.Option(help="Exponent n of (1/d)^n.")] = 1.0,
    method: Annotated[
        str, typer.Option(help="k-NN search: exact, ivf (approximate) or auto.")
    ] = "auto",
    predictor_out: Annotated[
        Path | None, typer.Option(help="Also train and save a predictor.")
    ] = None,
    epochs: Annotated[
        int, typer.Option(help="Predictor epochs (early stopping on 20% held out).")
    ] = 100,
) -> None:
    """Pseudo density of reference features (or of queries on the reference scale)."""
    from tamis.density.predictor import save_predictor, train_predictor
    from tamis.density.pseudo_density import PseudoDensity

    ref = _load_npy(reference, "reference")
    with _progress() as prog:
        task = prog.add_task("k-NN (reference)", total=ref.shape[0])
        pd = PseudoDensity(k=k, power=power, method=method).fit(  # type: ignore[arg-type]
            ref, progress=lambda n: prog.update(task, completed=n)
        )
        result = pd.reference_density
        if queries is not None:
            q = _load_npy(queries, "queries")
            task = prog.add_task("k-NN (queries)", total=q.shape[0])
            result = pd.score(q, progress=lambda n: prog.update(task, completed=n))
        if predictor_out is not None:
            task = prog.add_task("predictor epochs", total=epochs)
            model, hist = train_predictor(
                ref,
                pd.reference_density,
                epochs=epochs,
                progress=lambda e, _: prog.update(task, completed=e + 1),
            )
            save_predictor(model, predictor_out)
    np.save(out, result)
    pcts = np.percentile(pd.reference_density, [10, 50, 90])
    console.print(
        f"wrote {out} ({result.shape[0]} densities); reference percentiles "
        f"p10={pcts[0]:.3f} p50={pcts[1]:.3f} p90={pcts[2]:.3f}"
    )
    if predictor_out is not None:
        best = hist.val_mse[hist.best_epoch]
        console.print(f"predictor {predictor_out}: best validation MSE {best:.4f}")


@app.command()
@_one_line_errors
def evaluate(
    real: Annotated[Path, typer.Argument(help="Real features, .npy (N, D).")],
    fake: Annotated[Path, typer.Argument(help="Generated features, .npy (M, D).")],
    k: Annotated[int, typer.Option(help="Neighbours of the PRDC balls.")] = 5,
    out: Annotated[Path | None, typer.Option(help="Write the metrics as JSON here.")] = None,
) -> None:
    """Precision, recall, density, coverage and Frechet distance between two feature sets."""
    from tamis.density.metrics import frechet_distance, prdc

    r, f = _load_npy(real, "real"), _load_npy(fake, "fake")
    metrics = prdc(real=r, fake=f, k=k)
    metrics["frechet_distance"] = frechet_distance(real=r, fake=f)
    for key, val in metrics.items():
        console.print(f"{key:>17}: {val:.4f}")
    if out is not None:
        out.write_text(json.dumps(metrics, indent=2))


def _steering(data_dir: Path | None, k: int, n_ref: int):  # noqa: ANN202
    from tamis.data import load_image_dataset
    from tamis.density import pipeline as pl

    train = load_image_dataset("train", data_dir)
    models = pl.load_models(train, log=console.print)
    for net in (models.generator, models.discriminator, models.steer, models.evaluate):
        for p in net.parameters():
            p.requires_grad_(False)
    rng = np.random.default_rng(0)
    idx = np.sort(rng.choice(len(train), min(n_ref, len(train)), replace=False))
    ref = pl.images_tensor(train)[idx]
    console.print("fitting the pseudo density and the predictor in the steering features")
    return models, ref, pl.fit_steering(models.steer, ref, k=k)


@app.command()
@_one_line_errors
def sample(
    n: Annotated[int, typer.Option("--n", "-n", help="Samples to accept.")] = 1000,
    w: Annotated[float, typer.Option(help="Weight: > 1 fidelity, < 1 diversity.")] = 100.0,
    tau_percentile: Annotated[
        float, typer.Option(help="Threshold as a reference percentile.")
    ] = 50.0,
    mode: Annotated[
        str, typer.Option(help="importance, perturb, truncation or drs.")
    ] = "importance",
    epsilon: Annotated[
        float, typer.Option(help="Perturbation budget (mode perturb; sign = w>1).")
    ] = 0.3,
    psi: Annotated[float, typer.Option(help="Truncation psi (mode truncation).")] = 0.7,
    k: Annotated[int, typer.Option(help="Pseudo-density neighbours.")] = 20,
    n_ref: Annotated[int, typer.Option(help="Reference training images.")] = 10_000,
    data_dir: Annotated[Path | None, typer.Option(help="Fashion-MNIST folder.")] = None,
    out: Annotated[Path, typer.Option(help="Samples and latents (.npz).")] = Path(
        "density_samples.npz"
    ),
    seed: Annotated[int, typer.Option(help="Latent seed.")] = 0,
) -> None:
    """Sample the bundled GAN with importance sampling, perturbation or a baseline."""
    from tamis.density import pipeline as pl
    from tamis.density.perturb import perturb_latents
    from tamis.density.sampling import (
        discriminator_rejection_sample,
        importance_sample,
        truncate_latents,
    )

    models, ref, steer = _steering(data_dir, k, n_ref)
    g = models.generator
    sampler = pl.latent_sampler(g.cfg.latent_dim, seed)
    tau = steer.density.threshold(tau_percentile)
    with _progress() as prog:
        task = prog.add_task(mode, total=n)

        def tick(done: int) -> None:
            prog.update(task, completed=done)

        if mode == "importance":
            res = importance_sample(g, sampler, steer.scorer, n, tau=tau, w=w, progress=tick)
            images, latents = res.samples, res.latents
            note = (
                f"acceptance {res.acceptance_rate:.3f}, "
                f"{res.candidates_per_sample:.2f} candidates per sample"
            )
        elif mode == "perturb":
            pr = perturb_latents(
                sampler(n),
                g,
                steer.scorer,
                epsilon=epsilon,
                progress=tick,
                direction="fidelity" if w > 1 else "diversity",
            )
            latents, images = pr.latents, pl.generate(g, pr.latents)
            note = (
                f"predicted density {pr.initial_scores.mean():.3f} -> {pr.final_scores.mean():.3f}"
            )
        elif mode == "truncation":
            latents = truncate_latents(sampler(n), psi)
            images, note = pl.generate(g, latents), f"psi={psi}"
            tick(n)
        elif mode == "drs":
            res = discriminator_rejection_sample(g, sampler, models.discriminator, n, progress=tick)
            images, latents = res.samples, res.latents
            note = f"acceptance {res.acceptance_rate:.3f}"
        else:
            raise typer.BadParameter(f"unknown mode {mode!r}")
    real_eval = pl.extract(models.evaluate, ref[: min(5000, len(ref))]).numpy()
    metrics = pl.evaluate_images(models.evaluate, real_eval, images)
    np.savez(out, images=images.numpy(), latents=latents.numpy())
    console.print(f"wrote {out}: {note}")
    console.print(
        "metrics in F_e vs training images: "
        + ", ".join(f"{k_}={v:.3f}" for k_, v in metrics.items())
    )


@app.command()
@_one_line_errors
def finetune(
    w: Annotated[float, typer.Option(help="Real-side weight w_real (fake side 1/w).")] = 2.0,
    w_fake: Annotated[float | None, typer.Option(help="Fake-side weight (default 1/w).")] = None,
    tau_percentile: Annotated[
        float, typer.Option(help="Threshold as a reference percentile.")
    ] = 50.0,
    steps: Annotated[int, typer.Option(help="D+G steps.")] = 200,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-4,
    k: Annotated[int, typer.Option(help="Pseudo-density neighbours.")] = 20,
    n_ref: Annotated[int, typer.Option(help="Reference training images.")] = 10_000,
    data_dir: Annotated[Path | None, typer.Option(help="Fashion-MNIST folder.")] = None,
    out: Annotated[Path, typer.Option(help="Generator output.")] = Path(
        "density_finetuned.safetensors"
    ),
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
) -> None:
    """Fine-tune the bundled GAN with importance sampling on both sides (Algorithm 3)."""
    from tamis.density import pipeline as pl
    from tamis.density.finetune import finetune_gan
    from tamis.density.models import save_checkpoint

    models, ref, steer = _steering(data_dir, k, n_ref)
    g, d = models.generator, models.discriminator
    for net in (g, d):
        net.train()
        for p in net.parameters():
            p.requires_grad_(True)
    tau = steer.density.threshold(tau_percentile)
    with _progress() as prog:
        task = prog.add_task("fine-tune", total=steps)
        hist = finetune_gan(
            g,
            d,
            ref,
            steer.density.reference_density,
            pl.latent_sampler(g.cfg.latent_dim, seed),
            tau=tau,
            w_real=w,
            w_fake=w_fake,
            scorer=steer.scorer,
            steps=steps,
            lr=lr,
            seed=seed,
            progress=lambda s: prog.update(task, completed=s),
        )
    save_checkpoint(g.eval(), out, "generator", g.cfg.to_dict())
    console.print(f"wrote {out}; mean fake acceptance {np.mean(hist.fake_acceptance):.3f}")
    z = pl.latent_sampler(g.cfg.latent_dim, seed + 1)(1000)
    real_eval = pl.extract(models.evaluate, ref[:5000]).numpy()
    with torch.no_grad():
        metrics = pl.evaluate_images(models.evaluate, real_eval, g(z))
    console.print("metrics in F_e: " + ", ".join(f"{k_}={v:.3f}" for k_, v in metrics.items()))
