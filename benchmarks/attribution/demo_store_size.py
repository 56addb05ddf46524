"""Bytes per example on disk for the demo model: LoRIF at c in {1, 2, 4} vs dense LoGRA.

Reproduce: .venv/bin/python benchmarks/attribution/demo_store_size.py
Writes benchmarks/results/attribution_demo_store.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from tamis.attribution.demo import compare_stores
from tamis.attribution.examples import fashion_cnn

RESULTS = Path(__file__).resolve().parents[1] / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-train", type=int, default=5000)
    parser.add_argument("--d", type=int, default=32, help="d1 = d2 per layer (clipped)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bundle = fashion_cnn(cache_dir=work / "cache", n_train=args.n_train, progress=False)
        rows, _ = compare_stores(bundle, work, ranks=(1, 2, 4), d=args.d)
    meta = {"command": "python benchmarks/attribution/demo_store_size.py", "threads": args.threads,
            "machine": platform.platform(), "torch": torch.__version__,
            "dataset": bundle.info["dataset"], "test_accuracy": bundle.info["test_accuracy"],
            "date": time.strftime("%Y-%m-%d")}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "attribution_demo_store.json").write_text(json.dumps({"meta": meta, "rows": rows},
                                                                    indent=1))
    lines = [
        "# Store size of the demo model: LoRIF vs dense LoGRA",
        "",
        f"SmallCNN on {args.n_train} {meta['dataset']} images (test accuracy "
        f"{meta['test_accuracy']:.3f}); two-sided Gaussian projection d1 = d2 = {args.d} per "
        "layer, clipped to small layers; float16 on disk; curvature r = 64 (LoRIF) or the full "
        "damped inverse (LoGRA). Bytes are the shard files' sizes on disk divided by N.",
        "",
        "| method | numbers/example | bytes/example (disk) | smaller than dense | "
        "min conv energy kept | Spearman vs LoGRA | top-10 overlap | curvature KiB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['numbers_per_example']} | {r['bytes_per_example']:.1f} | "
            f"{r['ratio_vs_dense']:.1f}x | {r['energy_conv']:.3f} | {r['spearman_vs_logra']:.3f} | "
            f"{r['top10_overlap_vs_logra']:.2f} | {r['curvature_bytes'] / 1024:.0f} |"
        )
    lines += ["", f"Reproduce: `{meta['command']}` ({args.threads} thread(s), {meta['machine']}, "
              f"torch {meta['torch']}, {meta['date']})."]
    (RESULTS / "attribution_demo_store.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
