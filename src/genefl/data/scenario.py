"""The dynamic scenario: training clients from round 1, newcomers with unseen data later.

Partition ids 0..num_clients-1 are the training clients; num_clients..num_clients+num_newcomers-1
are the newcomers. All of them are cut from one partition of the training set, so a newcomer's data
is disjoint from every training client's (`dataset = "synthetic"` has no partition: each client's
data is generated on its own, see synthetic.py). Each client's data is whole tensors, loaded once and
already on the configured device; training batches are index slices of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .. import rng
from ..config import Config
from ..errors import ConfigError
from . import partition
from .datasets import MD5, Dataset, load_dataset, read_checksum_file


@dataclass(frozen=True)
class ClientData:
    x_train: torch.Tensor  # (n, C, H, W)
    y_train: torch.Tensor  # (n,)
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def num_train(self) -> int:
        return len(self.y_train)


@dataclass(frozen=True)
class Scenario:
    input_shape: tuple[int, int, int]
    num_classes: int
    clients: Sequence[ClientData]  # indexed by partition id (a list; generated on demand for synthetic)
    num_clients: int  # ids below this train from round 1
    arrivals: dict[int, int]  # newcomer id -> arrival round
    dataset: str = ""  # the dataset's name (a user's own dataset has its own)


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
    device: str
    synthetic_alpha: float
    synthetic_beta: float

    @classmethod
    def of(cls, config: Config | ScenarioSpec) -> ScenarioSpec:
        if isinstance(config, ScenarioSpec):
            return config
        values = {f.name: getattr(config, f.name) for f in dataclasses.fields(cls)}
        return cls(**{**values, "data_dir": config.resolved_data_dir()})


def arrival_rounds(config: Config | ScenarioSpec) -> dict[int, int]:
    """Newcomer id -> round. Default: spread evenly over rounds 2..rounds (after round 1, when the
    first learnGenes exist)."""
    config = ScenarioSpec.of(config)
    ids = range(config.num_clients, config.num_clients + config.num_newcomers)
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
    pool = np.arange(len(y_train))
    total = config.num_clients + config.num_newcomers
    needed = total * config.min_samples
    if config.train_subset:
        if config.train_subset < needed:
            raise ConfigError(f"train_subset: {config.train_subset} samples cannot give {total} clients (num_clients + "
                              f"num_newcomers) min_samples = {config.min_samples} each; use >= {needed}")
        pool = partition.stratified_subset(y_train, config.train_subset, rng.numpy_rng(config.seed, "subset"))
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
    test_parts = partition.matching_test_splits(y_train, train_parts, y_test, rng.numpy_rng(config.seed, "test-split"))
    return train_parts, test_parts


def load_for(config: Config | ScenarioSpec) -> Dataset:
    config = ScenarioSpec.of(config)
    if config.dataset == "synthetic":  # generated per client: the pool of all of them
        from . import synthetic

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
        from . import synthetic

        clients = synthetic.SyntheticClients(config, config.num_clients + config.num_newcomers)
        return Scenario(synthetic.INPUT_SHAPE, synthetic.CLASSES, clients, config.num_clients, arrival_rounds(config),
                        "synthetic")
    dataset = dataset if dataset is not None else load_for(config)
    train_parts, test_parts = partition_indices(config, dataset)
    clients = [client_data(dataset, tr, te, config.device) for tr, te in zip(train_parts, test_parts)]
    return Scenario(dataset.input_shape, dataset.num_classes, clients, config.num_clients, arrival_rounds(config),
                    dataset.name)
