"""Setting (b): a char-level causal transformer on real English text; LDS against retraining.

The corpus is CPython's ``pydoc_data.topics`` (the text of ``help()`` topics, always in the
stdlib). The text is cut into non-overlapping windows of 65 characters (64 inputs + the
shifted targets), shuffled with a fixed seed; the first N windows train the model, the next
Q windows are the queries. Per-example gradients of a linear layer are sums over the 64
positions, so they have rank up to 64 and LoRIF's c < 64 really truncates (the kept
energy per layer is reported).

One command reruns it (ground truth is cached under benchmarks/cache/text_lm/)::

    .venv/bin/python benchmarks/attribution/text_lm.py --subsets 50

``--truth-only`` stops after the ground truth (so it can be computed ahead of the rest).
``--update-anchors bergson`` reruns only those anchors on the cached model, masks and ground
truth and replaces their rows in the existing results (the tamis grid is not rerun).
Writes benchmarks/results/attribution_text_lm.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
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
from models import CharLM, lm_loss, train_lm  # noqa: E402
from targets import targets_report  # noqa: E402

from tamis.attribution import AttributionTask  # noqa: E402
from tamis.attribution.evaluation import (  # noqa: E402
    ground_truth,
    load_masks,
    make_masks,
    save_masks,
    tail_patch,
)

ANCHORS = ["dattri_logra", "dattri_trak", "traker", "kronfluence_ekfac", "bergson"]
LAYERS = [f"blocks.{b}.{n}" for b in range(2) for n in ("qkv", "proj", "fc1", "fc2")]


class LMTask(AttributionTask):
    """Mean next-character cross-entropy per window; the query measurement is the same."""

    def compute_train_loss(self, batch, model):
        x, y = batch
        return lm_loss(model, torch.cat([x, y[:, -1:]], dim=1))

    def compute_measurement(self, batch, model):
        return self.compute_train_loss(batch, model)

    def tracked_modules(self, model):
        return LAYERS


def corpus(ctx: int) -> tuple[torch.Tensor, list[str]]:
    """All (ctx + 1)-character windows of pydoc_data.topics, shuffled with seed 0."""
    import pydoc_data.topics as topics

    text = "\n\n".join(topics.topics[k] for k in sorted(topics.topics))
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([stoi[c] for c in text], dtype=torch.long)
    w = ctx + 1
    seqs = ids[: (len(ids) // w) * w].view(-1, w)
    perm = torch.randperm(seqs.shape[0], generator=torch.Generator().manual_seed(0))
    return seqs[perm], chars


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--subsets", type=int, default=50)
    p.add_argument("--seeds", type=int, default=1, help="retraining seeds averaged per subset")
    p.add_argument("--n-train", type=int, default=2000)
    p.add_argument("--n-queries", type=int, default=100)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--D", type=int, nargs="+", default=[256, 1024, 4096])
    p.add_argument("--c", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--r", type=int, nargs="+", default=[32, 128, 512])
    p.add_argument("--tail-c", type=int, nargs="*", default=[1, 8],
                   help="c values that also get a 'lorif+tail' row (isotropic tail)")
    p.add_argument("--anchors", nargs="*", default=ANCHORS)
    p.add_argument("--anchor-timeout", type=int, default=1800,
                   help="seconds per anchor configuration (bergson projection_dim=64 took "
                        "10-16 min on a loaded machine)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--truth-only", action="store_true")
    p.add_argument("--wait-anchors", type=float, default=0.0,
                   help="with --reuse-anchors: seconds to wait for a concurrent "
                        "--anchors-only run to keep a configuration before running it here")
    p.add_argument("--anchors-only", action="store_true",
                   help="train the model, run the anchors (kept per configuration), stop")
    p.add_argument("--reuse-anchors", action="store_true",
                   help="read back anchor configurations kept by an earlier run on the same "
                        "model.pt instead of rerunning them")
    p.add_argument("--update-anchors", nargs="+", metavar="METHOD", choices=ANCHORS,
                   help="rerun only these anchors on the cached model/masks/ground truth and "
                        "replace their rows in benchmarks/results/attribution_text_lm.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.update_anchors:
        update_only(CACHE / "text_lm", args)
        return

    ctx, arch = 64, {"d": 64, "layers": 2, "heads": 4, "ctx": 64}
    cache = CACHE / "text_lm"
    cache.mkdir(parents=True, exist_ok=True)
    seqs, chars = corpus(ctx)
    n, q = args.n_train, args.n_queries
    train_seq, query_seq = seqs[:n], seqs[n:n + q]
    vocab = len(chars)
    hp = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": 6e-3,
          "weight_decay": 0.01, **arch}
    setting = {"name": "text_lm", "data": "pydoc_data.topics, 65-char windows, shuffle seed 0",
               "python": sys.version.split()[0], "vocab": vocab, "n": n, "q": q,
               "init_seed": 12345, **hp}
    x, y = train_seq[:, :-1].contiguous(), train_seq[:, 1:].contiguous()
    xq, yq = query_seq[:, :-1].contiguous(), query_seq[:, 1:].contiguous()
    for name, arr in (("train_x", x), ("train_y", y), ("query_x", xq), ("query_y", yq)):
        np.save(cache / f"{name}.npy", arr.numpy())

    t0 = time.perf_counter()
    model = train_lm(train_seq, vocab, seed=12345, **hp)
    t_train_full = time.perf_counter() - t0
    torch.save(model.state_dict(), cache / "model.pt")
    (cache / "meta.json").write_text(json.dumps({
        "arch": "charlm", "vocab": vocab, "tracked": LAYERS, "d": arch["d"],
        "n_layers": arch["layers"], "heads": arch["heads"], "ctx": arch["ctx"]}))
    with torch.no_grad():
        q_loss = float(lm_loss(model, query_seq).mean())
        tr_loss = float(lm_loss(model, train_seq).mean())
    print(f"full model: train loss {tr_loss:.3f}, query loss {q_loss:.3f}, "
          f"{t_train_full:.1f}s", flush=True)

    if args.anchors_only:
        for method in args.anchors:
            for opts in anchor_options(method):
                print("anchor", method, opts, flush=True)
                info = run_anchor("text_lm", method, cache, opts, args.anchor_timeout)
                print("  ->", info.get("error", "ok")[-300:], flush=True)
        return

    mask_path = cache / f"masks-M{args.subsets}-N{n}.npy"
    if mask_path.exists():
        masks = load_masks(mask_path)
    else:
        masks = make_masks(n, args.subsets, alpha=0.5, seed=0)
        save_masks(mask_path, masks)

    def retrain(mask: np.ndarray, seed: int) -> np.ndarray:
        # same init as the full model (init_seed), the seed only changes the data order
        sub = train_lm(train_seq[torch.from_numpy(mask)], vocab, seed=seed, init_seed=12345,
                       **hp)
        with torch.no_grad():
            return lm_loss(sub, query_seq).numpy()

    if args.truth_only:
        truth = ground_truth(retrain, masks, cache, setting, n_seeds=args.seeds, progress=False)
        print(f"ground truth {truth.shape}", flush=True)
        return

    # plain training throughput of the same model at the same batch size (one epoch, warm)
    torch.manual_seed(0)
    probe = CharLM(vocab, **arch)
    opt = torch.optim.AdamW(probe.parameters(), lr=1e-3)
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        for lo in range(0, n, args.batch_size):
            opt.zero_grad(set_to_none=True)
            lm_loss(probe, train_seq[lo:lo + args.batch_size]).mean().backward()
            opt.step()
        times.append(time.perf_counter() - t0)
    train_thr = n / min(times)

    task = LMTask()
    train_ds, query_ds = TensorDataset(x, y), TensorDataset(xq, yq)
    rows = tamis_grid(args.D, args.c, args.r, n, max_rank_per_example=ctx)
    extra = []
    for spec in rows:
        if spec["method"] == "tamis lorif" and not spec.get("skip") and spec["c"] in args.tail_c:
            extra.append({**spec, "method": "tamis lorif+tail"})
    rows += extra
    workdir = cache / "stores"
    for spec in rows:
        if spec.get("skip"):
            continue
        print("tamis", spec, flush=True)
        try:
            scores, info = run_tamis(spec, task, model, train_ds, query_ds, workdir,
                                     args.batch_size)
            spec.update(info)
            fname = cache / (f"scores-{spec['method'].split()[-1]}-D{spec['D']}-c{spec['c']}"
                             f"-r{spec['r']}.npy")
            np.save(fname, scores)
            spec["_scores_file"] = str(fname)
        except Exception as exc:  # record, never drop
            spec["error"] = f"{type(exc).__name__}: {exc}"
        print("  ->", spec.get("lds", spec.get("error")), spec.get("rank_c_energy"), flush=True)
    clear_stores(workdir)

    # ground truth after the grid: a --truth-only run may still be filling the cache
    t0 = time.perf_counter()
    truth = ground_truth(retrain, masks, cache, setting, n_seeds=args.seeds, progress=False)
    t_truth = time.perf_counter() - t0
    print(f"ground truth {truth.shape}: {t_truth:.1f}s in this process", flush=True)
    for spec in rows:
        if spec.get("_scores_file") and not spec.get("error"):
            add_lds(spec, np.load(spec["_scores_file"]), masks, truth)

    ref_path = cache / f"scores-logra-D{max(args.D)}-cNone-rNone.npy"
    ref = np.load(ref_path) if ref_path.exists() else None
    for method in args.anchors:
        for opts in anchor_options(method):
            print("anchor", method, opts, flush=True)
            info = run_anchor("text_lm", method, cache, opts, args.anchor_timeout,
                              reuse=args.reuse_anchors, wait_s=args.wait_anchors)
            if "scores_path" in info:
                s_anchor = np.load(info["scores_path"])
                add_lds(info, s_anchor, masks, truth)
                if ref is not None:  # sign sanity check against tamis dense LoGRA
                    info["mean_pearson_with_tamis_logra"] = float(np.mean(
                        [np.corrcoef(s_anchor[i], ref[i])[0, 1] for i in range(len(ref))]))
            rows.append(info)
            print("  ->", info.get("lds", info.get("error", "")[-300:]), flush=True)

    # tail-patch on the same scores (k = 10, one SGD step, 5 random draws)
    for r in rows:
        path = r.get("scores_path") or r.get("_scores_file")
        if r.get("skip") or r.get("error") or not path:
            continue
        top = np.argsort(-np.load(path), axis=1, kind="stable")[:, :10]
        tp = tail_patch(task, model, train_ds, query_ds, top, k=10, lr=0.1, n_random=5,
                        progress=False)
        r["tail_patch"] = tp.to_dict()

    meta = {"command": command_line(), "environment": environment(), "setting": setting,
            "n_subsets": int(masks.shape[0]), "alpha": 0.5, "n_seeds_per_subset": args.seeds,
            "ground_truth_s": t_truth, "full_model_train_s": t_train_full,
            "query_loss": q_loss, "train_loss": tr_loss, "batch_size": args.batch_size,
            "train_throughput_ex_per_s": train_thr,
            "description": (
                f"Char-level causal transformer (2 blocks, d=64, 4 heads, context 64, vocab "
                f"{vocab}, ~{sum(p.numel() for p in model.parameters()) // 1000}k params) on "
                f"pydoc_data.topics, N={n} training windows of 64 characters, {q} held-out "
                f"query windows, {masks.shape[0]} subsets (alpha=0.5), {args.seeds} "
                "retraining seed(s) per subset (init fixed to the full model's, the seed sets "
                f"the data order), {args.epochs} epochs AdamW + one-cycle. Full model: train "
                f"loss {tr_loss:.3f}, query loss {q_loss:.3f} nats/char. Tracked layers: "
                f"{', '.join(LAYERS)}. LDS target: mean query cross-entropy. "
                "'tamis lorif+tail' = CurvatureConfig(tail='isotropic'). Per-example "
                "gradients have rank up to 64, so c in {1,2,4,8} truncates; "
                "`rank_c_energy` in the JSON is the mean kept fraction of ||G_i||^2 per "
                "layer.")}
    notes = targets_report(rows, meta)
    meta["targets"] = notes["targets"]
    write_results("text_lm", meta, rows, notes["markdown"] + "\n\n" + energy_table(rows))
    print(notes["markdown"])


def energy_table(rows: list[dict]) -> str:
    """Kept energy of the rank-c factors (mean over layers) vs c, per D."""
    seen: dict[tuple, dict] = {}
    for r in rows:
        if r.get("method") == "tamis lorif" and "rank_c_energy" in r:
            e = r["rank_c_energy"]
            seen[(r["D"], r["c"])] = {"mean": float(np.mean(list(e.values()))),
                                     "min": float(min(e.values())),
                                     "bpe": r["store_bytes_per_example"]}
    lines = ["## Energy kept by rank-c factors", "",
             "| D/layer | c | bytes/ex | mean kept energy over layers | min over layers |",
             "|---|---|---|---|---|"]
    for (d, c), v in sorted(seen.items()):
        lines.append(f"| {d} | {c} | {v['bpe']:.0f} | {v['mean']:.3f} | {v['min']:.3f} |")
    return "\n".join(lines)


def update_only(cache: Path, args: argparse.Namespace) -> None:
    """``--update-anchors``: rerun only those anchors; tail-patch as in the full run."""
    meta = json.loads((cache / "meta.json").read_text())
    model = CharLM(meta["vocab"], d=meta["d"], layers=meta["n_layers"], heads=meta["heads"],
                   ctx=meta["ctx"])
    model.load_state_dict(torch.load(cache / "model.pt"))
    model.eval()
    train_ds = TensorDataset(*(torch.from_numpy(np.load(cache / f"train_{k}.npy"))
                               for k in ("x", "y")))
    query_ds = TensorDataset(*(torch.from_numpy(np.load(cache / f"query_{k}.npy"))
                               for k in ("x", "y")))
    task = LMTask()

    def tp(top: np.ndarray) -> dict:
        return tail_patch(task, model, train_ds, query_ds, top, k=10, lr=0.1, n_random=5,
                          progress=False).to_dict()

    update_anchors("text_lm", args.update_anchors, cache, anchor_options, args.anchor_timeout,
                   tp, lambda rows, notes: notes["markdown"] + "\n\n" + energy_table(rows),
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
