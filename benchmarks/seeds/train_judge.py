"""Train the shapes world's CNN mining judge on rendered, augmented scenes (minutes, 1 thread).

    .venv/bin/python benchmarks/seeds/train_judge.py --n-train 24000 --epochs 6 \
        --out src/tamis/seeds/checkpoints/judge_cnn

Writes the judge (fp16 safetensors, ~0.6 MB) and its accuracies on held-out clean and degraded
renders to ``benchmarks/results/seeds_judge_cnn.json``.
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

from tamis._io import write_text_atomic
from tamis.seeds.world.judge_cnn import CNNJudge, JudgeNet, _to_input, judge_example


def make_set(seed: int, n: int, augment: bool) -> dict[str, np.ndarray]:
    """``n`` labelled examples from ``default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    ex = [judge_example(rng, augment) for _ in range(n)]
    return {"x": np.stack([e.image for e in ex]), "q": np.stack([e.query for e in ex]),
            "c": np.array([e.count for e in ex]), "r": np.array([e.relation for e in ex])}


def accuracy(judge: CNNJudge, data: dict[str, np.ndarray]) -> dict[str, float]:
    """Count and relation accuracy of a judge on a labelled set."""
    c, r = judge.predict(data["x"], data["q"])
    mc, mr = data["c"] >= 0, data["r"] >= 0
    return {"count": float((c[mc] == data["c"][mc]).mean()),
            "relation": float((r[mr] == data["r"][mr]).mean()),
            "n_count": int(mc.sum()), "n_relation": int(mr.sum())}


def train(n_train: int, epochs: int, batch: int = 128, lr: float = 2e-3, seed: int = 0,
          log=print) -> tuple[CNNJudge, dict]:
    """Train a judge; return it and its accuracies."""
    t0 = time.time()
    data = make_set(seed, n_train, augment=True)
    torch.manual_seed(seed)
    net = JudgeNet()
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    total = epochs * (n_train // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=total)
    x, q = _to_input(data["x"]), torch.from_numpy(data["q"])
    c, r = torch.from_numpy(data["c"]), torch.from_numpy(data["r"])
    gen = torch.Generator().manual_seed(seed)
    for ep in range(epochs):
        perm = torch.randperm(n_train, generator=gen)
        net.train()
        tot = 0.0
        for i in range(n_train // batch):
            b = perm[i * batch:(i + 1) * batch]
            lc, lrel = net(x[b], q[b])
            loss = F.cross_entropy(lc, c[b], ignore_index=-1) + F.cross_entropy(
                lrel, r[b], ignore_index=-1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item()
        log(f"epoch {ep + 1}/{epochs} loss {tot / (n_train // batch):.4f} "
            f"({time.time() - t0:.0f}s)")
    judge = CNNJudge(net)
    res = {"train_seconds": time.time() - t0, "n_train": n_train, "epochs": epochs,
           "heldout_clean": accuracy(judge, make_set(seed + 1000, 3000, augment=False)),
           "heldout_degraded": accuracy(judge, make_set(seed + 2000, 3000, augment=True))}
    return judge, res


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-train", type=int, default=24000)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("src/tamis/seeds/checkpoints/judge_cnn"))
    p.add_argument("--results", type=Path,
                   default=Path("benchmarks/results/seeds_judge_cnn.json"))
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    judge, res = train(a.n_train, a.epochs, seed=a.seed, log=lambda s: print(s, flush=True))
    res["command"] = "python benchmarks/seeds/train_judge.py " + " ".join(sys.argv[1:])
    judge.save(a.out, meta=res)
    a.results.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(a.results, json.dumps(res, indent=1))
    print(json.dumps(res, indent=1), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
