"""The prepared GPU throughput script runs end to end on CPU with the tiny pipeline."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks" / "seeds"))


def test_gpu_mining_script_smoke_run_on_cpu(tmp_path):
    import gpu_mining

    res = gpu_mining.main(["--tiny", "--device", "cpu", "--dtype", "float32", "--prompts", "2",
                           "--seeds", "3", "--steps", "2", "--batch-size", "4",
                           "--out", str(tmp_path)])
    assert res["images"] == 6 and res["failures_recorded"] == 6  # nothing guessed
    assert res["images_per_s"] > 0 and res["world_size"] == 1
    written = json.loads((tmp_path / "seeds_gpu_mining.json").read_text())
    assert written["images"] == 6
    lines = (tmp_path / "mining.jsonl").read_text().splitlines()
    assert len(lines) == 6
    assert json.loads(lines[0])["verdict"]["error"].startswith("throughput run")
