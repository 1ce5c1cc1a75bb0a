"""Each method's distinctive arithmetic on tiny hand-built tensors, against numbers computed by hand:
the server halves are fed `ClientUpdate`s directly; client-side rules (FedProx's proximal gradient,
SCAFFOLD's c_i) run one real training step on two samples."""

from __future__ import annotations

import torch
from torch import nn

from conftest import small_config
from genefl.algorithms.base import ClientEnv
from genefl.protocol.models import ModelSpec
from genefl.algorithms.fedavg import FedAvg
from genefl.algorithms.fedlp import FedLP
from genefl.algorithms.fedprox import FedProxClient
from genefl.algorithms.genefl import Genefl
from genefl.algorithms.pacfl import PACFL, ClusterModels
from genefl.algorithms.scaffold import Scaffold, ScaffoldClient
from genefl.data.scenario import ClientData
from genefl.protocol.layers import model_layers
from genefl.protocol.messages import Broadcast, ClientUpdate
from genefl.protocol.server_opt import Moments


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


# ---- the server optimizer (genefl.protocol.server_opt), Flower's equations, two rounds so the moments matter ----
# One 3-element tensor x0 = [0, 1, 2]; round 1's clients [2, 1, 6] (1 sample) and [2, 5, 2] (3 samples)
# average to [2, 4, 3], so Δ1 = [2, 3, 1]; round 2's clients average to MEAN2 = [0.1, 3, 0].
ROUND1 = ((2.0, 1.0, 6.0), (2.0, 5.0, 2.0))
ROUND2 = ((0.1, 6.0, -3.0), (0.1, 2.0, 1.0))  # (0.1 + 0.3) / 4, (6 + 6) / 4, (-3 + 3) / 4


def two_rounds(method, *overrides, second=ROUND2):
    from genefl.algorithms import REGISTRY

    strategy = REGISTRY[method][0](small_config(f"method={method}", *overrides), [], {"w": torch.tensor([0.0, 1.0, 2.0])})
    states = [strategy.init()]
    for r, (a, b) in enumerate((ROUND1, second), start=1):
        ups = [(0, ClientUpdate(tensors={"w": torch.tensor(a)}, meta={"num_samples": 1})),
               (1, ClientUpdate(tensors={"w": torch.tensor(b)}, meta={"num_samples": 3}))]
        states.append(strategy.aggregate(states[-1], r, iter(ups)))
    return states[1:]


def close(tensor, numbers):
    return torch.allclose(tensor, torch.tensor(numbers, dtype=torch.float32), atol=1e-6, rtol=0)


def test_fedavgm_server_momentum():
    """μ = 0.5, η = 2.  Round 1: m = Δ1 = [2, 3, 1], x1 = x0 + 2 m = [4, 7, 4].  Round 2 averages to
    [0, 5, 3]: Δ2 = [-4, -2, -1], m = 0.5 [2, 3, 1] + Δ2 = [-3, -0.5, -0.5], x2 = x1 + 2 m = [-2, 6, 3]."""
    first, second = two_rounds("fedavgm", "server_opt.momentum=0.5", "server_opt.lr=2",
                               second=((0.0, 8.0, 3.0), (0.0, 4.0, 3.0)))
    assert close(first.weights["w"], [4, 7, 4]) and close(first.moments.m["w"], [2, 3, 1])
    assert close(second.weights["w"], [-2, 6, 3]) and close(second.moments.m["w"], [-3, -0.5, -0.5])
    # Flower's defaults (μ = 0, η = 1) are FedAvg itself: the mean, bit for bit, and no moments
    plain, _ = two_rounds("fedavgm")
    assert torch.equal(plain.weights["w"], torch.tensor([2.0, 4.0, 3.0])) and plain.moments.m == {}


