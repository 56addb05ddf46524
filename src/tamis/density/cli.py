"""``tamis density embed|score|sample|finetune|evaluate``: the library from the command line.

Features are ``.npy`` arrays ``(N, D)``; with ``--extractor`` the commands take image arrays
``(N, H, W)`` / ``(N, C, H, W)`` (floats in [0, 1] or uint8) and embed them first, through a
feature cache with ``--cache``. ``sample`` and ``finetune`` steer the bundled Fashion-MNIST
demo models by default, or a user's generator with ``--generator`` (a diffusers pipeline
directory or a TorchScript ``G(z)``).
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
    arr = _open_npy(path, what)
    if arr.ndim != 2:
        raise ValueError(f"{what} file {path} has shape {arr.shape}; features must be (N, D)")
    return np.asarray(arr)


def _open_npy(path: Path, what: str) -> np.ndarray:
    """A numeric (memory-mapped) array from a ``.npy``, or ``ValueError`` naming the problem."""
    if not path.exists():
        raise FileNotFoundError(f"{what} file {path} does not exist")
    if path.is_dir():
        raise ValueError(f"{what} path {path} is a directory, not a .npy file")
    with open(path, "rb") as fh:
        head = fh.read(len(_NPY_MAGIC))
    if head != _NPY_MAGIC:
        raise ValueError(f"{what} file {path} is not a .npy array (no NumPy header); save "
                         "arrays with numpy.save")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        if "allow_pickle" in str(err) or "object" in str(err):
            raise ValueError(f"{what} file {path} holds Python objects (a pickled object "
                             "array), not numbers") from None
        raise ValueError(f"{what} file {path} is a corrupted or truncated .npy ({err})") from None
    if arr.dtype.kind not in "fiub":
        raise ValueError(f"{what} file {path} holds dtype {arr.dtype}, not numbers")
    return arr


def _load_images(path: Path, what: str) -> np.ndarray:
    """Images ``(N, H, W)`` or ``(N, C, H, W)`` from a ``.npy`` (uint8, or floats in [0, 1])."""
    arr = _open_npy(path, what)
    if arr.ndim not in (3, 4):
        raise ValueError(f"{what} file {path} has shape {arr.shape}; images must be (N, H, W) "
                         "or (N, C, H, W)")
    if arr.shape[0] == 0:
        raise ValueError(f"{what} file {path} holds no images")
    if arr.dtype.kind == "b" or (arr.dtype.kind in "iu" and arr.dtype != np.uint8):
        raise ValueError(f"{what} file {path} holds {arr.dtype} images; use uint8 (0-255) or "
                         "floats in [0, 1]")
    return arr


def _embed(
    extractor: object, images: np.ndarray, cache: Path | None, what: str, batch_size: int,
    prog: Progress,
) -> np.ndarray:
    """Features of ``images``, through the feature cache when ``cache`` is given."""
    from tamis.density.cache import cached_features
    from tamis.density.extractors import extract_features

    task = prog.add_task(f"embed {what}", total=len(images))

    def tick(done: int) -> None:
        prog.update(task, completed=done)

    if cache is not None:
        return cached_features(extractor, images, cache, batch_size=batch_size,  # type: ignore[arg-type]
                               progress=tick)
    return extract_features(extractor, images, batch_size=batch_size,  # type: ignore[arg-type]
                            progress=tick)


def _features(
    path: Path, what: str, extractor: object, cache: Path | None, batch_size: int,
    prog: Progress,
) -> np.ndarray:
    """Features from a ``.npy`` of features, or of images embedded by ``extractor``."""
    if extractor is None:
        return _load_npy(path, what)
    return np.asarray(_embed(extractor, _load_images(path, what), cache, what, batch_size,
                             prog), dtype=np.float32)


def _open_extractor(spec: str | None) -> object:
    if spec is None:
        return None
    from tamis.density.extractors import load_extractor

    return load_extractor(spec)


ExtractorOpt = Annotated[
    str | None,
    typer.Option("--extractor", help="Embed image arrays with this extractor first: a "
                 "transformers directory, a .safetensors tamis checkpoint, a TorchScript .pt, "
                 "or inception:PATH."),
]
CacheOpt = Annotated[
    Path | None, typer.Option("--cache", help="Feature cache folder (embed once, resume).")
]
BatchOpt = Annotated[int, typer.Option(help="Images per extractor / generator call.")]


@app.command()
@_one_line_errors
def embed(
    images: Annotated[
        Path, typer.Argument(help="Images, .npy (N, H, W) or (N, C, H, W): uint8 or [0, 1].")
    ],
    extractor: Annotated[str, typer.Option("--extractor", help="The extractor (see score).")],
    out: Annotated[Path, typer.Option(help="Where to write the features (.npy).")] = Path(
        "features.npy"
    ),
    cache: CacheOpt = None,
    batch_size: BatchOpt = 256,
) -> None:
    """Embed an image array with an extractor (through the feature cache with --cache)."""
    from tamis._io import atomic_path

    ex = _open_extractor(extractor)
    imgs = _load_images(images, "images")
    with _progress() as prog:
        feats = _embed(ex, imgs, cache, "images", batch_size, prog)
    with atomic_path(out, suffix=".npy") as tmp:
        np.save(tmp, np.asarray(feats, dtype=np.float32))
    console.print(f"wrote {out}: features {tuple(feats.shape)} from "
                  f"{getattr(ex, 'name', extractor)} (fingerprint {ex.fingerprint})")  # type: ignore[union-attr]


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
    extractor: ExtractorOpt = None,
    cache: CacheOpt = None,
    batch_size: BatchOpt = 256,
) -> None:
    """Pseudo density of reference features (or of queries on the reference scale).

    With --extractor, REFERENCE and --queries are image arrays, embedded first.
    """
    from tamis.density.predictor import save_predictor, train_predictor
    from tamis.density.pseudo_density import PseudoDensity

    ex = _open_extractor(extractor)
    with _progress() as prog:
        ref = _features(reference, "reference", ex, cache, batch_size, prog)
        task = prog.add_task("k-NN (reference)", total=ref.shape[0])
        pd = PseudoDensity(k=k, power=power, method=method).fit(  # type: ignore[arg-type]
            ref, progress=lambda n: prog.update(task, completed=n)
        )
        result = pd.reference_density
        if queries is not None:
            q = _features(queries, "queries", ex, cache, batch_size, prog)
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
    extractor: ExtractorOpt = None,
    cache: CacheOpt = None,
    batch_size: BatchOpt = 256,
) -> None:
    """Precision, recall, density, coverage and Frechet distance between two feature sets.

    With --extractor, REAL and FAKE are image arrays, embedded first.
    """
    from tamis.density.metrics import frechet_distance, prdc

    ex = _open_extractor(extractor)
    with _progress() as prog:
        r = _features(real, "real", ex, cache, batch_size, prog)
        f = _features(fake, "fake", ex, cache, batch_size, prog)
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


GeneratorOpt = Annotated[
    Path | None,
    typer.Option("--generator", help="Your generator instead of the bundled GAN: an "
                 "unconditional diffusers pipeline directory or a TorchScript G(z) file."),
]
ReferenceOpt = Annotated[
    Path | None,
    typer.Option("--reference", help="Real images for --generator, .npy (N, H, W) or "
                 "(N, C, H, W), uint8 or [0, 1]."),
]
StepsOpt = Annotated[
    int, typer.Option(help="DDIM steps of a diffusers --generator (gradients pass through).")
]


class _UserSteering:
    """A user's generator, extractor and reference, with the pseudo density fitted on them."""

    def __init__(
        self, generator: Path, extractor: str | None, reference: Path | None, k: int,
        num_inference_steps: int, cache: Path | None, batch_size: int, prog: Progress,
        predictor: bool = True,
    ) -> None:
        from tamis.density.adapters import load_generator
        from tamis.density.pipeline import freeze
        from tamis.density.predictor import train_predictor
        from tamis.density.pseudo_density import PseudoDensity

        if extractor is None or reference is None:
            raise ValueError("--generator needs --extractor (the steering features) and "
                             "--reference (real images, .npy)")
        self.gen = load_generator(generator, num_inference_steps=num_inference_steps)
        self.ex = _open_extractor(extractor)
        self.images = _load_images(reference, "reference")
        self.feats = np.asarray(_embed(self.ex, self.images, cache, "reference", batch_size,
                                       prog), dtype=np.float32)
        task = prog.add_task("k-NN (reference)", total=len(self.feats))
        self.density = PseudoDensity(k=k).fit(
            self.feats, progress=lambda n: prog.update(task, completed=n))
        self.scorer: Callable[[torch.Tensor], torch.Tensor] | None = None
        if predictor:
            task = prog.add_task("predictor epochs", total=30)
            pred, _ = train_predictor(self.feats, self.density.reference_density, epochs=30,
                                      patience=5,
                                      progress=lambda e, _: prog.update(task, completed=e + 1))
            freeze(pred)
            ex = self.ex

            def scorer(x: torch.Tensor) -> torch.Tensor:
                return pred(ex(x))  # type: ignore[operator]

            self.scorer = scorer

    def sampler(self, seed: int) -> Callable[[int], torch.Tensor]:
        """Fresh latents on every call, reproducible from ``seed``."""
        calls = [0]

        def draw(b: int) -> torch.Tensor:
            calls[0] += 1
            return self.gen.sample_latents(b, seed=seed * 1_000_003 + calls[0])

        return draw


