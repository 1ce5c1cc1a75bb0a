"""Robust aggregation (`[defence]`): what a server uses in place of the streaming mean when some
clients may send anything. Every averaging method aggregates through one `Combiner` per round (per
cluster for PACFL and GENE-FL); each tensor is aggregated over the clients that sent it.

- `mean` (default): the sample-weighted streaming mean, `LayerwiseMean`, exactly as without `[defence]`.
- `median`: the coordinate-wise median (the mean of the two middle values for an even count).
- `trimmed_mean` (Yin et al., ICML 2018): per coordinate, drop the k = ⌊trim·n⌋ largest and k smallest
  of the n values and average the rest.
- `krum`, `multikrum` (Blanchard et al., NeurIPS 2017): score(i) = Σ ||θ_i − θ_j||² over the n − f − 2
  updates nearest to θ_i; Krum keeps the lowest score, Multi-Krum the m lowest (m = `multikrum_m`, 0 =
  n − f) and takes their sample-weighted mean. Ties go to the lower client id. Distances cover the
  floating-point tensors; where clients sent different tensors (FedLP, GENE-FL's first round), Krum
  runs once per group of tensors sent by the same clients (the whole update when everyone sent the same).
- `cosine`: the sample-weighted mean of the updates whose change (from what the server sent that
  client) points the way the others' do: a positive cosine with the coordinate-wise median of all the
  changes. A whole-update direction test, after FLTrust's ReLU-cosine trust (Cao et al., NDSS 2021)
  with the median change as the reference in place of a server-side dataset; it answers updates that
  pull against the rest (sign flips), not ones that agree in direction (a scaled or boosted update:
  pair it with `norm_bound`) or sit inside the honest spread (ALIE). Where clients sent different
  tensors it runs once per group of tensors sent by the same clients, as Krum does.
- `norm_bound` C > 0, with any aggregator: each update's change from what the server sent that client is
  scaled to L2 norm at most C before it is aggregated (Sun et al., 2019, "Can you really backdoor FL?").
- `reputation`, with any aggregator: the clients `genefl.protocol.reputation` distrusts (a negative mean
  cosine with the median change over their rounds) are left out before any of the above (`left_out`).
- `bucket` s >= 2, with any aggregator but the mean (Karimireddy, He and Jaggi, "Byzantine-robust learning
  on heterogeneous datasets via bucketing", ICLR 2022): the updates (after `norm_bound`) are shuffled,
  seeded by the run's seed and the round and cluster, into buckets of s, each bucket's sample-weighted mean
  becomes one update (its weight the bucket's samples) and the aggregator runs on those. Averaging s
  honest updates narrows their spread, which is what makes the median and Krum leave out or outvote
  honest clients when data are this heterogeneous; the price is the breakdown point: f attackers can
  spoil f of the ⌈n/s⌉ buckets, so the aggregator must tolerate f of ⌈n/s⌉ (the median with 4 attackers
  in 20 updates: s = 2 gives 10 buckets, 4 spoilt at most, outvoted; s = 3 gives 7, not).
Median and trimmed mean are unweighted (as in their papers and Flower's FedMedian / FedTrimmedAvg).

Breakdown points (how many of n updates may be arbitrary before the result can be moved
arbitrarily far): mean 0 (one update suffices); median ⌈n/2⌉ − 1 of n, just under one half; trimmed
mean k = ⌊trim·n⌋ updates; Krum / Multi-Krum f updates if n > 2f + 2; `cosine` keeps no
guarantee of its own beyond its reference's (the median's, just under one half): attackers whose
changes agree in direction with the median are kept. What this leaves a GENE-FL or
PACFL cluster of 2–5 members (an attacker can choose its cluster: `adversary.signature_classes`):
- median: of 2, their unweighted mean (no protection); of 3 or 4 it outvotes one attacker, of 5 two.
- trimmed mean: trims nothing until trim·n ≥ 1 (trim 0.2 covers one attacker in 5, 0.25 in 4, 0.34 in
  3; trim < 0.5 always leaves a cluster of 2 unprotected).
- Krum needs n ≥ 2f + 3: f = 1 needs 5 members; a cluster of 3 or 4 runs with f = 0 (each update scored
  by its distance to its 1 or 2 nearest: an outlier far from two agreeing updates still loses, nothing
  is guaranteed); under 3 updates it takes their sample-weighted mean. Multi-Krum with its default m =
  n − f keeps all of a cluster of 3 or 4 once f is 0: their plain weighted mean.
- norm_bound acts per update whatever the cluster's size: it bounds how far one attacker moves a cluster
  of 2, without outvoting it.
Where f is too large for the updates a round (or cluster) received, Krum runs with the largest f they
allow and says so in the round's notes.

Notes (results.json `rounds[].notes` and `method_info.notes`, beside malformed replies): every update
Krum, Multi-Krum or `cosine` leaves out and every change `norm_bound` scales down is named; with `bucket`,
each round's (or cluster's) buckets are listed, and a bucket is named by its clients ("4+9"). The median and the
trimmed mean act per coordinate and leave no update out as a whole; they note instead when they
protect nothing: a median of 1 or 2 updates, a trimmed mean that trims nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np
import torch

from .aggregate import LayerwiseMean
from .. import rng
from ..errors import ConfigError

AGGREGATORS = ("mean", "median", "trimmed_mean", "krum", "multikrum", "cosine")
USES = {"mean": (), "median": ("bucket",), "trimmed_mean": ("trim", "bucket"), "krum": ("byzantine", "bucket"),
        "multikrum": ("byzantine", "multikrum_m", "bucket"), "cosine": ("bucket",)}  # the `defence` keys each aggregator reads


def middle_ranks(values: torch.Tensor, low: int, high: int) -> torch.Tensor:
    """(n, ...) -> (high - low + 1, ...): per coordinate, the values of ranks low..high (0 = the smallest),
    ranks low and high in their places, the ones between in any order. On the CPU numpy's introselect
    (`np.partition`, no full sort: 2-3x faster than `torch.sort` for 100 updates of a large model, and no
    index tensor as large as the values); elsewhere (and for bfloat16, which numpy lacks) a sort."""
    if values.device.type != "cpu" or values.dtype == torch.bfloat16:
        return values.sort(dim=0).values[low:high + 1]
    return torch.from_numpy(np.partition(values.numpy(), [low, high], axis=0)[low:high + 1])


def coordinate_median(values: torch.Tensor) -> torch.Tensor:
    """(n, ...) -> (...) float64: the median per coordinate; the mean of the two middle values for even n."""
    n = values.shape[0]
    middle = middle_ranks(values, (n - 1) // 2, n // 2).to(torch.float64)  # (1 or 2, ...)
    return (middle[0] + middle[-1]) / 2


def trimmed_mean(values: torch.Tensor, trim: float) -> torch.Tensor:
    """(n, ...) -> (...) float64: per coordinate, the mean of the values left after dropping ⌊trim·n⌋ at each end."""
    n = values.shape[0]
    k = trimmed_count(n, trim)
    return middle_ranks(values, k, n - k - 1).to(torch.float64).mean(dim=0)


def trimmed_count(n: int, trim: float) -> int:
    return int(math.floor(trim * n + 1e-9))  # the epsilon: 0.2 * 5 is 1.0000000000000002 or 0.9999999999999999


def pairwise_distances(blocks: Iterable[torch.Tensor]) -> torch.Tensor:
    """(n, n) float64: the squared Euclidean distances between n vectors given as column blocks (n, d_k),
    summed over the blocks. One Gram matrix per block (a matrix product: O(n^2 d) in BLAS, and never more
    than one block's (n, d_k) copy in memory), its rows first centred on the first row: the distances are
    unchanged, and |x|^2 + |y|^2 - 2 x.y then loses about 1e-16 of their own scale instead of 1e-16 of the
    models' squared norms, which are orders of magnitude larger (the reason the plain form is avoided)."""
    total = None
    for block in blocks:
        centred = block.to(torch.float64)
        centred = centred - centred[0]  # (n, d_k)
        gram = centred @ centred.T  # (n, n)
        norms = gram.diagonal()
        distances = (norms[:, None] + norms[None, :] - 2 * gram).clamp_min_(0.0)
        total = distances if total is None else total + distances
    return total


def krum_scores(distances: torch.Tensor, f: int) -> torch.Tensor:
    """(n, n) squared distances -> (n,): each vector's summed squared distance to its n − f − 2 nearest others."""
    n = distances.shape[0]
    distances = distances.clone().fill_diagonal_(math.inf)
    nearest = distances.sort(dim=1).values[:, :max(n - f - 2, 0)]
    return nearest.sum(dim=1)


def krum_select(distances: torch.Tensor, f: int, m: int) -> list[int]:
    """Indices of the m vectors with the lowest Krum scores (lower index first on ties), ascending;
    `distances`: their (n, n) squared distances (`pairwise_distances`)."""
    scores = krum_scores(distances, f).tolist()
    return sorted(sorted(range(len(scores)), key=lambda i: (scores[i], i))[:m])


def largest_f(n: int) -> int:
    """The most attackers Krum tolerates among n updates (n > 2f + 2)."""
    return max((n - 3) // 2, 0)


def clip_change(tensors: dict[str, torch.Tensor], sent: dict[str, torch.Tensor], bound: float):
    """(tensors with their change from `sent` scaled to L2 norm <= bound, the change's norm); the norm
    covers every floating-point tensor that was sent, together."""
    keys = [k for k, v in tensors.items() if v.is_floating_point() and k in sent]
    delta = {k: tensors[k] - sent[k].to(tensors[k].device) for k in keys}
    norm = math.sqrt(sum(float((d.double() ** 2).sum()) for d in delta.values()))
    if norm <= bound:
        return tensors, norm
    scale = bound / norm
    return {**tensors, **{k: sent[k].to(d) + d * scale for k, d in delta.items()}}, norm


class Combiner:
    """One round's (or one cluster's) aggregate, fed one update at a time like `LayerwiseMean`.

    With the plain mean the updates are folded in as they arrive and never held. A robust aggregator
    needs every update at once (a median or a Krum score depends on all of them), so only then are
    they collected, for the one round or cluster being aggregated. `sent(cid)`: the tensors the server
    sent client `cid` this round (the reference of its change, for `norm_bound`); `notes`: where
    what a defence left out or scaled down is reported, each line starting with `where`; `left_out`:
    the clients `defence.reputation` leaves out of this round (`genefl.protocol.reputation`), whose
    updates `add` ignores (it has noted them); `seed`: the run's seed, which with `bucket_key` (default:
    `where`) seeds the buckets of `defence.bucket` (SCAFFOLD gives its control variates' aggregate its
    model's key, so that both are bucketed alike)."""

    def __init__(self, options, notes: list[str], where: str, sent: Callable[[int], dict[str, torch.Tensor]],
                 left_out: frozenset[int] = frozenset(), seed: int = 0, bucket_key: str = ""):
        self.options, self.notes, self.where, self.sent, self.left_out = options, notes, where, sent, left_out
        self.seed, self.bucket_key = seed, bucket_key or where
        self._mean = LayerwiseMean()
        # robust aggregators only: (client id, or a bucket's "4+9", tensors, weight)
        self._kept: list[tuple[int | str, dict[str, torch.Tensor], float]] = []
        self._members: dict[str, list[tuple[int, float]]] = {}  # a bucket's name -> its (client, weight)s

    def add(self, cid: int, tensors: dict[str, torch.Tensor], weight: float) -> None:
        if cid in self.left_out:
            return
        bound = self.options.norm_bound
        if bound > 0:
            tensors, norm = clip_change(tensors, self.sent(cid), bound)
            if norm > bound:
                self.notes.append(f"{self.where}: client {cid}: change clipped from L2 norm {norm:.4g} to {bound:g}")
        if self.options.aggregator == "mean":
            self._mean.add(tensors, weight)
        else:
            self._kept.append((cid, tensors, weight))

    def __bool__(self) -> bool:
        return bool(self._mean) or bool(self._kept)

    def names(self) -> set[str]:
        return self._mean.names() | {k for _, tensors, _ in self._kept for k in tensors}

    def result(self, previous: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`previous` with every received tensor replaced by its aggregate (same dtype and device)."""
        if self.options.aggregator == "mean":
            return self._mean.result(previous)
        if self.options.bucket > 1:
            self._into_buckets()
        if self.options.aggregator in ("krum", "multikrum", "cosine"):
            return self._by_senders(previous)
        out = dict(previous)
        for name in self.names():
            values = torch.stack([t[name].detach() for _, t, _ in self._kept if name in t])  # (n, ...), as sent
            if self.options.aggregator == "median":
                value = coordinate_median(values)
            else:
                value = trimmed_mean(values, self.options.trim)
            out[name] = _like(value, previous[name])
        self._note_unprotected()
        return out

    def _into_buckets(self) -> None:
        """Replace the kept updates by the sample-weighted means of seeded buckets of `defence.bucket`."""
        kept = sorted(self._kept, key=lambda entry: entry[0])  # by client id: arrival order differs between runtimes
        order = torch.randperm(len(kept), generator=rng.generator(self.seed, "bucket", self.bucket_key)).tolist()
        size = self.options.bucket
        self._kept = []
        for start in range(0, len(order), size):
            members = sorted((kept[j] for j in order[start:start + size]), key=lambda entry: entry[0])
            name = "+".join(str(cid) for cid, _, _ in members)
            self._members[name] = [(cid, weight) for cid, _, weight in members]
            self._kept.append((name, weighted_mean([(tensors, weight) for _, tensors, weight in members]),
                               sum(weight for _, _, weight in members)))
        self.notes.append(f"{self.where}: buckets of {size}: {', '.join(name for name, _, _ in self._kept)}")

    def _reference(self, label: int | str) -> dict[str, torch.Tensor]:
        """What the server sent client `label`; for a bucket, the sample-weighted mean of what it sent its
        clients (so that the bucket's change is the weighted mean of its clients' changes)."""
        if label not in self._members:
            return self.sent(label)
        return weighted_mean([(self.sent(cid), weight) for cid, weight in self._members[label]])

    def _note_unprotected(self) -> None:
        """A note when a median of 2 or fewer updates, or a trimmed mean that trims nothing, took their plain mean."""
        counts = sorted({sum(1 for _, t, _ in self._kept if name in t) for name in self.names()})
        if self.options.aggregator == "median":
            short = [n for n in counts if n <= 2]
            if short:
                self.notes.append(f"{self.where}: median of {short[0]} update{'s' * (short[0] > 1)} is their plain mean "
                                  "(it outvotes nothing)")
            return
        short = [n for n in counts if trimmed_count(n, self.options.trim) == 0]
        if short:
            self.notes.append(f"{self.where}: trimmed_mean of {short[0]} updates with trim {self.options.trim:g} "
                              "trims nothing (their plain mean)")

    def _by_senders(self, previous: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Krum, Multi-Krum or `cosine`: whole updates kept or left out, then their weighted mean, once per
        group of tensors sent by the same clients."""
        blocks: dict[tuple[int, ...], list[str]] = {}  # the clients (positions) that sent a tensor -> its names
        for name in sorted(self.names()):
            blocks.setdefault(tuple(i for i, (_, t, _) in enumerate(self._kept) if name in t), []).append(name)
        out = dict(previous)
        choose = self._cosine_block if self.options.aggregator == "cosine" else self._krum_block
        for senders, names in blocks.items():
            chosen = choose(senders, names, len(blocks) > 1)
            mean = LayerwiseMean()
            for i in chosen:
                _, tensors, weight = self._kept[i]
                mean.add({k: tensors[k] for k in names}, weight)
            out.update({k: v for k, v in mean.result(previous).items() if k in names})
        return out

    def _krum_block(self, senders: tuple[int, ...], names: list[str], several: bool) -> list[int]:
        """The positions (in `_kept`) Krum keeps among `senders` for the tensors `names`."""
        n, f = len(senders), self.options.byzantine
        what = f" ({', '.join(names[:2])}{', ...' if len(names) > 2 else ''})" if several else ""
        floats = [k for k in names if self._kept[senders[0]][1][k].is_floating_point()]
        if n < 3 or not floats:
            if n < 3:
                self.notes.append(f"{self.where}{what}: {self.options.aggregator} needs 3 updates, got {n}: their mean")
            return list(senders)
        if n <= 2 * f + 2:
            self.notes.append(f"{self.where}{what}: {n} updates tolerate at most f = {largest_f(n)} for "
                              f"{self.options.aggregator} (defence.byzantine = {f}); used f = {largest_f(n)}")
            f = largest_f(n)
        m = 1 if self.options.aggregator == "krum" else min(self.options.multikrum_m or n - f, n)
        blocks = (torch.stack([self._kept[i][1][k].detach().reshape(-1) for i in senders]) for k in floats)  # (n, d_k)
        chosen = [senders[j] for j in krum_select(pairwise_distances(blocks), f, m)]
        left = sorted(self._kept[i][0] for i in senders if i not in chosen)
        if left:
            self.notes.append(f"{self.where}{what}: {self.options.aggregator} left out client"
                              f"{'s' if len(left) > 1 else ''} {', '.join(map(str, left))} (kept "
                              f"{', '.join(str(c) for c in sorted(self._kept[i][0] for i in chosen))} of {n})")
        return chosen


    def _cosine_block(self, senders: tuple[int, ...], names: list[str], several: bool) -> list[int]:
        """The positions (in `_kept`) `cosine` keeps among `senders` for the tensors `names`."""
        sent = {i: self._reference(self._kept[i][0]) for i in senders}  # once per client: it builds its broadcast
        floats = [k for k in names if self._kept[senders[0]][1][k].is_floating_point() and all(k in sent[i] for i in senders)]
        if len(senders) < 3 or not floats:
            return list(senders)  # no majority to set a direction against: their mean
        changes = torch.cat([torch.stack([
            (self._kept[i][1][k].detach().to(torch.float64) - sent[i][k].to(torch.float64)).reshape(-1)
            for i in senders]) for k in floats], dim=1)  # (n, d)
        chosen = [senders[j] for j in _cosine_block_choice(changes)] or list(senders)  # none agrees: all
        left = sorted(self._kept[i][0] for i in senders if i not in chosen)
        if left:
            what = f" ({', '.join(names[:2])}{', ...' if len(names) > 2 else ''})" if several else ""
            self.notes.append(f"{self.where}{what}: cosine left out client{'s' if len(left) > 1 else ''} "
                              f"{', '.join(map(str, left))} (change against the median change; kept "
                              f"{len(chosen)} of {len(senders)})")
        return chosen


def _cosine_block_choice(changes: torch.Tensor) -> list[int]:
    """(n, d) float64 changes -> the rows with a positive cosine to their coordinate-wise median (all of
    them when the median is zero: no direction to test against)."""
    reference = coordinate_median(changes)
    norm = float(reference.norm())
    if norm == 0:
        return list(range(changes.shape[0]))
    return [i for i, c in enumerate((changes @ reference).tolist()) if c > 0]


def weighted_mean(weighted: list[tuple[dict[str, torch.Tensor], float]]) -> dict[str, torch.Tensor]:
    """Per tensor name, the weighted mean over the dicts that hold it, in the dtype they were sent in."""
    mean = LayerwiseMean()
    for tensors, weight in weighted:
        mean.add(tensors, weight)
    return mean.result({k: v for tensors, _ in weighted for k, v in tensors.items()})


def _like(value: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return (value if ref.is_floating_point() else value.round()).to(ref.dtype).to(ref.device)


def check(config) -> None:
    """One-line errors for `[defence]` settings that cannot work or would be ignored."""
    opts, defaults = config.defence, type(config.defence)()
    unused = [k for k in ("trim", "byzantine", "multikrum_m", "bucket")
              if k not in USES[opts.aggregator] and getattr(opts, k) != getattr(defaults, k)]
    if unused:
        raise ConfigError(f"defence.{unused[0]}: not used by aggregator {opts.aggregator!r}")
    unused = [k for k in ("reputation_rounds", "reputation_threshold", "reputation_reference")
              if not opts.reputation and getattr(opts, k) != getattr(defaults, k)]
    if unused:
        raise ConfigError(f"defence.{unused[0]}: not used while defence.reputation is false")
    n = config.num_clients
    if opts.aggregator in ("krum", "multikrum") and n <= 2 * opts.byzantine + 2:
        raise ConfigError(f"defence.byzantine: {opts.aggregator} with f = {opts.byzantine} needs more than 2f + 2 = "
                          f"{2 * opts.byzantine + 2} clients, num_clients is {n}")
    if opts.multikrum_m > n:
        raise ConfigError(f"defence.multikrum_m: {opts.multikrum_m} is more than num_clients = {n}")


def check_method(strategy_cls, config) -> None:
    """A `[defence]` set for a method whose server does not aggregate through a `Combiner` is an error."""
    if not strategy_cls.takes_defence and config.defence != type(config.defence)():
        raise ConfigError(f"defence: method {config.method} does not aggregate through genefl.protocol.robust "
                          "(Strategy.takes_defence), so [defence] would be ignored")
