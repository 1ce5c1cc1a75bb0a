#!/usr/bin/env bash
# The option measurements of BENCHMARKS.md 4.9 that the newcomer studies did not hold, run with
# `genefl compare` on the study's scenarios and seeds (0,1,2), so every run's newcomers are the study's newcomers:
# benchmarks/paired_newcomers.py then pairs them with the study's GENE-FL runs newcomer by newcomer.
#   - LeNet-5, Fashion-MNIST alpha 0.1: `local`, fisher_samples 32 and 128 (the study has 64 and 256),
#     greedy layer selection (its learnGene at the default budget is {conv1, conv2, fc2}, 51 kB);
#   - CNN, Fashion-MNIST alpha 0.1: gene_budget 0.1 (one layer) and greedy at 0.4 ({conv1, conv2, fc1}),
#     the budgets at which this CNN gets another learnGene than {conv1, conv2}.
# Usage: GENEFL_DATA=../shared/data benchmarks/newcomer_variants.sh [JOBS]
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${1:-1}
root=benchmarks/results/newcomers
run() {  # run <out> <model> <methods>
  local out=$root/$1
  if [ -f "$out/summary.md" ]; then echo "done already: $out"; return; fi
  genefl compare --config configs/newcomers_fashion_alpha0.1.toml --set "model=\"$2\"" --seeds 0,1,2 \
    --jobs "$jobs" --methods "$3" --out "$out" > "$out.log" 2>&1 || { echo "failed: $out (see $out.log)"; return; }
  echo "finished: $out"
}
run fashion_alpha0.1_lenet5_variants lenet5 \
  'local,genefl[genefl.fisher_samples=32],genefl[genefl.fisher_samples=128],genefl[genefl.gene_selection=greedy]'
run fashion_alpha0.1_cnn_budgets cnn \
  'genefl[genefl.gene_budget=0.1],genefl[genefl.gene_selection=greedy;genefl.gene_budget=0.4]'
