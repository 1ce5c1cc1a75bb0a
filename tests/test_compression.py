"""Payload codecs (`genefl.protocol.compression`): error bounds, unbiasedness, exact byte counts, error
feedback by hand, and compressed runs that reproduce and resume exactly."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import small_config
from test_cli import strip_times
from genefl.protocol import compression
from genefl.config import load_config
from genefl.errors import ConfigError, GeneflError
from genefl.protocol.messages import ClientUpdate, Packed, decode, encode, nbytes

OPTS = load_config(None, ["codec.min_numel=0"]).codec


def opts(**changes):
    return load_config(None, ["codec.min_numel=0"] + [f"codec.{k}={json.dumps(v)}" for k, v in changes.items()]).codec


def roundtrip(x, codec, stochastic=False, seed=0, **changes):
    packed = compression.encode_tensor(x, codec, opts(**changes) if changes else OPTS, stochastic, torch.Generator().manual_seed(seed))
    return packed, compression.decode_tensor(packed)


@pytest.mark.parametrize("bits", [8, 4, 3, 2])
@pytest.mark.parametrize("stochastic", [False, True])
def test_uniform_codes_stay_within_one_step(bits, stochastic):
    x = torch.randn(37, 11) * 3
    packed, y = roundtrip(x, f"int{bits}", stochastic)
    step = (x.max() - x.min()) / (2**bits - 1)
    bound = step * (1.0 if stochastic else 0.5) + 1e-5
    assert y.shape == x.shape and y.dtype == x.dtype
    assert float((y - x).abs().max()) <= bound
    assert packed.data.numel() == 8 + math.ceil(x.numel() * bits / 8)  # offset + scale + packed codes


def test_per_channel_scales_bound_each_channel_by_its_own_range():
    x = torch.cat([torch.randn(1, 50) * 100, torch.randn(1, 50) * 0.01])
    packed, y = roundtrip(x, "int4", granularity="channel")
    assert packed.data.numel() == 2 * 8 + 50  # two offsets and scales, 100 four-bit codes
    step_small = (x[1].max() - x[1].min()) / 15
    assert float((y[1] - x[1]).abs().max()) <= step_small / 2 + 1e-7  # not swamped by channel 0's range


def test_half_precision_is_exactly_a_cast():
    x = torch.randn(300)
    for codec, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        packed, y = roundtrip(x, codec)
        assert packed.data.numel() == 600 and torch.equal(y, x.to(dtype).float())


def test_qsgd_levels_and_bytes():
    x = torch.randn(1000)
    packed, y = roundtrip(x, "qsgd", True, qsgd_levels=7, qsgd_bucket=100)
    assert packed.data.numel() == 10 * 4 + 1000 * 4 // 8  # 10 bucket norms, 4-bit codes (15 values)
    norms = x.reshape(10, 100).norm(dim=1)
    levels = (y.reshape(10, 100) / norms[:, None] * 7)
    assert torch.allclose(levels, levels.round(), atol=1e-4)  # every value is norm * level / s
    assert float(((y - x).reshape(10, 100).abs() - norms[:, None] / 7).max()) <= 1e-5


def test_topk_keeps_the_largest_entries_exactly_and_picks_the_smaller_index_code():
    x = torch.randn(10_000)
    packed, y = roundtrip(x, "topk", topk=0.01)
    kept = y != 0
    assert int(kept.sum()) == 100 and torch.equal(y[kept], x[kept])
    assert float(x[~kept].abs().max()) <= float(x[kept].abs().min())
    gaps = np.diff(np.flatnonzero(kept.numpy()), prepend=-1) - 1
    assert packed.spec["ix"] == "varint"
    assert packed.data.numel() == 400 + len(compression.varint_encode(gaps))  # < 1,250 bytes of bitmap
    dense, y = roundtrip(x, "topk", topk=0.6)
    assert dense.spec["ix"] == "bitmap" and dense.data.numel() == 6000 * 4 + 1250
    assert int((y != 0).sum()) == 6000


def test_varints_by_hand():
    assert compression.varint_encode(np.array([0, 1, 127, 128, 300])).tolist() == [0, 1, 127, 0x80, 1, 0xAC, 2]
    data = compression.varint_encode(np.array([5, 0, 2**40]))
    assert compression.varint_decode(data, 3).tolist() == [5, 0, 2**40]
    with pytest.raises(GeneflError):
        compression.varint_decode(np.array([0x80], dtype=np.uint8), 1)  # a value that never ends


@pytest.mark.parametrize("width", [1, 2, 3, 4, 5, 8])
def test_bits_pack_and_unpack(width):
    codes = np.random.default_rng(width).integers(0, 2**width, size=101).astype(np.uint8)
    data = compression.pack_bits(codes, width)
    assert len(data) == math.ceil(101 * width / 8)
    assert np.array_equal(compression.unpack_bits(data, width, 101), codes)


@settings(max_examples=25, deadline=None, derandomize=True)
@given(values=st.lists(st.floats(-100, 100, allow_nan=False, width=32), min_size=2, max_size=6),
       codec=st.sampled_from(["int2", "int3", "int8", "qsgd"]))
def test_stochastic_codecs_are_unbiased(values, codec):
    """Each copy of x in a long tensor is rounded independently (same range, or its own QSGD
    bucket): their mean must be x within five standard errors of the rounding noise."""
    x = torch.tensor(values)
    copies = 4000
    packed, y = roundtrip(x.repeat(copies), codec, True, seed=1, qsgd_levels=1, qsgd_bucket=len(values))
    mean = y.reshape(copies, -1).double().mean(0)
    if codec == "qsgd":
        step = x.double().norm()  # level spacing norm / s with s = 1
    else:
        step = (x.max() - x.min()).double() / (2 ** int(codec[3:]) - 1)
    assert float((mean - x.double()).abs().max()) <= 5 * float(step) / (2 * math.sqrt(copies)) + 1e-4


def test_mixed_narrows_the_largest_tensors_first():
    assert compression.mixed_bits({"big": 1000, "small": 10}, 4.0) == {"big": 3, "small": 8}  # (3000 + 80) / 1010 <= 4
    assert compression.mixed_bits({"a": 100, "b": 100}, 6.0) == {"a": 4, "b": 8}
    assert compression.mixed_bits({"a": 100}, 1.0) == {"a": 2}  # as close as the narrowest level allows


def test_error_feedback_carries_the_residual_across_rounds_by_hand():
    """top-k keeps 1 of 2 entries. Round 1: change [3, 1] -> sends [3, 0], keeps [0, 1]. Round 2:
    change [1, 0.5] + residual [0, 1] = [1, 1.5] -> sends [0, 1.5], keeps [1, 0]."""
    o = opts(topk=0.5, error_feedback=True)
    residual: dict = {}
    reference = ClientUpdate(tensors={"w": torch.tensor([10.0, 20.0])})
    sent = []
    for change in ([3.0, 1.0], [1.0, 0.5]):
        update = ClientUpdate(tensors={"w": reference.tensors["w"] + torch.tensor(change)}, meta={"num_samples": 1})
        packed = compression.encode_message(update, "topk", o, False, lambda s, n: None, reference=reference, residual=residual)
        received = compression.decode_message(packed, reference)
        sent.append((received.tensors["w"] - reference.tensors["w"]).tolist())
        if len(sent) == 1:
            assert residual["tensors/w"].tolist() == [0.0, 1.0]
    assert sent == [[3.0, 0.0], [0.0, 1.5]] and residual["tensors/w"].tolist() == [1.0, 0.0]


def test_packed_message_bytes_are_its_serialized_length():
    x = {"a": torch.randn(40, 7), "b": torch.randn(500), "bias": torch.randn(3)}
    update = ClientUpdate(tensors=x, extras={"delta_c": torch.randn(64)}, meta={"num_samples": 5})
    for codec in compression.CODECS:
        packed = compression.encode_message(update, codec, opts(topk=0.1), True, lambda s, n: torch.Generator().manual_seed(0))
        wire = encode(packed)
        assert nbytes(packed) == len(wire)
        back = compression.decode_message(decode(wire))
        assert back.tensors.keys() == x.keys() and back.extras["delta_c"].shape == (64,)
        if codec != "none":
            assert isinstance(packed.tensors["a"], Packed) and len(wire) < len(encode(update))


def test_small_tensors_travel_as_they_are():
    update = ClientUpdate(tensors={"w": torch.randn(1000), "b": torch.randn(10), "n": torch.tensor(3)})
    packed = compression.encode_message(update, "int8", load_config(None, []).codec, False, lambda s, n: None)
    assert isinstance(packed.tensors["w"], Packed)
    assert packed.tensors["b"] is update.tensors["b"] and packed.tensors["n"] is update.tensors["n"]


def test_malformed_packed_tensors_are_one_line_errors():
    good = compression.encode_tensor(torch.randn(100), "int4", OPTS, False, None)
    cases = [Packed(good.data[:-1], good.spec), Packed(good.data, {**good.spec, "c": "int9"}),
             Packed(good.data, {**good.spec, "g": 0}), Packed(good.data, {**good.spec, "s": [-1]}),
             Packed(good.data, {"c": "topk", "s": [2**40], "d": "float32", "k": 1, "ix": "varint"}),
             Packed(torch.zeros(8, dtype=torch.uint8), {"c": "topk", "s": [10], "d": "float32", "k": 1, "ix": "varint"})]
    for packed in cases:
        with pytest.raises(GeneflError, match="malformed payload"):
            compression.decode_tensor(packed)


def test_codec_options_are_checked():
    with pytest.raises(ConfigError, match="codec.up: must be one of"):
        load_config(None, ["codec.up=int5"])
    with pytest.raises(ConfigError, match="codec.signature: must be one of"):
        load_config(None, ["codec.signature=topk"])
    with pytest.raises(ConfigError, match="codec.topk: must be in"):
        load_config(None, ["codec.topk=0"])


CODEC_RUN = ["codec.up=topk", "codec.topk=0.1", "codec.error_feedback=true", "codec.down=int8", "codec.signature=fp16"]


@pytest.mark.parametrize("method", ["genefl", "fedavg", "scaffold"])
def test_a_compressed_run_sends_fewer_bytes_and_reproduces(method):
    from genefl.data.scenario import build_scenario
    from genefl.results import build_results
    from genefl.runtime.simulator import Simulator

    def run(*extra):
        config = small_config(f"method={method}", *extra)
        return build_results(Simulator(config, build_scenario(config)).run())

    plain, packed, again = run(), run(*CODEC_RUN), run(*CODEC_RUN)
    assert packed["summary"]["bytes_up"] < plain["summary"]["bytes_up"] / 3
    assert packed["summary"]["bytes_down"] < plain["summary"]["bytes_down"] / 2
    assert strip_times(packed) == strip_times(again)
    assert packed["summary"]["acc_clients"] > 0.3  # still learns


def test_killed_compressed_run_resumes_to_the_identical_result(tmp_path, cli):
    """Error feedback's residuals and `codec.down_delta`'s references live in the client store (and
    the server's references in its checkpoint): a run killed mid-round (a real process, SIGKILLed)
    and resumed must end exactly as the uninterrupted one."""
    from test_resume import TINY, killed_run

    args = ["--set", "method=fedavg"] + [a for item in CODEC_RUN + ["codec.down_delta=true"] for a in ("--set", item)]
    assert cli("run", *TINY, *args, "--out", str(tmp_path / "whole"))[0] == 0
    want = strip_times(json.loads((tmp_path / "whole" / "results.json").read_text()))
    out = tmp_path / "killed"
    assert killed_run(out, "round:3", *args).returncode == -9
    assert cli("run", "--resume", str(out))[0] == 0
    assert strip_times(json.loads((out / "results.json").read_text())) == want


def test_changes_are_moved_onto_what_the_server_meant_to_send():
    """A client trained from a lossy copy (0.25 for 0.3) and moved it by +0.1: the server adds that
    change to its own exact 0.3, so the broadcast codec's error never enters its model."""
    planned = ClientUpdate(tensors={"w": torch.tensor([0.3, 1.0]), "n": torch.tensor(2)})
    received = ClientUpdate(tensors={"w": torch.tensor([0.25, 1.0]), "n": torch.tensor(2)})
    update = ClientUpdate(tensors={"w": torch.tensor([0.35, 0.9]), "n": torch.tensor(5)}, meta={"num_samples": 1})
    moved = compression.rebase(update, received, planned)
    assert torch.allclose(moved.tensors["w"], torch.tensor([0.4, 0.9])) and int(moved.tensors["n"]) == 5


DELTA = ["method=fedavg", "codec.up=int2", "codec.down=int2", "codec.min_numel=0", "codec.down_delta=true"]


def _simulator(*overrides, callbacks=()):
    from genefl.data.scenario import build_scenario
    from genefl.runtime.simulator import Simulator

    config = small_config(*overrides)
    return Simulator(config, build_scenario(config), callbacks)


def test_a_broadcast_travels_as_the_change_from_the_clients_last_upload():
    """`codec.down_delta`: after a client's upload both sides hold the same reference (its upload as
    decoded); the next broadcast is the change from it, named by its digest, decoded to the same
    tensors on both sides, and far closer to what the server meant to send than the weights at the
    same bits; a client whose reference differs refuses it, and the server then sends the weights."""
    from genefl.algorithms.base import ClientEnv
    from genefl.protocol.messages import Broadcast
    from genefl.runtime.client_side import received, train_and_send
    from genefl.runtime.first_contact import NEED_INITIAL, InitialMismatch

    sim = _simulator(*DELTA)
    wire, initial, config = sim.loop.wire, sim.strategy.initial, sim.config
    store: dict = {}

    def env(round):
        return ClientEnv(0, round, sim.model, sim.scenario.data(0, round), store, config, sim.spec, sim.layers)

    first = wire.outgoing(Broadcast(tensors=dict(initial)), 1, 0)
    assert compression.REFERENCE_FLAG not in first.meta  # nothing uploaded yet: the weights
    update = train_and_send(sim.clients.client, env(1), received(env(1), first))
    wire.decoded_update(update, (wire.as_received(first, 1, 0), Broadcast(tensors=initial)), 0)
    mine, theirs = store[compression.DOWN_REFERENCE], wire.references[0]
    assert sorted(mine) == sorted(theirs) and all(torch.equal(mine[n], theirs[n]) for n in mine)

    gen = torch.Generator().manual_seed(0)
    planned = {n: t + 0.002 * torch.randn(t.shape, generator=gen) if t.is_floating_point() else t for n, t in theirs.items()}
    sent = wire.outgoing(Broadcast(tensors=planned), 2, 0)
    assert compression.REFERENCE_FLAG in sent.meta and compression.changed_names(sent) == sorted(
        n for n, t in planned.items() if t.is_floating_point())
    client_view, server_view = received(env(2), sent), wire.as_received(sent, 2, 0)
    weights = wire.as_received(wire.outgoing(Broadcast(tensors=planned), 2), 2)  # no client: no reference
    squared = {"change": 0.0, "weights": 0.0}
    for name in compression.changed_names(sent):
        assert torch.equal(client_view.tensors[name], server_view.tensors[name])
        change = planned[name] - theirs[name]
        error = (client_view.tensors[name] - planned[name]).abs().max()
        assert error <= (change.max() - change.min()) / 3 / 2 + 1e-6  # half a 2-bit step of the change
        squared["change"] += float(((client_view.tensors[name] - planned[name]) ** 2).sum())
        squared["weights"] += float(((weights.tensors[name] - planned[name]) ** 2).sum())
    assert squared["change"] < squared["weights"] / 100
    assert nbytes(sent) - nbytes(wire.outgoing(Broadcast(tensors=planned), 2)) == 80  # the digest and a flag per tensor

    store[compression.DOWN_REFERENCE] = {n: t + 1e-3 for n, t in mine.items()}  # e.g. an upload that never arrived
    with pytest.raises(InitialMismatch, match="reference for broadcast changes"):
        received(env(2), sent)
    ask = ClientUpdate(meta={NEED_INITIAL: True})
    assert "reference for broadcast changes" in wire.answer(0, ask, sent)
    assert 0 not in wire.references and compression.REFERENCE_FLAG not in wire.outgoing(Broadcast(tensors=planned), 2, 0).meta
    assert wire.answer(0, ask, sent) is None  # asked twice: an ordinary bad reply


def test_a_client_that_lost_its_reference_asks_and_the_run_goes_on():
    """Client 0's reference is dropped from its store right after its round-1 upload: its round-1
    evaluation broadcast and its round-2 training broadcast are changes it cannot decode. It asks for
    the weights, the server notes it and sends them, and the client is evaluated and trains as usual."""
    from genefl.runtime.events import Callback

    class LoseReference(Callback):
        def on_upload(self, round, cid, sent, decoded):
            if (round, cid) == (1, 0):
                state = sim.clients.states.open(0)
                del state[compression.DOWN_REFERENCE]
                sim.clients.states.close(0, state)

    sim = _simulator(*DELTA, "eval_every=1", "participation=1.0", callbacks=[LoseReference()])
    rounds = sim.run().rounds
    asked = [(r.round, n) for r in rounds for n in r.notes if "reference for broadcast changes" in n]
    why = "client 0: its reference for broadcast changes is not the server's; sending it the weights"
    assert asked == [(1, f"round 1: {why}")]  # at round 1's evaluation; its round-2 broadcast is then the weights
    assert all(0 in r.acc_by_client and 0 in r.participants for r in rounds)
    assert sorted(sim.loop.wire.references) == rounds[-1].participants  # its round-2 upload made a new one
