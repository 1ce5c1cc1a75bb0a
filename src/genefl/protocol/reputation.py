"""A server's memory of which way each client pulls (`defence.reputation`), for every method that
aggregates through `genefl.protocol.robust`.

Each round, every client that reported gets a score: the cosine between its change (every
floating-point tensor it sent, minus what the server sent it) and the round's reference, the
coordinate-wise median of all reporters' changes, tensor by tensor over the clients that sent that
tensor (so GENE-FL's clusters, each sending its own layers, are compared on what they sent); with
`defence.reputation_reference = "trusted"` the median is over the reporters not left out as the round
starts (over all of them where fewer than 3 of a tensor's senders are trusted), so that attackers
already found stop moving the reference their accomplices are scored against. The
server keeps each client's sum of scores and their count. A client whose mean score is below
`defence.reputation_threshold` (0) once it has at least `defence.reputation_rounds` (3) of them is
left out of the round's aggregate, whatever `defence.aggregator` then does with the rest; it keeps
being scored, so a client that pulls with the others again earns its way back. A round with fewer
than 3 reporters scores nobody (no majority to set a direction).

Why a memory: one round's cosine does not tell a sign flipper from an honest client whose data is
unlike the others'. On Fashion-MNIST α = 0.1 (LeNet-5, 20 clients, 4 sign flippers) the one-round
`cosine` aggregator left honest clients out in up to 12 of 30 rounds and one flipper in only 12,
while over a client's rounds the mean score put three of the four flippers below every honest
client (BENCHMARKS.md 8.7). What it cannot do: an attacker whose changes point with the median (a
scaled update: pair it with `norm_bound`; ALIE) scores like an honest client; one that behaves
until its count is reached and attacks afterwards keeps its credit for a while (the mean is over
all its rounds); an honest client whose data pulls against most others' for long enough is left
out. Scores are per client id, so a client that changes identity starts afresh. With the "trusted"
reference an honest client left out narrows the reference for the others, and the next outlier scores
lower: measured (BENCHMARKS.md 8.8) it held a 30% sign flip better than "all" and cost more without an
attack and at 20%, which is why "all" is the default.

The scores are kept by the round loop and checkpointed with it (both runtimes run the same loop),
and reported in results.json (`method_info.reputation`: client -> [mean score, rounds scored]).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..errors import GeneflError
from .robust import coordinate_median

MIN_REPORTERS = 3  # fewer: no majority to set a direction against


class Reputation:
    """Per client: (sum of scores, number of scores). `judge` scores a round and says who is left out."""

    def __init__(self, options):
        self.options = options
        self.scores: dict[int, list[float]] = {}  # cid -> [sum, count]

    def judge(self, round: int, updates: list[tuple[int, Any]], sent: Callable[[int], dict[str, torch.Tensor]],
              notes: list[str]) -> frozenset[int]:
        """Score the round's (client id, update) pairs and return the clients to leave out of its aggregate;
        `sent(cid)`: the tensors the server sent that client this round; a note names who is left out."""
        if len(updates) < MIN_REPORTERS:
            return frozenset()
        references = {cid: sent(cid) for cid, _ in updates}  # once per client: a method may build it
        senders: dict[str, list[int]] = {}  # tensor name -> positions (in `updates`) of the clients that sent it
        for i, (cid, update) in enumerate(updates):
            for name, value in update.tensors.items():
                if value.is_floating_point() and name in references[cid]:
                    senders.setdefault(name, []).append(i)
        # per client and tensor: (change . median, |change|^2, |median|^2), one tensor at a time (a round's
        # changes of a large model, all at once and in float64, would be gigabytes)
        parts: list[dict[str, tuple[float, float, float]]] = [{} for _ in updates]
        # "trusted": the median of the clients not left out as the round starts, so attackers already found
        # stop pulling the reference their accomplices are scored against (all of them while fewer than 3)
        trusted = ({i for i, (cid, _) in enumerate(updates) if not self.distrusted(cid)}
                   if self.options.reputation_reference == "trusted" else None)
        for name, rows in senders.items():
            if len(rows) < MIN_REPORTERS:
                continue
            block = torch.stack([(updates[i][1].tensors[name].detach().to(torch.float64)
                                  - references[updates[i][0]][name].to(torch.float64)).reshape(-1) for i in rows])
            voters = [j for j, i in enumerate(rows) if i in trusted] if trusted is not None else []  # rows of `block`
            median = coordinate_median(block[voters] if MIN_REPORTERS <= len(voters) < len(rows) else block)
            median2 = float(median @ median)
            for j, i in enumerate(rows):
                parts[i][name] = float(block[j] @ median), float(block[j] @ block[j]), median2
        for (cid, update), part in zip(updates, parts):
            names = [k for k in update.tensors if k in part]  # summed in the order it sent them
            if not names:
                continue  # it sent nothing that could be scored
            dot, norm2, median2 = (sum(part[k][j] for k in names) for j in range(3))
            total = self.scores.setdefault(cid, [0.0, 0])
            total[0] += dot / (norm2 * median2) ** 0.5 if norm2 > 0 and median2 > 0 else 0.0
            total[1] += 1
        cids = [cid for cid, _ in updates]
        left = sorted(cid for cid in cids if self.distrusted(cid))
        if left:
            means = ", ".join(f"{self.mean(cid):+.3f}" for cid in left)
            notes.append(f"round {round}: reputation left out client{'s' if len(left) > 1 else ''} "
                         f"{', '.join(map(str, left))} (mean cosine with the median change {means}; kept "
                         f"{len(cids) - len(left)} of {len(cids)})")
        return frozenset(left)

    def mean(self, cid: int) -> float:
        total, count = self.scores[cid]
        return total / count

    def distrusted(self, cid: int) -> bool:
        if cid not in self.scores:
            return False
        count = self.scores[cid][1]
        return count >= self.options.reputation_rounds and self.mean(cid) < self.options.reputation_threshold

    def report(self) -> dict[str, list[float]]:
        """results.json's `method_info.reputation`: client -> [mean score, rounds scored]."""
        return {str(cid): [round(self.mean(cid), 6), count] for cid, (_, count) in sorted(self.scores.items())}

    def snapshot(self) -> dict[int, list[float]]:
        return {cid: list(total) for cid, total in self.scores.items()}

    def restore(self, scores: Any) -> None:
        """The scores a checkpoint kept; a damaged table is a one-line refusal, not a traceback later."""
        try:
            self.scores = {int(cid): [float(total[0]), int(total[1])] for cid, total in scores.items()}
        except (AttributeError, TypeError, ValueError, IndexError, KeyError):
            raise GeneflError("resume: the checkpoint is damaged: its 'reputation' is not a table of client -> "
                              "[sum of scores, count]; rerun from the start with --force") from None