def _generate(gen: Callable[[torch.Tensor], torch.Tensor], latents: torch.Tensor,
              batch: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([gen(z).detach().cpu() for z in latents.split(batch)])


def _sample_user(
    generator: Path, extractor: str | None, reference: Path | None, *, n: int, w: float,
    tau_percentile: float, mode: str, epsilon: float, psi: float, k: int,
    num_inference_steps: int, cache: Path | None, batch_size: int, out: Path, seed: int,
) -> None:
    from tamis.density.adapters import DiffusersGenerator
    from tamis.density.metrics import prdc
    from tamis.density.perturb import perturb_latents
    from tamis.density.sampling import importance_sample, truncate_latents

    if mode not in ("importance", "perturb", "truncation", "drs"):
        raise typer.BadParameter(f"unknown mode {mode!r}")
    with _progress() as prog:
        st = _UserSteering(generator, extractor, reference, k, num_inference_steps, cache,
                           batch_size, prog)
        gen, scorer = st.gen, st.scorer
        diffusion = isinstance(gen, DiffusersGenerator)
        if mode == "drs":
            raise ValueError("mode drs needs a discriminator, which --generator does not "
                             "provide; use importance, perturb or truncation")
        if mode == "truncation" and diffusion:
            raise ValueError("mode truncation is for GAN latents; for a diffusion model use "
                             "importance or perturb (of the initial noise)")
        tau = st.density.threshold(tau_percentile)
        sampler = st.sampler(seed)
        task = prog.add_task(mode, total=n)

        def tick(done: int) -> None:
            prog.update(task, completed=done)

        if mode == "importance":
            res = importance_sample(gen, sampler, scorer, n, tau=tau, w=w,  # type: ignore[arg-type]
                                    batch_size=batch_size, seed=seed, progress=tick)
            images, latents = res.samples, res.latents
            note = (f"acceptance {res.acceptance_rate:.3f}, "
                    f"{res.candidates_per_sample:.2f} candidates per sample")
        elif mode == "perturb":
            pr = perturb_latents(sampler(n), gen, scorer, epsilon=epsilon,  # type: ignore[arg-type]
                                 batch_size=batch_size, progress=tick,
                                 direction="fidelity" if w > 1 else "diversity")
            latents = pr.latents
            images = _generate(gen, latents, batch_size)
            note = (f"predicted density {pr.initial_scores.mean():.3f} -> "
                    f"{pr.final_scores.mean():.3f}")
        else:
            latents = truncate_latents(sampler(n), psi)
            images, note = _generate(gen, latents, batch_size), f"psi={psi}"
            tick(n)
        fake = _embed(st.ex, images.numpy(), None, "samples", batch_size, prog)
    real = st.feats[: min(5000, len(st.feats))]
    metrics = prdc(real=real, fake=fake, k=min(5, len(real) - 1, len(fake) - 1))
    np.savez(out, images=images.detach().cpu().numpy(), latents=latents.detach().cpu().numpy())
    console.print(f"wrote {out}: {note}")
    console.print("metrics in the steering features vs the reference (not independent; score "
                  "with another extractor via `evaluate --extractor`): "
                  + ", ".join(f"{k_}={v:.3f}" for k_, v in metrics.items()))


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
    generator: GeneratorOpt = None,
    extractor: ExtractorOpt = None,
    reference: ReferenceOpt = None,
    num_inference_steps: StepsOpt = 20,
    cache: CacheOpt = None,
    batch_size: BatchOpt = 256,
) -> None:
    """Sample the bundled GAN (or --generator) with importance sampling, perturbation or a baseline.

    With --generator, the steering features come from --extractor on the --reference images;
    a diffusion model is steered through its initial noise (modes importance and perturb).
    """
    if generator is not None:
        _sample_user(generator, extractor, reference, n=n, w=w, tau_percentile=tau_percentile,
                     mode=mode, epsilon=epsilon, psi=psi, k=k,
                     num_inference_steps=num_inference_steps, cache=cache,
                     batch_size=batch_size, out=out, seed=seed)
        return
    _no_user_options(extractor, reference)
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


