"""Does a model trained on some Synthetic(α, β) clients predict others? (BENCHMARKS 7.3.)

Trains one MLP (60-200-10, Adam lr 1e-3, batch 256) centrally on the pooled training splits of
clients 0..n-1 and reports its accuracy, as a mean over clients, on those clients' test splits and
on clients n..2n-1's, beside a per-client majority-class guess. Synthetic(1, 1) draws each client's
labelling model independently, which is why the global-model methods stay at chance on a population
where most clients are never sampled.

Usage:
  OMP_NUM_THREADS=1 python benchmarks/synthetic_transfer.py --clients 1000 --epochs 15
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from torch import nn

from genefl.data.synthetic import CLASSES, FEATURES, generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000, help="clients trained on (as many others are tested)")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--beta", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0, help="the scenario's seed (and torch's)")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    clients = [generate(args.seed, k, args.alpha, args.beta, 10) for k in range(2 * args.clients)]
    seen, unseen = clients[:args.clients], clients[args.clients:]
    x = torch.from_numpy(np.concatenate([c[0] for c in seen]))
    y = torch.from_numpy(np.concatenate([c[1] for c in seen]))
    model = nn.Sequential(nn.Linear(FEATURES, 200), nn.ReLU(), nn.Linear(200, CLASSES))
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    for _ in range(args.epochs):
        order = torch.randperm(len(x))
        for i in range(0, len(x), 256):
            batch = order[i:i + 256]
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            opt.step()

    def accuracy(group) -> float:
        with torch.no_grad():
            return float(np.mean([(model(torch.from_numpy(c[2])).argmax(1).numpy() == c[3]).mean() for c in group]))
    majority = float(np.mean([np.bincount(c[3], minlength=CLASSES).max() / len(c[3]) for c in seen]))
    print(f"Synthetic({args.alpha:g}, {args.beta:g}), seed {args.seed}, {len(x)} training samples from {args.clients} clients")
    print(f"  clients trained on, their test splits:  {100 * accuracy(seen):.1f}%")
    print(f"  {args.clients} other clients:                  {100 * accuracy(unseen):.1f}%")
    print(f"  per-client majority class (trained-on):  {100 * majority:.1f}%")


if __name__ == "__main__":
    main()
