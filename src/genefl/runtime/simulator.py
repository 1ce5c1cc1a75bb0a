"""The in-process simulator: the round loop with clients in this process.

Clients run one after another, all sharing one model object: load the broadcast, train, read the
update, move on. Client data are tensors already on the device (a returning client's changed data
too, from its return on: `Scenario.data`); per-client state lives in `self.states` (in memory, or
one file per client with `state_store = "disk"`), keyed by partition id, and is dropped when a
client leaves for good. Updates are produced lazily and folded into the strategy's streaming aggregate one at a time,
so no list of client models is ever held.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..algorithms.base import ClientEnv
from ..protocol.models import ModelSpec
from .client_side import evaluate_and_send, local_baseline, received, send_signature, train_and_send, welcome_and_send
from .first_contact import NEED_INITIAL, InitialMismatch
from ..config import Config
from ..data.scenario import Scenario
from ..protocol.messages import Broadcast, ClientUpdate
from ..protocol.newcomer import NewcomerCurve
from . import checkpoint
from .assembly import assemble
from .events import Callback
from .loop import RoundLoop, RunResult
from .states import make_states

__all__ = ["Simulator", "RunResult"]


class InProcessClients:
    """The simulator's transport: every client half runs here, on the shared model object."""

    def __init__(self, config: Config, scenario: Scenario, spec: ModelSpec, client, model, layers):
        self.config, self.scenario, self.spec, self.client = config, scenario, spec, client
        self.model, self.layers = model, layers
        self.states = make_states(config)
        self.failures: dict[int, str] = {}
        self.decoded: dict = {}  # decoded broadcast tensors by packed object, for one batch of calls

    def call(self, handler, cid: int, round: int, *args: Any, stores: bool = True) -> Any:
        """Run one client-half handler for `cid` with its state opened, and store the state after;
        `stores=False` for the handlers that only read it (evaluation, the local-only baseline): the
        state is not written back, and a checkpoint does not count the client as changed."""
        state = self.states.open(cid)
        try:
            env = ClientEnv(cid, round, self.model, self.scenario.data(cid, round), state, self.config, self.spec, self.layers)
            try:
                inputs = [received(env, a, self.decoded) if isinstance(a, Broadcast) else a for a in args]
            except InitialMismatch:  # the client asks for the tensors instead (the loop resends them)
                return ClientUpdate(meta={NEED_INITIAL: True})
            return handler(env, *inputs)
        finally:
            if stores:
                self.states.close(cid, state)

    def available(self, ids: list[int]) -> list[int]:
        return list(ids)

    def depart(self, round: int, cid: int) -> None:
        self.states.drop(cid)

    def signatures(self, round: int, ids: list[int]) -> dict[int, ClientUpdate]:
        return {cid: self.call(functools.partial(send_signature, self.client), cid, round) for cid in ids}

    def train(self, round: int, broadcasts: dict[int, Broadcast]) -> Iterator[tuple[int, ClientUpdate]]:
        self.decoded = {}
        for i, (cid, broadcast) in enumerate(broadcasts.items()):
            yield cid, self.call(functools.partial(train_and_send, self.client), cid, round, broadcast)
            if i == 0:
                checkpoint.fault("round", round)

    def welcome(self, round: int, cid: int, broadcast: Broadcast) -> NewcomerCurve:
        self.decoded = {}
        curve = self.call(functools.partial(welcome_and_send, self.client), cid, round, broadcast)
        checkpoint.fault("newcomer", round)
        return curve

    def evaluate(self, round: int, broadcasts: dict[int, Broadcast]) -> dict[int, dict[str, float]]:
        self.decoded = {}
        evaluate = functools.partial(evaluate_and_send, self.client)
        return {cid: self.call(evaluate, cid, round, b, stores=False) for cid, b in broadcasts.items()}

    def evaluate_absent(self, round: int, models: dict[int, Broadcast]) -> dict[int, dict[str, float]]:
        """An absent client's own model, tested here as a present one's is (the same client half, its
        state and its data as of `round`); the state is left as it was."""
        return self.evaluate(round, models)

    def local_baseline(self, round: int, cid: int) -> float:
        return self.call(local_baseline, cid, round, stores=False)


class Simulator:
    """`checkpoint_dir`: where `checkpoint.pt` is kept while the run goes (removed when it ends);
    `run(resume=checkpoint.load(path, config))` continues a run from one (of this config only)."""

    def __init__(self, config: Config, scenario: Scenario, callbacks: list[Callback] = (),
                 checkpoint_dir: str | Path | None = None):
        self.checkpoint_path = Path(checkpoint_dir) / checkpoint.FILE if checkpoint_dir is not None else None
        self.config, self.scenario = config, scenario
        parts = assemble(config, scenario.input_shape, scenario.num_classes)
        self.spec, self.model, self.layers = parts.spec, parts.model, parts.layers
        self.strategy = parts.strategy()
        self.clients = InProcessClients(config, scenario, self.spec, parts.client(), self.model, self.layers)
        self.loop = RoundLoop(config, self.strategy, self.clients, parts.model_bytes, scenario.num_clients,
                              scenario.arrivals, callbacks, dataset=scenario.dataset)

    @property
    def states(self):
        return self.clients.states

    def run(self, resume: dict[str, Any] | None = None) -> RunResult:
        if resume is not None:
            self.loop.check_resume(resume)  # before any client state is replaced
        # a run goes on from its own client states only: none for a fresh run (a `state_dir` may
        # hold an earlier run's), its checkpoint's for a resumed one (`checkpoint.load` read them)
        restored = resume.get("clients") if resume is not None else {}
        self.clients.states.restore(restored)
        files = None
        if self.checkpoint_path is not None:
            files = checkpoint.ClientStateFiles(self.checkpoint_path, resume.get("client_files") if resume else None)
            files.pending = set(restored) - set(files.manifest)  # states without a file here yet: the next save writes them
            files.prune()  # a fresh run's leftovers, or the files a killed save wrote after its checkpoint
        save = self._checkpointer(files) if files is not None else None
        try:
            result = self.loop.run({"config": self.config, "layers": self.layers, "model": self.spec.name}, resume, save)
        finally:
            self.clients.states.cleanup()  # removes only a temporary folder the store made itself
        if self.checkpoint_path is not None:
            self.checkpoint_path.unlink(missing_ok=True)  # the run is complete: results.json is its record
            self.checkpoint_path.with_name(self.checkpoint_path.name + ".tmp").unlink(missing_ok=True)
            files.remove()
        return result

    def _checkpointer(self, files: checkpoint.ClientStateFiles):
        """What the loop calls to save a checkpoint: the client states that changed, then the snapshot."""
        def save(snapshot: dict[str, Any]) -> None:
            manifest = files.write(snapshot["round"], self.clients.states)
            checkpoint.save(self.checkpoint_path, {**snapshot, "clients": {}, "client_files": manifest,
                                                   "config": checkpoint.identity(self.config)})
            files.prune()  # only now: until the rename, the previous checkpoint needs its files
        return save
