"""BENCHMARKS.md 3.2: genefl's in-process simulator vs Flower's Ray simulation, same workload.

FedAvg, the CNN, 20 clients that train 1 epoch per round, no newcomers, evaluation only after the
last round: once through `genefl.runtime.simulator.Simulator` in this process, once through our
Flower app (`flwr run` against a local `flower-superlink --simulation`, 20 virtual SuperNodes on
Ray). Both report the round loop's own per-round wall time in results.json; the table compares the
medians of the rounds before the last (the last one evaluates).

Needs the `flower` extra. Usage:
  GENEFL_DATA=../shared/data python benchmarks/flower_vs_simulator.py [--rounds 4]
Prints a table and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the loopback Federation harness the Flower tests use

from common import add_workload_arguments  # noqa: E402
from flower_harness import Federation  # noqa: E402

from genefl.config import load_config  # noqa: E402
from genefl.data.scenario import build_scenario  # noqa: E402
from genefl.results import build_results  # noqa: E402
from genefl.runtime.simulator import Simulator  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_workload_arguments(parser, rounds=4, rounds_help="at least 3: the first and last rounds are not timed")
    args = parser.parse_args()

    keys = {"method": "fedavg", "dataset": args.dataset, "model": "cnn", "num_clients": args.clients, "num_newcomers": 0,
            "partition": "iid", "local_epochs": 1, "rounds": args.rounds, "eval_every": args.rounds}
    if args.dataset != "digits":
        keys["train_subset"] = args.train_subset
        keys["data_dir"] = str(Path(os.environ["GENEFL_DATA"]).resolve())

    config = load_config(None, [f"{k}={v}" for k, v in keys.items()])
    t0 = time.perf_counter()
    sim_doc = build_results(Simulator(config, build_scenario(config)).run())
    sim_total = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        fed = Federation(Path(tmp), simulation=True)
        out = Path(tmp) / "out"
        run_config = " ".join(f"{k}='{v}'" if isinstance(v, str) else f"{k}={v}" for k, v in keys.items())
        run_config += f" flower.out='{out}' flower.round_timeout=1200.0"
        try:
            fed.start_superlink()
            t0 = time.perf_counter()
            proc = fed.run(run_config, timeout=3000, federation_config=f"num-supernodes={args.clients}")
            flower_total = time.perf_counter() - t0
        finally:
            fed.stop()
        if proc.returncode != 0:
            sys.exit(f"flwr run failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        flower_doc = json.loads((out / "results.json").read_text())

    def median_round(doc):
        return statistics.median(r["wall_s"] for r in doc["rounds"][1:-1])  # round 1 warms up, the last evaluates

    sim_round, flower_round = median_round(sim_doc), median_round(flower_doc)
    same_bytes = sim_doc["summary"]["bytes_total"] == flower_doc["summary"]["bytes_total"]
    print(f"FedAvg, {args.dataset}, cnn, {args.clients} clients, {args.rounds} rounds")
    print(f"{'runtime':22} {'median round s':>15} {'whole run s':>12}")
    print(f"{'genefl simulator':22} {sim_round:15.3f} {sim_total:12.1f}")
    print(f"{'Flower Ray simulation':22} {flower_round:15.3f} {flower_total:12.1f}")
    print(f"speed-up per round: {flower_round / sim_round:.1f}x; identical byte totals: {same_bytes}")
    print(json.dumps({"dataset": args.dataset, "clients": args.clients, "rounds": args.rounds,
                      "simulator_round_s": round(sim_round, 4), "flower_round_s": round(flower_round, 4),
                      "speedup": round(flower_round / sim_round, 2), "simulator_total_s": round(sim_total, 2),
                      "flower_total_s": round(flower_total, 2), "same_bytes": same_bytes,
                      "acc_simulator": sim_doc["summary"]["acc_clients"], "acc_flower": flower_doc["summary"]["acc_clients"]}))


if __name__ == "__main__":
    main()
