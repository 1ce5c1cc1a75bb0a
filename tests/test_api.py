"""genefl from Python: run / compare / Config with the CLI's validation, callbacks, your own model
(`model = "module:factory"`) and your own arrays (`genefl.data.from_arrays`)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch

import genefl
from genefl.data import from_arrays

TINY = dict(rounds=2, num_clients=3, num_newcomers=1, newcomer_epochs=1)


def test_run_returns_the_results_document_and_writes_the_cli_files(tmp_path):
    rounds = []

    class Count(genefl.Callback):
        def after_round(self, report):
            rounds.append(report.round)

    result = genefl.run(genefl.Config(method="fedavg", **TINY), callbacks=[Count()], out=tmp_path / "o")
    doc = json.loads((tmp_path / "o" / "results.json").read_text())
    assert result.summary.keys() == doc["summary"].keys()
    assert result.summary["bytes_total"] == doc["summary"]["bytes_total"] and rounds == [1, 2]
    assert len(result.newcomers) == 1 and set(result.weights) == set(genefl.run(genefl.Config(method="fedavg", **TINY)).weights)
    assert (tmp_path / "o" / "rounds.csv").exists() and (tmp_path / "o" / "config.toml").exists()


def test_config_from_python_is_validated_like_the_cli():
    for bad, fragment in ((dict(lr=-1), "lr: must be in [1e-08, 10]"), (dict(method="nope"), "method: must be one of"),
                          (dict(genefl={"fisher_top": 2}), "genefl.fisher_top"), (dict(rounds="5"), "rounds: expected int"),
                          (dict(model="not a factory"), "model: must be one of")):
        with pytest.raises(genefl.ConfigError) as err:
            genefl.Config(**bad)
        assert fragment in str(err.value) and "\n" not in str(err.value)
    assert genefl.Config(genefl={"fisher_top": 0.3}).genefl.fisher_top == 0.3


def test_your_own_model_factory(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(
        "from torch import nn\n"
        "def small(input_shape, num_classes):\n"
        "    c, h, w = input_shape\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(),\n"
        "                         nn.Linear(16, num_classes))\n"
        "def wide(input_shape, num_classes):\n"
        "    c, h, w = input_shape\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 16), nn.ReLU(), nn.Linear(16, num_classes))\n"
        "def nothing(input_shape, num_classes):\n"
        "    return nn.ReLU()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    result = genefl.run(genefl.Config(method="genefl", model="my_models:small", **TINY))
    assert result.summary["model_bytes"] == 4 * (64 * 16 + 16 + 16 * 16 + 16 + 16 * 10 + 10)
    assert result.method_info["gene_layers"][0] == ["3"]  # the only body layer that fits 25% of the bytes
    table = genefl.compare(genefl.Config(model="my_models:small", **TINY), methods="genefl,fedavg", out=tmp_path / "c")
    assert [r["summary"]["model_bytes"] for r in table.runs] == [result.summary["model_bytes"]] * 2
    assert table.runs[0]["summary"]["bytes_total"] == result.summary["bytes_total"]
    for spec, fragment in (("my_models:nothing", "not an nn.Module with parameters"), ("my_models:absent", "cannot import"),
                           ("no_such_module:f", "cannot import")):
        with pytest.raises(genefl.ConfigError) as err:
            genefl.run(genefl.Config(method="fedavg", model=spec, **TINY))
        assert fragment in str(err.value)
    # every body layer over GENE-FL's budget: refused before anything is written, naming the
    # smallest layer and the budget that would hold it (4160 of 4840 bytes: 0.86)
    with pytest.raises(genefl.ConfigError) as err:
        genefl.run(genefl.Config(method="genefl", model="my_models:wide", **TINY), out=tmp_path / "w")
    assert "smallest: '1', 4160 bytes" in str(err.value) and "genefl.gene_budget >= 0.86" in str(err.value)
    assert not (tmp_path / "w").exists()
    assert genefl.run(genefl.Config(method="genefl", model="my_models:wide", genefl={"gene_budget": 0.86}, **TINY))
    sys.modules.pop("my_models", None)


def test_your_own_arrays_are_partitioned_and_scheduled(tmp_path):
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 1, 6, 6)) * 3
    y_train, y_test = np.arange(600) % 3, np.arange(150) % 3
    x_train = (centers[y_train] + rng.normal(size=(600, 1, 6, 6))).astype(np.float32)
    x_test = (centers[y_test] + rng.normal(size=(150, 1, 6, 6))).astype(np.float32)
    data = from_arrays(x_train, y_train, x_test, torch.from_numpy(y_test), name="blobs")
    assert data.num_classes == 3 and data.input_shape == (1, 6, 6)
    result = genefl.run(genefl.Config(method="fedavg", rounds=3, num_clients=4, num_newcomers=1), dataset=data)
    assert result.summary["acc_clients"] > 0.9  # well-separated blobs
    assert result.raw.dataset == "blobs"
    # genefl.compare takes them too, also in worker processes (--jobs)
    table = genefl.compare(genefl.Config(rounds=3, num_clients=4, num_newcomers=1), methods="fedavg,local", dataset=data,
                           out=tmp_path / "c", jobs=2)
    fedavg = next(r for r in table.runs if r["label"] == "fedavg")
    assert fedavg["dataset"] == "blobs" and fedavg["summary"]["acc_clients"] > 0.9
    with pytest.raises(genefl.DataError):
        from_arrays(x_train, y_train.astype(np.float32), x_test, y_test)
    with pytest.raises(genefl.DataError):
        from_arrays(x_train[:10], y_train, x_test, y_test)


def test_compare_from_python(tmp_path):
    table = genefl.compare(genefl.Config(**TINY), methods="fedavg,local", seeds=[0], out=tmp_path / "c")
    assert [row["method"] for row in table.rows] == ["fedavg", "local"]
    assert (tmp_path / "c" / "summary.csv").exists() and len(table.runs) == 2


def test_tensorboard_callback_logs_what_results_json_says(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from genefl.tensorboard import TensorBoard

    result = genefl.run(genefl.Config(method="genefl", eval_every=1, **TINY), callbacks=[TensorBoard(tmp_path / "tb")])
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()

    def series(tag):
        return [(e.step, e.value) for e in events.Scalars(tag)]

    rounds = result.rounds
    assert series("bytes/up") == [(r["round"], r["bytes_up"]) for r in rounds]
    total = sum(r["bytes_up"] + r["bytes_down"] for r in rounds)
    assert series("bytes/total_so_far")[-1] == (2, total)
    assert [s for s, _ in series("accuracy/training_clients")] == [1, 2]
    assert series("accuracy/training_clients")[-1][1] == pytest.approx(rounds[-1]["acc_clients"], abs=1e-6)
    newcomer = result.newcomers[0]
    curve = series(f"newcomer/{newcomer['id']}/accuracy")
    assert [v for _, v in curve] == pytest.approx([newcomer["acc_init"], *newcomer["acc_by_epoch"]], abs=1e-6)
    assert sorted(events.Tags()["tensors"]) == ["config/text_summary", "summary/text_summary"]
