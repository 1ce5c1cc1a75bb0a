#!/usr/bin/env bash
# BENCHMARKS.md 5.2: loss-threshold membership inference (Yeom et al. 2018) on what a newcomer
# is handed (FedAvg's global model vs GENE-FL's learnGene with fresh other layers), on the newcomer
# study's scenario with LeNet-5, seeds 0-2 (the whole 30-round run per method and seed; the gradient
# attack that `genefl attack` also runs is cut to one image and one iteration: not what is measured).
#   GENEFL_DATA=../shared/data benchmarks/membership.sh [SCENARIO]   (default fashion_alpha0.1)
set -euo pipefail
cd "$(dirname "$0")/.."
scenario=${1:-fashion_alpha0.1}
for seed in 0 1 2; do
  out=benchmarks/results/privacy/membership/${scenario}_lenet5_seed$seed
  if [ -f "$out/attack.json" ]; then continue; fi
  genefl attack --config "configs/newcomers_$scenario.toml" --set 'model="lenet5"' --set "seed=$seed" \
    --methods fedavg,genefl --membership --images 1 --iterations 1 --restarts 1 --out "$out" --force
done
python - "$scenario" <<'PY'
import json, statistics, sys
from pathlib import Path
root = Path("benchmarks/results/privacy/membership")
rows = {}
for f in sorted(root.glob(f"{sys.argv[1]}_lenet5_seed*/attack.json")):
    for r in json.loads(f.read_text()):
        if r.get("case") == "membership":
            rows.setdefault((r["method"], r["start"]), []).append(r["auc"])
lines = ["| method | what a newcomer is handed | membership AUC (mean ± std over seeds) | seeds |", "|---|---|---|---|"]
for (method, start), aucs in rows.items():
    sd = statistics.stdev(aucs) if len(aucs) > 1 else 0.0
    lines.append(f"| {method} | {start} | {statistics.mean(aucs):.3f} ± {sd:.3f} | {len(aucs)} |")
(root / f"{sys.argv[1]}_lenet5.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
