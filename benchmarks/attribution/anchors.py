"""Competing libraries on the cached benchmark settings; runs in benchmarks/.venv-bench.

    benchmarks/.venv-bench/bin/python benchmarks/attribution/anchors.py \
        --setting fmnist_mlp --method traker --cache benchmarks/cache/fmnist_mlp \
        --out OUT --options '{"proj_dim": 1024}'

Reads the cached model (model.pt + meta.json) and data (*.npy) written by the setting's
script, writes OUT/scores.npy ((Q, N), positive = helpful: lowers the query's loss) and
OUT/info.json (timings, bytes, peak RSS). Imports torch and the anchor only, not tamis.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from models import MLP, CharLM, MiniLMClassifier  # noqa: E402

ARCH = {"arch": "mlp", "layers": ["fc1", "fc2"]}  # set by load_setting


def ex_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example loss: cross-entropy (MLP) or mean next-character cross-entropy (LM)."""
    if logits.dim() == 3:
        return F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(1)
    return F.cross_entropy(logits, y, reduction="none")


def log_odds(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """TRAK's margin log(p / (1 - p)) of the correct class, averaged over positions."""
    logp = -F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1),
                            reduction="none")
    return (logp - torch.log1p(-torch.exp(logp).clamp(max=1 - 1e-6))).mean()


