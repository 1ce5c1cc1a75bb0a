#!/usr/bin/env bash
# BENCHMARKS.md section 1: GENE-FL vs FedAvg on Fashion-MNIST (CNN, 20 clients, Dirichlet alpha 0.1,
# 10 newcomers, 30 rounds), one seed, identical scenario for every variant: newcomer inits
# (learnGene, FedAvg's global model, random) and the four ablations.
# Two halves run in parallel, one CPU thread each, into the same folder; `genefl plot` then writes
# the combined summary.md / summary.csv and the plots.
# Usage: GENEFL_DATA=../shared/data benchmarks/issue3_fashion.sh [OUT_DIR]
set -euo pipefail
out=${1:-benchmarks/results/issue3_fashion}
genefl=${GENEFL:-genefl}
export OMP_NUM_THREADS=1
common=(compare --config configs/fashion_alpha0.1.toml --seeds 0 --out "$out")
"$genefl" "${common[@]}" --methods "genefl,genefl[newcomer_init=random],genefl[clustering.num_clusters=1],genefl[genefl.lambda_s=0]" > "$out.a.log" 2>&1 &
a=$!
"$genefl" "${common[@]}" --methods "fedavg,genefl[genefl.lambda_e=0],genefl[genefl.gene_selection=random]" > "$out.b.log" 2>&1 &
b=$!
trap 'kill $a $b 2>/dev/null' EXIT
wait $a; wait $b
trap - EXIT
"$genefl" plot "$out"
cat "$out/summary.md"
python3 benchmarks/newcomer_curves.py "$out"
