import torch

from genefl.protocol.aggregate import LayerwiseMean


def test_weighted_mean_of_full_updates():
    agg = LayerwiseMean()
    agg.add({"w": torch.tensor([1.0, 2.0]), "b": torch.tensor([0.0])}, weight=1)
    agg.add({"w": torch.tensor([3.0, 6.0]), "b": torch.tensor([4.0])}, weight=3)
    out = agg.result({"w": torch.zeros(2), "b": torch.zeros(1)})
    assert torch.equal(out["w"], torch.tensor([2.5, 5.0]))  # (1*1 + 3*3) / 4, (2 + 18) / 4
    assert torch.equal(out["b"], torch.tensor([3.0]))


def test_layer_sent_by_some_clients_is_averaged_over_those_only():
    agg = LayerwiseMean()
    agg.add({"a": torch.tensor([1.0])}, weight=2)
    agg.add({"a": torch.tensor([4.0]), "b": torch.tensor([10.0])}, weight=1)
    previous = {"a": torch.tensor([0.0]), "b": torch.tensor([-1.0]), "c": torch.tensor([7.0])}
    out = agg.result(previous)
    assert torch.equal(out["a"], torch.tensor([2.0]))  # (2*1 + 1*4) / 3
    assert torch.equal(out["b"], torch.tensor([10.0]))  # only the second client sent b
    assert torch.equal(out["c"], torch.tensor([7.0]))  # nobody sent c: it keeps its value
    assert agg.names() == {"a", "b"}


def test_integer_buffers_keep_their_dtype():
    agg = LayerwiseMean()
    agg.add({"n": torch.tensor(3)}, 1)
    agg.add({"n": torch.tensor(6)}, 1)
    out = agg.result({"n": torch.tensor(0)})
    assert out["n"].dtype == torch.int64 and int(out["n"]) == 4  # 4.5 rounds to even


def test_empty_aggregate_is_falsy_and_changes_nothing():
    agg = LayerwiseMean()
    previous = {"w": torch.ones(2)}
    assert not agg
    assert agg.result(previous) == previous
