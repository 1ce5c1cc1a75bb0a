"""An algorithm = a server half (`Strategy`) and a client half (`ClientAlgorithm`).

They meet only at `Broadcast` (server -> client) and `ClientUpdate` (client -> server). The server
half never sees client objects and the client half never sees the transport, so the same two
classes run in the in-process simulator and in Flower. Server state is explicit: every Strategy
method takes the state and returns the new one. Per-client persistent state (private layers,
control variates) lives in `ClientEnv.store`, a dict the runtime owns and keeps between rounds
(the simulator's dict of dicts, Flower's `Context.state`); its values are tensors or JSON scalars.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .. import rng
from ..config import Config
from ..data.datasets import ClientData
from ..protocol.layers import Layer
from ..errors import GeneflError
from ..protocol.messages import MAX_SAMPLES, Broadcast, ClientUpdate, check_fields, check_update, sample_count
from ..protocol.models import ModelSpec
from ..options import Options
from ..protocol.newcomer import FinetuneSettings, NewcomerCurve, finetune, newcomer_split_generator
from ..protocol.robust import Combiner
from ..protocol.server_opt import ServerOptimizer, for_method
from ..protocol.training import TrainSettings, accuracy, load_into, snapshot, train


@dataclass
class ClientEnv:
    """Everything a client half may use while handling one message."""

    cid: int  # partition id
    round: int
    model: nn.Module  # the one reused model object; its content on entry is meaningless
    data: ClientData
    store: dict[str, Any]  # this client's persistent state, kept by the runtime
    config: Config
    spec: ModelSpec
    layers: list[Layer]  # the model's layers, in forward order

    def generator(self, *tags: object) -> torch.Generator:
        return rng.generator(self.config.seed, "client", self.cid, self.round, *tags)

    def settings(self, epochs: int | None = None) -> TrainSettings:
        c = self.config
        return TrainSettings(c.local_epochs if epochs is None else epochs, c.batch_size, c.lr, c.momentum, c.weight_decay)


Updates = Iterable[tuple[int, ClientUpdate]]  # (client id, update), consumed one at a time


def sample_weighted_mean(current: dict[str, torch.Tensor], updates: Updates,
                         combiner: Combiner) -> tuple[dict[str, torch.Tensor], set[int]]:
    """The sample-weighted, layer-wise mean of the updates' tensors (`current` where none was sent),
    streamed one update at a time, or with `[defence]` set its robust aggregate (`Strategy.combiner`),
    and the ids of the clients that reported."""
    reported = set()
    for cid, update in updates:
        combiner.add(cid, update.tensors, update.meta["num_samples"])
        reported.add(cid)
    return (combiner.result(current) if combiner else current), reported


class Strategy(abc.ABC):
    """Server half: the hooks every method implements (abstract) and the ones with defaults.
    State goes in explicitly and comes out new; nothing hidden depends on call order."""

    needs_signatures = False  # ask every client for a data signature before round 1?
    takes_server_opt = False  # does `aggregate` end with a server-optimizer step (`[server_opt]`)?
    takes_defence = False  # does `aggregate` go through `combiner`, so that `[defence]` applies?
    fixed_server_opt: str | None = None  # the server optimizer this method always uses (fedadam: "adam")
    options: type[Options] | None = None  # the method's own options table (an `Options` subclass), if any

    def __init__(self, config: Config, layers: list[Layer], initial: dict[str, torch.Tensor]):
        self.config = config
        self.layers = layers
        self.initial = initial  # the shared seeded initialisation (also the update template)
        self.optimizer = self.server_optimizer(config)
        self.notes: list[str] = []  # what a defence left out or scaled down; the round loop takes them
        # the clients `defence.reputation` leaves out of the round being aggregated: the round loop sets it
        # before `aggregate` (it judges the round's updates all at once) and clears it after
        self.left_out: frozenset[int] = frozenset()

    def combiner(self, state: Any, round: int, where: str = "") -> Combiner:
        """A fresh aggregate for one round's updates (or one cluster's): the streaming weighted mean, or
        the robust aggregator and norm bound of `[defence]` (`genefl.protocol.robust`). A client's change is
        measured from what `configure_train` sends it from this `state`."""
        return Combiner(self.config.defence, self.notes, f"round {round}{where}",
                        lambda cid: self.configure_train(state, round, cid).tensors, self.left_out, self.config.seed)

    def take_notes(self) -> list[str]:
        notes, self.notes[:] = list(self.notes), []
        return notes

    @classmethod
    def server_optimizer(cls, config: Config) -> ServerOptimizer:
        """The step applied to the aggregated pseudo-gradient (`genefl.protocol.server_opt`); a ConfigError for
        a `[server_opt]` this method would ignore."""
        return for_method(config, cls.takes_server_opt, cls.fixed_server_opt)

    @abc.abstractmethod
    def init(self) -> Any:
        """The server state before round 1."""

    def register(self, state: Any, signatures: dict[int, ClientUpdate]) -> Any:
        """Stage 0: signatures of the training clients, received before round 1."""
        return state

    @abc.abstractmethod
    def configure_train(self, state: Any, round: int, cid: int) -> Broadcast:
        """What client `cid` is sent to train in `round`."""

    @abc.abstractmethod
    def aggregate(self, state: Any, round: int, updates: Updates) -> Any:
        """The new state from the round's checked updates (consumed one at a time)."""

    @abc.abstractmethod
    def weights(self, state: Any) -> dict[str, torch.Tensor]:
        """The server's model tensors, saved as weights.pt: the global model, or every cluster's
        model / learnGene under `cluster<k>/` names, or {} for a method whose server holds none."""

    def state_tensors(self, state: Any) -> dict[str, torch.Tensor]:
        """Every tensor the server state holds (model, control variates, optimizer moments, ...),
        by path: what a round must leave untouched when every reply was refused. The default walks
        dataclass fields, dicts, lists and tuples; a method keeping tensors elsewhere overrides it."""
        return tensors_in(state)

    def configure_evaluate(self, state: Any, cid: int) -> Broadcast:
        return self.configure_train(state, 0, cid)

    def configure_absent(self, state: Any, cid: int) -> Broadcast | None:
        """What client `cid`'s own model is, while it is absent (away in a return, `population.returns`),
        for measuring it on its own test data; None when the method keeps no model of the client's own
        (the default: a method whose clients are sent the server's model each round, which an absent
        client does not have). A method whose clients keep their own model between rounds returns an
        empty Broadcast once the client holds one (it evaluates its stored model as it stands, having
        received nothing while away); one whose server keeps the model a client is served (PACFL's per
        cluster) returns that model. This is no message: the round loop evaluates it apart from the
        protocol and counts no bytes for it."""
        return None

    def first_contact(self, contacted: frozenset[int], cid: int, meta: dict | None = None) -> Broadcast | None:
        """For methods whose clients keep their own model (and so only ever receive part of one): a
        client not yet `contacted` is sent the whole initial model, else None. Usage:
        `return self.first_contact(state.contacted, cid) or <what a known client gets>`."""
        return None if cid in contacted else Broadcast(tensors=self.initial, meta=dict(meta or {}))

    @abc.abstractmethod
    def welcome(self, state: Any, round: int, cid: int, hello: ClientUpdate | None) -> tuple[Any, Broadcast]:
        """A newcomer arrives; return the new state and what it is sent to start from."""

    def depart(self, state: Any, round: int, cid: int) -> Any:
        """Client `cid` left the federation for good (`population.departures`): it is never sent
        anything again and its personal state is gone. A method that keeps something per client (a
        cluster membership, a head count) forgets it here; by default nothing changes."""
        return state

    def rejoin(self, state: Any, round: int, cid: int, hello: ClientUpdate) -> Any:
        """A training client came back with changed data and sent a new signature (`population.recluster`,
        methods with `needs_signatures`): place it again. By default nothing changes."""
        return state

    def check_hello(self, update: ClientUpdate, rows: int | None) -> None:
        """Reject a malformed signature reply (Stage 0): exactly one extra, `signature`, a finite
        float matrix of `rows` rows (the training clients' common count; None = any) and at most
        `clustering.p` columns, and no fields."""
        if not isinstance(update, ClientUpdate):
            raise GeneflError("rejected signature: not a client update")
        sig = update.extras.get("signature")
        if set(update.extras) != {"signature"} or update.tensors or update.meta:
            raise GeneflError("rejected signature: expected exactly one extra tensor 'signature' and nothing else")
        if sig.dim() != 2 or not sig.is_floating_point() or not 1 <= sig.shape[1] <= self.config.clustering.p:
            raise GeneflError(f"rejected signature: expected a float matrix with 1..{self.config.clustering.p} columns, "
                              f"got {sig.dtype}{list(sig.shape)}")
        if rows is not None and sig.shape[0] != rows:
            raise GeneflError(f"rejected signature: {sig.shape[0]} rows, the other clients' have {rows}")
        if not bool(torch.isfinite(sig).all()):
            raise GeneflError("rejected signature: holds NaN or inf")

    def reply_fields(self) -> dict[str, tuple]:
        """The fields every training reply carries: name -> (validator, what it must be)."""
        return {"num_samples": (sample_count, f"an integer in 1..{MAX_SAMPLES}")}

    def expected_extras(self) -> dict[str, torch.Tensor]:
        """Named extra tensors a training reply must carry (shape and dtype templates)."""
        return {}

    def check(self, update: ClientUpdate) -> None:
        """Reject a malformed update with a one-line GeneflError: tensors that are not the model's
        (keys, shapes, dtypes) or hold NaN/inf, missing or unexpected extras, and any field that is
        missing, unexpected, of the wrong type or out of range. Nothing else reads a reply first."""
        if not isinstance(update, ClientUpdate):
            raise GeneflError("rejected reply: not a client update")
        check_update(update, self.initial)
        extras = self.expected_extras()
        check_update(ClientUpdate(tensors=update.extras), extras, required=set(extras))
        check_fields(update.meta, self.reply_fields())

    def summary(self, state: Any) -> dict[str, Any]:
        """Method-specific facts for results.json."""
        return {}


