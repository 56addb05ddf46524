"""Setting (a): a 784-32-10 MLP on Fashion-MNIST; LDS against retrained models.

One command reruns it (ground truth is cached under benchmarks/cache/fmnist_mlp/)::

    .venv/bin/python benchmarks/attribution/fmnist_mlp.py --subsets 50

``--update-anchors bergson`` reruns only those anchors on the cached model, masks and ground
truth and replaces their rows in the existing results (the tamis grid is not rerun).

Writes benchmarks/results/attribution_fmnist_mlp.{json,md,png}. Per-example gradients of an
MLP on single images have rank 1, so LoRIF with c > 1 gives the same scores as c = 1 with a
larger store; those combinations are skipped (and listed as such).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import CACHE, tamis_grid  # noqa: E402
from harness import (  # noqa: E402
    add_grid_lds,
    add_tail_patch,
    finish,
    fixed_masks,
    load_data,
    plain_train_throughput,
    reference_scores,
    save_data,
    score_anchors,
    score_grid,
    setting_parser,
    update_anchors,
    with_tail_rows,
)
from models import MLP, train_mlp  # noqa: E402

from tamis.attribution.evaluation import ground_truth, tail_patch  # noqa: E402
from tamis.attribution.examples import ClassificationTask  # noqa: E402
from tamis.data import load_fashion_mnist  # noqa: E402

TASK = ClassificationTask(["fc1", "fc2"])  # cross-entropy on the MLP's two linear layers


def tail_patch_fn(model, train_ds, query_ds):
    """Tail-patch protocol of this setting: k = 10, one SGD step of lr 0.5, 5 random draws."""
    def run(top: np.ndarray) -> dict:
        return tail_patch(TASK, model, train_ds, query_ds, top, k=10, lr=0.5, n_random=5,
                          progress=False).to_dict()
    return run


def setting_data(n: int, q: int, hidden: int = 32, epochs: int = 30,
                 batch_size: int = 500) -> dict:
    """Setting (a): data, hyper-parameters, the ground-truth cache key and the retraining
    function (shared with ``fisher_damping.py``, so both read one ground-truth cache)."""
    tr, te = load_fashion_mnist("train"), load_fashion_mnist("test")
    x = torch.tensor(tr.images[:n].reshape(n, -1), dtype=torch.float32)
    y = torch.tensor(tr.labels[:n], dtype=torch.long)
    xq = torch.tensor(te.images[:q].reshape(q, -1), dtype=torch.float32)
    yq = torch.tensor(te.labels[:q], dtype=torch.long)
    hp = {"hidden": hidden, "epochs": epochs, "batch_size": batch_size, "lr": 3e-3,
          "weight_decay": 1e-3}
    setting = {"name": "fmnist_mlp", "data": "fashion-mnist train[:n], test[:q]", "n": n, "q": q,
               **hp}

    def retrain(mask: np.ndarray, seed: int) -> np.ndarray:
        m = torch.from_numpy(mask)
        sub = train_mlp(x[m], y[m], seed=seed, **hp)
        with torch.no_grad():
            return F.cross_entropy(sub(xq), yq, reduction="none").numpy()

    return {"x": x, "y": y, "xq": xq, "yq": yq, "hp": hp, "setting": setting,
            "retrain": retrain}


def main() -> None:
    p = setting_parser(__doc__, "fmnist_mlp", seeds=3, n_train=5000, epochs=30,
                       batch_size=500, tail_c=[1, 2, 4, 8])
    p.add_argument("--hidden", type=int, default=32)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    cache = CACHE / "fmnist_mlp"
    if args.update_anchors:
        update_only(cache, args)
        return
    cache.mkdir(parents=True, exist_ok=True)
    n, q = args.n_train, args.n_queries
    sd = setting_data(n, q, args.hidden, args.epochs, args.batch_size)
    x, y, xq, yq, hp, setting, retrain = (sd[k] for k in ("x", "y", "xq", "yq", "hp",
                                                            "setting", "retrain"))
    save_data(cache, x, y, xq, yq)

    t0 = time.perf_counter()
    model = train_mlp(x, y, seed=12345, **hp)
    t_train_full = time.perf_counter() - t0
    torch.save(model.state_dict(), cache / "model.pt")
    (cache / "meta.json").write_text(json.dumps({"arch": "mlp", "hidden": args.hidden}))
    with torch.no_grad():
        acc = float((model(xq).argmax(1) == yq).float().mean())

    masks = fixed_masks(cache, n, args.subsets)

    t0 = time.perf_counter()
    truth = ground_truth(retrain, masks, cache, setting, n_seeds=args.seeds)
    t_truth = time.perf_counter() - t0
    print(f"ground truth {truth.shape} in {t_truth:.1f}s (0 if cached)", flush=True)

    probe = MLP(args.hidden)
    opt = torch.optim.AdamW(probe.parameters(), lr=3e-3)

    def step(lo: int) -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(probe(x[lo:lo + args.batch_size]), y[lo:lo + args.batch_size]).backward()
        opt.step()

    train_thr = plain_train_throughput(step, n, args.batch_size, repeats=3)

    train_ds, query_ds = TensorDataset(x, y), TensorDataset(xq, yq)
    rows = with_tail_rows(tamis_grid(args.D, args.c, args.r, n, max_rank_per_example=1),
                          args.tail_c)
    score_grid(rows, TASK, model, train_ds, query_ds, cache, args.batch_size)
    add_grid_lds(rows, masks, truth)
    rows += score_anchors("fmnist_mlp", args.anchors, cache, masks, truth, args.anchor_timeout,
                          reference_scores(cache, rows), reuse=args.reuse_anchors)
    add_tail_patch(rows, tail_patch_fn(model, train_ds, query_ds))

    meta = {"setting": setting,
            "n_subsets": int(masks.shape[0]), "alpha": 0.5, "n_seeds_per_subset": args.seeds,
            "ground_truth_s": t_truth, "full_model_train_s": t_train_full,
            "query_accuracy": acc, "batch_size": args.batch_size,
            "train_throughput_ex_per_s": train_thr,
            "description": (f"MLP 784-{args.hidden}-10 (tanh) on Fashion-MNIST, N={n} training "
                            f"images, {q} test queries, {masks.shape[0]} subsets (alpha=0.5), "
                            f"{args.seeds} retraining seeds averaged per subset. Query accuracy "
                            f"of the full model: {acc:.3f}. LDS target: query cross-entropy "
                            "(higher score = helps = lowers loss). LoRIF c>1 is skipped: "
                            "per-example gradients of an MLP have rank 1, so c>1 equals c=1 "
                            "with a larger store. 'tamis lorif+tail' = the same LoRIF "
                            "configurations with CurvatureConfig(tail='isotropic').")}
    finish("fmnist_mlp", meta, rows)


def update_only(cache: Path, args) -> None:
    """``--update-anchors``: rerun only those anchors; tail-patch as in the full run."""
    meta = json.loads((cache / "meta.json").read_text())
    model = MLP(meta["hidden"])
    model.load_state_dict(torch.load(cache / "model.pt"))
    model.eval()
    x, y, xq, yq = load_data(cache)
    train_ds, query_ds = TensorDataset(x, y), TensorDataset(xq, yq)
    update_anchors("fmnist_mlp", args.update_anchors, cache, args.anchor_timeout,
                   tail_patch_fn(model, train_ds, query_ds), reuse=args.reuse_anchors)


if __name__ == "__main__":
    main()
