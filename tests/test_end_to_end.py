"""Whole runs of the simulator on real data."""

from __future__ import annotations

from genefl.config import load_config
from genefl.data.scenario import build_scenario
from genefl.results import build_results
from genefl.runtime.simulator import Simulator


def run(*overrides: str) -> dict:
    config = load_config(None, list(overrides))
    return build_results(Simulator(config, build_scenario(config)).run())


def test_fedavg_iid_digits_reaches_085():
    doc = run("method=fedavg", "partition=iid", "rounds=20", "num_clients=10", "num_newcomers=2", "eval_every=5")
    assert doc["summary"]["acc_clients"] >= 0.85
    # FedAvg's traffic per sampled client per round is one full model each way
    s = doc["summary"]
    assert s["bytes_total"] > 20 * 10 * 2 * s["model_bytes"]


def test_fedavg_counts_one_model_each_way_per_participant():
    doc = run("method=fedavg", "rounds=2", "num_clients=3", "num_newcomers=0", "participation=1.0", "first_contact=\"tensors\"")
    model = doc["summary"]["model_bytes"]
    for r in doc["rounds"]:
        # each message is the model's tensors plus a small header
        assert 3 * model < r["bytes_down"] < 3 * model * 1.05
        assert 3 * model < r["bytes_up"] < 3 * model * 1.05
    # by seed (the default), round 1's broadcasts are a flag and a digest, not the initial model
    seeded = run("method=fedavg", "rounds=2", "num_clients=3", "num_newcomers=0", "participation=1.0")
    assert seeded["rounds"][0]["bytes_down"] < 1000 and seeded["rounds"][1]["bytes_down"] == doc["rounds"][1]["bytes_down"]


def test_dropout_and_participation_sample_fewer_clients():
    doc = run("method=fedavg", "rounds=4", "num_clients=10", "num_newcomers=0", "participation=0.5", "dropout=0.3")
    assert all(r["participants"] + r["dropped"] == 5 for r in doc["rounds"])
    assert sum(r["dropped"] for r in doc["rounds"]) > 0


def test_local_sends_each_client_the_initial_model_once():
    doc = run("method=local", "rounds=3", "num_clients=4", "num_newcomers=1", "newcomer_epochs=1", "first_contact=\"tensors\"")
    rounds = doc["rounds"]
    assert rounds[0]["bytes_down"] > 4 * doc["summary"]["model_bytes"]
    assert all(r["bytes_down"] < 1000 for r in rounds[1:])  # afterwards only empty messages


def test_fashion_mnist_fedavg_learns(shared_data):
    doc = run("method=fedavg", "dataset=fashion_mnist", f"data_dir={shared_data}", "train_subset=2400", "test_subset=600",
              "rounds=4", "num_clients=6", "num_newcomers=1", "newcomer_epochs=1", "partition=iid", "local_epochs=2")
    accs = [r["acc_clients"] for r in doc["rounds"]]
    assert accs[-1] > 0.4 and accs[-1] > accs[0] + 0.1  # chance is 0.1
