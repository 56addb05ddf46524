#!/bin/sh
# The whole rationale benchmark, in priority order, one thread; every step skips cached runs.
set -e
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
$PY benchmarks/rationale/interlocking.py --baselines-only
$PY benchmarks/rationale/train_demo_model.py
$PY benchmarks/rationale/interlocking.py
$PY benchmarks/rationale/matched_sparsity.py --max-seed 1
$PY benchmarks/rationale/matched_sparsity.py
