"""Synthetic(α, β) (data/synthetic.py): shapes and sizes, seeding, what α and β control, both
runtimes' data, and short runs."""

from __future__ import annotations


import numpy as np
import pytest
import torch

import genefl
from genefl.config import load_config
from genefl.data import synthetic
from genefl.data.datasets import load_dataset
from genefl.data.scenario import ScenarioSpec, build_scenario
from genefl.errors import ConfigError, DataError


def config(*overrides: str):
    return load_config(None, ["dataset=synthetic", "num_clients=10", "num_newcomers=2", *overrides])


def test_clients_have_the_shapes_and_sizes_documented():
    scenario = build_scenario(config())
    assert (scenario.input_shape, scenario.num_classes, scenario.dataset) == ((1, 1, 60), 10, "synthetic")
    assert len(scenario.clients) == 12 and scenario.num_clients == 10 and sorted(scenario.arrivals) == [10, 11]
    for c in scenario.clients:
        total = c.num_train + len(c.y_test)
        assert c.x_train.shape == (c.num_train, 1, 1, 60) and c.x_test.shape == (len(c.y_test), 1, 1, 60)
        assert c.x_train.dtype == torch.float32 and c.y_train.dtype == torch.int64
        assert 50 <= total <= 1000 and c.num_train == int(0.8 * total)
        assert 0 <= int(c.y_train.min()) and int(c.y_train.max()) <= 9
    mean_total, mean_train = synthetic.mean_sizes(200_000)
    assert mean_total == pytest.approx(237, abs=3) and mean_train == pytest.approx(189, abs=3)  # the module doc's


def test_min_samples_is_a_floor_on_every_training_split():
    scenario = build_scenario(config("min_samples=300"))
    assert min(c.num_train for c in scenario.clients) >= 300


def test_same_seed_same_data_in_any_order_other_seed_other_data():
    a, b = build_scenario(config()).clients, build_scenario(config()).clients
    backwards = [b[k] for k in reversed(range(12))][::-1]  # each client comes from its own seed
    for k in range(12):
        assert torch.equal(a[k].x_train, backwards[k].x_train) and torch.equal(a[k].y_test, backwards[k].y_test)
    assert not torch.equal(a[0].y_train[:40], a[1].y_train[:40])
    other = build_scenario(config("seed=1")).clients
    assert not torch.equal(a[0].x_train[:40], other[0].x_train[:40])
    # more clients: the first ten are unchanged, newcomers are just further clients
    more = build_scenario(config("num_clients=20", "num_newcomers=0")).clients
    assert torch.equal(more[10].x_train, a[10].x_train) and torch.equal(more[3].y_train, a[3].y_train)


def test_the_cache_keeps_the_first_clients_asked_for_only(monkeypatch):
    monkeypatch.setattr(synthetic, "CACHE_CLIENTS", 3)
    clients = build_scenario(config()).clients
    first = [clients[k] for k in (5, 0, 1, 2)]
    assert clients[5] is first[0] and clients[1] is first[2]  # kept
    again = clients[2]
    assert again is not first[3] and torch.equal(again.x_train, first[3].x_train)  # not kept: generated again, identically
    assert len(clients[-2:]) == 2 and torch.equal(clients[-1].x_train, clients[11].x_train)
    with pytest.raises(IndexError):
        clients[12]


def label_stats(alpha: float, beta: float, clients: int = 200) -> tuple[float, float, np.ndarray]:
    """(mean per-client label entropy in nats, mean total-variation distance of a client's label
    mix from the pooled one, all labels)."""
    mixes, labels = [], []
    for k in range(clients):
        y = synthetic.generate(0, k, alpha, beta, 10)[1]
        mixes.append(np.bincount(y, minlength=10) / len(y))
        labels.append(y)
    mixes = np.array(mixes)
    logs = np.log(np.where(mixes > 0, mixes, 1.0))
    entropy = float(-(mixes * logs).sum(axis=1).mean())
    tv = float(0.5 * np.abs(mixes - mixes.mean(axis=0)).sum(axis=1).mean())
    return entropy, tv, np.concatenate(labels)


def test_beta_makes_clients_label_mixes_further_apart_and_alpha_moves_no_label():
    """β spreads the clients' inputs, and through them concentrates each client on fewer classes
    (measured on seed 0: entropy 0.40 -> 0.33 -> 0.21 nats at β = 0, 1, 3). α shifts every class's
    logit of a client alike, so with the same draws no label changes at all (module doc)."""
    e00, tv00, y00 = label_stats(0.0, 0.0)
    e11, tv11, y11 = label_stats(1.0, 1.0)
    e03, tv03, _ = label_stats(0.0, 3.0)
    assert e00 > e11 + 0.05 > e03 + 0.1 and tv00 < tv11 < tv03
    _, _, y01 = label_stats(0.0, 1.0)
    assert np.array_equal(y01, y11)  # α = 0 or 1: identical labels
    assert not np.array_equal(y00, y01)


def test_a_flower_node_generates_exactly_its_own_client():
    pytest.importorskip("flwr")
    from genefl.flower.client_app import _partition_data

    cfg = config()
    node = _partition_data(cfg, 4, 12, "")
    here = build_scenario(cfg).clients[4]
    assert torch.equal(node.x_train, here.x_train) and torch.equal(node.y_test, here.y_test)


def test_ten_thousand_clients_build_without_generating_any():
    """Building the scenario generates no client (each is generated when asked for), so its cost does
    not grow with the population; a client asked for twice is the same data."""
    scenario = build_scenario(config("num_clients=10000", "num_newcomers=0"))
    assert len(scenario.clients) == 10000 and scenario.clients._cache == {}
    last = scenario.clients[9999]
    assert last.num_train >= 40 and list(scenario.clients._cache) == [9999]
    assert torch.equal(scenario.clients[9999].x_train, last.x_train)


def test_pooled_data_and_no_files():
    pool = synthetic.pooled(ScenarioSpec.of(config("num_clients=3", "num_newcomers=0")))
    clients = build_scenario(config("num_clients=3", "num_newcomers=0")).clients
    assert len(pool.y_train) == sum(c.num_train for c in clients) and pool.input_shape == (1, 1, 60)
    with pytest.raises(DataError, match="generated per client"):
        load_dataset("synthetic", None)


@pytest.mark.parametrize("method", ["fedavg", "genefl"])
def test_short_runs_learn_above_chance(method):
    result = genefl.run(config(f"method={method}", "rounds=2", "num_newcomers=0"))
    assert result.summary["acc_clients"] > 0.4  # chance: 0.1


@pytest.mark.parametrize("overrides, fragment", [
    (["synthetic_alpha=-1"], "synthetic_alpha: must be in [0, 100]"),
    (["synthetic_beta=1e9"], "synthetic_beta: must be in [0, 100]"),
    (["train_subset=100"], "train_subset: dataset = synthetic is generated per client"),
    (["min_samples=2000"], "min_samples: dataset = synthetic caps a client at 1000"),
    (["model=logreg", "method=genefl"], "model: 'logreg' is a single layer"),
    (["model=logreg", "method=flearngene"], "model: 'logreg' is a single layer"),
])
def test_bad_settings_are_refused_in_one_line(overrides, fragment):
    with pytest.raises(ConfigError) as info:
        config(*overrides)
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_logreg_trains_with_fedavg():
    result = genefl.run(config("method=fedavg", "model=logreg", "rounds=2", "num_newcomers=0"))
    assert result.summary["acc_clients"] > 0.3