def _no_user_options(extractor: str | None, reference: Path | None) -> None:
    if extractor is not None or reference is not None:
        raise ValueError("--extractor and --reference steer a --generator; without one the "
                         "bundled Fashion-MNIST models and their own extractors are used")


def _finetune_user(
    generator: Path, extractor: str | None, reference: Path | None, *, w: float,
    tau_percentile: float, steps: int, lr: float, k: int, num_inference_steps: int,
    cache: Path | None, batch_size: int, ema_decay: float | None, out: Path, seed: int,
) -> None:
    from tamis.density.adapters import DiffusersGenerator
    from tamis.density.extractors import as_images
    from tamis.density.finetune import finetune_with_loss

    with _progress() as prog:
        st = _UserSteering(generator, extractor, reference, k, num_inference_steps, cache,
                           batch_size, prog, predictor=False)
        gen = st.gen
        if not isinstance(gen, DiffusersGenerator):
            raise ValueError(f"{generator}: fine-tuning from the command line supports "
                             "diffusers pipelines; a TorchScript GAN comes without its "
                             "discriminator (use tamis.density.finetune.finetune_gan)")
        real = as_images(st.images, "reference")
        if gen.vae is None and tuple(real.shape[1:]) != gen.latent_shape:
            raise ValueError(f"reference images are {tuple(real.shape[1:])} but the diffusion "
                             f"model generates {gen.latent_shape}: fine-tuning trains on the "
                             "reference images, so they must match")
        tau = st.density.threshold(tau_percentile)
        for p in gen.parameters():
            p.requires_grad_(True)
        gen.unet.train()
        torch.manual_seed(seed)
        task = prog.add_task("fine-tune", total=steps)
        losses = finetune_with_loss(
            gen.loss, gen.parameters(), real, st.density.reference_density, tau=tau, w=w,
            steps=steps, batch_size=min(batch_size, real.shape[0]), lr=lr, seed=seed,
            ema_decay=ema_decay, progress=lambda s: prog.update(task, completed=s))
        gen.unet.eval()
    gen.save_pretrained(out)
    console.print(f"wrote {out} (diffusers pipeline); loss {losses[0]:.4f} -> {losses[-1]:.4f}"
                  f" over {steps} steps, w={w}, tau=p{tau_percentile:g}")


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
    out: Annotated[
        Path | None,
        typer.Option(help="Output: a .safetensors generator (bundled GAN) or a pipeline "
                     "directory (--generator). Default density_finetuned[.safetensors]."),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    generator: GeneratorOpt = None,
    extractor: ExtractorOpt = None,
    reference: ReferenceOpt = None,
    num_inference_steps: StepsOpt = 20,
    cache: CacheOpt = None,
    batch_size: Annotated[
        int, typer.Option(help="Fine-tuning batch (--generator; also images per embedding "
                          "call).")
    ] = 64,
    ema_decay: Annotated[
        float | None, typer.Option(help="EMA of the weights written at the end (--generator).")
    ] = None,
) -> None:
    """Fine-tune the bundled GAN (Algorithm 3), or a diffusers --generator on weighted reals.

    A diffusers --generator is trained with its own denoising loss on --reference batches
    drawn w times as often above tau, then saved with save_pretrained to --out.
    """
    if generator is not None:
        _finetune_user(generator, extractor, reference, w=w, tau_percentile=tau_percentile,
                       steps=steps, lr=lr, k=k, num_inference_steps=num_inference_steps,
                       cache=cache, batch_size=batch_size, ema_decay=ema_decay,
                       out=out if out is not None else Path("density_finetuned"), seed=seed)
        return
    _no_user_options(extractor, reference)
    out = out if out is not None else Path("density_finetuned.safetensors")
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
