"""The newcomer fine-tuning protocol: validation split, chosen epoch, lr schedule, protection of
inherited layers; and that a run's newcomers follow it."""

from __future__ import annotations

import math

import torch

from conftest import small_config
from genefl.data.scenario import build_scenario
from genefl.protocol.models import build_model
from genefl.protocol.newcomer import FinetuneSettings, NewcomerCurve, finetune, lr_factor, validation_split
from genefl.results import build_results
from genefl.runtime.simulator import Simulator


def settings(**changes) -> FinetuneSettings:
    base = dict(epochs=2, batch_size=16, lr=0.05, momentum=0.0, weight_decay=0.0, schedule="constant",
                val_fraction=0.0, freeze_epochs=0, inherited_lr=1.0)
    return FinetuneSettings(**{**base, **changes})


def test_validation_split_is_disjoint_seeded_and_empty_at_zero():
    train, val = validation_split(50, 0.2, torch.Generator().manual_seed(3))
    assert len(val) == 10 and len(train) == 40
    assert sorted(torch.cat([train, val]).tolist()) == list(range(50))
    again = validation_split(50, 0.2, torch.Generator().manual_seed(3))
    assert torch.equal(again[1], val)
    train, val = validation_split(50, 0.0, torch.Generator().manual_seed(3))
    assert torch.equal(train, torch.arange(50)) and len(val) == 0  # no split: data order untouched
    train, val = validation_split(2, 0.01, torch.Generator())
    assert len(train) == 1 and len(val) == 1  # rounds up to one, never takes everything


def test_chosen_epoch_is_the_best_validation_epoch_earliest_on_ties():
    assert NewcomerCurve([0.1, 0.5, 0.7, 0.6], [0.4, 0.8, 0.8]).chosen_epoch == 2
    assert NewcomerCurve([0.1, 0.5, 0.7, 0.6], [0.4, 0.8, 0.8]).chosen_test == 0.7
    assert NewcomerCurve([0.1, 0.5, 0.6], []).chosen_epoch == 2  # no validation split: the last epoch
    assert NewcomerCurve([0.1, 0.5, 0.6], [math.nan, math.nan]).chosen_epoch == 2


def test_cosine_schedule_goes_from_lr_to_zero():
    assert lr_factor("cosine", 0, 10) == 1.0
    assert abs(lr_factor("cosine", 5, 10) - 0.5) < 1e-12
    assert lr_factor("cosine", 10, 10) < 1e-12
    assert lr_factor("constant", 7, 10) == 1.0


def _newcomer():
    config = small_config()
    scenario = build_scenario(config)
    return scenario.clients[config.num_clients], scenario.input_shape


def test_frozen_and_zero_lr_inherited_layers_do_not_move_while_fresh_ones_do():
    data, shape = _newcomer()
    for s in (settings(freeze_epochs=2), settings(inherited_lr=0.0)):
        model = build_model("mlp", shape, 10, 0)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        inherited = {"body.1.weight", "body.1.bias"}
        finetune(model, data, inherited, s, torch.Generator().manual_seed(0), torch.Generator())
        after = model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in inherited)
        assert not torch.equal(before["head.weight"], after["head.weight"])


def test_freezing_for_one_epoch_then_training_moves_inherited_layers():
    data, shape = _newcomer()
    model = build_model("mlp", shape, 10, 0)
    before = model.state_dict()["body.1.weight"].clone()
    finetune(model, data, {"body.1.weight"}, settings(freeze_epochs=1), torch.Generator().manual_seed(0), torch.Generator())
    assert not torch.equal(before, model.state_dict()["body.1.weight"])


