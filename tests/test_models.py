"""The image models: parameter counts as published, layers in forward order, any input size."""

from __future__ import annotations

import pytest
import torch

from genefl.protocol.layers import model_layers
from genefl.protocol.models import build_model

COUNTS = {"lenet5": 61_706, "fedavg_cnn": 1_663_370, "resnet8": 77_754, "cnn": 28_106}


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_parameter_count_on_28x28_and_other_input_sizes(name):
    model = build_model(name, (1, 28, 28), 10, 0)
    assert sum(p.numel() for p in model.parameters()) == COUNTS[name]
    for shape in ((1, 28, 28), (3, 32, 32), (1, 8, 8)):
        assert build_model(name, shape, 7, 0)(torch.zeros(2, *shape)).shape == (2, 7)


def test_layers_are_listed_in_forward_order_ending_with_the_head():
    assert [layer.name for layer in model_layers(build_model("lenet5", (1, 28, 28), 10, 0))] == \
        ["conv1", "conv2", "fc1", "fc2", "head"]
    assert [layer.name for layer in model_layers(build_model("fedavg_cnn", (1, 28, 28), 10, 0))] == \
        ["conv1", "conv2", "fc1", "head"]
    names = [layer.name for layer in model_layers(build_model("resnet8", (1, 28, 28), 10, 0))]
    assert names[0] == "conv1" and names[-1] == "head" and len(names) == 19


def test_same_seed_same_weights():
    a, b = (build_model("lenet5", (1, 28, 28), 10, 4, "x") for _ in range(2))
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
