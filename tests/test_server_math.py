"""Each method's distinctive arithmetic on tiny hand-built tensors, against numbers computed by hand
(issue 11, part 3): the server halves are fed `ClientUpdate`s directly; client-side rules (FedProx's
proximal gradient, SCAFFOLD's c_i) run one real training step on two samples."""

from __future__ import annotations

import torch
from torch import nn

from conftest import small_config
from genefl.algorithms.base import ClientEnv, ModelSpec
from genefl.algorithms.fedavg import FedAvg
from genefl.algorithms.fedlp import FedLP
from genefl.algorithms.fedprox import FedProxClient
from genefl.algorithms.genefl import Genefl
from genefl.algorithms.pacfl import PACFL, ClusterModels
from genefl.algorithms.scaffold import Scaffold, ScaffoldClient
from genefl.data.scenario import ClientData
from genefl.layers import model_layers
from genefl.messages import Broadcast, ClientUpdate
from genefl.server_opt import Moments


def tiny():
    """Two body layers of 6 parameters (24 bytes each) and a 3-parameter head (12 bytes)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 1))
    return model, model_layers(model), {k: v.detach().clone() for k, v in model.state_dict().items()}


def filled(initial, value):
    return {k: torch.full_like(v, float(value)) for k, v in initial.items()}


def test_fedavg_is_the_sample_weighted_mean():
    _, layers, initial = tiny()
    strategy = FedAvg(small_config("method=\"fedavg\""), layers, initial)
    updates = [(0, ClientUpdate(tensors=filled(initial, 1.0), meta={"num_samples": 1})),
               (1, ClientUpdate(tensors=filled(initial, 5.0), meta={"num_samples": 3}))]
    state = strategy.aggregate(strategy.init(), 1, iter(updates))
    assert all(torch.allclose(v, torch.full_like(v, (1 * 1 + 5 * 3) / 4)) for v in state.weights.values())


def test_fedlp_averages_each_layer_over_its_senders_only():
    _, layers, initial = tiny()
    strategy = FedLP(small_config("method=\"fedlp\""), layers, initial)
    first = {k: v for k, v in filled(initial, 2.0).items() if k.startswith("0.")}
    both = {k: v for k, v in filled(initial, 6.0).items() if k.startswith(("0.", "2."))}
    state = strategy.aggregate(strategy.init(), 1, iter([(0, ClientUpdate(tensors=first, meta={"num_samples": 1})),
                                                         (1, ClientUpdate(tensors=both, meta={"num_samples": 1}))]))
    assert torch.allclose(state.weights["0.weight"], torch.full((2, 2), 4.0))  # (2 + 6) / 2
    assert torch.allclose(state.weights["2.weight"], torch.full((2, 2), 6.0))  # only client 1 sent it
    assert torch.equal(state.weights["4.weight"], initial["4.weight"])  # nobody sent the head


def test_fedper_averages_the_base_and_never_the_head():
    from genefl.algorithms.fedper import FedPer

    _, layers, initial = tiny()
    strategy = FedPer(small_config("method=\"fedper\""), layers, initial)
    state = strategy.init()
    assert set(state.base) == {"0.weight", "0.bias", "2.weight", "2.bias"}
    assert set(strategy.configure_train(state, 1, 0).tensors) == set(initial)  # first contact: the whole model
    base = lambda value: {k: v for k, v in filled(initial, value).items() if not k.startswith("4.")}  # noqa: E731
    updates = [(0, ClientUpdate(tensors=base(1.0), meta={"num_samples": 1})),
               (1, ClientUpdate(tensors=base(5.0), meta={"num_samples": 3}))]
    state = strategy.aggregate(state, 1, iter(updates))
    assert all(torch.allclose(v, torch.full_like(v, 4.0)) for v in state.base.values())  # (1 + 15) / 4
    assert set(strategy.configure_train(state, 2, 0).tensors) == set(state.base)  # then the base only
    _, welcome = strategy.welcome(state, 2, 9, None)
    assert welcome.meta["init"] == "base" and set(welcome.tensors) == set(state.base)


def test_pacfl_averages_within_each_cluster():
    _, layers, initial = tiny()
    strategy = PACFL(small_config("method=\"pacfl\""), layers, initial)
    state = ClusterModels({0: 0, 1: 1, 2: 0}, {}, [dict(initial), dict(initial)])
    updates = [(0, ClientUpdate(tensors=filled(initial, 1.0), meta={"num_samples": 1})),
               (1, ClientUpdate(tensors=filled(initial, 7.0), meta={"num_samples": 2})),
               (2, ClientUpdate(tensors=filled(initial, 3.0), meta={"num_samples": 3}))]
    state = strategy.aggregate(state, 1, iter(updates))
    assert torch.allclose(state.models[0]["0.bias"], torch.full((2,), (1 + 9) / 4))
    assert torch.allclose(state.models[1]["0.bias"], torch.full((2,), 7.0))


def test_genefl_averages_learngenes_per_cluster_and_decides_layers_from_weighted_scores():
    _, layers, initial = tiny()
    strategy = Genefl(small_config("genefl.gene_budget=0.5"), layers, initial)  # 30 of 60 bytes: one body layer
    state = strategy.init()
    from dataclasses import replace

    state = replace(state, cluster_of={0: 0, 1: 1, 2: 0}, genes=[dict(initial), dict(initial)], gene_layers=[None, None],
                    moments=[Moments(), Moments()])
    layer0 = {k: v for k, v in filled(initial, 2.0).items() if k.startswith("0.")}
    layer2 = {k: v for k, v in filled(initial, 4.0).items() if k.startswith("2.")}
    updates = [(0, ClientUpdate(tensors=layer0, meta={"num_samples": 1, "scores": [0.9, 0.1, 0.5]})),
               (1, ClientUpdate(tensors=layer0, meta={"num_samples": 2, "scores": [0.8, 0.2, 0.1]})),
               (2, ClientUpdate(tensors={**{k: v * 3 for k, v in layer0.items()}, **layer2},
                                meta={"num_samples": 3, "scores": [0.3, 0.7, 0.5]}))]
    state = strategy.aggregate(state, 1, iter(updates))
    # cluster 0: layer 0 from clients 0 and 2 (2 x 1 + 6 x 3) / 4 = 5; layer 2 from client 2 alone
    assert torch.allclose(state.genes[0]["0.weight"], torch.full((2, 2), 5.0))
    assert torch.allclose(state.genes[0]["2.weight"], torch.full((2, 2), 4.0))
    assert torch.allclose(state.genes[1]["0.weight"], torch.full((2, 2), 2.0))
    assert torch.equal(state.genes[1]["2.weight"], initial["2.weight"])
    # weighted stabilities: cluster 0 (0.9 x 1 + 0.3 x 3) / 4 = 0.45 < (0.1 + 2.1) / 4 = 0.55 -> layer "2";
    # cluster 1: 0.8 > 0.2 -> layer "0"; the head is never chosen
    assert state.gene_layers == [[1], [0]]
    assert state.contacted == frozenset({0, 1, 2})


def client_env(model, config, store=None):
    x = torch.tensor([[1.0, -1.0], [0.5, 2.0]])
    data = ClientData(x, torch.tensor([0, 0]), x, torch.tensor([0, 0]))
    return ClientEnv(0, 1, model, data, store if store is not None else {}, config, ModelSpec("x", (1, 1, 2), 1),
                     model_layers(model))


def one_class_model():
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(2, 2))


def ce_grads(model, x, y):
    model.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    return {k: p.grad.clone() for k, p in model.named_parameters()}


def test_fedprox_client_adds_mu_times_the_distance_to_the_global_model():
    """Two steps (two epochs of one full batch): the first starts at the global model, so its
    proximal term is zero; the second carries mu (θ1 − θ_global)."""
    config = small_config("method=\"fedprox\"", "fedprox.mu=0.5", "lr=0.1", "batch_size=2", "local_epochs=2")
    model = one_class_model()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    env = client_env(model, config)
    FedProxClient().train(env, Broadcast(tensors=start))
    by_hand = one_class_model()
    g0 = ce_grads(by_hand, env.data.x_train, env.data.y_train)
    theta1 = {k: start[k] - 0.1 * g0[k] for k in start}
    by_hand.load_state_dict(theta1)
    g1 = ce_grads(by_hand, env.data.x_train, env.data.y_train)
    for k, v in model.state_dict().items():
        theta2 = theta1[k] - 0.1 * (g1[k] + 0.5 * (theta1[k] - start[k]))
        assert torch.allclose(v, theta2, atol=1e-6)
        assert not torch.allclose(v, theta1[k] - 0.1 * g1[k], atol=1e-6)  # mu made a difference


def test_scaffold_client_control_variate_and_server_step():
    config = small_config("method=\"scaffold\"", "lr=0.1", "batch_size=2", "num_clients=4")
    model = one_class_model()
    x0 = {k: v.clone() for k, v in model.state_dict().items()}
    c = {k: torch.full_like(v, 0.2) for k, v in x0.items()}
    c_i = {k: torch.full_like(v, 0.05) for k, v in x0.items()}
    env = client_env(model, config, {"c_i": c_i})
    grads = ce_grads(one_class_model(), env.data.x_train, env.data.y_train)
    update = ScaffoldClient().train(env, Broadcast(tensors=x0, extras={"c/" + k: v for k, v in c.items()}))
    for k in x0:  # one step (K = 1) of the corrected gradient g + c - c_i
        y = x0[k] - 0.1 * (grads[k] + 0.2 - 0.05)
        assert torch.allclose(update.tensors[k], y, atol=1e-6)
        new_ci = c_i[k] - c[k] + (x0[k] - y) / (1 * 0.1)  # option II
        assert torch.allclose(env.store["c_i"][k], new_ci, atol=1e-5)
        assert torch.allclose(update.extras["delta_c/" + k], new_ci - c_i[k], atol=1e-5)

    _, layers, initial = tiny()
    strategy = Scaffold(small_config("method=\"scaffold\"", "num_clients=4", "scaffold.server_lr=0.5"), layers, initial)
    zero = {k: torch.zeros_like(v) for k, v in initial.items()}
    state = strategy.init()
    ups = [(0, ClientUpdate(tensors=filled(initial, 2.0), extras={"delta_c/" + k: v + 1.0 for k, v in zero.items()},
                            meta={"num_samples": 1})),
           (1, ClientUpdate(tensors=filled(initial, 4.0), extras={"delta_c/" + k: v + 3.0 for k, v in zero.items()},
                            meta={"num_samples": 1}))]
    new = strategy.aggregate(state, 1, iter(ups))
    for k, x in initial.items():
        assert torch.allclose(new.weights[k], x + 0.5 * (3.0 - x))  # x + η_g (ȳ - x), ȳ = 3
        assert torch.allclose(new.control[k], torch.full_like(x, (2 / 4) * 2.0))  # |S|/N mean(Δc) = 1/2 * 2


def test_scaffold_counts_welcomed_newcomers_in_n():
    """2 training clients and a welcomed newcomer, all three report: |S|/N = 3/3, not 3/2."""
    _, layers, initial = tiny()
    strategy = Scaffold(small_config("method=\"scaffold\"", "num_clients=2"), layers, initial)
    state, _ = strategy.welcome(strategy.init(), 2, 2, None)
    assert state.population == 3
    zero = {k: torch.zeros_like(v) for k, v in initial.items()}
    ups = [(cid, ClientUpdate(tensors=dict(initial), extras={"delta_c/" + k: v + 1.0 for k, v in zero.items()},
                              meta={"num_samples": 1})) for cid in range(3)]
    new = strategy.aggregate(state, 2, iter(ups))
    assert all(torch.allclose(v, torch.ones_like(v)) for v in new.control.values())  # c = mean(Δc), no overshoot
