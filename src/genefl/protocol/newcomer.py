"""Newcomer fine-tuning: the protocol every method's newcomer follows after its initialisation.

A newcomer starts from what the server sent (a global model, a cluster model, a learnGene of a few
layers, or nothing) with every other layer freshly initialised, then fine-tunes on its own data and
is tested after every epoch. The protocol is the same for every method and start, so differences
between starts are differences between the starts:

- its own optimiser settings (`newcomer_lr`, `newcomer_momentum`, `newcomer_schedule`), not the
  training clients' local-SGD ones: at the training lr a newcomer's test accuracy swung by several
  points from one epoch to the next, which hid the differences between starts;
- a validation split (`newcomer_val_fraction` of its training data, never its test split) that
  names the epoch a newcomer would keep (`chosen_epoch`); training uses the rest;
- protection of inherited layers when some layers are fresh (the Learngene practice): frozen for the
  first `newcomer_freeze_epochs` epochs and/or trained at `newcomer_inherited_lr` times the lr.
  A start that sends the whole model (FedAvg's global model) has nothing fresh, so nothing is
  protected. Frozen layers still update BatchNorm running statistics in train mode.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from .. import rng
from ..config import Config
from ..data.datasets import ClientData
from .training import accuracy, batches


@dataclass(frozen=True)
class FinetuneSettings:
    epochs: int
    batch_size: int
    lr: float
    momentum: float
    weight_decay: float
    schedule: str  # "constant" | "cosine"
    val_fraction: float
    freeze_epochs: int
    inherited_lr: float  # multiplier of lr for inherited layers

    @classmethod
    def from_config(cls, c: Config) -> "FinetuneSettings":
        return cls(c.newcomer_epochs, c.batch_size, c.newcomer_lr or c.lr, c.newcomer_momentum, c.weight_decay,
                   c.newcomer_schedule, c.newcomer_val_fraction, c.newcomer_freeze_epochs, c.newcomer_inherited_lr)


@dataclass
class NewcomerCurve:
    test: list[float]  # test accuracy before fine-tuning, then after each epoch
    val: list[float] = field(default_factory=list)  # validation accuracy after each epoch (empty: no split)
    backdoor: float | None = None  # a backdoor attack's success on the model it ends with (backdoor runs only)

    @property
    def chosen_epoch(self) -> int:
        """The epoch (1-based) with the best validation accuracy, earliest on ties; the last without
        a validation split (or with an empty one)."""
        finite = [(a, -e) for e, a in enumerate(self.val, 1) if not math.isnan(a)]
        return -max(finite)[1] if finite else len(self.test) - 1

    @property
    def chosen_test(self) -> float:
        return self.test[self.chosen_epoch]


def validation_split(n: int, fraction: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, validation indices) of n samples; at least one of each when n >= 2."""
    if fraction <= 0 or n < 2:
        return torch.arange(n), torch.arange(0)
    order = torch.randperm(n, generator=generator)
    k = min(max(int(round(fraction * n)), 1), n - 1)
    return order[k:].sort().values, order[:k].sort().values


def lr_factor(schedule: str, step: int, total: int) -> float:
    if schedule == "cosine" and total > 0:
        return 0.5 * (1 + math.cos(math.pi * step / total))
    return 1.0


def finetune(model: nn.Module, data: ClientData, inherited: set[str], s: FinetuneSettings,
             generator: torch.Generator, split_generator: torch.Generator) -> NewcomerCurve:
    """Fine-tune `model` in place on `data`'s training split; `inherited` names the state-dict keys
    that came from the server. Returns the test (and validation) accuracy curve."""
    train_idx, val_idx = validation_split(data.num_train, s.val_fraction, split_generator)
    train_idx, val_idx = train_idx.to(data.y_train.device), val_idx.to(data.y_train.device)
    x, y = data.x_train[train_idx], data.y_train[train_idx]
    x_val, y_val = data.x_train[val_idx], data.y_train[val_idx]
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    has_fresh = any(n not in inherited for n, _ in named)
    old = [p for n, p in named if n in inherited and has_fresh]
    new = [p for n, p in named if not (n in inherited and has_fresh)]
    groups = [{"params": new, "scale": 1.0, "inherited": False}]
    if old:
        groups.append({"params": old, "scale": s.inherited_lr, "inherited": True})
    optimizer = torch.optim.SGD(groups, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay, foreach=True)
    loss_fn = nn.CrossEntropyLoss()
    curve = NewcomerCurve([accuracy(model, data.x_test, data.y_test)])
    per_epoch = len(batches(len(y), s.batch_size, torch.Generator(), "cpu"))
    step, total = 0, per_epoch * s.epochs
    for epoch in range(s.epochs):
        model.train()
        frozen = epoch < s.freeze_epochs
        for batch in batches(len(y), s.batch_size, generator, y.device):
            factor = lr_factor(s.schedule, step, total)
            for group in optimizer.param_groups:
                group["lr"] = 0.0 if (frozen and group["inherited"]) else s.lr * factor * group["scale"]
            optimizer.zero_grad(set_to_none=False)
            loss_fn(model(x[batch]), y[batch]).backward()
            optimizer.step()
            step += 1
        curve.test.append(accuracy(model, data.x_test, data.y_test))
        if len(y_val):
            curve.val.append(accuracy(model, x_val, y_val))
    return curve


def newcomer_split_generator(seed: int, cid: int) -> torch.Generator:
    """The validation split of a newcomer depends on it alone, never on the start or the method."""
    return rng.generator(seed, "newcomer-val", cid)
