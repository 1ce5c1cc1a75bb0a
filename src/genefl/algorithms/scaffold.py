"""SCAFFOLD (Karimireddy et al., ICML 2020) with control variates, option II.

Local steps use the corrected gradient g + c − c_i, obtained by adding ⟨c − c_i, θ⟩ to the loss
(here: the offset of the training loop's gradient correction). After K steps of size η a client
updates c_i⁺ = c_i − c + (x − y)/(K η) and uploads its model y and Δc = c_i⁺ − c_i; the server moves
x ← x + η_g (ȳ − x) and c ← c + (|S|/N) mean(Δc), N the number of clients in the federation: the
training clients plus every newcomer welcomed so far, less those that left for good (a newcomer joins
with c_i = 0; counting only the training clients let |S|/N exceed 1 once newcomers took part, and c
overshot). Both control variates travel with the model, so a
round costs twice FedAvg's bytes; the ledger counts them. Choices: ȳ is sample-weighted like
FedAvg's mean (the paper uses a plain mean); buffers (BatchNorm statistics) are averaged without
control variates; a newcomer starts from x with c_i = 0. The server step x + η_g (ȳ − x) is the
server optimizer "sgd" (`genefl.protocol.server_opt`); with `server_opt.name` set, that optimizer steps x instead
(and `server_opt.lr` replaces η_g). c is always updated as above.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..errors import ConfigError
from ..protocol.messages import Broadcast, ClientUpdate
from ..options import Options, check, option
from ..protocol.robust import Combiner
from ..protocol.server_opt import Moments, ServerOptimizer
from ..protocol.training import GradientCorrection, snapshot, train
from .base import ClientEnv, Updates
from .fedavg import FedAvg, FedAvgClient

PREFIX = "c/"  # extras key prefix: "c/<param>" server variate, "delta_c/<param>" its update


@dataclass(frozen=True)
class ScaffoldState:
    weights: dict[str, torch.Tensor]
    control: dict[str, torch.Tensor]  # c, per trainable parameter
    population: int  # N: training clients plus the newcomers welcomed so far, less those that left
    moments: Moments  # the server optimizer's state


@dataclass(frozen=True)
class ScaffoldOptions(Options):
    section = "scaffold"

    server_lr: float = option(1.0, check(lambda v: 0 < v <= 10, "must be in (0, 10]"),
                              "global step size η_g on the averaged model change (with `server_opt.name` unset)")


class Scaffold(FedAvg):
    options = ScaffoldOptions

    @classmethod
    def server_optimizer(cls, config) -> ServerOptimizer:
        chosen = super().server_optimizer(config)
        if chosen.name == "none":
            return ServerOptimizer("sgd", lr=config.scaffold.server_lr)
        if config.scaffold.server_lr != 1.0:
            raise ConfigError("scaffold.server_lr: not used with server_opt.name set (server_opt.lr is the step size then)")
        return chosen

    def param_names(self) -> list[str]:
        return [k for layer in self.layers for k in layer.param_keys]

    def init(self) -> ScaffoldState:
        return ScaffoldState(dict(self.initial), {k: torch.zeros_like(self.initial[k]) for k in self.param_names()},
                             self.config.num_clients, Moments())

    def configure_train(self, state: ScaffoldState, round: int, cid: int) -> Broadcast:
        return Broadcast(tensors=state.weights, extras={PREFIX + k: v for k, v in state.control.items()})

    def configure_evaluate(self, state: ScaffoldState, cid: int) -> Broadcast:
        return Broadcast(tensors=state.weights)

    def aggregate(self, state: ScaffoldState, round: int, updates: Updates) -> ScaffoldState:
        # Δc goes through the same aggregator as the models, without the norm bound (it is no model change)
        models, count = self.combiner(state, round), 0
        deltas = Combiner(replace(self.config.defence, norm_bound=0.0), self.notes, f"round {round}, delta_c",
                          lambda cid: {}, self.left_out, self.config.seed, f"round {round}")
        for cid, update in updates:
            if cid in self.left_out:  # its Δc is left out with its model (|S| counts the clients aggregated)
                continue
            models.add(cid, update.tensors, update.meta["num_samples"])
            deltas.add(cid, {k[len("delta_" + PREFIX):]: v for k, v in update.extras.items()}, 1.0)
            count += 1
        if not count:
            return state
        weights, moments = self.optimizer.step(state.weights, models.result(state.weights), state.moments, round)
        mean_dc = deltas.result({k: torch.zeros_like(v) for k, v in state.control.items()})
        share = count / state.population  # |S| / N
        control = {k: c + share * mean_dc[k] for k, c in state.control.items()}
        return replace(state, weights=weights, control=control, moments=moments)

    def welcome(self, state: ScaffoldState, round: int, cid: int, hello):
        return super().welcome(replace(state, population=state.population + 1), round, cid, hello)

    def depart(self, state: ScaffoldState, round: int, cid: int) -> ScaffoldState:
        # N counts the members, so |S|/N stays the share of them that took part; c keeps what the
        # departed client added to it (the server never knew its c_i, so cannot take it out)
        return replace(state, population=max(1, state.population - 1))

    def expected_extras(self) -> dict[str, torch.Tensor]:
        return {"delta_" + PREFIX + k: self.initial[k] for k in self.param_names()}


class ScaffoldClient(FedAvgClient):
    def train(self, env: ClientEnv, broadcast: Broadcast) -> ClientUpdate:
        self.prepare(env, broadcast)
        names = [n for n, _ in env.model.named_parameters()]
        c = [broadcast.extras[PREFIX + n] for n in names]
        c_i = [env.store.get("c_i", {}).get(n, torch.zeros_like(x)) for n, x in zip(names, c)]
        offset = torch._foreach_sub(c, c_i)  # c − c_i
        steps = train(env.model, env.data.x_train, env.data.y_train, env.settings(), env.generator("train"),
                      GradientCorrection(offset=offset))
        y = snapshot(env.model)
        scale = 1.0 / (max(steps, 1) * env.config.lr)
        new_c_i = [ci - cc + (broadcast.tensors[n] - y[n]) * scale for n, ci, cc in zip(names, c_i, c)]
        env.store["c_i"] = dict(zip(names, new_c_i))
        delta_c = {"delta_" + PREFIX + n: new - old for n, new, old in zip(names, new_c_i, c_i)}
        return ClientUpdate(tensors=y, extras=delta_c, meta={"num_samples": env.data.num_train})