def test_fedadam_with_flowers_defaults_and_bias_corrected_lr():
    """η = 0.1, β1 = 0.9, β2 = 0.99, τ = 1e-3; η_t = η √(1 − β2^(t+1)) / (1 − β1^(t+1)) as in Flower.
    Round 1: m = 0.1 Δ1 = [0.2, 0.3, 0.1], v = 0.01 Δ1² = [0.04, 0.09, 0.01], √v = [0.2, 0.3, 0.1],
      η_1 = 0.1 √(1 − 0.99²) / (1 − 0.9²) = 0.1 √0.0199 / 0.19 = 0.0742459788,
      x1 = x0 + η_1 [0.2/0.201, 0.3/0.301, 0.1/0.101] = [0.0738765959, 1.07399931, 2.07351087].
    Round 2: Δ2 = MEAN2 − x1 = [0.0261234041, 1.92600069, −2.07351087],
      m = 0.9 m + 0.1 Δ2 = [0.18261234, 0.462600069, −0.117351087],
      v = 0.99 v + 0.01 Δ2² = [0.0396068243, 0.126194786, 0.0528944733],
      η_2 = 0.1 √(1 − 0.99³) / (1 − 0.9³) = 0.063594015, x2 = x1 + η_2 m / (√v + τ)."""
    first, second = two_rounds("fedadam")
    assert close(first.weights["w"], [0.0738765959, 1.07399931, 2.07351087])
    assert close(second.moments.m["w"], [0.18261234, 0.462600069, -0.117351087])
    assert close(second.moments.v["w"], [0.0396068243, 0.126194786, 0.0528944733])
    assert close(second.weights["w"], [0.131937607, 1.15658037, 2.04120258])


def test_fedyogi_moves_v_by_the_sign_of_v_minus_delta_squared():
    """η = 0.01, β1 = 0.9, β2 = 0.99, τ = 1e-3, no bias correction.
    Round 1 (v = 0 < Δ1², so v grows): m = [0.2, 0.3, 0.1], v = 0 + 0.01 Δ1² = [0.04, 0.09, 0.01],
      x1 = x0 + 0.01 [0.2/0.201, 0.3/0.301, 0.1/0.101] = [0.00995024876, 1.00996678, 2.00990099].
    Round 2: Δ2 = [0.0900497512, 1.99003322, −2.00990099]; Δ2² = [0.00810896, 3.96023, 4.03970];
      v = v − 0.01 Δ2² sign(v − Δ2²): the first element shrinks (0.04 > 0.0081), the others grow:
      v = [0.0399189104, 0.129602322, 0.0503970199]; m = 0.9 m + 0.1 Δ2 = [0.189004975, 0.469003322, −0.110990099];
      x2 = x1 + 0.01 m / (√v + τ) = [0.0193629796, 1.02295844, 2.00497888]."""
    first, second = two_rounds("fedyogi")
    assert close(first.weights["w"], [0.00995024876, 1.00996678, 2.00990099])
    assert close(second.moments.v["w"], [0.0399189104, 0.129602322, 0.0503970199])
    assert close(second.moments.m["w"], [0.189004975, 0.469003322, -0.110990099])
    assert close(second.weights["w"], [0.0193629796, 1.02295844, 2.00497888])


def test_fedadagrad_accumulates_squared_deltas():
    """η = 0.1, β1 = 0 (m = Δ), τ = 1e-3.
    Round 1: v = Δ1² = [4, 9, 1], x1 = x0 + 0.1 [2/2.001, 3/3.001, 1/1.001] = [0.099950025, 1.09996668, 2.0999001].
    Round 2: Δ2 = [0.0000499750125, 1.90003332, −2.0999001], v = [4, 9, 1] + Δ2² = [4, 12.6101266, 5.40958043],
      x2 = x1 + 0.1 Δ2 / (√v + τ) = [0.0999525225, 1.15345749, 2.00965364]."""
    first, second = two_rounds("fedadagrad")
    assert close(first.weights["w"], [0.099950025, 1.09996668, 2.0999001])
    assert close(second.moments.v["w"], [4.0, 12.6101266, 5.40958043])
    assert close(second.weights["w"], [0.0999525225, 1.15345749, 2.00965364])