def peak_rss_mb() -> float:
    for line in Path(f"/proc/{os.getpid()}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def load_setting(cache: Path):
    meta = json.loads((cache / "meta.json").read_text())
    if meta["arch"] == "mlp":
        model = MLP(meta["hidden"])
    elif meta["arch"] == "charlm":
        model = CharLM(meta["vocab"], d=meta["d"], layers=meta["n_layers"], heads=meta["heads"],
                       ctx=meta["ctx"])
        ARCH.update(arch="charlm", layers=meta["tracked"])
    elif meta["arch"] == "minilm":
        # setting (c): same architecture rebuilt from the packaged config, weights from
        # model.pt; the word embeddings were frozen during fine-tuning (as there)
        model = MiniLMClassifier(meta["num_labels"], pretrained=False)
        for name in meta.get("frozen", []):
            model.get_parameter(name).requires_grad_(False)
        ARCH.update(arch="minilm", layers=meta["tracked"])
    else:
        raise NotImplementedError(f"arch {meta['arch']}")
    model.load_state_dict(torch.load(cache / "model.pt"))
    model.eval()
    x = torch.from_numpy(np.load(cache / "train_x.npy"))
    y = torch.from_numpy(np.load(cache / "train_y.npy"))
    xq = torch.from_numpy(np.load(cache / "query_x.npy"))
    yq = torch.from_numpy(np.load(cache / "query_y.npy"))
    return model, TensorDataset(x, y), TensorDataset(xq, yq)


# -- dattri ------------------------------------------------------------------------------
class _Out:
    def __init__(self, loss: torch.Tensor) -> None:
        self.loss = loss


class _LossModel(torch.nn.Module):
    """dattri 0.3.0 LoGra computes query gradients as cross_entropy(model(x), y) unless the
    model returns an object with ``.loss`` for dict batches: wrap the LM so it does."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> _Out:
        return _Out(ex_loss(self.model(x), y).sum())


class _DictData(torch.utils.data.Dataset):
    def __init__(self, ds: TensorDataset) -> None:
        self.ds = ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict:
        x, y = self.ds[i]
        return {"x": x, "y": y}


def run_dattri_logra(model, train, queries, out: Path, opts: dict) -> tuple[np.ndarray, dict]:
    from dattri.algorithm.logra import LoGraAttributor
    from dattri.task import AttributionTask

    layers = ARCH["layers"]
    if ARCH["arch"] == "charlm":
        model = _LossModel(model)
        layers = [f"model.{n}" for n in layers]
        train, queries = _DictData(train), _DictData(queries)

    def loss_func(m, batch, device):
        if isinstance(batch, dict):
            return m(x=batch["x"].to(device), y=batch["y"].to(device)).loss
        x, y = batch
        return ex_loss(m(x.to(device)), y.to(device)).sum()

    task = AttributionTask(loss_func=loss_func, model=model, checkpoints=model.state_dict())
    cache_dir = out / "dattri_cache"  # else dattri writes batch_metadata.json to the cwd
    shutil.rmtree(cache_dir, ignore_errors=True)
    cache_dir.mkdir(parents=True)
    att = LoGraAttributor(task, layer_names=layers, hessian="eFIM", device="cpu",
                          proj_dim=opts["proj_dim_per_layer"], offload="cpu",
                          cache_dir=str(cache_dir))
    # dattri 0.3.0 LoGra fails on 2-D inputs (IndexError); known workaround: an extra
    # leading dimension, flattened by the model's nn.Flatten
    if ARCH["arch"] == "mlp":
        train = TensorDataset(train.tensors[0].unsqueeze(1), train.tensors[1])
        queries = TensorDataset(queries.tensors[0].unsqueeze(1), queries.tensors[1])
    tl = DataLoader(train, batch_size=50 if ARCH["arch"] == "minilm" else 500, shuffle=False)
    ql = DataLoader(queries, batch_size=1, shuffle=False)
    t0 = time.perf_counter()
    att.cache(tl)
    t_cache = time.perf_counter() - t0
    t0 = time.perf_counter()
    s = att.attribute(tl, ql)  # (N, Q)
    t_attr = time.perf_counter() - t0
    n = len(train)
    return s.T.numpy().astype(np.float64), {
        "config": f"proj_dim_per_layer={opts['proj_dim_per_layer']}",
        "D": opts["proj_dim_per_layer"],
        "build_s": t_cache, "index_throughput_ex_per_s": n / t_cache,
        "store_bytes_per_example": 4.0 * att.total_proj_dim,
        "store_note": "offload=cpu (float32 projected gradients in memory), computed; "
                      "offload=disk fails on CPU-only torch (pin_memory needs CUDA)",
        "query_warm": {"total_s": t_attr, "note": "attribute() incl. preconditioning"},
    }


def run_dattri_trak(model, train, queries, out: Path, opts: dict) -> tuple[np.ndarray, dict]:
    from dattri.algorithm.trak import TRAKAttributor
    from dattri.task import AttributionTask

    def loss_func(params, data):
        x, y = data
        logits = torch.func.functional_call(model, params, x.unsqueeze(0))
        return log_odds(logits, y.unsqueeze(0))

    # dattri passes already unflattened params (its docstring's @flatten_func breaks 0.3.0)
    def correct_prob(params, data):
        x, y = data
        logits = torch.func.functional_call(model, params, x.unsqueeze(0))
        return torch.exp(-ex_loss(logits, y.unsqueeze(0)))[0]

    task = AttributionTask(loss_func=loss_func, model=model, checkpoints=model.state_dict())
    # MiniLM: gradients of the tracked layers only (the full 22.7M-parameter gradient does
    # not fit a per-example vmap batch on this machine); the other settings: all parameters
    layer_name = _tracked_params(model) if ARCH["arch"] == "minilm" else None
    att = TRAKAttributor(task, correct_prob, device="cpu", layer_name=layer_name,
                         projector_kwargs={"device": "cpu", "proj_dim": opts["proj_dim"]})
    bs = 25 if ARCH["arch"] == "minilm" else 250
    tl = DataLoader(train, batch_size=bs, shuffle=False)
    ql = DataLoader(queries, batch_size=min(bs, 50), shuffle=False)
    t0 = time.perf_counter()
    att.cache(tl)
    t_cache = time.perf_counter() - t0
    t0 = time.perf_counter()
    s = att.attribute(ql)  # (N, Q)
    t_attr = time.perf_counter() - t0
    n = len(train)
    return s.T.numpy().astype(np.float64), {
        "config": f"proj_dim={opts['proj_dim']}", "D": opts["proj_dim"],
        "build_s": t_cache, "index_throughput_ex_per_s": n / t_cache,
        "store_bytes_per_example": 4.0 * opts["proj_dim"],
        "store_note": "in memory (float32 projected features), computed not measured",
        "query_warm": {"total_s": t_attr},
        "grad_params": "tracked layers only" if layer_name else "all parameters",
    }


def _tracked_params(model) -> list[str]:
    """Parameter names (weight and bias) of the tracked layers."""
    names = dict(model.named_parameters())
    return [f"{m}.{k}" for m in ARCH["layers"] for k in ("weight", "bias") if f"{m}.{k}" in names]


# -- traker ------------------------------------------------------------------------------
def _lm_out_class():
    from trak.modelout_functions import AbstractModelOutput

    class LMOutput(AbstractModelOutput):
        """TRAK model output for a char LM: mean log-odds over positions; Q = 1 - p."""

        def __init__(self) -> None:
            super().__init__()

        def get_output(self, model, weights, buffers, x, y):
            logits = torch.func.functional_call(model, (weights, buffers), x.unsqueeze(0))
            return log_odds(logits, y.unsqueeze(0))

        def get_out_to_loss_grad(self, model, weights, buffers, batch):
            x, y = batch
            logits = torch.func.functional_call(model, (weights, buffers), x)
            return (1 - torch.exp(-ex_loss(logits, y))).detach().unsqueeze(-1)

    return LMOutput


def LMOut():  # noqa: N802
    return _lm_out_class()()


def run_traker(model, train, queries, out: Path, opts: dict) -> tuple[np.ndarray, dict]:
    from trak import TRAKer
    from trak.projectors import BasicProjector, ProjectionType

    save = out / "trak_results"
    shutil.rmtree(save, ignore_errors=True)
    grad_dim = sum(p.numel() for p in model.parameters())
    proj = BasicProjector(grad_dim=grad_dim, proj_dim=opts["proj_dim"], seed=0,
                          proj_type=ProjectionType.rademacher, device="cpu")
    n, q = len(train), len(queries)
    task = "image_classification" if ARCH["arch"] == "mlp" else LMOut()
    grad_wrt = None
    if ARCH["arch"] == "minilm":  # tracked layers only (see run_dattri_trak)
        grad_wrt = _tracked_params(model)
        grad_dim = sum(dict(model.named_parameters())[k].numel() for k in grad_wrt)
        proj = BasicProjector(grad_dim=grad_dim, proj_dim=opts["proj_dim"], seed=0,
                              proj_type=ProjectionType.rademacher, device="cpu")
    tr = TRAKer(model=model, task=task, train_set_size=n, save_dir=str(save),
                device="cpu", projector=proj, proj_dim=opts["proj_dim"],
                use_half_precision=True, lambda_reg=opts.get("lambda_reg", 0.0),
                grad_wrt=grad_wrt)
    bs = 250
    if grad_wrt is not None:  # vmap over the tracked weights only (others from the module)
        bs = 25
        tr.gradient_computer.func_weights = {
            k: v for k, v in tr.gradient_computer.func_weights.items() if k in grad_wrt}
    t0 = time.perf_counter()
    tr.load_checkpoint(model.state_dict(), model_id=0)
    if grad_wrt is not None:  # load_checkpoint reloads every parameter
        tr.gradient_computer.func_weights = {
            k: v for k, v in tr.gradient_computer.func_weights.items() if k in grad_wrt}
    for x, y in DataLoader(train, batch_size=bs, shuffle=False):
        tr.featurize(batch=(x, y), num_samples=x.shape[0])
    tr.finalize_features()
    t_build = time.perf_counter() - t0
    stored = folder_bytes(save)
    t0 = time.perf_counter()
    tr.start_scoring_checkpoint(exp_name="q", checkpoint=model.state_dict(), model_id=0,
                                num_targets=q)
    if grad_wrt is not None:
        tr.gradient_computer.func_weights = {
            k: v for k, v in tr.gradient_computer.func_weights.items() if k in grad_wrt}
    for x, y in DataLoader(queries, batch_size=min(bs, 50), shuffle=False):
        tr.score(batch=(x, y), num_samples=x.shape[0])
    s = tr.finalize_scores(exp_name="q")  # (N, Q)
    t_score = time.perf_counter() - t0
    return np.asarray(s, dtype=np.float64).T, {
        "config": f"proj_dim={opts['proj_dim']}", "D": opts["proj_dim"],
        "build_s": t_build, "index_throughput_ex_per_s": n / t_build,
        "store_bytes_per_example": stored / n,
        "store_note": "whole save_dir after finalize_features (features, out-to-loss, "
                      "XtX inverse features)",
        "query_warm": {"total_s": t_score},
    }


# -- kronfluence -------------------------------------------------------------------------
def run_kronfluence(model, train, queries, out: Path, opts: dict) -> tuple[np.ndarray, dict]:
    from kronfluence.analyzer import Analyzer, prepare_model
    from kronfluence.arguments import FactorArguments, ScoreArguments
    from kronfluence.task import Task

    class KTask(Task):
        def compute_train_loss(self, batch, model, sample=False):
            x, y = batch
            logits = model(x)
            if sample:
                with torch.no_grad():
                    probs = torch.softmax(logits.detach().reshape(-1, logits.shape[-1]), -1)
                    y = torch.multinomial(probs, 1).reshape(y.shape)
            return ex_loss(logits, y).sum()

        def compute_measurement(self, batch, model):
            x, y = batch
            return ex_loss(model(x), y).sum()

        def get_influence_tracked_modules(self):
            return ARCH["layers"]

    task = KTask()
    model = prepare_model(model, task)
    save = out / "kronfluence"
    shutil.rmtree(save, ignore_errors=True)
    analyzer = Analyzer(analysis_name="bench", model=model, task=task, cpu=True,
                        output_dir=str(save), disable_tqdm=True)
    bs = 50 if ARCH["arch"] == "minilm" else 500
    strategy = opts.get("strategy", "ekfac")
    t0 = time.perf_counter()
    analyzer.fit_all_factors(factors_name=strategy, dataset=train,
                             factor_args=FactorArguments(strategy=strategy),
                             per_device_batch_size=bs, overwrite_output_dir=True)
    t_fit = time.perf_counter() - t0
    factors_bytes = folder_bytes(save)
    t0 = time.perf_counter()
    analyzer.compute_pairwise_scores(scores_name="s", factors_name=strategy,
                                     query_dataset=queries,
                                     train_dataset=train, per_device_query_batch_size=100,
                                     per_device_train_batch_size=bs,
                                     score_args=ScoreArguments(damping_factor=None),
                                     overwrite_output_dir=True)
    t_score = time.perf_counter() - t0
    s = analyzer.load_pairwise_scores("s")["all_modules"]  # (Q, N)
    n = len(train)
    return s.numpy().astype(np.float64), {
        "config": f"{strategy}, damping_factor=None (0.1 x mean eigenvalue)",
        "build_s": t_fit, "index_throughput_ex_per_s": n / t_fit,
        "store_bytes_per_example": None,
        "store_note": "stores no per-example data: training gradients recomputed per query batch",
        "curvature_bytes": factors_bytes,
        "query_warm": {"total_s": t_score, "note": "recomputes all training gradients"},
    }


RUNNERS = {"dattri_logra": run_dattri_logra, "dattri_trak": run_dattri_trak,
           "traker": run_traker, "kronfluence_ekfac": run_kronfluence,
           "kronfluence_kfac": lambda *a: run_kronfluence(*a[:-1], {"strategy": "kfac",
                                                                    **a[-1]})}


def anchor_arguments(methods: list[str] | None = None) -> tuple[argparse.Namespace, dict]:
    """The command line every anchor script takes (see ``common.run_anchor``), parsed.

    Returns the arguments (``--out`` created) and the decoded ``--options``; sets one thread.
    """
    p = argparse.ArgumentParser()
    p.add_argument("--setting", required=True)
    if methods is not None:
        p.add_argument("--method", required=True, choices=sorted(methods))
    p.add_argument("--cache", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--options", default="{}")
    args = p.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)  # Kronfluence's sampled labels (true Fisher) draw from torch's RNG
    args.out.mkdir(parents=True, exist_ok=True)
    return args, json.loads(args.options)


def main() -> None:
    args, opts = anchor_arguments(list(RUNNERS))
    model, train, queries = load_setting(args.cache)
    import importlib.metadata as md

    pkg = {"dattri_logra": "dattri", "dattri_trak": "dattri", "traker": "traker",
           "kronfluence_ekfac": "kronfluence", "kronfluence_kfac": "kronfluence"}[args.method]
    scores, info = RUNNERS[args.method](model, train, queries, args.out, opts)
    info.update(package=f"{pkg}=={md.version(pkg)}", torch=torch.__version__,
                torch_threads=torch.get_num_threads(), peak_rss_mb=peak_rss_mb(), **opts)
    if scores.shape != (len(queries), len(train)):
        want = (len(queries), len(train))
        raise RuntimeError(f"scores have shape {scores.shape}, expected {want}")
    np.save(args.out / "scores.npy", scores)
    (args.out / "info.json").write_text(json.dumps(info, indent=1))
    for sub in ("dattri_cache", "trak_results", "kronfluence"):
        shutil.rmtree(args.out / sub, ignore_errors=True)


if __name__ == "__main__":
    main()
