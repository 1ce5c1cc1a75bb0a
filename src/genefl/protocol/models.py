"""The models: multinomial logistic regression (FedProx's model for Synthetic), an MLP; for image inputs a small global-average-pooled CNN, LeNet-5, the CNN of
McMahan et al. (2017), a small ResNet-8; and a CIFAR-style ResNet-18.

Every model is a plain `nn.Module` whose parameterised modules are registered in forward order, so
`layers.model_layers(model)` lists its layers in the order data flows through them; the last one is
the classifier head. That order matters: GENE-FL's default learnGene is a contiguous window of
layers, and a "window" is only meaningful in forward order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError
from ..own_code import import_named
from ..rng import seeded_global_rng

MODELS = ("logreg", "mlp", "cnn", "lenet5", "fedavg_cnn", "resnet8", "resnet18")


class LogReg(nn.Module):
    """Multinomial logistic regression: one linear layer on the flattened input, as FedProx trains on
    Synthetic(α, β). Its only layer is the head, so methods that share body layers (genefl,
    flearngene, fedper) refuse it (config.py)."""

    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.flatten = nn.Flatten()
        self.head = nn.Linear(in_features, num_classes)

    def forward(self, x):
        return self.head(self.flatten(x))


class MLP(nn.Module):
    def __init__(self, in_features: int, num_classes: int, hidden: tuple[int, ...] = (200, 200, 100)):
        super().__init__()
        sizes = (in_features, *hidden)
        blocks: list[nn.Module] = [nn.Flatten()]
        for a, b in zip(sizes[:-1], sizes[1:]):
            blocks += [nn.Linear(a, b), nn.ReLU()]
        self.body = nn.Sequential(*blocks)
        self.head = nn.Linear(sizes[-1], num_classes)

    def forward(self, x):
        return self.head(self.body(x))


class CNN(nn.Module):
    """Three 3x3 conv layers, global average pooling, two linear layers (5 layers in all).

    Global average pooling makes the same weights fit 8x8 digits, 28x28 MNIST and 32x32 CIFAR, and
    keeps the model small enough to train many clients on two CPU cores.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 16):
        super().__init__()
        w = width
        self.conv1 = nn.Conv2d(in_channels, w, 3, padding=1)
        self.conv2 = nn.Conv2d(w, 2 * w, 3, padding=1)
        self.conv3 = nn.Conv2d(2 * w, 4 * w, 3, padding=1)
        self.fc1 = nn.Linear(4 * w, 4 * w)
        self.head = nn.Linear(4 * w, num_classes)
        self.act = nn.ReLU()
        self.pool = nn.MaxPool2d(2, ceil_mode=True)

    def forward(self, x):
        x = self.pool(self.act(self.conv1(x)))
        x = self.pool(self.act(self.conv2(x)))
        x = self.act(self.conv3(x)).mean(dim=(2, 3))  # (batch, 4w): global average pooling
        return self.head(self.act(self.fc1(x)))


def _flat_size(features: nn.Module, in_channels: int, size: tuple[int, int]) -> int:
    """Width of `features`' output for one (in_channels, height, width) input, found by running it."""
    with torch.no_grad():
        return features(torch.zeros(1, in_channels, *size)).flatten(1).shape[1]


