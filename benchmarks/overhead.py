"""BENCHMARKS.md 3.1: the simulator against the physical limit, a plain centralized loop.

Same model (the CNN), same samples, same batch size, one epoch per round: a plain PyTorch loop over
all the clients' training samples pooled together, vs genefl's simulator running FedAvg (and
GENE-FL, Fisher and sensitivity work included) with 20 clients that each train 1 epoch per round.
The two are interleaved (centralized epoch, simulator round, centralized epoch, ...) so that both
see the same machine state, and the ratio is of medians measured side by side.

Samples/s counts training samples only; the simulator's time is the whole round as the round loop
measures it (broadcast, training, packing the updates, byte ledger, aggregation), with evaluation
switched off (eval_every > rounds, except the last round, which is not timed, like the first, which
warms up the kernels).

Usage:
  GENEFL_DATA=../shared/data python benchmarks/overhead.py [--dataset fashion_mnist] [--rounds 6]
Prints a table and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch
from torch import nn

from genefl.config import load_config
from genefl.data.scenario import build_scenario
from genefl.runtime.simulator import Simulator

from common import RoundWalls, add_workload_arguments


def centralized_epoch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, lr: float,
                      gen: torch.Generator) -> float:
    """One epoch of plain SGD over (x, y); returns seconds."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, foreach=True)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    t0 = time.perf_counter()
    order = torch.randperm(len(y), generator=gen)
    for start in range(0, len(y), batch_size):
        batch = order[start : start + batch_size]
        optimizer.zero_grad()
        loss_fn(model(x[batch]), y[batch]).backward()
        optimizer.step()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_workload_arguments(parser, rounds=6, rounds_help="timed rounds per method (medians over these)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--methods", default="fedavg,genefl")
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    overrides = [f"dataset={args.dataset}", f"model={args.model}", f"num_clients={args.clients}", "num_newcomers=0",
                 "partition=iid", "local_epochs=1", f"batch_size={args.batch_size}", f"rounds={args.rounds + 2}",
                 f"eval_every={args.rounds + 2}", f"device={args.device}", "participation=1.0"]
    if args.dataset != "digits":
        overrides.append(f"train_subset={args.train_subset}")
    rows, result = [], {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
                                   f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.device}"}
    for method in args.methods.split(","):
        config = load_config(None, overrides + [f"method={method}"])
        scenario = build_scenario(config)
        x = torch.cat([c.x_train for c in scenario.clients])
        y = torch.cat([c.y_train for c in scenario.clients])
        central = Simulator(config, scenario).model  # same architecture and initial weights
        central_s: list[float] = []
        gen = torch.Generator().manual_seed(0)
        # interleaved: one centralized epoch after each simulator round
        timer = RoundWalls(lambda: central_s.append(centralized_epoch(central, x, y, config.batch_size, config.lr, gen)))
        Simulator(config, scenario, [timer]).run()
        sim_s = timer.walls[1:-1]  # round 1 warms up kernels and the last one evaluates: neither is timed
        central_s = central_s[1:-1]
        n = len(y)
        sim_rate, central_rate = n / statistics.median(sim_s), n / statistics.median(central_s)
        rows.append({"method": method, "samples_per_round": n, "simulator_samples_per_s": round(sim_rate, 1),
                     "centralized_samples_per_s": round(central_rate, 1), "ratio": round(sim_rate / central_rate, 3),
                     "simulator_round_s_median": round(statistics.median(sim_s), 4),
                     "centralized_epoch_s_median": round(statistics.median(central_s), 4), "rounds_timed": len(sim_s)})
    print(f"{args.dataset}, {args.model}, {args.clients} clients, batch {args.batch_size}; {result['machine']}")
    print(f"{'method':10} {'samples':>8} {'simulator/s':>12} {'central/s':>10} {'ratio':>6}")
    for r in rows:
        print(f"{r['method']:10} {r['samples_per_round']:8d} {r['simulator_samples_per_s']:12.0f} "
              f"{r['centralized_samples_per_s']:10.0f} {r['ratio']:6.3f}")
    result.update(dataset=args.dataset, model=args.model, clients=args.clients, rows=rows)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
