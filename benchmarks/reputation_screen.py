"""Can a server tell sign flippers from honest clients at α = 0.1 by the direction of their changes?
The screen that came before `defence.reputation` (BENCHMARKS.md 8.7).

One undefended FedAvg run with `adversary.kind = "signflip"` (Fashion-MNIST α = 0.1, LeNet-5, the newcomer
study's scenario; 20% attackers), every upload of every round captured through the round loop's
`on_upload` event as the server decoded it. Then, per round from round 2 (the global model a round
started from is the sample-weighted mean of the previous round's uploads: FedAvg, no server optimizer),
each reporter's change is scored three ways:
  median    cosine with the coordinate-wise median of all reporters' changes (what `defence.reputation` uses)
  others    cosine with the mean of the other reporters' changes
  previous  cosine with the previous round's global change
and the scores are ranked: AUC = the probability that an honest client scores above an attacker, for
the round's own score ("now") and for each client's mean score over its rounds so far ("mean"). 1.0
separates them completely, 0.5 is chance.

Usage:
  GENEFL_DATA=../shared/data OMP_NUM_THREADS=1 python benchmarks/reputation_screen.py [--seed 0] [--fraction 0.2]
"""

from __future__ import annotations

import argparse
import tomllib
from pathlib import Path

import torch

import genefl
from genefl.protocol.robust import coordinate_median
from genefl.runtime.events import Callback

ROOT = Path(__file__).resolve().parents[1]
REPORT_ROUNDS = (3, 5, 10, 20, 30)


class EveryUpload(Callback):
    """round -> client -> (its decoded tensors, flattened, float64; its sample count)."""

    def __init__(self):
        self.rounds: dict[int, dict[int, tuple[torch.Tensor, int]]] = {}

    def on_upload(self, round, cid, sent, decoded):
        flat = torch.cat([v.detach().reshape(-1).double() for _, v in sorted(decoded.tensors.items()) if v.is_floating_point()])
        self.rounds.setdefault(round, {})[cid] = (flat, decoded.meta["num_samples"])


def auc(scores: dict[int, float], attackers: set[int]) -> float:
    honest = [s for c, s in scores.items() if c not in attackers]
    bad = [s for c, s in scores.items() if c in attackers]
    return sum((h > b) + 0.5 * (h == b) for h in honest for b in bad) / (len(honest) * len(bad))


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm() + 1e-12))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fraction", type=float, default=0.2)
    args = parser.parse_args()
    config = tomllib.loads((ROOT / "configs" / "newcomers_fashion_alpha0.1.toml").read_text())
    config.update({"model": "lenet5", "method": "fedavg", "seed": args.seed, "checkpoint_every": 0,
                   "adversary": {"kind": "signflip", "fraction": args.fraction}})
    capture = EveryUpload()
    result = genefl.run(config, callbacks=[capture])
    attackers = set(result.method_info["adversary"]["attackers"])
    print(f"undefended: training clients {100 * result.summary['acc_clients']:.2f}%, attackers {sorted(attackers)}")
    rounds = sorted(capture.rounds)
    start = {}  # round -> the global model it started from (flattened)
    for t in rounds:
        total = sum(n for _, n in capture.rounds[t].values())
        start[t + 1] = sum(flat * (n / total) for flat, n in capture.rounds[t].values())
    history: dict[str, dict[int, list[float]]] = {"median": {}, "others": {}, "previous": {}}
    for t in rounds[1:]:
        cids = sorted(capture.rounds[t])
        changes = torch.stack([capture.rounds[t][c][0] - start[t] for c in cids])
        median = coordinate_median(changes)  # the defence's own reference (the middle pair averaged)
        previous = start[t] - start[t - 1] if t - 1 in start else None
        for i, cid in enumerate(cids):
            others = (changes.sum(0) - changes[i]) / (len(cids) - 1)
            scores = {"median": cosine(changes[i], median), "others": cosine(changes[i], others),
                      "previous": cosine(changes[i], previous) if previous is not None else 0.0}
            for name, value in scores.items():
                history[name].setdefault(cid, []).append(value)
        if t in REPORT_ROUNDS:
            cells = []
            for name, by_client in history.items():
                now = {c: v[-1] for c, v in by_client.items()}
                mean = {c: sum(v) / len(v) for c, v in by_client.items()}
                cells.append(f"{name}: now {auc(now, attackers):.2f}, mean {auc(mean, attackers):.2f}")
            print(f"round {t:2d}  " + "   ".join(cells))
    for name, by_client in history.items():
        means = sorted((sum(v) / len(v), c) for c, v in by_client.items())
        print(f"{name:8s} mean score by client (* attacker): "
              + " ".join(f"{c}{'*' if c in attackers else ''}:{m:+.3f}" for m, c in means))


if __name__ == "__main__":
    main()