class ClientAlgorithm:
    """Client half. `prepare` loads the model this client works with for a broadcast; training,
    evaluation and newcomer fine-tuning are built on it."""

    def signature(self, env: ClientEnv) -> ClientUpdate:
        return ClientUpdate()

    def prepare(self, env: ClientEnv, broadcast: Broadcast) -> None:
        raise NotImplementedError

    def train(self, env: ClientEnv, broadcast: Broadcast) -> ClientUpdate:
        raise NotImplementedError

    def evaluate(self, env: ClientEnv, broadcast: Broadcast) -> float:
        """The client's test accuracy with what it was sent. Reads `env.store`, never writes it: the
        simulator does not store a state back after an evaluation."""
        self.prepare(env, broadcast)
        return accuracy(env.model, env.data.x_test, env.data.y_test)

    def start_newcomer(self, env: ClientEnv, broadcast: Broadcast) -> None:
        """Load a newcomer's starting model: fresh seeded weights, overwritten by what was sent."""
        fresh = env.spec.build(env.config.seed, "newcomer", env.cid)
        load_into(env.model, fresh.state_dict())
        load_into(env.model, broadcast.tensors)

    def keep_newcomer(self, env: ClientEnv) -> None:
        """Persist what a newcomer keeps after fine-tuning (nothing for global-model methods)."""

    def welcome(self, env: ClientEnv, broadcast: Broadcast) -> NewcomerCurve:
        """Newcomer: start from `broadcast`, fine-tune with the newcomer protocol (`genefl.protocol.newcomer`,
        plain cross-entropy), test after every epoch, then keep what the method keeps."""
        self.start_newcomer(env, broadcast)
        curve = finetune_newcomer(env, set(broadcast.tensors))
        self.keep_newcomer(env)
        return curve


