#!/usr/bin/env bash
# GENE-FL vs FedAvg on issue 3's scenario, with newcomer inits and the ablations, one seed.
# Usage: GENEFL_DATA=../shared/data benchmarks/issue3_fashion.sh [OUT_DIR]
set -euo pipefail
out=${1:-benchmarks/results/issue3_fashion}
genefl compare --config configs/fashion_alpha0.1.toml --seeds 0 --out "$out" --methods \
"genefl,fedavg,genefl[newcomer_init=random],fedavg[newcomer_init=random],\
genefl[clustering.num_clusters=1],genefl[genefl.lambda_e=0],genefl[genefl.lambda_s=0],genefl[genefl.gene_selection=random]"
