"""The one local training loop, and evaluation.

Algorithms differ only by what they add to the gradient. All the methods here add a term of the
same shape to every trainable parameter p:

    grad_p += coef_p * (p - anchor_p) + offset_p

FedProx: coef = mu (the gradient of (mu/2)||θ - θ_global||²). GENE-FL: coef = λ_s ξ_l + λ_e M F̃
(its smoothing and Fisher-masked quadratic terms). SCAFFOLD: offset = c - c_i (the gradient of
⟨c - c_i, θ⟩). Folding the term into the gradient with fused `_foreach` kernels costs two
elementwise passes over the parameters per step instead of a Python loop over tensors with autograd.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class GradientCorrection:
    """grad_p += coef_p * (p - anchor_p) + offset_p, for the model's trainable parameters in order."""

    anchor: list[torch.Tensor] | None = None  # same order as model.parameters()
    coef: list[torch.Tensor] | float = 0.0  # per-parameter tensors, or one scalar for all
    offset: list[torch.Tensor] | None = None

    def apply(self, params: list[torch.Tensor]) -> None:
        grads = [p.grad for p in params]
        if isinstance(self.coef, list) and not all(isinstance(c, torch.Tensor) for c in self.coef):
            # the fused kernel takes one kind: expand scalar entries once, then reuse
            self.coef = [c if isinstance(c, torch.Tensor) else torch.full_like(p, c) for c, p in zip(self.coef, params)]
        if self.anchor is not None:
            diff = torch._foreach_sub([p.detach() for p in params], self.anchor)
            if isinstance(self.coef, list):
                torch._foreach_mul_(diff, self.coef)
            else:
                torch._foreach_mul_(diff, float(self.coef))
            torch._foreach_add_(grads, diff)
        if self.offset is not None:
            torch._foreach_add_(grads, self.offset)


@dataclass(frozen=True)
class TrainSettings:
    epochs: int
    batch_size: int
    lr: float
    momentum: float = 0.0
    weight_decay: float = 0.0


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: TrainSettings,
          generator: torch.Generator, correction: GradientCorrection | None = None) -> int:
    """SGD on (x, y) for `settings.epochs` epochs of shuffled mini-batches; returns the step count."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=settings.lr, momentum=settings.momentum,
                                weight_decay=settings.weight_decay, foreach=True)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    steps = 0
    for _ in range(settings.epochs):
        for batch in batches(len(y), settings.batch_size, generator, y.device):
            optimizer.zero_grad(set_to_none=False)
            loss_fn(model(x[batch]), y[batch]).backward()
            if correction is not None:
                correction.apply(params)
            optimizer.step()
            steps += 1
    return steps


def batches(n: int, batch_size: int, generator: torch.Generator, device) -> list[torch.Tensor]:
    """One epoch's shuffled mini-batches of indices into n samples. A 1-sample last batch is
    dropped (it breaks BatchNorm and adds only noise), unless the data is a single sample."""
    order = torch.randperm(n, generator=generator).to(device)
    cut = [order[start : start + batch_size] for start in range(0, n, batch_size)]
    return [b for b in cut if len(b) >= 2 or n < 2]


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Fraction of correct predictions, in batches, in eval mode."""
    if len(y) == 0:
        return float("nan")
    return int((predictions(model, x, batch_size) == y).sum()) / len(y)


@torch.no_grad()
def predictions(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """The predicted labels, in batches, in eval mode."""
    model.eval()
    return torch.cat([model(x[start : start + batch_size]).argmax(1) for start in range(0, len(x), batch_size)]) \
        if len(x) else torch.empty(0, dtype=torch.long, device=x.device)


def load_into(model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy a (partial) state dict into `model` in place: the one model object is reused by every
    client, so nothing is reallocated."""
    state = model.state_dict()
    with torch.no_grad():
        for name, value in tensors.items():
            state[name].copy_(value)


def snapshot(model: nn.Module, keys: list[str] | None = None) -> dict[str, torch.Tensor]:
    """Detached copies of (some of) the model's state dict entries."""
    state = model.state_dict()
    return {k: state[k].detach().clone() for k in (keys if keys is not None else state)}
