"""FedPer (Arivazhagan et al., 2019, "Federated Learning with Personalization Layers"): FedAvg over
the base layers only; every client keeps its own personalisation layer, the head. The canonical
personalisation baseline, beside `local`: what a personal head alone gives, against which GENE-FL's
training-client accuracy can be read.

Choices: the head is the model's last parameterised layer (the one `genefl.gene_include_head`
names); a client's first contact gets the whole initial model, later rounds the averaged base; it
evaluates its own model (shared base, own head); a newcomer is sent the current base and learns its
head afresh (or starts at random with `newcomer_init = "random"`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..protocol.layers import layer_tensors
from ..protocol.messages import Broadcast, ClientUpdate
from .base import ClientEnv, PersonalModelClient, Strategy, Updates, sample_weighted_mean


@dataclass(frozen=True)
class SharedBase:
    base: dict[str, torch.Tensor]  # every layer but the head
    contacted: frozenset[int]


class FedPer(Strategy):
    takes_defence = True

    def init(self) -> SharedBase:
        return SharedBase(layer_tensors(self.initial, self.layers[:-1]), frozenset())

    def configure_train(self, state: SharedBase, round: int, cid: int) -> Broadcast:
        return self.first_contact(state.contacted, cid) or Broadcast(tensors=state.base)

    def configure_absent(self, state: SharedBase, cid: int) -> Broadcast | None:
        return Broadcast() if cid in state.contacted else None  # its own model, as it stands

    def aggregate(self, state: SharedBase, round: int, updates: Updates) -> SharedBase:
        base, reported = sample_weighted_mean(state.base, updates, self.combiner(state, round))
        return replace(state, base=base, contacted=state.contacted | reported)

    def weights(self, state: SharedBase) -> dict[str, torch.Tensor]:
        return dict(state.base)

    def welcome(self, state: SharedBase, round: int, cid: int, hello):
        state = replace(state, contacted=state.contacted | {cid})
        if self.config.newcomer_init == "random":
            return state, Broadcast(meta={"init": "random"})
        return state, Broadcast(tensors=state.base, meta={"init": "base"})


class FedPerClient(PersonalModelClient):
    def train(self, env: ClientEnv, broadcast: Broadcast) -> ClientUpdate:
        model = self.train_own_model(env, broadcast)
        return ClientUpdate(tensors=layer_tensors(model, env.layers[:-1]),
                            meta={"num_samples": env.data.num_train})