class LeNet5(nn.Module):
    """LeNet-5 (LeCun et al., 1998) as FL papers use it: 5x5 convs with 6 and 16 channels, 2x2 max
    pooling, fully connected 120 and 84, then the head (61,706 parameters on 28x28 inputs). 28x28
    inputs are padded by 2 so the layer sizes are the classic 32x32 ones (each side towards 32)."""

    def __init__(self, in_channels: int, num_classes: int, size: tuple[int, int]):
        super().__init__()
        pad = tuple(max(0, (32 - side) // 2) for side in size)
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=pad)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.act = nn.ReLU()
        flat = _flat_size(lambda x: self.pool(self.act(self.conv2(self.pool(self.act(self.conv1(x)))))), in_channels, size)
        self.fc1 = nn.Linear(flat, 120)
        self.fc2 = nn.Linear(120, 84)
        self.head = nn.Linear(84, num_classes)

    def forward(self, x):
        x = self.pool(self.act(self.conv2(self.pool(self.act(self.conv1(x))))))
        return self.head(self.act(self.fc2(self.act(self.fc1(x.flatten(1))))))


class FedAvgCNN(nn.Module):
    """The CNN of McMahan et al. (AISTATS 2017, "CNN" for MNIST): two 5x5 convs with 32 and 64
    channels, each followed by 2x2 max pooling, a 512-unit fully connected layer, the head
    (1,663,370 parameters on 28x28 inputs)."""

    def __init__(self, in_channels: int, num_classes: int, size: tuple[int, int]):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        self.act = nn.ReLU()
        flat = _flat_size(lambda x: self.pool(self.act(self.conv2(self.pool(self.act(self.conv1(x)))))), in_channels, size)
        self.fc1 = nn.Linear(flat, 512)
        self.head = nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.pool(self.act(self.conv2(self.pool(self.act(self.conv1(x))))))
        return self.head(self.act(self.fc1(x.flatten(1))))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.act = nn.ReLU()

    def forward(self, x):
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for 32x32 inputs (3x3 stem, no max-pool), as in most CIFAR FL papers."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        stages, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
            cin = cout
        self.layers = nn.Sequential(*stages)
        self.act = nn.ReLU()
        self.head = nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.layers(self.act(self.bn1(self.conv1(x))))
        return self.head(x.mean(dim=(2, 3)))


class ResNet8(nn.Module):
    """A small ResNet for 28x28 / 32x32 inputs: a 3x3 stem with 16 channels, three stages of one
    basic block each (16, 32, 64 channels; stride 1, 2, 2), global average pooling, the head
    (77,754 parameters for one input channel)."""

    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layers = nn.Sequential(BasicBlock(16, 16, 1), BasicBlock(16, 32, 2), BasicBlock(32, 64, 2))
        self.act = nn.ReLU()
        self.head = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.layers(self.act(self.bn1(self.conv1(x))))
        return self.head(x.mean(dim=(2, 3)))


def kaiming_init(model: nn.Module) -> nn.Module:
    """He-normal weights and zero biases for conv and linear layers. PyTorch's default (uniform,
    a=sqrt(5)) left the global-average-pooled CNN near chance for several epochs of plain SGD on
    digits (0.10 -> 0.45 after 2 epochs); with He init it reached 0.88 (measured, lr 0.05)."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def user_factory(spec: str):
    """`model = "package.module:factory"`: your own model, any callable
    factory(input_shape, num_classes) -> nn.Module whose parameterised modules are registered in
    forward order (the last one being the classifier head)."""
    factory = import_named(spec, "model")
    if not callable(factory):
        raise ConfigError(f"model: {spec!r} is not callable")
    return factory


def build_model(name: str, input_shape: tuple[int, int, int], num_classes: int, seed: int, *tags: object) -> nn.Module:
    """A freshly initialised model; its weights are determined by (seed, tags)."""
    channels, height, width = input_shape
    if ":" in name:
        factory = user_factory(name)
        with seeded_global_rng(seed, "model-init", *tags):
            try:
                model = factory(tuple(input_shape), num_classes)
            except Exception as exc:  # the user's code: name it, in one line
                raise ConfigError(f"model: {name}(input_shape={tuple(input_shape)}, num_classes={num_classes}) failed "
                                  f"({_one_line(exc)}); is it a factory(input_shape, num_classes) -> nn.Module?") from None
        if not isinstance(model, nn.Module) or not any(True for _ in model.parameters()):
            raise ConfigError(f"model: {name!r} returned {type(model).__name__}, not an nn.Module with parameters")
        return model
    if name not in MODELS:
        raise ConfigError(f"model: {name!r} is not one of {', '.join(MODELS)}")
    with seeded_global_rng(seed, "model-init", *tags):
        if name == "logreg":  # zero init, as FedProx's: a convex model needs no symmetry breaking
            model = LogReg(channels * height * width, num_classes)
            nn.init.zeros_(model.head.weight)
            nn.init.zeros_(model.head.bias)
            return model
        if name == "mlp":
            return kaiming_init(MLP(channels * height * width, num_classes))
        if name == "cnn":
            return kaiming_init(CNN(channels, num_classes))
        if name == "lenet5":
            return kaiming_init(LeNet5(channels, num_classes, (height, width)))
        if name == "fedavg_cnn":
            return kaiming_init(FedAvgCNN(channels, num_classes, (height, width)))
        if name == "resnet8":
            return kaiming_init(ResNet8(channels, num_classes))
        return kaiming_init(ResNet18(channels, num_classes))


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:200] if lines else ''}"


def check_model(model: nn.Module, name: str, input_shape: tuple[int, int, int], num_classes: int) -> None:
    """What every method relies on, checked once when a run is assembled, so that a model that does
    not fit is one line naming what is wrong instead of a failure rounds later: float32 parameters,
    none lazy, at least one trainable, none owned by the model itself beside its layers (its layers,
    in forward order, are its parameterised submodules), and one (1, num_classes) float32 output for
    one zero input of the dataset's shape."""
    params = list(model.named_parameters())
    lazy = [n for n, p in params if nn.parameter.is_lazy(p)]
    if lazy:
        raise ConfigError(f"model: {name!r} has lazy (uninitialised) parameters, e.g. {lazy[0]!r}; give every layer its sizes")
    if not any(p.requires_grad for _, p in params):
        raise ConfigError(f"model: {name!r} has no trainable parameters")
    other = [(n, p.dtype) for n, p in params if p.dtype != torch.float32]
    if other:
        raise ConfigError(f"model: {name!r} has {other[0][1]} parameters (e.g. {other[0][0]!r}); genefl trains float32 models")
    own = [n for n, _ in model.named_parameters(recurse=False)]
    if own and len(own) < len(params):
        raise ConfigError(f"model: {name!r} holds parameter {own[0]!r} itself, beside its layers; genefl's layers are the "
                          "parameterised submodules in forward order, so put it in a submodule")
    device = params[0][1].device
    was_training = model.training
    model.eval()  # one input: BatchNorm in training mode would refuse a batch of one
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, *input_shape, device=device))
    except Exception as exc:
        raise ConfigError(f"model: {name!r} fails on one input of shape {tuple(input_shape)} ({_one_line(exc)})") from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor):
        raise ConfigError(f"model: {name!r} returns {type(out).__name__}, expected a tensor of class scores")
    if tuple(out.shape) != (1, num_classes):
        raise ConfigError(f"model: {name!r} returns shape {tuple(out.shape)} for one input, expected (1, {num_classes}): "
                          f"one score per class")
    if out.dtype != torch.float32:
        raise ConfigError(f"model: {name!r} returns {out.dtype} scores, expected float32")


def default_model(dataset: str) -> str:
    """`model = "auto"`: the MLP for the 8x8 digits (the CNN reached 0.81 there in 20 FedAvg
    rounds, the MLP 0.97) and for Synthetic's 60 features (FedProx's logistic regression, `logreg`,
    is one layer, and GENE-FL's learnGene needs a body layer), the CNN for MNIST-like 28x28 data,
    ResNet-18 for CIFAR."""
    if dataset in ("digits", "synthetic"):
        return "mlp"
    return "resnet18" if dataset.startswith("cifar") else "cnn"


@dataclass(frozen=True)
class ModelSpec:
    """What both halves know about the model: enough to build a fresh, seeded copy."""

    name: str
    input_shape: tuple[int, int, int]
    num_classes: int

    def build(self, seed: int, *tags: object) -> nn.Module:
        return build_model(self.name, self.input_shape, self.num_classes, seed, *tags)
