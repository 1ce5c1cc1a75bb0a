"""Every field of every reply is checked before anything reads it.

Property-based: hundreds of malformed replies (missing / extra / wrong-typed fields, huge,
negative, NaN; wrong tensors and extras; malformed signatures) go through the round loop's own
check-then-aggregate path for every method. None may crash the loop, and none may reach an
aggregate: the server state after a round of only malformed replies equals the state before.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import small_config
from genefl.algorithms import REGISTRY
from genefl.errors import GeneflError
from genefl.protocol.layers import model_layers
from genefl.protocol import compression
from genefl.config import Config
from genefl.protocol.messages import ClientUpdate, Packed
from genefl.runtime.loop import RoundLoop
from genefl.runtime.assembly import model_spec

JUNK = st.one_of(st.none(), st.booleans(), st.integers(min_value=-10**30, max_value=10**30),
                 st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5),
                 st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=8), st.just([]))


def strategy_for(method: str):
    config = small_config(f'method="{method}"')
    spec = model_spec(config, (1, 8, 8), 10)
    model = spec.build(config.seed, "global")
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    strategy_cls, _ = REGISTRY[method]
    return config, strategy_cls(config, model_layers(model), initial), initial


def valid_update(strategy, initial) -> ClientUpdate:
    meta = {"num_samples": 10}
    if "scores" in strategy.reply_fields():
        meta["scores"] = [0.5] * len(strategy.layers)
    return ClientUpdate(tensors={k: v.clone() for k, v in initial.items()},
                        extras={k: torch.zeros_like(v) for k, v in strategy.expected_extras().items()}, meta=meta)


@st.composite
def malformed(draw, strategy, initial):
    update = valid_update(strategy, initial)
    names = sorted(initial)
    kind = draw(st.sampled_from(["drop_field", "junk_field", "extra_field", "bad_tensor", "extra_tensor",
                                 "extra_extra", "drop_extra", "nan_tensor", "meta_not_dict", "bad_packed"]))
    if kind == "drop_field":
        update.meta.pop(draw(st.sampled_from(sorted(update.meta))))
    elif kind == "junk_field":
        key = draw(st.sampled_from(sorted(update.meta)))
        value = draw(JUNK)
        valid = strategy.reply_fields()[key][0]
        if valid(value):  # hypothesis found a valid value: make it invalid another way
            value = -1 if key == "num_samples" else [math.nan]
        update.meta[key] = value
    elif kind == "extra_field":
        update.meta[draw(st.text(min_size=1, max_size=8).filter(lambda k: k not in update.meta))] = draw(JUNK)
    elif kind == "bad_tensor":
        name = draw(st.sampled_from(names))
        shape = draw(st.lists(st.integers(0, 4), max_size=3))
        dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.int64, torch.float16]))
        tensor = torch.zeros(shape, dtype=dtype)
        if tensor.shape == initial[name].shape and tensor.dtype == initial[name].dtype:
            tensor = torch.zeros(initial[name].numel() + 1)
        update.tensors[name] = tensor
    elif kind == "extra_tensor":
        update.tensors[draw(st.text(min_size=1, max_size=8).filter(lambda k: k not in initial))] = torch.zeros(2)
    elif kind == "extra_extra":
        update.extras["x" + draw(st.text(max_size=6))] = torch.zeros(1)
    elif kind == "drop_extra" and update.extras:
        update.extras.pop(draw(st.sampled_from(sorted(update.extras))))
    elif kind == "drop_extra":
        update.meta["unexpected"] = 1
    elif kind == "nan_tensor":
        name = draw(st.sampled_from([n for n in names if initial[n].is_floating_point()]))
        update.tensors[name] = initial[name].clone().view(-1).index_fill(0, torch.tensor([0]), draw(
            st.sampled_from([math.nan, math.inf, -math.inf]))).view(initial[name].shape)
    elif kind == "bad_packed":
        update.tensors[draw(st.sampled_from(names))] = draw(bad_packed(initial))
    else:
        update.meta = draw(st.sampled_from([[], "x", None, 3]))
    return update


@st.composite
def bad_packed(draw, initial):
    """A codec-packed tensor that must be refused: cut short, padded, of another shape, a change
    with nothing it could be relative to, a sparse tensor claiming a huge shape, junk descriptions."""
    name = draw(st.sampled_from(sorted(n for n in initial if initial[n].is_floating_point())))
    good = compression.encode_tensor(torch.randn(initial[name].shape), draw(st.sampled_from(compression.QUANTIZERS[1:] + ("qsgd", "topk"))),
                                     Config().codec, False, None)
    kind = draw(st.sampled_from(["short", "long", "shape", "delta", "huge", "junk"]))
    if kind == "short":
        return Packed(good.data[:-1], good.spec)
    if kind == "long":
        return Packed(torch.cat([good.data, torch.zeros(1, dtype=torch.uint8)]), good.spec)
    if kind == "shape":
        return Packed(good.data, {**good.spec, "s": [initial[name].numel() + 1]})
    if kind == "delta":  # a change, but the loop was told of no broadcast it could be relative to
        return Packed(good.data, {**good.spec, "dl": 1})
    if kind == "huge":
        return Packed(torch.zeros(4, dtype=torch.uint8), {"c": "topk", "s": [2**40], "d": "float32", "k": 0, "ix": "varint"})
    return Packed(good.data, draw(st.dictionaries(st.text(max_size=3), JUNK, max_size=4)))


class Collecting:
    """Stands in for a Transport: replays the given replies for one round."""

    failures: dict[int, str] = {}

    def __init__(self, replies):
        self.replies = replies


@pytest.mark.parametrize("method", sorted(REGISTRY))
def test_malformed_replies_never_crash_the_loop_nor_reach_an_aggregate(method):
    config, strategy, initial = strategy_for(method)
    assert strategy.check(valid_update(strategy, initial)) is None  # the template itself is valid
    loop = RoundLoop(config, strategy, Collecting([]), 0, config.num_clients, {})
    state = strategy.init()
    # the check below compares these tensors: every method but local-only keeps some
    assert method == "local" or strategy.state_tensors(state), f"{method}: no server tensors found to compare"

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
    @given(st.lists(malformed(strategy, initial), min_size=1, max_size=4))
    def check(updates):
        rejected: list[int] = []
        before = {k: v.clone() for k, v in strategy.state_tensors(state).items()}
        weights = {k: v.clone() for k, v in strategy.weights(state).items()}
        after = strategy.aggregate(state, 1, loop._checked(1, iter(enumerate(updates)), rejected))
        assert sorted(rejected) == list(range(len(updates)))
        now = strategy.state_tensors(after)
        assert now.keys() == before.keys() and all(torch.equal(now[k], before[k]) for k in now)
        assert all(torch.equal(strategy.weights(after)[k], v) for k, v in weights.items())

    check()


@pytest.mark.parametrize("method", ["genefl", "pacfl"])
def test_malformed_signatures_are_rejected_before_clustering(method):
    config, strategy, _ = strategy_for(method)
    good = ClientUpdate(extras={"signature": torch.randn(64, 5)})
    strategy.check_hello(good, 64)
    bad = [ClientUpdate(), ClientUpdate(extras={"signature": torch.randn(64)}),
           ClientUpdate(extras={"signature": torch.randn(63, 5)}),
           ClientUpdate(extras={"signature": torch.randn(64, 6)}),
           ClientUpdate(extras={"signature": torch.full((64, 5), math.nan)}),
           ClientUpdate(extras={"signature": torch.zeros(64, 5, dtype=torch.int64)}),
           ClientUpdate(extras={"signature": torch.randn(64, 5)}, meta={"x": 1}),
           ClientUpdate(extras={"signature": torch.randn(64, 5), "other": torch.zeros(1)})]
    for update in bad:
        with pytest.raises(GeneflError):
            strategy.check_hello(update, 64)
    loop = RoundLoop(config, strategy, Collecting([]), 0, config.num_clients, {})
    kept = loop._checked_signatures({0: good, 1: good, 2: bad[2], 3: bad[4]})
    assert sorted(kept) == [0, 1] and len(loop.notes) == 2
