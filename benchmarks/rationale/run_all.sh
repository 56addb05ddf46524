#!/bin/sh
# The whole rationale benchmark, in priority order, one thread; every step skips cached runs.
set -e
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
$PY benchmarks/rationale/matched_sparsity.py --max-seed 0   # seed 0 at rho 0 / 0.9, ablations
$PY benchmarks/rationale/train_demo_model.py                # also interlock_free_rho0.5_s0
$PY benchmarks/rationale/interlocking.py                    # adds rho 0.5
$PY benchmarks/rationale/matched_sparsity.py                # seeds 1 and 2
