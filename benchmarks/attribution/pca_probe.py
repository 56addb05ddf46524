"""Probe: LoGRA's PCA-initialised projection (top K-FAC eigenvectors) instead of a random one.

    .venv/bin/python benchmarks/attribution/pca_probe.py --setting text_lm

Same data, model, masks and ground truth as ``defaults.py``. The K-FAC covariances of every
tracked layer are fitted once on an unprojected c = 1 store; the projection of each side is
then its top-k covariance eigenvectors (LoGRA, Choe et al. 2024, section 3.2's PCA
initialisation), patched into the capture so build, curvature and queries all see it. Rows:
dense store (k x k numbers per layer, LoGRA's budget at k = 64) with EK-FAC and LoGRA
curvature, over the damping sweep.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from defaults import run_tamis  # noqa: E402
from fisher_damping import CACHE, SETTINGS  # noqa: E402

import tamis.attribution.capture as capture_mod  # noqa: E402
from tamis.attribution import (  # noqa: E402
    BuildConfig,
    CurvatureConfig,
    FactorConfig,
    ProjectionConfig,
    fit_curvature,
)
from tamis.attribution.build import build_store  # noqa: E402
from tamis.attribution.fisher import source_for  # noqa: E402

ORIGINAL = capture_mod.layer_projections


def kfac_bases(st: dict, work: Path) -> dict:
    """Per layer (Q_A, Q_S), eigenvalues ascending, from K-FAC on an unprojected c=1 store."""
    store = build_store(st["task"], st["model"], st["train"], work / "unprojected_c1",
                        ProjectionConfig(kind="identity"), FactorConfig(1, "float16"),
                        BuildConfig(batch_size=st["batch_size"], progress=False),
                        overwrite=True)
    cfg = CurvatureConfig(kind="kfac", fisher_batch_size=st["batch_size"])
    curv = fit_curvature(store, cfg, torch.float32, False,
                         source_for(cfg, st["task"], st["model"], st["train"], store))
    return {b.layers[0]: (b.basis_in.double(), b.basis_out.double()) for b in curv.blocks}


def patch(bases: dict | None) -> None:
    """Make the capture project each side on its top covariance eigenvectors."""
    if bases is None:
        capture_mod.layer_projections = ORIGINAL
        return

    def pca(spec, cfg, dtype):
        qa, qs = bases[spec.name]
        p_in = None if spec.in_identity else qa[:, -spec.d1:].to(dtype).contiguous()
        p_out = None if spec.out_identity else qs[:, -spec.d2:].to(dtype).contiguous()
        return p_in, p_out

    capture_mod.layer_projections = pca


def run(st: dict, work: Path, label: str, proj, curv_cfg) -> dict:
    """One dense-store row through ``defaults.run_tamis`` (build, fit, score, damping sweep)."""
    row, _, _ = run_tamis(st, {"label": label, "proj": proj, "c": None, "curv": curv_cfg},
                          work, 1)
    return {k: row[k] for k in ("method", "bytes_per_example", "build_s", "lds", "sweep")
            if k in row}


def main() -> None:
    """Run the probe rows of one setting."""
    p = argparse.ArgumentParser()
    p.add_argument("--setting", default="text_lm")
    p.add_argument("--k", type=int, nargs="+", default=[64])
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    args.n_train = args.seeds = None
    args.n_queries, args.subsets, args.truth_reverse = 100, 50, False
    torch.set_num_threads(args.threads)
    st = SETTINGS[args.setting](args)
    work = CACHE / "pca_probe" / args.setting
    bases = kfac_bases(st, work)
    rows = []
    for k in args.k:
        proj = ProjectionConfig(d1=k, d2=k, clip_to_layer=True)
        patch(bases)
        rows.append(run(st, work, f"pca {k}x{k} dense store, ekfac", proj,
                        CurvatureConfig(kind="ekfac")))
        rows.append(run(st, work, f"pca {k}x{k} dense store, logra (exact eigh)", proj,
                        CurvatureConfig(kind="lowrank", rank=10**6, method="exact")))
        patch(None)
        rows.append(run(st, work, f"random {k}x{k} dense store, ekfac", proj,
                        CurvatureConfig(kind="ekfac")))
    out = Path("/tmp") / f"pca_probe_{args.setting}.json"
    out.write_text(json.dumps(rows, indent=1, default=str))


if __name__ == "__main__":
    main()
