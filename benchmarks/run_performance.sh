#!/usr/bin/env bash
# The performance benchmarks of BENCHMARKS.md 3, one after another on an otherwise idle machine;
# each prints a table and a final JSON line. Usage: GENEFL_DATA=../shared/data benchmarks/run_performance.sh [OUT_DIR]
set -euo pipefail
out=${1:-benchmarks/results/performance}
mkdir -p "$out"
py=${PYTHON:-.venv/bin/python}
"$py" benchmarks/overhead.py --rounds 8 | tee "$out/overhead.txt"
if [ -x .venv-pfl/bin/python ]; then
  .venv-pfl/bin/python benchmarks/pfl_fedavg.py --rounds 5 --repeats 2 | tee "$out/pfl.txt"
else
  echo "pfl: .venv-pfl missing (python3 -m venv .venv-pfl && .venv-pfl/bin/pip install torch==2.13.0 pfl==0.6.0 -e .)" | tee "$out/pfl.txt"
fi
"$py" benchmarks/scaling.py --counts 10,100,1000 --methods fedavg,genefl | tee "$out/scaling.txt"
"$py" benchmarks/scaling.py --counts 1000 --methods genefl --store disk | tee "$out/scaling_disk.txt"
"$py" benchmarks/flower_vs_simulator.py --rounds 4 | tee "$out/flower.txt"
