"""BENCHMARKS.md 3.4: per-round time and peak memory as the client count grows 10 -> 100 -> 1000.

Every client holds the same small amount of data (`--per-client` samples, one batch), so the work
per client is fixed and what grows with the count is the simulator's own cost per client. The fixed
cost per client is (median round time - time of the same batches in a plain loop) / clients.
Each client count runs in a fresh subprocess, so its peak RSS is its own; the table also shows the
bytes of per-client state the run keeps between rounds (FedAvg keeps none; GENE-FL keeps each
client's personal model, which `state_store = "disk"` moves to files).

Usage:
  GENEFL_DATA=../shared/data python benchmarks/scaling.py [--counts 10,100,1000] [--methods fedavg,genefl]
Prints a table and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
from torch import nn


def one(method: str, clients: int, per_client: int, rounds: int, dataset: str, store: str) -> dict:
    from genefl.config import load_config
    from genefl.data.scenario import build_scenario
    from genefl.runtime.simulator import Simulator

    overrides = [f"method={method}", f"dataset={dataset}", "model=cnn", f"num_clients={clients}", "num_newcomers=0",
                 "partition=iid", f"batch_size={per_client}", "local_epochs=1", f"rounds={rounds + 2}",
                 f"eval_every={rounds + 2}", f"min_samples={per_client}", f"state_store={store}",
                 f"genefl.fisher_samples={per_client}"]
    if dataset != "digits":
        overrides.append(f"train_subset={clients * per_client}")
    config = load_config(None, overrides)
    scenario = build_scenario(config)
    sim = Simulator(config, scenario)
    result = sim.run()
    state_in_memory = sim.states.nbytes_in_memory()
    walls = [r.wall_s for r in result.rounds[1:-1]]  # round 1 warms up kernels; the last one evaluates
    # the same batches in a plain loop: the compute the clients cannot avoid
    model, loss_fn = sim.model, nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, foreach=True)
    plain = []
    for _ in range(rounds + 1):
        t0 = time.perf_counter()
        for c in scenario.clients:
            for start in range(0, c.num_train, config.batch_size):
                optimizer.zero_grad()
                loss_fn(model(c.x_train[start : start + config.batch_size]), c.y_train[start : start + config.batch_size]).backward()
                optimizer.step()
        plain.append(time.perf_counter() - t0)
    round_s, plain_s = statistics.median(walls), statistics.median(plain[1:])
    return {"method": method, "clients": clients, "round_s": round(round_s, 4), "plain_s": round(plain_s, 4),
            "fixed_ms_per_client": round(1000 * (round_s - plain_s) / clients, 3),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "state_mb": round(state_in_memory / 1e6, 2), "state_store": store}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion_mnist" if os.environ.get("GENEFL_DATA") else "digits")
    parser.add_argument("--counts", default="10,100,1000")
    parser.add_argument("--methods", default="fedavg,genefl")
    parser.add_argument("--per-client", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--store", default="memory", help="state_store for the runs: memory | disk")
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "CLIENTS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]), args.per_client, args.rounds, args.dataset, args.store)))
        return
    rows = []
    for method in args.methods.split(","):
        for count in [int(c) for c in args.counts.split(",")]:
            proc = subprocess.run([sys.executable, __file__, "--one", method, str(count), "--dataset", args.dataset,
                                   "--per-client", str(args.per_client), "--rounds", str(args.rounds), "--store", args.store],
                                  capture_output=True, text=True, check=True)
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"{r['method']:8} {r['clients']:6d} clients: round {r['round_s']:.3f} s (plain loop {r['plain_s']:.3f} s), "
                  f"fixed {r['fixed_ms_per_client']:.2f} ms/client, peak RSS {r['peak_rss_mb']:.0f} MB, "
                  f"state {r['state_mb']:.1f} MB ({r['state_store']})", flush=True)
    print(json.dumps({"dataset": args.dataset, "per_client": args.per_client, "rows": rows}))


if __name__ == "__main__":
    main()
