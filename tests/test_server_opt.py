"""The server-optimizer seam (`genefl.protocol.server_opt`): the same numbers as Flower's own FedAvgM, FedAdam,
FedYogi and FedAdagrad strategies, the methods and the `[server_opt]` option giving the same run, and
one-line errors for options that would be ignored. Hand-computed numbers are in test_server_math.py."""

from __future__ import annotations

import json
from unittest.mock import Mock

import numpy as np
import pytest
import torch

from conftest import small_config
from genefl.algorithms import REGISTRY
from genefl.algorithms.fedavg import FedAvg
from genefl.algorithms.scaffold import Scaffold
from genefl.errors import ConfigError
from genefl.protocol.messages import ClientUpdate
from test_cli import FAST, strip_times


def replies(rng: np.random.Generator, shapes: dict[str, tuple]) -> list[tuple[dict[str, np.ndarray], int]]:
    return [({k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}, n) for n in (1, 3, 2)]


@pytest.mark.parametrize("method, overrides", [("fedavgm", ["server_opt.momentum=0.5", "server_opt.lr=2"]),
                                               ("fedadam", []), ("fedyogi", []), ("fedadagrad", [])])
def test_same_numbers_as_flowers_strategies(method, overrides):
    """Three rounds of three replies (1, 3, 2 samples) over two tensors through Flower's strategy and ours."""
    pytest.importorskip("flwr")
    from flwr.common import Array, ArrayRecord, Message, MetricRecord, RecordDict
    from flwr.serverapp import strategy as flower

    rng = np.random.default_rng(0)
    shapes = {"a": (2, 3), "b": (3,)}
    x = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    ours = REGISTRY[method][0](small_config(f"method={method}", *overrides), [], {k: torch.from_numpy(v) for k, v in x.items()})
    state, opt = ours.init(), ours.optimizer
    if method == "fedavgm":
        theirs = flower.FedAvgM(server_learning_rate=opt.lr, server_momentum=opt.momentum)
        theirs.current_arrays = ArrayRecord({k: Array(v) for k, v in x.items()})  # its configure_train, round 1
    else:
        theirs = {"fedadam": flower.FedAdam, "fedyogi": flower.FedYogi, "fedadagrad": flower.FedAdagrad}[method]()
        assert (theirs.eta, theirs.beta_1, theirs.tau) == (opt.lr, opt.momentum, opt.tau)  # the same defaults
    for r in (1, 2, 3):
        sent = replies(rng, shapes)
        if method != "fedavgm":
            theirs.current_arrays = dict(x)  # what Flower's FedOpt.configure_train records
        messages = []
        for tensors, n in sent:
            message = Mock(spec=Message)
            message.content = RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in tensors.items()}),
                                          "metrics": MetricRecord({"num-examples": n})})
            message.has_error.side_effect, message.has_content.side_effect = lambda: False, lambda: True
            messages.append(message)
        new, _ = theirs.aggregate_train(r, messages)
        x = {k: np.asarray(a.numpy(), dtype=np.float32) for k, a in new.items()}
        state = ours.aggregate(state, r, iter([(i, ClientUpdate(tensors={k: torch.from_numpy(v) for k, v in t.items()},
                                                                meta={"num_samples": n})) for i, (t, n) in enumerate(sent)]))
        for k in shapes:
            assert np.allclose(state.weights[k].numpy(), x[k], atol=2e-6, rtol=1e-5), (r, k)


def test_flowers_defaults_resolve_per_optimizer():
    expect = {"fedavgm": (1.0, 0.0), "fedadam": (0.1, 0.9), "fedyogi": (0.01, 0.9), "fedadagrad": (0.1, 0.0)}
    for method, (lr, momentum) in expect.items():
        opt = REGISTRY[method][0].server_optimizer(small_config(f"method={method}"))
        assert (opt.lr, opt.momentum, opt.beta2, opt.tau) == (lr, momentum, 0.99, 1e-3), method
    opt = FedAvg.server_optimizer(small_config("method=fedavg", "server_opt.name=yogi", "server_opt.lr=0.5"))
    assert (opt.name, opt.lr, opt.momentum) == ("yogi", 0.5, 0.9)
    assert Scaffold.server_optimizer(small_config("method=scaffold", "scaffold.server_lr=0.5")).name == "sgd"


@pytest.mark.parametrize("overrides, fragment", [
    (["method=pacfl", "server_opt.name=adam"], "server_opt.name: method pacfl has no server step"),
    (["method=fedadam", "server_opt.name=yogi"], "server_opt.name: method fedadam always uses 'adam'"),
    (["method=fedavg", "server_opt.lr=0.5"], "server_opt.lr: not used by server optimizer 'none' (set server_opt.name)"),
    (["method=fedavgm", "server_opt.beta2=0.9"], "server_opt.beta2: not used by server optimizer 'avgm'"),
    (["method=scaffold", "server_opt.name=adam", "scaffold.server_lr=0.5"], "scaffold.server_lr: not used with server_opt.name"),
    (["server_opt.name=sgd"], "server_opt.name: must be one of none, avgm, adam, yogi, adagrad"),
    (["server_opt.momentum=1"], "server_opt.momentum: must be in [0, 1), or -1"),
    (["server_opt.tau=0"], "server_opt.tau: must be in (0, 1]"),
])
def test_options_a_method_would_ignore_are_one_line_errors(overrides, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        small_config(*overrides)


def test_scaffold_steps_x_through_the_same_optimizer_as_fedavg():
    initial = {"w": torch.tensor([0.0, 1.0, 2.0])}
    fedavg = FedAvg(small_config("method=fedavg", "server_opt.name=adam"), [], initial)
    scaffold = Scaffold(small_config("method=scaffold", "server_opt.name=adam"), [], initial)
    a, s = fedavg.init(), scaffold.init()
    for r, values in enumerate(([2.0, 4.0, 3.0], [0.5, 2.0, 1.0]), start=1):
        up = ClientUpdate(tensors={"w": torch.tensor(values)}, meta={"num_samples": 2})
        a = fedavg.aggregate(a, r, iter([(0, up)]))
        s = scaffold.aggregate(s, r, iter([(0, up)]))
        assert torch.equal(a.weights["w"], s.weights["w"]) and torch.equal(a.moments.v["w"], s.moments.v["w"])


def test_fedadam_from_the_cli_is_fedavg_with_server_opt_adam(tmp_path, cli):
    docs = []
    for name, args in (("m", ["--set", "method=fedadam"]), ("o", ["--set", "method=fedavg", "--set", "server_opt.name=adam"])):
        code, _, err = cli("run", *FAST, *args, "--out", str(tmp_path / name))
        assert code == 0, err
        docs.append(strip_times(json.loads((tmp_path / name / "results.json").read_text())))
    code, _, err = cli("run", *FAST, "--set", "method=fedavg", "--out", str(tmp_path / "p"))
    assert code == 0, err
    fedavg = strip_times(json.loads((tmp_path / "p" / "results.json").read_text()))
    assert docs[0]["method"] == "fedadam" and docs[1]["method"] == "fedavg"
    assert docs[0]["rounds"] == docs[1]["rounds"] and docs[0]["summary"] == docs[1]["summary"]
    assert docs[0]["rounds"] != fedavg["rounds"]  # the optimizer changed the run
