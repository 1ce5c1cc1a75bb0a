import numpy as np
import pytest

from genefl import rng
from genefl.config import load_config
from genefl.data import partition
from genefl.data.scenario import arrival_rounds, build_scenario, partition_indices
from genefl.errors import ConfigError

LABELS = np.repeat(np.arange(10), 100)  # 1000 samples, 100 per class
TEST_LABELS = np.repeat(np.arange(10), 40)


def check_disjoint_cover(parts, n, full=True):
    merged = np.concatenate(parts)
    assert len(np.unique(merged)) == len(merged)  # every sample at most once
    if full:
        assert len(merged) == n


def test_iid_sizes_and_disjointness():
    parts = partition.iid(LABELS, 7, np.random.default_rng(0))
    check_disjoint_cover(parts, 1000)
    assert sorted(len(p) for p in parts) == [142] + [143] * 6


def test_dirichlet_min_size_disjoint_and_skewed():
    parts = partition.dirichlet(LABELS, 10, alpha=0.1, min_size=20, rng=np.random.default_rng(0))
    check_disjoint_cover(parts, 1000)
    assert min(len(p) for p in parts) >= 20
    # at alpha 0.1 most clients are dominated by one class
    dominant = [np.bincount(LABELS[p], minlength=10).max() / len(p) for p in parts]
    assert np.median(dominant) > 0.5


def test_inner_dirichlet_gives_every_client_an_equal_disjoint_share_skewed_by_alpha():
    parts = partition.inner_dirichlet(LABELS, 40, alpha=0.1, min_size=20, rng=np.random.default_rng(0))
    check_disjoint_cover(parts, 1000)  # 40 x 25: every sample handed out
    assert [len(p) for p in parts] == [25] * 40
    dominant = [np.bincount(LABELS[p], minlength=10).max() / len(p) for p in parts]
    mild = partition.inner_dirichlet(LABELS, 40, alpha=100.0, min_size=20, rng=np.random.default_rng(0))
    mild_dominant = [np.bincount(LABELS[p], minlength=10).max() / len(p) for p in mild]
    assert np.median(dominant) > 0.6 and np.median(mild_dominant) < 0.35  # alpha 0.1: mostly one class
    # where the per-class Dirichlet cannot give 400 clients 2 samples each, this can
    many = partition.inner_dirichlet(LABELS, 400, alpha=0.1, min_size=2, rng=np.random.default_rng(0))
    assert [len(p) for p in many] == [2] * 400
    with pytest.raises(ConfigError, match="min_samples"):
        partition.inner_dirichlet(LABELS, 400, 0.1, 3, np.random.default_rng(0))


def test_pathological_classes_per_client():
    parts = partition.pathological(LABELS, 10, classes_per_client=2, rng=np.random.default_rng(0))
    check_disjoint_cover(parts, 1000)
    assert all(len(np.unique(LABELS[p])) == 2 for p in parts)


def test_partition_is_reproducible_and_seed_dependent():
    a = partition.dirichlet(LABELS, 5, 0.5, 10, rng.numpy_rng(3, "partition"))
    b = partition.dirichlet(LABELS, 5, 0.5, 10, rng.numpy_rng(3, "partition"))
    c = partition.dirichlet(LABELS, 5, 0.5, 10, rng.numpy_rng(4, "partition"))
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_test_splits_follow_training_label_proportions():
    parts = partition.dirichlet(LABELS, 5, 0.3, 10, np.random.default_rng(1))
    tests = partition.matching_test_splits(LABELS, parts, TEST_LABELS, np.random.default_rng(2))
    check_disjoint_cover(tests, len(TEST_LABELS), full=False)
    for p, t in zip(parts, tests):
        train_share = np.bincount(LABELS[p], minlength=10) / 100  # share of each class's training samples
        test_share = np.bincount(TEST_LABELS[t], minlength=10) / 40
        assert np.abs(train_share - test_share).max() <= 1 / 40 + 1e-9  # one sample of rounding per class


def test_too_many_clients_for_min_size_is_a_config_error():
    with pytest.raises(ConfigError, match="min_samples"):
        partition.dirichlet(LABELS, 200, 0.5, 10, np.random.default_rng(0))


def test_scenario_newcomers_are_disjoint_and_arrive_after_round_one():
    config = load_config(None, ["num_clients=5", "num_newcomers=3", "rounds=10"])
    scenario = build_scenario(config)
    assert len(scenario.clients) == 8 and scenario.num_clients == 5
    assert arrival_rounds(config) == {5: 2, 6: 5, 7: 8}
    from genefl.data.scenario import load_for

    train_parts, test_parts = partition_indices(config, load_for(config))
    check_disjoint_cover(train_parts, 0, full=False)
    check_disjoint_cover(test_parts, 0, full=False)


def test_explicit_newcomer_rounds_are_validated():
    with pytest.raises(ConfigError, match="newcomer_rounds"):
        arrival_rounds(load_config(None, ["num_newcomers=2", "newcomer_rounds=[3]"]))
    with pytest.raises(ConfigError, match="after the last round"):
        arrival_rounds(load_config(None, ["num_newcomers=1", "newcomer_rounds=[30]", "rounds=5"]))


def test_test_subset_hands_out_only_its_subset_and_changes_no_training_split():
    from genefl.data.datasets import load_dataset

    digits = load_dataset("digits", None)
    whole = partition_indices(load_config(None, ["num_clients=4", "num_newcomers=1"]), digits)
    sub = partition_indices(load_config(None, ["num_clients=4", "num_newcomers=1", "test_subset=100"]), digits)
    assert all(np.array_equal(a, b) for a, b in zip(whole[0], sub[0]))  # training splits untouched
    check_disjoint_cover(sub[1], 0, full=False)
    handed = np.concatenate(sub[1])
    assert 90 <= len(handed) <= 110 < len(np.concatenate(whole[1]))  # about 100 of the 360 test images
    counts = np.bincount(digits.y_test.numpy()[handed], minlength=10)
    assert counts.min() >= 7 and counts.max() <= 13  # stratified: about 10 per class
    again = partition_indices(load_config(None, ["num_clients=4", "num_newcomers=1", "test_subset=100"]), digits)
    assert all(np.array_equal(a, b) for a, b in zip(sub[1], again[1]))
