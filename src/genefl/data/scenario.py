"""The dynamic scenario: training clients from round 1, newcomers with unseen data later.

Partition ids 0..num_clients-1 are the training clients; num_clients..num_clients+num_newcomers-1
are the newcomers. All of them are cut from one partition of the training set, so a newcomer's data
is disjoint from every training client's (`dataset = "synthetic"` has no partition: each client's
data is generated on its own, see synthetic.py). Each client's data is whole tensors, loaded once and
already on the configured device; training batches are index slices of them.

Training clients that go away and come back (`population.returns`, `genefl.protocol.population`) come back
with changed data (`population.drift`), built here with the rest, so that every run of the scenario
sees the same: a new class mix (a fresh Dirichlet(alpha) draw, or another seeded training client's
mix), and training and test sets of the old sizes redrawn to it from the whole training pool and
test set. (The pool is already dealt out to the clients, so a drifted set may repeat samples that
other clients hold.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..protocol import population
from .. import rng
from ..errors import ConfigError
from . import partition, synthetic
from .datasets import MD5, ClientData, Dataset, load_dataset, read_checksum_file

if TYPE_CHECKING:  # only named in annotations: the config imports the modules that import this one
    from ..config import Config, PopulationOptions


@dataclass(frozen=True)
class Scenario:
    input_shape: tuple[int, int, int]
    num_classes: int
    clients: Sequence[ClientData]  # indexed by partition id (a list; generated on demand for synthetic)
    num_clients: int  # ids below this train from round 1
    arrivals: dict[int, int]  # newcomer id -> arrival round
    dataset: str = ""  # the dataset's name (a user's own dataset has its own)
    returns: dict[int, tuple[int, int]] = field(default_factory=dict)  # returning client -> (first round away, round back)
    drifted: dict[int, ClientData] = field(default_factory=dict)  # returning client -> its data from its round back on

    def data(self, cid: int, round: int) -> ClientData:
        """Client `cid`'s data in `round`: a returning client's changed ones from its planned return on."""
        if cid in self.drifted and round >= self.returns[cid][1]:
            return self.drifted[cid]
        return self.clients[cid]


@dataclass(frozen=True)
class ScenarioSpec:
    """The config fields a scenario is built from, and nothing else. The functions below read only
    this (a `Config` passed to them is first cut down to it), so two configs with equal specs get
    identical scenarios, and `genefl compare` shares one scenario between exactly those runs (the
    spec is its key). A field they need but the spec lacks fails at once instead of letting runs
    that differ in it share the wrong data."""

    dataset: str
    data_dir: str  # resolved: config.data_dir, else $GENEFL_DATA
    download: bool
    checksum_file: str
    seed: int
    rounds: int  # the default newcomer arrival rounds spread over them
    num_clients: int
    num_newcomers: int
    newcomer_rounds: tuple[int, ...]
    partition: str
    alpha: float
    classes_per_client: int
    min_samples: int
    train_subset: int
    test_subset: int
    device: str
    synthetic_alpha: float
    synthetic_beta: float
    population: PopulationOptions  # arrivals, returns and drift shape the scenario (the other keys are kept for simplicity)

    @classmethod
    def of(cls, config: Config | ScenarioSpec) -> ScenarioSpec:
        if isinstance(config, ScenarioSpec):
            return config
        values = {f.name: getattr(config, f.name) for f in dataclasses.fields(cls)}
        return cls(**{**values, "data_dir": config.resolved_data_dir()})


def arrival_rounds(config: Config | ScenarioSpec) -> dict[int, int]:
    """Newcomer id -> round. Default: spread evenly over rounds 2..rounds (after round 1, when the
    first learnGenes exist); `population.arrivals` "poisson" or "trace": `population.newcomer_arrivals`."""
    config = ScenarioSpec.of(config)
    ids = range(config.num_clients, config.num_clients + config.num_newcomers)
    if config.population.arrivals != "schedule":
        return population.newcomer_arrivals(config, list(ids))
    if config.newcomer_rounds:
        if len(config.newcomer_rounds) != config.num_newcomers:
            raise ConfigError(
                f"newcomer_rounds: has {len(config.newcomer_rounds)} entries, expected num_newcomers = {config.num_newcomers}"
            )
        if max(config.newcomer_rounds) > config.rounds:
            raise ConfigError(f"newcomer_rounds: {max(config.newcomer_rounds)} is after the last round ({config.rounds})")
        return dict(zip(ids, config.newcomer_rounds))
    last = max(config.rounds, 2)
    span = last - 1
    return {cid: min(2 + (j * span) // max(config.num_newcomers, 1), config.rounds) for j, cid in enumerate(ids)}


def partition_indices(config: Config | ScenarioSpec, dataset: Dataset) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(train indices, test indices) per partition id; depends only on the spec (seed included)."""
    config = ScenarioSpec.of(config)
    y_train = dataset.y_train.numpy()
    y_test = dataset.y_test.numpy()
    pool = training_pool(config, y_train)
    total = config.num_clients + config.num_newcomers
    needed = total * config.min_samples
    if len(pool) < needed:
        raise ConfigError(f"num_clients: {total} clients (num_clients + num_newcomers) x min_samples = {config.min_samples} "
                          f"exceed the {len(pool)} training samples of {config.dataset}")
    parts = partition.split(
        y_train[pool], total, config.partition, config.alpha, config.classes_per_client,
        config.min_samples, rng.numpy_rng(config.seed, "partition"),
    )
    smallest = min(range(total), key=lambda i: len(parts[i]))
    if len(parts[smallest]) < config.min_samples:  # iid and pathological splits can leave a client short
        raise ConfigError(f"partition: client {smallest} gets {len(parts[smallest])} training samples, fewer than "
                          f"min_samples = {config.min_samples}; use fewer clients or a larger training set")
    train_parts = [pool[p] for p in parts]
    tests = testing_pool(config, y_test)
    test_parts = partition.matching_test_splits(y_train, train_parts, y_test[tests], rng.numpy_rng(config.seed, "test-split"))
    return train_parts, [tests[p] for p in test_parts]


