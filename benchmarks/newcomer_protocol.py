"""Choosing the newcomer fine-tuning protocol (BENCHMARKS.md 4.1) on a development seed.

Re-fine-tunes the newcomers of an existing `genefl newcomers` folder (its recorded starts) under
several protocols and prints, per protocol: the noise floor (the spread of the same start
fine-tuned under another seed), the epoch-to-epoch swing of the mean curve, and each start's mean
accuracy after epoch 1, the last epoch and the validation-chosen epoch.

    python benchmarks/newcomer_protocol.py runs/dev --seed 100 [--jobs 2]

Only the fine-tuning changes; the federated runs (and so the starts) are the folder's.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from genefl.experiments.comparison import parallel_map
from genefl.config import load_config, replace
from genefl.experiments.study import analyse, study_seed

PROTOCOLS = {
    "training lr 0.05, no momentum (old)": dict(newcomer_lr=0.0, newcomer_momentum=0.0, newcomer_schedule="constant"),
    "lr 0.01, no momentum": dict(newcomer_lr=0.01, newcomer_momentum=0.0, newcomer_schedule="constant"),
    "lr 0.01, momentum 0.9, cosine": dict(newcomer_lr=0.01, newcomer_momentum=0.9, newcomer_schedule="cosine"),
    "lr 0.005, momentum 0.9, cosine": dict(newcomer_lr=0.005, newcomer_momentum=0.9, newcomer_schedule="cosine"),
    "lr 0.01, momentum 0.9, cosine, inherited frozen 1 epoch": dict(
        newcomer_lr=0.01, newcomer_momentum=0.9, newcomer_schedule="cosine", newcomer_freeze_epochs=1),
    "lr 0.01, momentum 0.9, cosine, inherited lr x0.1": dict(
        newcomer_lr=0.01, newcomer_momentum=0.9, newcomer_schedule="cosine", newcomer_inherited_lr=0.1),
}


def swing(curve: list[float]) -> float:
    """Mean absolute change of the mean accuracy between consecutive epochs after the first."""
    steps = [abs(b - a) for a, b in zip(curve[1:], curve[2:])]
    return sum(steps) / len(steps) if steps else 0.0


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--replicates", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=1)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    args = parser.parse_args(argv)
    base = load_config(args.folder / "genefl" / f"seed{args.seed}" / "config.toml")
    configs = [replace(base, newcomer_val_fraction=args.val_fraction, **changes) for changes in PROTOCOLS.values()]
    work = [(c, args.folder, args.replicates) for c in configs]
    results = parallel_map(study_seed, work, args.jobs) if args.jobs > 1 else [study_seed(*w) for w in work]
    report = {}
    for name, records in zip(PROTOCOLS, results):
        analysis = analyse(records)
        report[name] = analysis
        floor = analysis["noise_floor"]
        print(f"\n## {name}")
        print("noise floor sd (first / last / chosen): " + " / ".join(f"{100 * floor[m]['sd']:.1f}" for m in ("first", "last", "chosen")))
        print("| start | epoch 1 | last | val.-chosen | swing | vs learnGene last |")
        for row in analysis["rows"]:
            diff = f"{100 * row['diff_last']:+.1f} ± {100 * row['ci_last']:.1f}" if "diff_last" in row else "-"
            print(f"| {row['start']} | {100 * row['first']:.1f} | {100 * row['last']:.1f} | {100 * row['chosen']:.1f} | "
                  f"{100 * swing(row['curve']):.1f} | {diff} |")
    (args.folder / "newcomer_protocol.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
