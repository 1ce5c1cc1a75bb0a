"""Communication with `first_contact = "seed"` (BENCHMARKS.md 4.4): GENE-FL's total bytes against
FedAvg's, with every client's first contact sending the full initial model or only the seed, across
run lengths and participation rates.

    GENEFL_DATA=../shared/data python benchmarks/first_contact.py [--rounds 5,10,30] [--participation 0.5,1.0]

The scenario is the newcomer study's (configs/newcomers_fashion_alpha0.1.toml: the CNN, 20 training
clients, 10 newcomers) on a 6,000-image subset (min_samples 10) with one fine-tuning epoch: byte counts depend on the
model, the clients and the learnGene layers, not on how much data each client trains on.
Prints one table and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from genefl.config import load_config
from genefl.data.scenario import build_scenario
from genefl.results import build_results
from genefl.runtime.simulator import Simulator

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "newcomers_fashion_alpha0.1.toml"


def total_bytes(method: str, rounds: int, participation: float, first_contact: str) -> int:
    config = load_config(CONFIG, [f"method={method!r}".replace("'", '"'), f"rounds={rounds}", f"participation={participation}",
                                  f'first_contact="{first_contact}"', "train_subset=6000", "min_samples=10", "newcomer_epochs=1",
                                  f"eval_every={rounds}"])
    doc = build_results(Simulator(config, build_scenario(config)).run())
    return doc["summary"]["bytes_total"]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", default="5,10,30")
    parser.add_argument("--participation", default="0.5,1.0")
    args = parser.parse_args(argv)
    rows = []
    print("| rounds | participation | first contact | FedAvg MB | GENE-FL MB | FedAvg / GENE-FL |")
    print("|---|---|---|---|---|---|")
    for rounds in (int(r) for r in args.rounds.split(",")):
        for participation in (float(p) for p in args.participation.split(",")):
            for how in ("tensors", "seed"):
                fedavg, genefl = (total_bytes(m, rounds, participation, how) for m in ("fedavg", "genefl"))
                rows.append({"rounds": rounds, "participation": participation, "first_contact": how,
                             "fedavg_bytes": fedavg, "genefl_bytes": genefl, "ratio": fedavg / genefl})
                print(f"| {rounds} | {participation} | {how} | {fedavg / 1e6:.2f} | {genefl / 1e6:.2f} | {fedavg / genefl:.2f} |",
                      flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
