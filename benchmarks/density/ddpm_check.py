"""Quick quality check of a DDPM checkpoint: PRDC (k=5, equal sizes) and FD in F_e.

    .venv/bin/python benchmarks/density/ddpm_check.py CKPT N STEPS[,STEPS...]

Samples N images from seeded noise (seed 700) with deterministic DDIM for each step count and
scores them against N test images (a fixed random permutation, seed 1000) in the evaluation
extractor; FD against all 10,000 test images. Prints one line per step count.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from tamis.data import load_fashion_mnist
from tamis.density import pipeline as pl
from tamis.density.metrics import frechet_distance, prdc
from tamis.density.models import extract, load_checkpoint


def main() -> None:
    torch.set_num_threads(1)
    import faiss

    faiss.omp_set_num_threads(1)
    ckpt, n, steps_list = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    test = load_fashion_mnist("test")
    f_e = load_checkpoint(pl.CHECKPOINTS / "extractor_eval.safetensors")
    tf = extract(f_e, pl.images_tensor(test)).numpy()
    perm = np.random.default_rng(1000).permutation(len(tf))
    m = load_checkpoint(ckpt)
    for steps in [int(s) for s in steps_list.split(",")]:
        xt = torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(700))
        t = time.time()
        with torch.no_grad():
            x = torch.cat([m.sample(b, steps=steps) for b in xt.split(100)])
        dt = time.time() - t
        f = extract(f_e, x).numpy()
        r = prdc(real=tf[perm[:n]], fake=f, k=5)
        r["fd"] = frechet_distance(real=tf, fake=f)
        print(ckpt, f"DDIM {steps}", f"{dt:.1f}s", {k: round(v, 3) for k, v in r.items()},
              flush=True)


if __name__ == "__main__":
    main()
