"""Seeding: every random choice in a run derives from the run's one seed.

Instead of one global stream consumed in call order (which makes results depend on the order in
which clients happen to run), every consumer derives its own generator from the seed and a few tags
naming the purpose: `generator(seed, "train", client_id, round)`. The simulator and the Flower
runtime therefore draw identical numbers for the same client and round, in any order.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator

import numpy as np
import torch


def derive_seed(seed: int, *tags: object) -> int:
    """A 63-bit seed determined by `seed` and the tags (stable across processes and platforms)."""
    text = repr((int(seed),) + tuple(str(t) for t in tags)).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") >> 1


def generator(seed: int, *tags: object) -> torch.Generator:
    """A CPU torch generator for one purpose (index sampling stays on the CPU, then moves)."""
    return torch.Generator().manual_seed(derive_seed(seed, *tags))


def numpy_rng(seed: int, *tags: object) -> np.random.Generator:
    return np.random.default_rng(derive_seed(seed, *tags))


@contextlib.contextmanager
def seeded_global_rng(seed: int, *tags: object) -> Iterator[None]:
    """Run a block that uses torch's global RNG (module constructors do) with a derived seed,
    restoring the global state afterwards so nothing outside depends on it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, *tags))
        yield