def test_genefl_steps_each_cluster_with_its_own_moments_over_the_sent_layers():
    """FedAvgM (μ = 0.5, η = 2) from all-zero genes.  Cluster 0 receives layer "0" = 2 twice:
    round 1 x = 0 + 2 (2 − 0) = 4; round 2 Δ = −2, m = 0.5·2 − 2 = −1, x = 4 + 2 (−1) = 2.  Cluster 1
    receives layer "2" = 4 in round 1 only: x = 8, then nothing moves it.  Unsent layers keep their
    value and get no moments."""
    from dataclasses import replace

    _, layers, initial = tiny()
    zeros = filled(initial, 0.0)
    config = small_config("genefl.gene_budget=0.5", "server_opt.name=avgm", "server_opt.momentum=0.5", "server_opt.lr=2")
    strategy = Genefl(config, layers, zeros)
    state = replace(strategy.init(), cluster_of={0: 0, 1: 1}, genes=[dict(zeros), dict(zeros)], gene_layers=[None, None],
                    moments=[Moments(), Moments()])
    layer = lambda prefix, value: {k: v for k, v in filled(initial, value).items() if k.startswith(prefix)}  # noqa: E731
    meta = {"num_samples": 1, "scores": [0.9, 0.1, 0.5]}
    state = strategy.aggregate(state, 1, iter([(0, ClientUpdate(tensors=layer("0.", 2.0), meta=meta)),
                                               (1, ClientUpdate(tensors=layer("2.", 4.0), meta=meta))]))
    assert torch.allclose(state.genes[0]["0.weight"], torch.full((2, 2), 4.0))
    assert torch.allclose(state.genes[1]["2.weight"], torch.full((2, 2), 8.0))
    state = strategy.aggregate(state, 2, iter([(0, ClientUpdate(tensors=layer("0.", 2.0), meta=meta))]))
    assert torch.allclose(state.genes[0]["0.weight"], torch.full((2, 2), 2.0))
    assert torch.allclose(state.moments[0].m["0.bias"], torch.full((2,), -1.0))
    assert torch.allclose(state.genes[1]["2.weight"], torch.full((2, 2), 8.0))  # cluster 1: no report, no step
    assert torch.equal(state.genes[0]["2.weight"], zeros["2.weight"]) and torch.equal(state.genes[0]["4.weight"], zeros["4.weight"])
    assert set(state.moments[0].m) == {"0.weight", "0.bias"} and set(state.moments[1].m) == {"2.weight", "2.bias"}


def test_genefl_takes_the_median_per_cluster_over_the_learngene_tensors_sent():
    """[defence] median: per cluster, each tensor over its senders; a cluster of 2 gets their plain mean."""
    _, layers, initial = tiny()
    strategy = Genefl(small_config("genefl.gene_budget=0.5", "defence.aggregator=\"median\""), layers, initial)
    from dataclasses import replace

    state = replace(strategy.init(), cluster_of={0: 0, 1: 0, 2: 0, 3: 1, 4: 1}, genes=[dict(initial), dict(initial)],
                    gene_layers=[[0], [0]], contacted=frozenset(range(5)), moments=[Moments(), Moments()])
    layer0 = lambda value: {k: v for k, v in filled(initial, value).items() if k.startswith("0.")}  # noqa: E731
    scores = [0.5, 0.5, 0.5]
    updates = [(cid, ClientUpdate(tensors=layer0(value), meta={"num_samples": n, "scores": scores}))
               for cid, value, n in [(0, 1.0, 9), (1, 2.0, 1), (2, 40.0, 1), (3, 3.0, 5), (4, 5.0, 1)]]
    state = strategy.aggregate(state, 2, iter(updates))
    assert torch.equal(state.genes[0]["0.weight"], torch.full((2, 2), 2.0))  # median of 1, 2, 40 (unweighted)
    assert torch.equal(state.genes[1]["0.weight"], torch.full((2, 2), 4.0))  # of 3 and 5: their mean
    assert torch.equal(state.genes[0]["2.weight"], initial["2.weight"])  # not in the learnGene: kept


def test_scaffold_takes_the_median_of_models_and_of_control_variate_updates():
    _, layers, initial = tiny()
    strategy = Scaffold(small_config("method=\"scaffold\"", "num_clients=4", "defence.aggregator=\"median\""), layers, initial)
    zero = {k: torch.zeros_like(v) for k, v in initial.items()}
    ups = [(cid, ClientUpdate(tensors=filled(initial, w), extras={"delta_c/" + k: v + dc for k, v in zero.items()},
                              meta={"num_samples": n})) for cid, w, dc, n in [(0, 2.0, 1.0, 5), (1, 4.0, -9.0, 1), (2, 100.0, 2.0, 1)]]
    new = strategy.aggregate(strategy.init(), 1, iter(ups))
    for k, x in initial.items():
        assert torch.allclose(new.weights[k], torch.full_like(x, 4.0))  # server_lr 1: x + (median - x)
        assert torch.allclose(new.control[k], torch.full_like(x, (3 / 4) * 1.0))  # |S|/N x median(1, -9, 2)
