"""FedLP (Zhu et al., ICC 2023), layer-wise pruning: after local training each client uploads each
layer independently with probability `p`; the server averages every layer over the clients that
sent it (a layer nobody sent keeps its value). Downloads are the full global model. The draw is
seeded per client and round, so both runtimes upload the same layers."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..protocol.layers import layer_tensors
from ..protocol.messages import Broadcast, ClientUpdate
from ..options import Options, fraction, option
from ..protocol.training import snapshot, train
from .base import ClientEnv
from .fedavg import FedAvg, FedAvgClient


@dataclass(frozen=True)
class FedLPOptions(Options):
    section = "fedlp"

    p: float = option(0.5, fraction(), "probability that a client uploads a given layer")


class FedLP(FedAvg):
    options = FedLPOptions


class FedLPClient(FedAvgClient):
    def train(self, env: ClientEnv, broadcast: Broadcast) -> ClientUpdate:
        self.prepare(env, broadcast)
        train(env.model, env.data.x_train, env.data.y_train, env.settings(), env.generator("train"))
        keep = torch.rand(len(env.layers), generator=env.generator("fedlp")) < env.config.fedlp.p
        chosen = [layer for layer, k in zip(env.layers, keep.tolist()) if k]
        return ClientUpdate(tensors=layer_tensors(snapshot(env.model), chosen), meta={"num_samples": env.data.num_train})
