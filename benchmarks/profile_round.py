"""Where a round's time goes: cProfile over a few simulator rounds, grouped by component.

Usage: GENEFL_DATA=../shared/data python benchmarks/profile_round.py [--method genefl] [--rounds 3]
Runs one warm-up run first (kernel set-up), then profiles a second identical run. Prints a table
(seconds per round and share of the run) and a final JSON line.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats

from genefl.config import load_config
from genefl.data.scenario import build_scenario
from genefl.runtime.simulator import Simulator

# (label, file suffix, function name): cumulative time of these functions
COMPONENTS = [
    ("local training (forward/backward/step)", "genefl/protocol/training.py", "train"),
    ("Fisher (per-sample gradients)", "genefl/algorithms/genefl/fisher.py", "diagonal_fisher"),
    ("elastic mask + normalisation", "genefl/algorithms/genefl/fisher.py", "elastic_mask"),
    ("constraint coefficients", "genefl/algorithms/genefl/constraints.py", "coefficients"),
    ("sensitivity scores", "genefl/algorithms/genefl/sensitivity.py", "stability"),
    ("snapshots of the model", "genefl/protocol/training.py", "snapshot"),
    ("loading broadcasts into the model", "genefl/protocol/training.py", "load_into"),
    ("checking updates", "genefl/protocol/messages.py", "check_update"),
    ("byte ledger", "genefl/protocol/ledger.py", "record"),
    ("aggregation", "genefl/protocol/aggregate.py", "add"),
    ("evaluation", "genefl/protocol/training.py", "accuracy"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion_mnist" if os.environ.get("GENEFL_DATA") else "digits")
    parser.add_argument("--method", default="genefl")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    overrides = [f"method={args.method}", f"dataset={args.dataset}", "model=cnn", f"num_clients={args.clients}",
                 "num_newcomers=0", "partition=iid", f"rounds={args.rounds}", f"eval_every={args.rounds}"]
    if args.dataset != "digits":
        overrides.append("train_subset=12000")
    config = load_config(None, overrides)
    scenario = build_scenario(config)
    Simulator(config, scenario).run()  # warm-up
    profiler = cProfile.Profile()
    profiler.enable()
    result = Simulator(config, scenario).run()
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # {(file, line, func): (cc, nc, tottime, cumtime, callers)}
    total = result.wall_s
    rows = []
    for label, suffix, func in COMPONENTS:
        cum = sum(v[3] for (f, _, name), v in stats.items() if f.endswith(suffix) and name == func)
        rows.append((label, cum))
    print(f"{args.method}, {args.dataset}, cnn, {args.clients} clients, {args.rounds} rounds (last one evaluates), "
          f"{total / args.rounds:.3f} s per round under cProfile")
    for label, cum in rows:
        print(f"{label:40} {cum / args.rounds:8.3f} s/round {100 * cum / total:6.1f}%")
    print(json.dumps({"method": args.method, "dataset": args.dataset, "round_s": round(total / args.rounds, 4),
                      "share": {label: round(cum / total, 4) for label, cum in rows}}))


if __name__ == "__main__":
    main()
