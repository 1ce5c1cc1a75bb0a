import math

import pytest
import torch
from torch import nn

from genefl.algorithms.genefl import sensitivity
from genefl.errors import ConfigError
from genefl.protocol.layers import Layer


def layer(name, nbytes, numel=None):
    return Layer(name, (name + ".w",), (name + ".w",), numel or nbytes // 4, nbytes)


def test_stability_unchanged_negated_and_hand_angle():
    layers = [layer("a", 8), layer("b", 8), layer("c", 8)]
    before = {"a.w": torch.tensor([1.0, 0.0]), "b.w": torch.tensor([1.0, 2.0]), "c.w": torch.tensor([1.0, 0.0])}
    after = {"a.w": torch.tensor([1.0, 0.0]), "b.w": torch.tensor([-1.0, -2.0]), "c.w": torch.tensor([1.0, 1.0])}
    s = sensitivity.stability(before, after, layers)
    assert s[0] == pytest.approx(1.0) and s[1] == pytest.approx(-1.0) and s[2] == pytest.approx(math.cos(math.pi / 4))


def test_layer_weights_sum_to_one_and_match_hand_computation():
    layers = [layer("a", 40, 10), layer("b", 120, 30), layer("c", 8, 2)]
    xi = sensitivity.layer_weights([0.5, 1.0, -0.2], layers)  # masses 5, 30, 0
    assert xi == pytest.approx([5 / 35, 30 / 35, 0.0]) and sum(xi) == pytest.approx(1.0)
    assert sensitivity.layer_weights([-1.0, -1.0, 0.0], layers) == pytest.approx([1 / 3] * 3)


FIVE = [layer("conv1", 100), layer("conv2", 300), layer("conv3", 600), layer("fc1", 250), layer("head", 50)]
SCORES = [0.90, 0.80, 0.95, 0.97, 0.99]


def test_greedy_and_window_pick_expected_layers():
    # budget 400: greedy by score (head excluded): fc1 (250) fits, conv3 (600) no, conv1 (100) fits -> 350; conv2 no
    assert sensitivity.select_gene_layers(SCORES, FIVE, 400, mode="greedy") == [0, 3]
    # window: contiguous runs that fit: [conv1, conv2] = 400 bytes, 2 layers -> the only 2-layer run
    assert sensitivity.select_gene_layers(SCORES, FIVE, 400, mode="window") == [0, 1]
    # with the head allowed, greedy takes the head first (0.99)
    assert sensitivity.select_gene_layers(SCORES, FIVE, 400, include_head=True, mode="greedy") == [0, 3, 4]
    # window with head: [fc1, head] = 300 bytes ties [conv1, conv2] on length; fc1/head have higher mean score
    assert sensitivity.select_gene_layers(SCORES, FIVE, 400, include_head=True, mode="window") == [3, 4]


def test_input_and_output_side_windows():
    # input end: conv1 (100) + conv2 (300) = 400 fits, conv3 would not
    assert sensitivity.select_gene_layers(SCORES, FIVE, 400, mode="input") == [0, 1]
    # output end (head excluded): fc1 (250) fits, conv3 (600) would not -> the run stops there
    assert sensitivity.select_gene_layers(SCORES, FIVE, 400, mode="output") == [3]
    # budget 900: output end fc1 + conv3 = 850; input end conv1 + conv2 = 400 (conv3 would make 1000)
    assert sensitivity.select_gene_layers(SCORES, FIVE, 900, mode="output") == [2, 3]
    assert sensitivity.select_gene_layers(SCORES, FIVE, 900, mode="input") == [0, 1]
    # the end layer itself too large: the run starts at the first layer from that end that fits
    assert sensitivity.select_gene_layers(SCORES, FIVE, 200, mode="input") == [0]
    assert sensitivity.select_gene_layers(SCORES, [FIVE[0], FIVE[1], FIVE[4]], 200, mode="output") == [0]


def test_budget_never_exceeded_random_property():
    gen = torch.Generator().manual_seed(0)
    for trial in range(300):
        n = int(torch.randint(2, 9, (1,), generator=gen))
        sizes = (torch.randint(1, 100, (n,), generator=gen) * 4).tolist()
        layers = [layer(f"l{i}", s) for i, s in enumerate(sizes)]
        scores = torch.rand(n, generator=gen).tolist()
        budget = int(torch.randint(4, 400, (1,), generator=gen))
        for mode in sensitivity.SELECTIONS:
            try:
                chosen = sensitivity.select_gene_layers(scores, layers, budget, mode=mode, generator=gen)
            except ConfigError:
                assert min(sizes[:-1]) > budget
                continue
            assert chosen and sum(sizes[i] for i in chosen) <= budget and n - 1 not in chosen
            if mode == "window":
                assert chosen == list(range(chosen[0], chosen[-1] + 1))


def test_budget_too_small_is_a_config_error_naming_the_layer():
    with pytest.raises(ConfigError, match="'conv1', 100 bytes"):
        sensitivity.select_gene_layers(SCORES, FIVE, 99)


def test_taylor_importance_hand_computed_on_linear_model():
    model = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0], [0.0, -1.0]]))
    x, y = torch.tensor([[1.0, 1.0]]), torch.tensor([0])
    # logits (3, -1); softmax p = (e^4/(e^4+1), 1/(e^4+1)); dL/dW = (p - onehot) x^T
    p1 = 1 / (math.exp(4) + 1)
    grad = torch.tensor([[-p1, -p1], [p1, p1]])
    expected = float((model.weight.detach() * grad).abs().sum()) / 4
    layers = [Layer("", ("weight",), ("weight",), 4, 16)]
    assert sensitivity.taylor_importance(model, x, y, layers) == [pytest.approx(expected, rel=1e-5)]  # float32


def test_weighted_mean_scores():
    assert sensitivity.weighted_mean_scores([[1.0, 0.0], [0.0, 1.0]], [3, 1]) == pytest.approx([0.75, 0.25])
