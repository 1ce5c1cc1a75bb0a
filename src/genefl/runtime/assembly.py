"""The one place where a run is assembled from its config: model spec -> global model -> ordered
layers -> the method's server half (with the initial weights) and client half.

The simulator, both Flower apps and the newcomer study build through `assemble`, so a run is the
same run whichever runtime drives it, and a custom model (`model = "pkg.mod:factory"`) or method
(`method = "pkg.mod:NAME"` or `algorithms.register`) works in all of them at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..protocol import adversary, robust
from ..algorithms import get as get_method
from ..algorithms.base import ClientAlgorithm, Strategy
from ..config import Config
from ..protocol.layers import Layer, model_layers, model_nbytes
from ..protocol.models import ModelSpec, check_model, default_model


def model_spec(config: Config, input_shape: tuple[int, int, int], num_classes: int) -> ModelSpec:
    """The config's model (`auto`: the dataset's default) for this input shape and class count."""
    name = default_model(config.dataset) if config.model == "auto" else config.model
    return ModelSpec(name, input_shape, num_classes)


@dataclass
class Assembly:
    config: Config
    spec: ModelSpec
    model: nn.Module  # the global model, built from the run's seed, on config.device
    layers: list[Layer]  # its parameterised layers in forward order, with byte sizes
    strategy_cls: type[Strategy]
    client_cls: type[ClientAlgorithm]

    @property
    def model_bytes(self) -> int:
        return model_nbytes(self.layers)

    def initial_weights(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def strategy(self) -> Strategy:
        """The server half, holding the initial weights."""
        return self.strategy_cls(self.config, self.layers, self.initial_weights())

    def client(self) -> ClientAlgorithm:
        return self.client_cls()


def assemble(config: Config, input_shape: tuple[int, int, int], num_classes: int) -> Assembly:
    strategy_cls, client_cls = get_method(config.method)  # an unknown method fails before any model is built
    robust.check_method(strategy_cls, config)  # an own method ("pkg.mod:NAME") is checked here, once imported
    adversary.check_method(strategy_cls, config)
    if ":" in config.adversary.kind:  # so does an attack hook that cannot be imported
        adversary.hook(config.adversary.kind)
    spec = model_spec(config, input_shape, num_classes)
    model = spec.build(config.seed, "global").to(config.device)
    check_model(model, spec.name, spec.input_shape, num_classes)
    return Assembly(config, spec, model, model_layers(model), strategy_cls, client_cls)