def training_pool(config: ScenarioSpec, y_train: np.ndarray) -> np.ndarray:
    """The training samples in use: all, or the seeded stratified `train_subset`."""
    if not config.train_subset:
        return np.arange(len(y_train))
    total = config.num_clients + config.num_newcomers
    needed = total * config.min_samples
    if config.train_subset < needed:
        raise ConfigError(f"train_subset: {config.train_subset} samples cannot give {total} clients (num_clients + "
                          f"num_newcomers) min_samples = {config.min_samples} each; use >= {needed}")
    return partition.stratified_subset(y_train, config.train_subset, rng.numpy_rng(config.seed, "subset"))


def testing_pool(config: ScenarioSpec, y_test: np.ndarray) -> np.ndarray:
    """The test samples handed out: all, or the seeded stratified `test_subset` (its own random
    stream, so a subset changes no other draw)."""
    if not config.test_subset:
        return np.arange(len(y_test))
    return partition.stratified_subset(y_test, config.test_subset, rng.numpy_rng(config.seed, "test-subset"))


def drifted_indices(config: ScenarioSpec, dataset: Dataset, train_parts: list[np.ndarray],
                    test_parts: list[np.ndarray]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Returning client -> (train indices, test indices) of its changed data (see the module doc)."""
    if config.population.drift == "none":
        return {}
    y_train, y_test = dataset.y_train.numpy(), dataset.y_test.numpy()
    pool, tests = training_pool(config, y_train), testing_pool(config, y_test)
    classes = np.unique(y_train[pool])
    drifted = {}
    for cid in population.return_windows(config):
        gen = rng.numpy_rng(config.seed, "drift", cid)
        if config.population.drift == "dirichlet":
            mix = gen.dirichlet(np.full(len(classes), config.alpha))
        else:  # "swap": the class mix of another training client
            other = int(gen.choice([c for c in range(config.num_clients) if c != cid]))
            mix = np.array([(y_train[train_parts[other]] == k).sum() for k in classes], dtype=float)
        mix = mix / mix.sum() if np.isfinite(mix).all() and mix.sum() > 0 else np.full(len(classes), 1 / len(classes))
        drifted[cid] = (redraw(y_train, pool, classes, mix, len(train_parts[cid]), gen),
                        redraw(y_test, tests, classes, mix, len(test_parts[cid]), gen))
    return drifted


def redraw(labels: np.ndarray, pool: np.ndarray, classes: np.ndarray, mix: np.ndarray, size: int,
           gen: np.random.Generator) -> np.ndarray:
    """`size` indices of `pool` with class shares drawn from `mix` (without repeats while a class has enough)."""
    counts = gen.multinomial(size, mix)
    picked = []
    for k, n in zip(classes, counts):
        held = pool[labels[pool] == k]
        if n and len(held):
            picked.append(gen.choice(held, size=int(n), replace=int(n) > len(held)))
    return np.sort(np.concatenate(picked)) if picked else np.array([], dtype=np.int64)


def load_for(config: Config | ScenarioSpec) -> Dataset:
    config = ScenarioSpec.of(config)
    if config.dataset == "synthetic":  # generated per client: the pool of all of them
        return synthetic.pooled(config)
    checksums = None
    if config.checksum_file and config.dataset != "digits":
        checksums = {**MD5, **read_checksum_file(config.checksum_file)}
    return load_dataset(config.dataset, config.data_dir or None, download=config.download, checksums=checksums)


def client_data(dataset: Dataset, train_idx: np.ndarray, test_idx: np.ndarray, device: str) -> ClientData:
    tr, te = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    return ClientData(
        dataset.x_train[tr].to(device), dataset.y_train[tr].to(device),
        dataset.x_test[te].to(device), dataset.y_test[te].to(device),
    )


def build_scenario(config: Config | ScenarioSpec, dataset: Dataset | None = None) -> Scenario:
    """The scenario of `config` (of its `ScenarioSpec`), on `dataset` (a user's own) if given, else
    on the config's dataset."""
    config = ScenarioSpec.of(config)
    if dataset is None and config.dataset == "synthetic":  # naturally federated: no partition
        if population.return_windows(config) and config.population.drift != "none":
            raise ConfigError("population.drift: synthetic clients have no class mix to redraw; use population.drift = "
                              "\"none\" with dataset = \"synthetic\"")
        clients = synthetic.SyntheticClients(config, config.num_clients + config.num_newcomers)
        return Scenario(synthetic.INPUT_SHAPE, synthetic.CLASSES, clients, config.num_clients, arrival_rounds(config),
                        "synthetic", population.return_windows(config), {})
    dataset = dataset if dataset is not None else load_for(config)
    train_parts, test_parts = partition_indices(config, dataset)
    clients = [client_data(dataset, tr, te, config.device) for tr, te in zip(train_parts, test_parts)]
    drifted = {cid: client_data(dataset, tr, te, config.device)
               for cid, (tr, te) in drifted_indices(config, dataset, train_parts, test_parts).items()}
    return Scenario(dataset.input_shape, dataset.num_classes, clients, config.num_clients, arrival_rounds(config),
                    dataset.name, population.return_windows(config), drifted)
