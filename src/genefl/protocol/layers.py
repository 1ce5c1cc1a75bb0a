"""Layers: the unit a learnGene is made of.

A *layer* is one parameterised module: its weight and bias and, for BatchNorm, its running
statistics. Every model exposes its ordered list of layers (forward order), and everything that
selects, sends or weights "layers" (sensitivity, condensation, FedLP, the byte budget) works on
this list, never on module objects.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Layer:
    name: str  # module name, e.g. "features.0"
    keys: tuple[str, ...]  # its state_dict keys, parameters first, then buffers
    param_keys: tuple[str, ...]  # the trainable subset of `keys`
    numel: int  # number of trainable parameters
    nbytes: int  # bytes of all its state_dict tensors (parameters and buffers)


def model_layers(model: nn.Module) -> list[Layer]:
    """The ordered list of parameterised modules of `model` (forward order = registration order)."""
    state = model.state_dict()
    layers = []
    for name, module in model.named_modules():
        own_params = [n for n, _ in module.named_parameters(recurse=False)]
        if not own_params:
            continue
        own_buffers = [n for n, b in module.named_buffers(recurse=False) if b is not None]
        prefix = f"{name}." if name else ""
        param_keys = tuple(prefix + n for n in own_params)
        keys = param_keys + tuple(prefix + n for n in own_buffers if prefix + n in state)
        layers.append(
            Layer(
                name=name,
                keys=keys,
                param_keys=param_keys,
                numel=sum(state[k].numel() for k in param_keys),
                nbytes=sum(state[k].numel() * state[k].element_size() for k in keys),
            )
        )
    return layers


def model_nbytes(layers: list[Layer]) -> int:
    return sum(layer.nbytes for layer in layers)


def layer_tensors(state: dict[str, torch.Tensor], layers: list[Layer]) -> dict[str, torch.Tensor]:
    """The partial state dict holding exactly the given layers."""
    return {key: state[key] for layer in layers for key in layer.keys}
