#!/usr/bin/env bash
# The newcomer study of BENCHMARKS.md 4, config by config: every scenario (Fashion-MNIST
# alpha 0.1 / 0.5, MNIST alpha 0.1; 20 clients, 10 newcomers, 30 rounds) x model family, seeds 0,1,2. Each finished
# config lands in benchmarks/results/newcomers/<scenario>_<model>/ (recorded starts removed: they
# are large and the study's records hold what was measured). Usage:
#   GENEFL_DATA=../shared/data benchmarks/newcomer_study.sh [MODELS] [SCENARIOS] [JOBS] [EXTRA_METHODS]
#   e.g. benchmarks/newcomer_study.sh "lenet5 cnn" "fashion_alpha0.1 mnist_alpha0.1" 2 fedprox,scaffold,fedlp,local
set -euo pipefail
cd "$(dirname "$0")/.."
models=${1:-"lenet5 cnn"}
scenarios=${2:-"fashion_alpha0.1 fashion_alpha0.5 mnist_alpha0.1"}
jobs=${3:-2}
extra=${4:-}
for scenario in $scenarios; do
  for model in $models; do
    out=benchmarks/results/newcomers/${scenario}_${model}
    mkdir -p benchmarks/results/newcomers
    if [ -f "$out/newcomers/study.json" ]; then echo "done already: $out"; continue; fi
    genefl newcomers --config "configs/newcomers_${scenario}.toml" --set "model=\"$model\"" --seeds 0,1,2 \
      --replicates 3 --jobs "$jobs" ${extra:+--methods "$extra"} --out "$out" > "$out.log" 2>&1 || { echo "failed: $out (see $out.log)"; continue; }
    find "$out" -name newcomer_starts.pt -delete
    echo "finished: $out"
  done
done
