#!/bin/sh
# The whole rationale benchmark, in priority order, one thread per run; every step skips
# cached runs. The interlocking study runs on two workers (the machine's two cores).
set -e
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
$PY benchmarks/rationale/matched_sparsity.py --max-seed 0   # seed 0 at rho 0 / 0.9, ablations
$PY benchmarks/rationale/train_demo_model.py                # also interlock_free_rho0.5_s0
$PY benchmarks/rationale/interlocking.py --shard 1/2 &      # worlds A (3 seeds) and B, rho 0/.5/.9
$PY benchmarks/rationale/interlocking.py --shard 2/2
wait
$PY benchmarks/rationale/matched_sparsity.py                # anything still missing
$PY benchmarks/rationale/interlocking.py --report
