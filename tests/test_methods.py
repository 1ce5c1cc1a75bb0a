"""One seconds-long run per method on digits, and each method's communication invariants."""

from __future__ import annotations

import pytest
import torch

from genefl.algorithms import REGISTRY
from genefl.protocol.messages import Broadcast, nbytes
from genefl.results import build_results
from genefl.runtime.simulator import Simulator
from genefl.data.scenario import build_scenario

from conftest import small_config


def simulate(*overrides: str):
    config = small_config(*overrides)
    sim = Simulator(config, build_scenario(config))
    return sim, sim.run()


@pytest.mark.parametrize("method", list(REGISTRY))  # the built-in methods (collected before any test registers one)
def test_every_method_runs_learns_and_welcomes_newcomers(method):
    _, result = simulate(f"method={method}", "rounds=4", "num_clients=6", "num_newcomers=2")
    doc = build_results(result)
    assert doc["summary"]["acc_clients"] > 0.3  # chance is 0.1
    assert len(doc["newcomers"]) == 2
    for n in doc["newcomers"]:
        assert n["acc_by_epoch"][-1] > 0.2
    if method != "local":
        assert doc["summary"]["bytes_up"] > 0


def test_genefl_sends_only_learngene_layers_after_round_one():
    sim, result = simulate("method=genefl", "rounds=4", "num_clients=6", "num_newcomers=1", "genefl.gene_budget=0.25")
    budget = 0.25 * result.model_bytes
    info = result.method_info
    assert 0 < info["summary"]["gene_bytes"] <= budget
    for t in result.ledger.transfers:
        if t.kind == "train" and t.round >= 2:
            assert t.nbytes <= budget + 2000  # the learnGene plus header and scores
    newcomer = result.newcomers[0]
    assert newcomer.init == "learngene" and newcomer.init_bytes <= budget + 1000
    # non-learnGene layers never leave a client: uploads hold only the cluster's layers
    state_keys = set(sim.model.state_dict())
    gene_names = {name for names in info["gene_layers"] if names for name in names}
    assert gene_names and not gene_names & {"head"}
    assert len(gene_names) < len({k.rsplit(".", 1)[0] for k in state_keys})


def test_genefl_communicates_at_least_4x_less_than_fedavg():
    _, fedavg = simulate("method=fedavg", "rounds=5")
    _, genefl = simulate("method=genefl", "rounds=5")
    assert fedavg.ledger.total() >= 4 * genefl.ledger.total()


def test_genefl_newcomer_random_init_downloads_no_tensors():
    _, result = simulate("method=genefl", "newcomer_init=random")
    assert result.newcomers[0].init == "random"
    welcome = nbytes(Broadcast(meta={"init": "random", "cluster": result.newcomers[0].info["cluster"]}))
    # it still uploads its signature (to join a cluster afterwards): that counts too
    assert result.newcomers[0].signature_bytes > 0
    assert result.newcomers[0].init_bytes == result.newcomers[0].signature_bytes + welcome


def test_genefl_ablations_change_what_they_claim():
    """Each ablation option changes what it says it changes, and the run still learns."""
    def signature_bytes(result):
        return sum(t.nbytes for t in result.ledger.transfers if t.kind == "signature")

    def learns(result, label):
        assert build_results(result)["summary"]["acc_clients"] > 0.2, label
        return result

    _, base = simulate("method=genefl")
    _, single = simulate("method=genefl", "genefl.clustering=false")  # one cluster, no Stage 0 signatures
    assert signature_bytes(base) > 0 and signature_bytes(learns(single, "clustering")) == 0
    assert single.method_info["summary"]["num_clusters"] == 1
    for term in ("genefl.lambda_e=0", "genefl.lambda_s=0"):  # a constraint term off: other local training
        _, result = simulate("method=genefl", term)
        assert any(not torch.equal(v, base.final_weights[k]) for k, v in learns(result, term).final_weights.items()), term
    # the MLP's body layers are 52,000, 160,800 and 80,400 bytes: at 60% of its 297,240 bytes each fits
    # alone and the first and last fit together
    picked = {}
    for mode in ("input", "output", "greedy", "random"):
        _, result = simulate("method=genefl", "genefl.gene_budget=0.6", f"genefl.gene_selection={mode}")
        picked[mode] = learns(result, mode).method_info["gene_layers"][0]
        assert result.method_info["summary"]["gene_bytes"] <= 0.6 * 297240, mode
    assert picked["input"] == ["body.1"] and picked["output"] == ["body.5"]
    assert picked["greedy"] == ["body.1", "body.5"]  # not contiguous: only greedy may pick it
    assert picked["random"] not in (picked["input"], picked["output"], picked["greedy"])  # this seed draws body.3
    for option in ("genefl.sensitivity=taylor", "genefl.gene_reselect_every=2"):
        learns(simulate("method=genefl", option)[1], option)


def test_scaffold_sends_control_variates_both_ways():
    _, fedavg = simulate("method=fedavg", "num_newcomers=0")
    _, scaffold = simulate("method=scaffold", "num_newcomers=0")
    ratio = scaffold.ledger.total("up") / fedavg.ledger.total("up")
    assert 1.9 < ratio < 2.1


def test_fedlp_uploads_about_p_of_the_layers():
    _, full = simulate("method=fedavg", "num_newcomers=0", "rounds=6", "num_clients=8")
    _, lp = simulate("method=fedlp", "num_newcomers=0", "rounds=6", "num_clients=8", "fedlp.p=0.5")
    assert 0.3 < lp.ledger.total("up") / full.ledger.total("up") < 0.7
    assert lp.ledger.total("down") == full.ledger.total("down")


def test_same_seed_same_numbers_different_seed_different():
    runs = [build_results(simulate("method=genefl", f"seed={s}")[1]) for s in (3, 3, 4)]
    for doc in runs:
        doc["summary"].pop("wall_s")
        for r in doc["rounds"]:
            r.pop("wall_s")
    assert runs[0] == runs[1] and runs[0]["rounds"] != runs[2]["rounds"]
