"""Splitting a dataset among clients (seeded).

Every training sample goes to at most one client. Each client also gets a local test split drawn
from the test set with the label proportions of its training data: for each class c, a client that
holds the fraction f of the class-c training samples in use (all clients' samples together; with
`train_subset`, those of the subset) receives (about) the fraction f of class c's test samples,
disjoint from every other client's.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError


def iid(labels: np.ndarray, num_parts: int, rng: np.random.Generator) -> list[np.ndarray]:
    return [np.sort(part) for part in np.array_split(rng.permutation(len(labels)), num_parts)]


def dirichlet(labels: np.ndarray, num_parts: int, alpha: float, min_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Per class, split its samples among clients with proportions ~ Dir(alpha); redraw until every
    client holds at least `min_size` samples (the usual recipe of Hsu et al. 2019 / PFLlib)."""
    if num_parts * min_size > len(labels):
        raise ConfigError(f"min_samples: {num_parts} clients x {min_size} exceeds the {len(labels)} training samples")
    classes = np.unique(labels)
    for _ in range(1000):
        parts: list[list[np.ndarray]] = [[] for _ in range(num_parts)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            shares = rng.dirichlet(np.full(num_parts, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            for part, chunk in zip(parts, np.split(idx, cuts)):
                part.append(chunk)
        merged = [np.sort(np.concatenate(p)) for p in parts]
        if min(len(p) for p in merged) >= min_size:
            return merged
    raise ConfigError(f"alpha: could not give every client {min_size} samples at alpha={alpha}; raise alpha or lower min_samples")


def inner_dirichlet(labels: np.ndarray, num_parts: int, alpha: float, min_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Per client, a class mix q ~ Dir(alpha) and an equal share of the samples (len(labels) //
    num_parts), drawn one at a time from the classes as q says, without replacement; a class that has
    run out leaves q renormalised over the classes that have not (Hsu et al. 2019's per-client draw;
    Flower Datasets' InnerDirichletPartitioner). Unlike `dirichlet`, every client holds data at any
    number of clients, so it serves cross-device populations (1,000 clients x 60 images)."""
    size = len(labels) // num_parts
    if size < max(min_size, 1):
        raise ConfigError(f"min_samples: {num_parts} clients share {len(labels)} training samples, {size} each; "
                          f"fewer than min_samples = {min_size}")
    classes = np.unique(labels)
    pools = [list(rng.permutation(np.flatnonzero(labels == c))) for c in classes]
    left = np.array([len(p) for p in pools], dtype=float)
    parts = []
    for _ in range(num_parts):
        mix = rng.dirichlet(np.full(len(classes), alpha))
        taken = []
        for _ in range(size):
            weights = mix * (left > 0)
            weights = weights if weights.sum() > 0 else (left > 0).astype(float)  # its classes are gone: any left
            c = rng.choice(len(classes), p=weights / weights.sum())
            taken.append(pools[c].pop())
            left[c] -= 1
        parts.append(np.sort(np.array(taken, dtype=np.int64)))
    return parts


def pathological(labels: np.ndarray, num_parts: int, classes_per_client: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Each client holds `classes_per_client` classes; a class's samples are split evenly among
    the clients holding it. Classes are dealt from shuffled rounds of all classes, so every class
    is used about equally often."""
    classes = np.unique(labels)
    if classes_per_client > len(classes):
        raise ConfigError(f"classes_per_client: must be <= {len(classes)} (the number of classes), got {classes_per_client}")
    deck = np.concatenate([rng.permutation(classes) for _ in range(num_parts * classes_per_client // len(classes) + 2)])
    owned, pos = [], 0
    for _ in range(num_parts):
        chosen: list[int] = []
        while len(chosen) < classes_per_client:
            if deck[pos] not in chosen:
                chosen.append(int(deck[pos]))
            pos += 1
        owned.append(chosen)
    parts: list[list[np.ndarray]] = [[] for _ in range(num_parts)]
    for c in classes:
        holders = [i for i, cs in enumerate(owned) if c in cs]
        idx = rng.permutation(np.flatnonzero(labels == c))
        for holder, chunk in zip(holders, np.array_split(idx, max(len(holders), 1))):
            parts[holder].append(chunk)
    return [np.sort(np.concatenate(p)) if p else np.array([], dtype=int) for p in parts]


def matching_test_splits(train_labels: np.ndarray, train_parts: list[np.ndarray], test_labels: np.ndarray,
                         rng: np.random.Generator) -> list[np.ndarray]:
    """Disjoint test splits with each client's training label proportions (see module doc)."""
    splits: list[list[np.ndarray]] = [[] for _ in train_parts]
    used = np.concatenate(train_parts) if train_parts else np.array([], dtype=int)
    for c in np.unique(train_labels):
        pool = rng.permutation(np.flatnonzero(test_labels == c))
        # shares of the training samples in use (a `train_subset` run hands out its whole test set too)
        total = max(int((train_labels[used] == c).sum()), 1)
        start = 0
        for i, part in enumerate(train_parts):
            take = int(round(len(pool) * int((train_labels[part] == c).sum()) / total))
            splits[i].append(pool[start : start + take])
            start += take
    return [np.sort(np.concatenate(s)) for s in splits]


def stratified_subset(labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A seeded subset of `size` indices with the class proportions of `labels`."""
    if size >= len(labels):
        return np.arange(len(labels))
    picked = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        picked.append(rng.choice(idx, size=int(round(size * len(idx) / len(labels))), replace=False))
    return np.sort(np.concatenate(picked))


def split(labels: np.ndarray, num_parts: int, scheme: str, alpha: float, classes_per_client: int,
          min_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    if scheme == "iid":
        return iid(labels, num_parts, rng)
    if scheme == "dirichlet":
        return dirichlet(labels, num_parts, alpha, min_size, rng)
    if scheme == "inner_dirichlet":
        return inner_dirichlet(labels, num_parts, alpha, min_size, rng)
    if scheme == "pathological":
        return pathological(labels, num_parts, classes_per_client, rng)
    raise ConfigError(f"partition: {scheme!r} is not one of iid, dirichlet, inner_dirichlet, pathological")
