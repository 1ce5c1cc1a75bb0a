"""FedProx (Li et al., MLSys 2020): FedAvg plus a proximal term (mu/2)||θ − θ_global||² in every
client's local objective. Here the term is folded into the gradient (grad += mu (θ − θ_global));
the server half is FedAvg's unchanged. Clients do a fixed number of epochs (no inexact solutions)."""

from __future__ import annotations

from dataclasses import dataclass

from ..protocol.messages import Broadcast, ClientUpdate
from ..protocol.training import GradientCorrection, train
from .base import ClientEnv, full_model_update
from ..options import Options, option, weight
from .fedavg import FedAvg, FedAvgClient


@dataclass(frozen=True)
class FedProxOptions(Options):
    section = "fedprox"

    mu: float = option(0.01, weight(), "weight μ of the proximal term (μ/2)‖θ − θ_global‖²")


class FedProx(FedAvg):
    options = FedProxOptions


class FedProxClient(FedAvgClient):
    def train(self, env: ClientEnv, broadcast: Broadcast) -> ClientUpdate:
        self.prepare(env, broadcast)
        anchor = [broadcast.tensors[n].to(p.device) for n, p in env.model.named_parameters()]
        correction = GradientCorrection(anchor=anchor, coef=env.config.fedprox.mu)
        train(env.model, env.data.x_train, env.data.y_train, env.settings(), env.generator("train"), correction)
        return full_model_update(env)
