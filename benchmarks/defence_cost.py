"""What robust aggregation costs at 100 participants, as a share of a round (`genefl.protocol.robust`; goal <= 10%).

The round it is compared with: 100 clients' local training, one after another as the simulator runs
them. One client's is measured (FedAvg's client half, `client.train`: load the broadcast, one local
epoch of batch-32 SGD, read the update) on 600 Fashion-MNIST training images (a seeded sample, from
$GENEFL_DATA; without it, random tensors of the same shape and random labels, which train at the same
speed) and multiplied by 100. The aggregation: one `robust.Combiner` fed 100 updates of the model's
state_dict and asked for its result, exactly as a server's round does it (the updates are synthetic: the
measured client's trained weights plus seeded noise per client; the cost depends on their sizes, not
their values). For `mean` (the default streaming mean), `median`, `trimmed_mean` (trim 0.1), `krum` and
`multikrum` (f = 10), `norm_bound` (with the mean; C = half the median update's change, so every
update is clipped), and `reputation` (with the mean: the round loop's scoring of the 100 changes against
their coordinate-wise median, `genefl.protocol.reputation`, then the mean). Medians of `--repeats` timings, training and aggregation alternating.

GENE-FL and PACFL aggregate per cluster: k clusters of 100/k updates cost no more than this (Krum's
pairwise distances shrink to k (100/k)^2), and GENE-FL's aggregate covers only the learnGene layers.

Usage:
  GENEFL_DATA=../shared/data OMP_NUM_THREADS=1 python benchmarks/defence_cost.py [--clients 100] [--repeats 5] [--model cnn]
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

from genefl.algorithms.base import ClientEnv
from genefl.config import DefenceOptions, load_config
from genefl.data.datasets import load_dataset
from genefl.data.scenario import ClientData
from genefl.protocol.messages import Broadcast, ClientUpdate
from genefl.protocol.reputation import Reputation
from genefl.protocol.robust import Combiner
from genefl.runtime.assembly import assemble

SAMPLES = 600  # one client's training images (Fashion-MNIST's 60,000 over 100 clients)


def client_images(data_dir: str) -> tuple[torch.Tensor, torch.Tensor, str]:
    """600 Fashion-MNIST training images and labels (random ones of that shape without data), and which."""
    gen = torch.Generator().manual_seed(0)
    if data_dir:
        dataset = load_dataset("fashion_mnist", data_dir)
        chosen = torch.randperm(len(dataset.y_train), generator=gen)[:SAMPLES]
        return dataset.x_train[chosen], dataset.y_train[chosen], "Fashion-MNIST"
    return torch.randn(SAMPLES, 1, 28, 28, generator=gen), torch.randint(0, 10, (SAMPLES,), generator=gen), "random tensors"


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def aggregate(options: DefenceOptions, updates: list[dict[str, torch.Tensor]], sent: dict[str, torch.Tensor]) -> list[str]:
    """One round's aggregation of `updates` under `options`, as a server does it; returns its notes."""
    notes: list[str] = []
    left_out = frozenset()
    if options.reputation:  # the round loop's judgement first (a fresh memory: every client scored, none left out)
        left_out = Reputation(options).judge(1, [(cid, ClientUpdate(tensors=t)) for cid, t in enumerate(updates)],
                                             lambda cid: sent, notes)
    combiner = Combiner(options, notes, "round 1", lambda cid: sent, left_out)
    for cid, tensors in enumerate(updates):
        combiner.add(cid, tensors, float(SAMPLES))
    combiner.result(sent)
    return notes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100, help="participants per round")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", default="cnn", help="cnn is the default model for Fashion-MNIST")
    parser.add_argument("--byzantine", type=int, default=10, help="f for krum and multikrum")
    args = parser.parse_args()

    config = load_config(None, ["dataset=fashion_mnist", f"model={args.model}", "method=fedavg", "num_newcomers=0"])
    parts = assemble(config, (1, 28, 28), 10)
    initial = parts.initial_weights()
    x, y, source = client_images(config.resolved_data_dir())
    env = ClientEnv(0, 1, parts.model, ClientData(x, y, x[:10], y[:10]), {}, config, parts.spec, parts.layers)
    client, broadcast = parts.client(), Broadcast(tensors=initial)
    trained = client.train(env, broadcast).tensors  # warm-up, and the base of the synthetic updates
    gen = torch.Generator().manual_seed(1)
    updates = [{k: v + 0.01 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v.clone()
                for k, v in trained.items()} for _ in range(args.clients)]
    changes = sorted(sum(float(((u[k] - initial[k]) ** 2).sum()) for k in u if u[k].is_floating_point()) ** 0.5
                     for u in updates)
    defences = {"mean": DefenceOptions(), "median": DefenceOptions(aggregator="median"),
                "trimmed_mean": DefenceOptions(aggregator="trimmed_mean", trim=0.1),
                "krum": DefenceOptions(aggregator="krum", byzantine=args.byzantine),
                "multikrum": DefenceOptions(aggregator="multikrum", byzantine=args.byzantine),
                "norm_bound": DefenceOptions(norm_bound=changes[len(changes) // 2] / 2),
                "reputation": DefenceOptions(reputation=True)}
    train_s, agg_s = [], {name: [] for name in defences}
    for name, options in defences.items():  # warm-up
        aggregate(options, updates, initial)
    for _ in range(args.repeats):
        train_s.append(timed(lambda: client.train(env, broadcast)))
        for name, options in defences.items():
            agg_s[name].append(timed(lambda: aggregate(options, updates, initial)))
    client_s = statistics.median(train_s)
    round_s = client_s * args.clients
    params = sum(v.numel() for v in initial.values() if v.is_floating_point())
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, "
               f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}")
    rows = [{"defence": name, "aggregation_s": round(statistics.median(t), 4),
             "share_of_round": round(statistics.median(t) / round_s, 5)} for name, t in agg_s.items()]
    print(f"{args.model} ({params:,} parameters), {args.clients} participants, one client's training on "
          f"{SAMPLES} {source}: {client_s:.3f} s (x {args.clients} = {round_s:.1f} s a round); {machine}")
    print(f"{'defence':13} {'aggregation s':>13} {'share of round':>14}")
    for r in rows:
        print(f"{r['defence']:13} {r['aggregation_s']:13.4f} {r['share_of_round']:14.2%}")
    print(json.dumps({"machine": machine, "model": args.model, "parameters": params, "clients": args.clients,
                      "data": source, "client_train_s": round(client_s, 4), "round_s": round(round_s, 3), "rows": rows}))


if __name__ == "__main__":
    main()
