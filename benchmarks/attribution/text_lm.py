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

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import CACHE, run_anchor, tamis_grid  # noqa: E402
from harness import (  # noqa: E402
    add_grid_lds,
    add_tail_patch,
    anchor_options,
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
from models import CharLM, lm_loss, train_lm  # noqa: E402

from tamis.attribution import AttributionTask  # noqa: E402
from tamis.attribution.evaluation import ground_truth, tail_patch  # noqa: E402

LAYERS = [f"blocks.{b}.{n}" for b in range(2) for n in ("qkv", "proj", "fc1", "fc2")]


class LMTask(AttributionTask):
    """Mean next-character cross-entropy per window; the query measurement is the same."""

    def compute_train_loss(self, batch, model):
        x, y = batch
        return lm_loss(model, torch.cat([x, y[:, -1:]], dim=1))

    def compute_measurement(self, batch, model):
        return self.compute_train_loss(batch, model)

    def loss_terms(self, batch):
        """Every window's loss averages its ctx next-character terms (horizon damping)."""
        x, _ = batch
        return torch.full((x.shape[0],), x.shape[1])

    def compute_sampled_loss(self, batch, model, generator):
        """The same mean cross-entropy against characters sampled from the model (true Fisher)."""
        from tamis.attribution import sampled_cross_entropy

        x, _ = batch
        return sampled_cross_entropy(model(x), generator) / x.shape[1]

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


def setting_data(n: int, q: int, epochs: int = 8, batch_size: int = 32) -> dict:
    """Setting (b): data, hyper-parameters, the ground-truth cache key and the retraining
    function (shared with ``fisher_damping.py``, so both read one ground-truth cache)."""
    ctx, arch = 64, {"d": 64, "layers": 2, "heads": 4, "ctx": 64}
    seqs, chars = corpus(ctx)
    train_seq, query_seq = seqs[:n], seqs[n:n + q]
    vocab = len(chars)
    hp = {"epochs": epochs, "batch_size": batch_size, "lr": 6e-3, "weight_decay": 0.01,
          **arch}
    setting = {"name": "text_lm", "data": "pydoc_data.topics, 65-char windows, shuffle seed 0",
               "python": sys.version.split()[0], "vocab": vocab, "n": n, "q": q,
               "init_seed": 12345, **hp}

    def retrain(mask: np.ndarray, seed: int) -> np.ndarray:
        # same init as the full model (init_seed), the seed only changes the data order
        sub = train_lm(train_seq[torch.from_numpy(mask)], vocab, seed=seed, init_seed=12345,
                       **hp)
        with torch.no_grad():
            return lm_loss(sub, query_seq).numpy()

    return {"ctx": ctx, "arch": arch, "train_seq": train_seq, "query_seq": query_seq,
            "vocab": vocab, "hp": hp, "setting": setting, "retrain": retrain,
            "x": train_seq[:, :-1].contiguous(), "y": train_seq[:, 1:].contiguous(),
            "xq": query_seq[:, :-1].contiguous(), "yq": query_seq[:, 1:].contiguous()}


def main() -> None:
    p = setting_parser(__doc__, "text_lm", anchor_timeout=1800)
    p.add_argument("--truth-only", action="store_true")
    p.add_argument("--wait-anchors", type=float, default=0.0,
                   help="with --reuse-anchors: seconds to wait for a concurrent "
                        "--anchors-only run to keep a configuration before running it here")
    p.add_argument("--anchors-only", action="store_true",
                   help="train the model, run the anchors (kept per configuration), stop")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.update_anchors:
        update_only(CACHE / "text_lm", args)
        return

    cache = CACHE / "text_lm"
    cache.mkdir(parents=True, exist_ok=True)
    n, q = args.n_train, args.n_queries
    sd = setting_data(n, q, args.epochs, args.batch_size)
    ctx, arch, train_seq, query_seq, vocab, hp, setting, retrain = (
        sd[k] for k in ("ctx", "arch", "train_seq", "query_seq", "vocab", "hp", "setting",
                        "retrain"))
    x, y, xq, yq = sd["x"], sd["y"], sd["xq"], sd["yq"]
    save_data(cache, x, y, xq, yq)

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

    masks = fixed_masks(cache, n, args.subsets)

    if args.truth_only:
        truth = ground_truth(retrain, masks, cache, setting, n_seeds=args.seeds, progress=False)
        print(f"ground truth {truth.shape}", flush=True)
        return

    torch.manual_seed(0)
    probe = CharLM(vocab, **arch)
    opt = torch.optim.AdamW(probe.parameters(), lr=1e-3)

    def step(lo: int) -> None:
        opt.zero_grad(set_to_none=True)
        lm_loss(probe, train_seq[lo:lo + args.batch_size]).mean().backward()
        opt.step()

    train_thr = plain_train_throughput(step, n, args.batch_size)

    train_ds, query_ds = TensorDataset(x, y), TensorDataset(xq, yq)
    rows = with_tail_rows(tamis_grid(args.D, args.c, args.r, n, max_rank_per_example=ctx),
                          args.tail_c)
    score_grid(rows, LMTask(), model, train_ds, query_ds, cache, args.batch_size)

    # ground truth after the grid: a --truth-only run may still be filling the cache
    t0 = time.perf_counter()
    truth = ground_truth(retrain, masks, cache, setting, n_seeds=args.seeds, progress=False)
    t_truth = time.perf_counter() - t0
    print(f"ground truth {truth.shape}: {t_truth:.1f}s in this process", flush=True)
    add_grid_lds(rows, masks, truth)
    rows += score_anchors("text_lm", args.anchors, cache, masks, truth, args.anchor_timeout,
                          reference_scores(cache, rows), reuse=args.reuse_anchors,
                          wait_s=args.wait_anchors)
    add_tail_patch(rows, tail_patch_fn(model, train_ds, query_ds))

    meta = {"setting": setting,
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
    finish("text_lm", meta, rows, energy_table)


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


def tail_patch_fn(model, train_ds, query_ds):
    """Tail-patch protocol of this setting: k = 10, one SGD step of lr 0.1, 5 random draws."""
    def run(top: np.ndarray) -> dict:
        return tail_patch(LMTask(), model, train_ds, query_ds, top, k=10, lr=0.1, n_random=5,
                          progress=False).to_dict()
    return run


def update_only(cache: Path, args) -> None:
    """``--update-anchors``: rerun only those anchors; tail-patch as in the full run."""
    meta = json.loads((cache / "meta.json").read_text())
    model = CharLM(meta["vocab"], d=meta["d"], layers=meta["n_layers"], heads=meta["heads"],
                   ctx=meta["ctx"])
    model.load_state_dict(torch.load(cache / "model.pt"))
    model.eval()
    x, y, xq, yq = load_data(cache)
    train_ds, query_ds = TensorDataset(x, y), TensorDataset(xq, yq)
    update_anchors("text_lm", args.update_anchors, cache, args.anchor_timeout,
                   tail_patch_fn(model, train_ds, query_ds), energy_table,
                   reuse=args.reuse_anchors)


if __name__ == "__main__":
    main()
