import torch
from torch import nn

from genefl.algorithms.genefl import fisher
from genefl.protocol.layers import Layer, model_layers


def brute_force_fisher(model, x, y):
    model.eval()
    total = {k: torch.zeros_like(p) for k, p in model.named_parameters()}
    for xi, yi in zip(x, y):
        model.zero_grad()
        torch.log_softmax(model(xi[None]), dim=-1)[0, yi].backward()
        for k, p in model.named_parameters():
            total[k] += p.grad**2
    return {k: v / len(y) for k, v in total.items()}


def assert_close(a, b):
    for k in b:
        assert torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-9), k


def test_fisher_equals_per_sample_loop_mlp():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).double()
    x, y = torch.randn(17, 6, dtype=torch.float64), torch.randint(0, 3, (17,))
    assert_close(fisher.diagonal_fisher(model, x, y, max_samples=100, chunk_size=5), brute_force_fisher(model, x, y))


def test_fisher_equals_per_sample_loop_cnn_with_batchnorm():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 4)).double()
    model.train()
    model(torch.randn(8, 1, 6, 6, dtype=torch.float64))  # give BatchNorm non-trivial running stats
    x, y = torch.randn(9, 1, 6, 6, dtype=torch.float64), torch.randint(0, 4, (9,))
    expected = brute_force_fisher(model, x, y)
    for per_sample in ("vmap", "loop"):  # the loop is what big models (ResNet-18) take
        model.train()
        got = fisher.diagonal_fisher(model, x, y, max_samples=100, per_sample=per_sample)
        assert model.training  # mode restored
        assert_close(got, expected)


def test_subsampling_is_seeded():
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    x, y = torch.randn(50, 4), torch.randint(0, 2, (50,))
    a = fisher.diagonal_fisher(model, x, y, 10, torch.Generator().manual_seed(3))
    b = fisher.diagonal_fisher(model, x, y, 10, torch.Generator().manual_seed(3))
    full = fisher.diagonal_fisher(model, x, y, 50)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.allclose(a["weight"], full["weight"])


def test_elastic_mask_takes_top_fraction_per_layer():
    layers = [Layer("a", ("a.w", "a.b"), ("a.w", "a.b"), 5, 20), Layer("b", ("b.w",), ("b.w",), 3, 12)]
    f = {"a.w": torch.tensor([[0.1, 5.0], [0.3, 0.2]]), "a.b": torch.tensor([4.0]), "b.w": torch.tensor([1.0, 3.0, 2.0])}
    mask = fisher.elastic_mask(f, layers, top=0.4)  # ceil(0.4*5) = 2 of layer a, ceil(0.4*3) = 2 of layer b
    assert torch.equal(mask["a.w"], torch.tensor([[0.0, 1.0], [0.0, 0.0]]))
    assert torch.equal(mask["a.b"], torch.tensor([1.0]))
    assert torch.equal(mask["b.w"], torch.tensor([0.0, 1.0, 1.0]))


def test_normalised_fisher_divides_by_mean_over_masked_entries():
    f = {"w": torch.tensor([1.0, 3.0, 8.0])}
    m = {"w": torch.tensor([0.0, 1.0, 1.0])}
    assert torch.allclose(fisher.normalised_fisher(f, m)["w"], torch.tensor([1.0, 3.0, 8.0]) / 5.5)


def test_model_layers_are_in_forward_order_with_bytes():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    layers = model_layers(model)
    assert [l.name for l in layers] == ["0", "1", "2"]
    assert layers[0].numel == 16 and layers[0].nbytes == 64
    assert layers[1].keys == ("1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked")
    assert layers[1].nbytes == 4 * 4 * 4 + 8


def test_batch_estimator_is_the_mean_squared_minibatch_gradient():
    from genefl.algorithms.genefl.fisher import batch_fisher

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    x, y = torch.randn(10, 3), torch.randint(0, 2, (10,))
    got = batch_fisher(model, x, y, max_samples=10, batch_size=4)
    want = {k: torch.zeros_like(p) for k, p in model.named_parameters()}
    for start in (0, 4, 8):  # batches of 4, 4, 2
        model.zero_grad()
        (-torch.nn.functional.cross_entropy(model(x[start:start + 4]), y[start:start + 4])).backward()
        for k, p in model.named_parameters():
            want[k] += p.grad ** 2 / 3
    assert all(torch.allclose(got[k], want[k], atol=1e-7) for k in want)
