"""FedAvg (McMahan et al., AISTATS 2017): sample-weighted mean of full local models, then the
server optimizer's step (`[server_opt]`, `genefl.protocol.server_opt`; "none", the default, keeps the mean).

Choices: every client evaluates the current global model on its own test split; a newcomer starts
from the current global model (its whole size counts as init bytes), or from random weights.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..protocol.messages import Broadcast
from ..protocol.server_opt import Moments
from ..protocol.training import load_into, train
from .base import ClientAlgorithm, ClientEnv, Strategy, Updates, full_model_update, sample_weighted_mean


@dataclass(frozen=True)
class GlobalState:
    weights: dict[str, torch.Tensor]
    moments: Moments  # the server optimizer's state


class FedAvg(Strategy):
    takes_server_opt = True
    takes_defence = True

    def init(self) -> GlobalState:
        return GlobalState(weights=dict(self.initial), moments=Moments())

    def configure_train(self, state: GlobalState, round: int, cid: int) -> Broadcast:
        return Broadcast(tensors=state.weights)

    def aggregate(self, state: GlobalState, round: int, updates: Updates) -> GlobalState:
        mean, reported = sample_weighted_mean(state.weights, updates, self.combiner(state, round))
        if not reported:
            return state
        weights, moments = self.optimizer.step(state.weights, mean, state.moments, round)
        return replace(state, weights=weights, moments=moments)

    def weights(self, state: GlobalState) -> dict[str, torch.Tensor]:
        return dict(state.weights)

    def welcome(self, state, round, cid, hello):
        if self.config.newcomer_init == "random":
            return state, Broadcast(meta={"init": "random"})
        return state, Broadcast(tensors=state.weights, meta={"init": "global"})


class FedAvgClient(ClientAlgorithm):
    def prepare(self, env: ClientEnv, broadcast: Broadcast) -> None:
        load_into(env.model, broadcast.tensors)

    def train(self, env: ClientEnv, broadcast: Broadcast):
        self.prepare(env, broadcast)
        train(env.model, env.data.x_train, env.data.y_train, env.settings(), env.generator("train"))
        return full_model_update(env)
