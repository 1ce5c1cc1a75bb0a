#!/usr/bin/env bash
# The reference experiments of BENCHMARKS.md 2: the eight methods of `genefl compare`'s default,
# 3 seeds, on digits (the shipped config as is) and on Fashion-MNIST / MNIST at Dirichlet alpha 0.1
# and 0.5 (the shipped configs, reduced so that all 4 x 8 methods x 3 seeds fit in about 20 minutes
# on 2 CPU cores: REDUCE below).
# ONLY="fashion_alpha0.1 mnist_alpha0.5" runs a subset.
# Two streams run in parallel with one CPU thread each.
# Usage: GENEFL_DATA=../shared/data benchmarks/reference.sh [OUT_DIR]
set -euo pipefail
out=${1:-benchmarks/results/reference}
genefl=${GENEFL:-genefl}
export OMP_NUM_THREADS=1
seeds=0,1,2
REDUCE=(--set rounds=8 --set num_clients=8 --set num_newcomers=3 --set train_subset=2400 --set eval_every=4)
mkdir -p "$out"
stream() {
  for name in "$@"; do
    if [ "$name" = digits ]; then
      "$genefl" compare --config configs/digits.toml --seeds $seeds --out "$out/$name" > "$out/$name.log" 2>&1
    else
      "$genefl" compare --config "configs/$name.toml" "${REDUCE[@]}" --seeds $seeds --out "$out/$name" > "$out/$name.log" 2>&1
    fi
    echo "done $name"
  done
}
only=${ONLY:-digits fashion_alpha0.1 fashion_alpha0.5 mnist_alpha0.1 mnist_alpha0.5}
want() { [[ " $only " == *" $1 "* ]]; }
run_if() { for n in "$@"; do if want "$n"; then stream "$n"; fi; done; }
run_if digits fashion_alpha0.1 mnist_alpha0.1 &
a=$!
run_if fashion_alpha0.5 mnist_alpha0.5 &
b=$!
trap 'kill $a $b 2>/dev/null' EXIT
wait $a; wait $b
trap - EXIT
for name in $only; do
  echo "## $name"; cat "$out/$name/summary.md"
done
