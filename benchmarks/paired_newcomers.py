"""Pair the newcomers of separate runs of one scenario newcomer by newcomer (BENCHMARKS.md 4.9).

Runs of the same config and seed welcome the same newcomers (same data, arrival and fine-tuning
seed), so runs made apart -- a study's GENE-FL runs and a later `genefl compare` of option variants --
can still be compared pairwise, like `genefl newcomers` does within one study. For every other run
folder, prints the mean paired difference to the base's newcomers (95% t-interval over seeds x
newcomers) after the first, the last and the validation-chosen epoch, plus its training clients'
accuracy and total bytes.

    python benchmarks/paired_newcomers.py BASE_METHOD_DIR OTHER_METHOD_DIR... [--seeds 0,1,2]
    e.g. python benchmarks/paired_newcomers.py benchmarks/results/newcomers/fashion_alpha0.1_lenet5/genefl \\
           benchmarks/results/newcomers/fashion_alpha0.1_lenet5_variants/genefl_genefl.fisher_samples=32
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from genefl.experiments.study import t_interval

METRICS = {"epoch 1": lambda n: n["acc_by_epoch"][0], "last": lambda n: n["acc_by_epoch"][-1],
           "val.-chosen": lambda n: n["acc_chosen"]}


def load(folder: Path, seeds: list[int]) -> dict[int, dict]:
    return {s: json.loads((folder / f"seed{s}" / "results.json").read_text()) for s in seeds}


def row(name: str, base: dict[int, dict], other: dict[int, dict]) -> str:
    cells = [name]
    clients = [100 * other[s]["summary"]["acc_clients"] for s in other]
    cells.append(f"{statistics.mean(clients):.1f} ± {statistics.stdev(clients):.1f}")
    cells.append(f"{statistics.mean(other[s]['summary']['bytes_total'] for s in other) / 1e6:.1f}")
    cells.append(f"{statistics.mean(other[s]['summary']['bytes_newcomer_init_mean'] for s in other) / 1e6:.4f}")
    for get in METRICS.values():
        diffs = []
        for s in base:
            mine = {n["id"]: n for n in other[s]["newcomers"]}
            for n in base[s]["newcomers"]:
                if n["id"] not in mine or mine[n["id"]]["arrival_round"] != n["arrival_round"]:
                    raise SystemExit(f"{name}: seed {s} newcomer {n['id']} is not the base run's newcomer")
                diffs.append(100 * (get(mine[n["id"]]) - get(n)))
        mean, half = t_interval(diffs)
        cells.append(f"{mean:+.1f} ± {half:.1f}{'*' if abs(mean) > half else ''}")
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", type=Path)
    parser.add_argument("others", type=Path, nargs="+")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    base = load(args.base, seeds)
    print(f"Paired with {args.base} (n = newcomers x seeds; * = interval excludes 0)\n")
    print("| run | acc. training clients | total MB | MB to init a newcomer | "
          + " | ".join(f"newcomers vs base, {m}" for m in METRICS) + " |")
    print("|---" * (4 + len(METRICS)) + "|")
    print(row(f"{args.base.name} (base)", base, base))
    for folder in args.others:
        print(row(folder.name, base, load(folder, seeds)))


if __name__ == "__main__":
    main()
