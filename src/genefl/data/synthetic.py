"""Synthetic(α, β): the naturally federated data of FedProx (Li et al., MLSys 2020, section 5.1;
its `data/synthetic_*/generate_synthetic.py`), after Shamir et al. (2014). `dataset = "synthetic"`.

Client k (60 features, 10 classes), every draw from its own generator `numpy_rng(seed, "synthetic", k)`:

    u_k ~ N(0, α²),  W_k ~ N(u_k, 1)^(60x10),  b_k ~ N(u_k, 1)^10     (its labelling model)
    B_k ~ N(0, β²),  v_k ~ N(B_k, 1)^60,       x ~ N(v_k, Σ), Σ_jj = j^-1.2   (its inputs)
    y = argmax softmax(x W_k + b_k) = argmax (x W_k + b_k)

α and β are standard deviations, as FedProx's code draws them (`np.random.normal(0, alpha)`);
`synthetic_alpha = synthetic_beta = 1` is Synthetic(1, 1). Beware a property of the definition
itself: u_k adds u_k (Σ_j x_j + 1) to every class's logit alike, so it never changes an argmax. In
FedProx's generator, and here, α moves no label; the heterogeneity comes from the per-client W_k and
from β, which spreads the clients' inputs and through them their label mixes (tests/test_synthetic.py
measures both).

Sizes: client k holds n_k = min(50 + ⌊lognormal(4, 2)⌋, 1000) samples: FedProx's power law (its +50
floor), capped at 1000 as LEAF caps its own synthetic generator; one 10,000-client run would otherwise
hold a client of ~10^5 samples and 4.5 million in all. The mean n_k is about 237 (median 104); the
first ⌊0.8 n_k⌋ (at least `min_samples`) are its training split (mean about 189), the rest its test
split (mean about 48). Samples are i.i.d. within a client, so the split needs no shuffle.

Scale: nothing is generated until a client is asked for (`SyntheticClients`), each client from its
own seed, so building a scenario of any size is O(1), a newcomer is simply client k >= num_clients,
and a Flower SuperNode generates its own client only. The first `CACHE_CLIENTS` clients asked for
are kept (about 60 MB at the mean size); any other is generated again each time it is asked for
(0.6-1 ms of one core). Rounds visit the clients in turn, which would leave a least-recently-used
cache holding none of them when they outnumber it. Measured at OMP_NUM_THREADS=1: a 10,000-client
scenario builds in 0.06 s of CPU; one pass generating all its clients takes 10 s of CPU and peaks at
298 MB RSS (221 MB of it the imports), where holding them all would take 595 MB; in FedAvg rounds of
1,500 clients generating them took about 3.5% of the time (6% with none kept).

Options that shape the benchmark datasets' partitions (`partition`, `alpha`, `classes_per_client`)
do not apply and are ignored; `train_subset` must stay 0 (config.py refuses it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from .. import rng
from .datasets import ClientData, Dataset

if TYPE_CHECKING:
    from .scenario import ScenarioSpec

FEATURES, CLASSES = 60, 10
INPUT_SHAPE = (1, 1, FEATURES)
SIZE_FLOOR, SIZE_CAP = 50, 1000  # n_k = min(SIZE_FLOOR + ⌊lognormal(4, 2)⌋, SIZE_CAP)
TRAIN_FRACTION = 0.8
CACHE_CLIENTS = 1024
_STD = np.arange(1, FEATURES + 1, dtype=np.float64) ** -0.6  # sqrt(Σ_jj) = j^-0.6


def total_samples(draw):
    """n_k from a lognormal(4, 2) draw (or an array of them)."""
    return np.minimum(SIZE_FLOOR + np.minimum(draw, SIZE_CAP).astype(np.int64), SIZE_CAP)


def generate(seed: int, k: int, alpha: float, beta: float, min_samples: int) -> tuple[np.ndarray, ...]:
    """Client k's (x_train, y_train, x_test, y_test): float32 (n, 60) inputs, int64 labels."""
    g = rng.numpy_rng(seed, "synthetic", k)
    total = int(total_samples(g.lognormal(4.0, 2.0)))
    train = max(int(TRAIN_FRACTION * total), min_samples)
    test = max(total - int(TRAIN_FRACTION * total), 1)
    u, b_mean = alpha * g.standard_normal(), beta * g.standard_normal()  # u_k, B_k
    w = u + g.standard_normal((FEATURES, CLASSES))  # (60, 10)
    bias = u + g.standard_normal(CLASSES)  # (10,)
    v = b_mean + g.standard_normal(FEATURES)  # (60,)
    x = v + _STD * g.standard_normal((train + test, FEATURES))  # (n, 60): N(v, Σ), Σ diagonal
    y = np.argmax(x @ w + bias, axis=1)
    x = x.astype(np.float32)
    return x[:train], y[:train], x[train:], y[train:]


def client_data(spec: ScenarioSpec, k: int) -> ClientData:
    """Client k's data as tensors on the spec's device, shaped (n, 1, 1, 60) like one-row images."""
    arrays = generate(spec.seed, k, spec.synthetic_alpha, spec.synthetic_beta, spec.min_samples)
    x_train, y_train, x_test, y_test = (torch.from_numpy(a) for a in arrays)
    return ClientData(x_train.reshape(-1, *INPUT_SHAPE).to(spec.device), y_train.to(spec.device),
                      x_test.reshape(-1, *INPUT_SHAPE).to(spec.device), y_test.to(spec.device))


class SyntheticClients(Sequence):
    """Clients 0..count-1 of a Synthetic(α, β) scenario, each generated when asked for; the first
    `CACHE_CLIENTS` asked for are kept. Indexing gives the same data whatever the order."""

    def __init__(self, spec: ScenarioSpec, count: int):
        self.spec, self.count = spec, count
        self._cache: dict[int, ClientData] = {}

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(self.count))]
        k = int(k)
        if k < 0:
            k += self.count
        if not 0 <= k < self.count:
            raise IndexError(f"client {k} of {self.count}")
        data = self._cache.get(k)
        if data is None:
            data = client_data(self.spec, k)
            if len(self._cache) < CACHE_CLIENTS:
                self._cache[k] = data
        return data


def pooled(spec: ScenarioSpec) -> Dataset:
    """Every client's data (training clients and newcomers) in one `Dataset`: for the tools that
    want one pool of samples (`genefl attack`), not for runs. O(total samples)."""
    parts = [generate(spec.seed, k, spec.synthetic_alpha, spec.synthetic_beta, spec.min_samples)
             for k in range(spec.num_clients + spec.num_newcomers)]
    joined = [np.concatenate([p[i] for p in parts]) for i in range(4)]
    x_train, x_test = (torch.from_numpy(a).reshape(-1, *INPUT_SHAPE) for a in (joined[0], joined[2]))
    return Dataset("synthetic", x_train, torch.from_numpy(joined[1]), x_test, torch.from_numpy(joined[3]), CLASSES)


def mean_sizes(draws: int = 1_000_000, seed: int = 0) -> tuple[float, float]:
    """(mean total, mean training) samples per client under the size law (with min_samples below
    its floor), by simulation: what the module doc states."""
    total = total_samples(np.random.default_rng(seed).lognormal(4.0, 2.0, draws))
    return float(total.mean()), float(np.floor(TRAIN_FRACTION * total).mean())


__all__ = ["FEATURES", "CLASSES", "INPUT_SHAPE", "generate", "client_data", "SyntheticClients", "pooled"]
