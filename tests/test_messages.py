import pytest
import torch

from genefl.errors import GeneflError
from genefl.protocol.ledger import Ledger
from genefl.protocol.messages import Broadcast, ClientUpdate, check_update, decode, encode, nbytes


def sample_update():
    return ClientUpdate(
        tensors={"fc.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3), "fc.bias": torch.tensor([0.5, -1.0])},
        extras={"signature": torch.eye(2, dtype=torch.float64), "count": torch.tensor([7], dtype=torch.int64)},
        meta={"num_samples": 12, "scores": [0.9, 0.1], "name": "x"},
    )


def test_roundtrip_preserves_everything():
    original = sample_update()
    back = decode(encode(original))
    assert isinstance(back, ClientUpdate)
    assert back.meta == original.meta
    for section in ("tensors", "extras"):
        ours, theirs = getattr(original, section), getattr(back, section)
        assert list(ours) == list(theirs)
        for k in ours:
            assert theirs[k].dtype == ours[k].dtype and torch.equal(theirs[k], ours[k])


def test_counted_bytes_equal_serialized_length():
    for message in (sample_update(), Broadcast(), Broadcast(meta={"init": "random"}),
                    Broadcast(tensors={"w": torch.zeros(1000, dtype=torch.bfloat16)})):
        assert nbytes(message) == len(encode(message))


def test_tensor_bytes_dominate_exactly():
    small = Broadcast(tensors={"w": torch.zeros(10)})
    big = Broadcast(tensors={"w": torch.zeros(1010)})
    assert nbytes(big) - nbytes(small) == 1000 * 4 + 2  # 4000 tensor bytes, "10" -> "1010" in the header


def test_ledger_counts_serialized_size_per_direction_and_round():
    ledger = Ledger()
    up, down = sample_update(), Broadcast(tensors={"w": torch.zeros(5)})
    ledger.record(1, 0, "up", "train", up)
    ledger.record(1, 0, "down", "train", down)
    ledger.record(2, 1, "down", "eval", down)
    assert ledger.total("up") == len(encode(up))
    assert ledger.total("down") == len(encode(down))  # eval traffic is reported apart
    assert ledger.total(kind="eval") == len(encode(down))
    assert ledger.by_round() == {1: {"up": len(encode(up)), "down": len(encode(down))}}


@pytest.mark.parametrize("data", [b"", b"XXXX\x00\x00\x00\x00", b"GFL1\xff\x00\x00\x00{", encode(sample_update())[:-3],
                                  encode(sample_update()) + b"\x00"])
def test_malformed_payloads_are_one_line_errors(data):
    with pytest.raises(GeneflError) as err:
        decode(data)
    assert "\n" not in str(err.value) and "malformed" in str(err.value)


def test_check_update_rejects_bad_replies():
    expected = {"w": torch.zeros(2, 2), "b": torch.zeros(2)}
    check_update(ClientUpdate(tensors={"w": torch.ones(2, 2)}), expected)  # a subset is fine
    bad = [
        ClientUpdate(tensors={"x": torch.ones(2)}),  # unknown key
        ClientUpdate(tensors={"w": torch.ones(3, 2)}),  # wrong shape
        ClientUpdate(tensors={"b": torch.ones(2, dtype=torch.float64)}),  # wrong dtype
        ClientUpdate(tensors={"b": torch.tensor([1.0, float("nan")])}),
        ClientUpdate(tensors={"b": torch.tensor([float("inf"), 0.0])}),
    ]
    for update in bad:
        with pytest.raises(GeneflError, match="rejected update"):
            check_update(update, expected)
    with pytest.raises(GeneflError, match="missing"):
        check_update(ClientUpdate(tensors={"w": torch.ones(2, 2)}), expected, required={"w", "b"})


def test_check_update_accepts_huge_finite_tensors_and_names_an_infinite_one():
    """A diverging run's weights: entries of 1e30 are finite, but the float32 norm of such a tensor
    (its squares) overflows to inf; that once raised StopIteration out of the round."""
    expected = {"w": torch.zeros(2, 2), "b": torch.zeros(2)}
    huge = ClientUpdate(tensors={"w": torch.full((2, 2), 1e30), "b": torch.tensor([-3e38, 1.0])})
    assert not bool(torch.isfinite(torch.linalg.vector_norm(huge.tensors["w"])))  # the case this test is about
    check_update(huge, expected)
    infinite = ClientUpdate(tensors={"w": torch.full((2, 2), 1e30), "b": torch.tensor([1.0, float("-inf")])})
    with pytest.raises(GeneflError, match="rejected update: tensor 'b' holds NaN or inf"):
        check_update(infinite, expected)
