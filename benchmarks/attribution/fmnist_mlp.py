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

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    CACHE,
    add_lds,
    clear_stores,
    command_line,
    environment,
    run_anchor,
    run_tamis,
    tamis_grid,
    update_anchors,
    write_results,
)
from models import MLP, train_mlp  # noqa: E402
from targets import targets_report  # noqa: E402

from tamis.attribution.evaluation import (  # noqa: E402
    ground_truth,
    load_masks,
    make_masks,
    save_masks,
    tail_patch,
)
from tamis.attribution.examples import ImageClassificationTask  # noqa: E402
from tamis.data import load_fashion_mnist  # noqa: E402

ANCHORS = ["dattri_logra", "dattri_trak", "traker", "kronfluence_ekfac", "bergson"]


class CETask(ImageClassificationTask):
    """Cross-entropy per example on the MLP's two linear layers."""

    def tracked_modules(self, model):
        return ["fc1", "fc2"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--subsets", type=int, default=50)
    p.add_argument("--seeds", type=int, default=3, help="retraining seeds averaged per subset")
    p.add_argument("--n-train", type=int, default=5000)
    p.add_argument("--n-queries", type=int, default=100)
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--D", type=int, nargs="+", default=[256, 1024, 4096])
    p.add_argument("--c", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--r", type=int, nargs="+", default=[32, 128, 512])
    p.add_argument("--anchors", nargs="*", default=ANCHORS)
    p.add_argument("--anchor-timeout", type=int, default=900)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-tail", action="store_true",
                   help="skip the 'lorif+tail' rows (CurvatureConfig(tail='isotropic'))")
    p.add_argument("--reuse-anchors", action="store_true",
                   help="read back anchor configurations kept by an earlier run on the same "
                        "model.pt instead of rerunning them")
    p.add_argument("--update-anchors", nargs="+", metavar="METHOD", choices=ANCHORS,
                   help="rerun only these anchors on the cached model/masks/ground truth and "
                        "replace their rows in benchmarks/results/attribution_fmnist_mlp.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    cache = CACHE / "fmnist_mlp"
    if args.update_anchors:
        update_only(cache, args)
        return
    cache.mkdir(parents=True, exist_ok=True)
    tr, te = load_fashion_mnist("train"), load_fashion_mnist("test")
    n, q = args.n_train, args.n_queries
    x = torch.tensor(tr.images[:n].reshape(n, -1), dtype=torch.float32)
    y = torch.tensor(tr.labels[:n], dtype=torch.long)
    xq = torch.tensor(te.images[:q].reshape(q, -1), dtype=torch.float32)
    yq = torch.tensor(te.labels[:q], dtype=torch.long)
    hp = {"hidden": args.hidden, "epochs": args.epochs, "batch_size": args.batch_size,
          "lr": 3e-3, "weight_decay": 1e-3}
    setting = {"name": "fmnist_mlp", "data": "fashion-mnist train[:n], test[:q]", "n": n, "q": q,
               **hp}
    for name, arr in (("train_x", x), ("train_y", y), ("query_x", xq), ("query_y", yq)):
        np.save(cache / f"{name}.npy", arr.numpy())

    train_kw = {k: hp[k] for k in ("epochs", "batch_size", "lr", "weight_decay", "hidden")}
    t0 = time.perf_counter()
    model = train_mlp(x, y, seed=12345, **train_kw)
    t_train_full = time.perf_counter() - t0
    torch.save(model.state_dict(), cache / "model.pt")
    (cache / "meta.json").write_text(json.dumps({"arch": "mlp", "hidden": args.hidden}))
    with torch.no_grad():
        acc = float((model(xq).argmax(1) == yq).float().mean())

    # masks: fixed, saved, shared by every method
    mask_path = cache / f"masks-M{args.subsets}-N{n}.npy"
    if mask_path.exists():
        masks = load_masks(mask_path)
    else:
        masks = make_masks(n, args.subsets, alpha=0.5, seed=0)
        save_masks(mask_path, masks)

    def retrain(mask: np.ndarray, seed: int) -> np.ndarray:
        m = torch.from_numpy(mask)
        sub = train_mlp(x[m], y[m], seed=seed, **train_kw)
        with torch.no_grad():
            return F.cross_entropy(sub(xq), yq, reduction="none").numpy()

    t0 = time.perf_counter()
    truth = ground_truth(retrain, masks, cache, setting, n_seeds=args.seeds)
    t_truth = time.perf_counter() - t0
    print(f"ground truth {truth.shape} in {t_truth:.1f}s (0 if cached)", flush=True)

    # plain training throughput of the same model at the same batch size (one epoch, warm)
    probe = MLP(args.hidden)
    opt = torch.optim.AdamW(probe.parameters(), lr=3e-3)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        for lo in range(0, n, args.batch_size):
            opt.zero_grad(set_to_none=True)
            xb, yb = x[lo:lo + args.batch_size], y[lo:lo + args.batch_size]
            F.cross_entropy(probe(xb), yb).backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    train_thr = n / min(times)

    task = CETask()
    train_ds, query_ds = TensorDataset(x, y), TensorDataset(xq, yq)
    rows = tamis_grid(args.D, args.c, args.r, n, max_rank_per_example=1)
    if not args.no_tail:  # the same LoRIF grid with the isotropic-tail curvature
        rows += [{**r, "method": "tamis lorif+tail"} for r in rows
                 if r["method"] == "tamis lorif" and not r.get("skip")]
    workdir = cache / "stores"
    for spec in rows:
        if spec.get("skip"):
            continue
        print("tamis", spec, flush=True)
        try:
            scores, info = run_tamis(spec, task, model, train_ds, query_ds, workdir,
                                     args.batch_size)
            spec.update(add_lds(info, scores, masks, truth))
            fname = cache / (f"scores-{spec['method'].split()[-1]}-D{spec['D']}-c{spec['c']}"
                             f"-r{spec['r']}.npy")
            np.save(fname, scores)
            spec["_scores_file"] = str(fname)
        except Exception as exc:  # record, never drop
            spec["error"] = f"{type(exc).__name__}: {exc}"
        print("  ->", spec.get("lds", spec.get("error")), flush=True)
    clear_stores(workdir)

    ref_path = cache / f"scores-logra-D{max(args.D)}-cNone-rNone.npy"
    ref = np.load(ref_path) if ref_path.exists() else None
    for method in args.anchors:
        for opts in anchor_options(method):
            print("anchor", method, opts, flush=True)
            info = run_anchor("fmnist_mlp", method, cache, opts, args.anchor_timeout,
                              reuse=args.reuse_anchors)
            if "scores_path" in info:
                s_anchor = np.load(info["scores_path"])
                add_lds(info, s_anchor, masks, truth)
                if ref is not None:  # sign sanity check against tamis dense LoGRA
                    info["mean_pearson_with_tamis_logra"] = float(np.mean(
                        [np.corrcoef(s_anchor[i], ref[i])[0, 1] for i in range(len(ref))]))
            rows.append(info)
            print("  ->", info.get("lds", info.get("error", "")[-300:]), flush=True)

    # tail-patch on the same scores (k = 10, one SGD step of lr 0.5, 5 random draws)
    for r in rows:
        path = r.get("scores_path") or r.get("_scores_file")
        if r.get("skip") or r.get("error") or not path:
            continue
        top = np.argsort(-np.load(path), axis=1, kind="stable")[:, :10]
        tp = tail_patch(task, model, train_ds, query_ds, top, k=10, lr=0.5, n_random=5,
                        progress=False)
        r["tail_patch"] = tp.to_dict()

    meta = {"command": command_line(), "environment": environment(), "setting": setting,
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
    notes = targets_report(rows, meta)
    meta["targets"] = notes["targets"]
    write_results("fmnist_mlp", meta, rows, notes["markdown"])
    print(notes["markdown"])


def update_only(cache: Path, args: argparse.Namespace) -> None:
    """``--update-anchors``: rerun only those anchors; tail-patch as in the full run."""
    meta = json.loads((cache / "meta.json").read_text())
    model = MLP(meta["hidden"])
    model.load_state_dict(torch.load(cache / "model.pt"))
    model.eval()
    train_ds = TensorDataset(*(torch.from_numpy(np.load(cache / f"train_{k}.npy"))
                               for k in ("x", "y")))
    query_ds = TensorDataset(*(torch.from_numpy(np.load(cache / f"query_{k}.npy"))
                               for k in ("x", "y")))
    task = CETask()

    def tp(top: np.ndarray) -> dict:
        return tail_patch(task, model, train_ds, query_ds, top, k=10, lr=0.5, n_random=5,
                          progress=False).to_dict()

    update_anchors("fmnist_mlp", args.update_anchors, cache, anchor_options,
                   args.anchor_timeout, tp, lambda rows, notes: notes["markdown"],
                   reuse=args.reuse_anchors)


def anchor_options(method: str) -> list[dict]:
    """Per-anchor configurations (projection dimensions comparable to the tamis grid)."""
    if method == "dattri_logra":
        return [{"proj_dim_per_layer": d} for d in (256, 1024, 4096)]
    if method in ("dattri_trak", "traker"):
        return [{"proj_dim": d} for d in (256, 1024, 4096)]
    if method == "bergson":  # p x p per layer: D/layer = 256, 1024, 4096
        return [{"projection_dim": p} for p in (16, 32, 64)]
    return [{}]


if __name__ == "__main__":
    main()