def test_a_whole_model_start_has_nothing_to_protect():
    data, shape = _newcomer()
    model = build_model("mlp", shape, 10, 0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    finetune(model, data, set(before), settings(freeze_epochs=2), torch.Generator().manual_seed(0), torch.Generator())
    assert not torch.equal(before["body.1.weight"], model.state_dict()["body.1.weight"])


def test_a_run_reports_validation_curves_and_the_chosen_epoch():
    config = small_config("newcomer_val_fraction=0.25", "newcomer_lr=0.02", "newcomer_momentum=0.9",
                          "newcomer_schedule=\"cosine\"", "newcomer_epochs=3")
    doc = build_results(Simulator(config, build_scenario(config)).run())
    (n,) = doc["newcomers"]
    assert len(n["acc_by_epoch"]) == 3 and len(n["val_by_epoch"]) == 3
    best = max(n["val_by_epoch"])
    assert n["chosen_epoch"] == n["val_by_epoch"].index(best) + 1
    assert n["acc_chosen"] == n["acc_by_epoch"][n["chosen_epoch"] - 1]
    assert doc["summary"]["acc_newcomers_val_chosen"] == n["acc_chosen"]


def test_first_contact_by_seed_gives_identical_results_for_fewer_bytes():
    """Every method: the same weights and accuracies whether the initial model travels as tensors or
    as the seed; the seed costs fewer bytes exactly where a full initial model was sent."""
    from genefl.algorithms import REGISTRY

    for method in REGISTRY:
        docs = {}
        for how in ("tensors", "seed"):
            config = small_config(f"method=\"{method}\"", f"first_contact=\"{how}\"", "participation=0.5")
            result = Simulator(config, build_scenario(config)).run()
            docs[how] = (build_results(result), result.final_weights)
        (a, wa), (b, wb) = docs["tensors"], docs["seed"]
        assert [r["acc_clients"] for r in a["rounds"]] == [r["acc_clients"] for r in b["rounds"]], method
        assert [n["acc_by_epoch"] for n in a["newcomers"]] == [n["acc_by_epoch"] for n in b["newcomers"]], method
        assert all(torch.equal(wa[k], wb[k]) for k in wa), method
        saved = a["summary"]["bytes_down"] - b["summary"]["bytes_down"]
        assert saved > 0.5 * a["summary"]["model_bytes"], method  # at least one initial model not sent
        assert a["summary"]["bytes_up"] == b["summary"]["bytes_up"], method


PERTURBED = {"on": False}


def drifting_model(input_shape, num_classes):
    """A small MLP as another machine's torch might build it: with PERTURBED on, one weight is off by
    1e-3 (what a node with a different torch or platform would rebuild from the same seed)."""
    from torch import nn

    model = nn.Sequential(nn.Flatten(), nn.Linear(int(torch.tensor(input_shape).prod()), 16), nn.ReLU(), nn.Linear(16, num_classes))
    if PERTURBED["on"]:
        with torch.no_grad():
            model[1].weight[0, 0] += 1e-3
    return model


def test_a_client_whose_seeded_model_differs_asks_for_the_tensors():
    """The server builds the initial model, then every client's rebuild differs: each sees the digest
    mismatch, asks once, is sent the tensors and goes on exactly as with `first_contact = "tensors"`;
    the asking and the resending are counted and noted."""
    from genefl.runtime.first_contact import NEED_INITIAL, seeded_initial
    from genefl.protocol.messages import ClientUpdate, nbytes

    for method in ("fedavg", "local"):
        docs = {}
        for how in ("tensors", "seed"):
            seeded_initial.cache_clear()
            # the newcomer arrives before round 1's training: FedAvg welcomes it with the initial model too
            config = small_config(f"method=\"{method}\"", f"first_contact=\"{how}\"", "model=\"test_newcomer:drifting_model\"",
                                  "newcomer_rounds=[1]")
            PERTURBED["on"] = False
            sim = Simulator(config, build_scenario(config))  # the server's initial model: unperturbed
            PERTURBED["on"] = True
            try:
                result = sim.run()
            finally:
                PERTURBED["on"] = False
            docs[how] = (build_results(result), result.final_weights)
        (a, wa), (b, wb) = docs["tensors"], docs["seed"]
        assert [r["acc_clients"] for r in a["rounds"]] == [r["acc_clients"] for r in b["rounds"]], method
        assert [n["acc_by_epoch"] for n in a["newcomers"]] == [n["acc_by_epoch"] for n in b["newcomers"]], method
        assert all(torch.equal(wa[k], wb[k]) for k in wa), method
        asked = [note for r in b["rounds"] for note in r.get("notes", []) if "seeded initial model differs" in note]
        assert len(asked) == 4 + (method == "fedavg"), method  # every training client (and FedAvg's newcomer) asked, once
        assert len({note.split(":")[0] + note.split(":")[1] for note in asked}) == len(asked)
        ask = nbytes(ClientUpdate(meta={NEED_INITIAL: True}))
        assert b["summary"]["bytes_up"] - a["summary"]["bytes_up"] == len(asked) * ask, method
        assert b["summary"]["bytes_down"] > a["summary"]["bytes_down"], method  # the seed broadcasts, then the tensors
