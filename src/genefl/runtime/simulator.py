"""The in-process simulator: the one round loop of genefl.

Clients run one after another in this process, all sharing one model object: load the broadcast,
train, read the update, move on. Client data are tensors already on the device; per-client state
lives in `self.stores`, a dict keyed by partition id. Updates are produced lazily and folded into
the strategy's streaming aggregate one at a time, so no list of client models is ever held.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from .. import rng
from ..algorithms import get as get_method
from ..algorithms.base import ClientEnv, ModelSpec
from ..config import Config
from ..data.scenario import Scenario
from ..layers import model_layers, model_nbytes
from ..ledger import Ledger
from ..messages import ClientUpdate
from ..models import default_model
from .events import Callback, NewcomerReport, RoundReport


@dataclass
class RunResult:
    config: Config
    rounds: list[RoundReport]
    newcomers: list[NewcomerReport]
    ledger: Ledger
    model_bytes: int
    wall_s: float
    method_info: dict[str, Any] = field(default_factory=dict)
    final_weights: dict[str, torch.Tensor] = field(default_factory=dict)


def model_spec(config: Config, scenario: Scenario) -> ModelSpec:
    name = default_model(config.dataset) if config.model == "auto" else config.model
    return ModelSpec(name, scenario.input_shape, scenario.num_classes)


def sample_clients(config: Config, round: int, active: list[int]) -> tuple[list[int], list[int]]:
    """(clients that take part and report, clients that were sampled but drop out), both sorted."""
    k = max(1, round_half(config.participation * len(active)))
    order = torch.randperm(len(active), generator=rng.generator(config.seed, "sample", round))
    chosen = sorted(active[i] for i in order[:k].tolist())
    drop = torch.rand(len(chosen), generator=rng.generator(config.seed, "dropout", round)) < config.dropout
    return [c for c, d in zip(chosen, drop) if not d], [c for c, d in zip(chosen, drop) if d]


def round_half(x: float) -> int:
    return int(x + 0.5)


def is_eval_round(config: Config, round: int) -> bool:
    return round % config.eval_every == 0 or round == config.rounds


class Simulator:
    def __init__(self, config: Config, scenario: Scenario, callbacks: list[Callback] = ()):
        self.config, self.scenario, self.callbacks = config, scenario, list(callbacks)
        self.spec = model_spec(config, scenario)
        strategy_cls, client_cls = get_method(config.method)
        self.model = self.spec.build(config.seed, "global").to(config.device)
        self.layers = model_layers(self.model)
        initial = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.strategy = strategy_cls(config, self.layers, initial)
        self.client = client_cls()
        self.stores: dict[int, dict[str, Any]] = {}
        self.ledger = Ledger()

    def env(self, cid: int, round: int) -> ClientEnv:
        return ClientEnv(cid, round, self.model, self.scenario.clients[cid], self.stores.setdefault(cid, {}),
                         self.config, self.spec, self.layers)

    def _signatures(self, ids: list[int], round: int) -> dict[int, ClientUpdate]:
        sigs = {}
        for cid in ids:
            sigs[cid] = self.client.signature(self.env(cid, round))
            self.ledger.record(round, cid, "up", "signature", sigs[cid])
        return sigs

    def _updates(self, state: Any, round: int, clients: list[int]) -> Iterator[tuple[int, ClientUpdate]]:
        for cid in clients:
            broadcast = self.strategy.configure_train(state, round, cid)
            self.ledger.record(round, cid, "down", "train", broadcast)
            update = self.client.train(self.env(cid, round), broadcast)
            self.ledger.record(round, cid, "up", "train", update)
            yield cid, update

    def _welcome(self, state: Any, round: int, cid: int) -> tuple[Any, NewcomerReport]:
        hello = self._signatures([cid], round)[cid] if self.strategy.needs_signatures else None
        state, broadcast = self.strategy.welcome(state, round, cid, hello)
        init_bytes = self.ledger.record(round, cid, "down", "newcomer_init", broadcast)
        accs = self.client.welcome(self.env(cid, round), broadcast)
        info = {k: v for k, v in broadcast.meta.items() if k != "init"}
        report = NewcomerReport(cid, round, str(broadcast.meta.get("init", "method")), init_bytes, accs[0], accs[1:], info)
        return state, report

    def _evaluate(self, state: Any, round: int, active: list[int]) -> dict[int, float]:
        accs = {}
        for cid in active:
            broadcast = self.strategy.configure_evaluate(state, cid)
            self.ledger.record(round, cid, "down", "eval", broadcast)
            accs[cid] = self.client.evaluate(self.env(cid, round), broadcast)
        return accs

    def run(self) -> RunResult:
        config, start = self.config, time.perf_counter()
        for cb in self.callbacks:
            cb.on_start({"config": config, "layers": self.layers, "model": self.spec.name})
        state = self.strategy.init()
        active = list(range(self.scenario.num_clients))
        if self.strategy.needs_signatures:
            state = self.strategy.register(state, self._signatures(active, 0))
        rounds, newcomers = [], []
        for t in range(1, config.rounds + 1):
            t0, mark = time.perf_counter(), len(self.ledger.transfers)
            for cid in self.scenario.newcomers_at(t):
                state, report = self._welcome(state, t, cid)
                newcomers.append(report)
                active.append(cid)
                for cb in self.callbacks:
                    cb.after_newcomer(report)
            participants, dropped = sample_clients(config, t, active)
            for cid in dropped:  # sampled, downloaded, never reported back
                self.ledger.record(t, cid, "down", "train", self.strategy.configure_train(state, t, cid))
            state = self.strategy.aggregate(state, t, self._updates(state, t, participants))
            accs = self._evaluate(state, t, active) if is_eval_round(config, t) else {}
            new = self.ledger.transfers[mark:]
            report = RoundReport(
                t, participants, dropped, accs, self.scenario.num_clients,
                sum(x.nbytes for x in new if x.direction == "up" and x.kind != "eval"),
                sum(x.nbytes for x in new if x.direction == "down" and x.kind != "eval"),
                time.perf_counter() - t0,
            )
            rounds.append(report)
            for cb in self.callbacks:
                cb.after_round(report)
        result = RunResult(config, rounds, newcomers, self.ledger, model_nbytes(self.layers),
                           time.perf_counter() - start, self.strategy.summary(state), final_weights(self.strategy, state))
        for cb in self.callbacks:
            cb.on_end(result)
        return result


def final_weights(strategy, state) -> dict[str, torch.Tensor]:
    """The server's final model tensors, when the method has a single global model."""
    weights = getattr(state, "weights", None)
    return dict(weights) if isinstance(weights, dict) else {}