def finetune_newcomer(env: ClientEnv, inherited: set[str], *tags: object) -> NewcomerCurve:
    """The newcomer protocol on the model `env` holds: its settings from the config, batches from the
    client's ("finetune", *tags) stream, its validation split from `newcomer_split_generator`. Every
    client half's `welcome` and the newcomer study (`genefl.experiments.study`, one start after another)
    fine-tune through this."""
    return finetune(env.model, env.data, inherited, FinetuneSettings.from_config(env.config),
                    env.generator("finetune", *tags), newcomer_split_generator(env.config.seed, env.cid))


class PersonalModelClient(ClientAlgorithm):
    """A client that keeps its own whole model between rounds (in `store["model"]`); whatever the
    server sends (a learnGene, or the initial model on first contact) overwrites its copies."""

    def prepare(self, env: ClientEnv, broadcast: Broadcast) -> None:
        if "model" in env.store:
            load_into(env.model, env.store["model"])
        load_into(env.model, broadcast.tensors)

    def train_own_model(self, env: ClientEnv, broadcast: Broadcast) -> dict[str, torch.Tensor]:
        """The broadcast over the client's own model, plain local training, the result kept (and
        returned) as its model for the next round."""
        self.prepare(env, broadcast)
        train(env.model, env.data.x_train, env.data.y_train, env.settings(), env.generator("train"))
        env.store["model"] = snapshot(env.model)
        return env.store["model"]

    def keep_newcomer(self, env: ClientEnv) -> None:
        env.store["model"] = snapshot(env.model)


def full_model_update(env: ClientEnv, extra_meta: dict[str, Any] | None = None) -> ClientUpdate:
    """The whole state dict of the trained model, with the sample count as aggregation weight."""
    meta = {"num_samples": env.data.num_train}
    meta.update(extra_meta or {})
    return ClientUpdate(tensors=snapshot(env.model), meta=meta)


def tensors_in(value: Any, path: str = "") -> dict[str, torch.Tensor]:
    """The tensors inside `value` (nested dataclasses, dicts, lists, tuples) by slash-joined path."""
    if isinstance(value, torch.Tensor):
        return {path: value}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        items = ((f.name, getattr(value, f.name)) for f in dataclasses.fields(value))
    elif isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return {}
    found: dict[str, torch.Tensor] = {}
    for key, item in items:
        found.update(tensors_in(item, f"{path}/{key}" if path else str(key)))
    return found
