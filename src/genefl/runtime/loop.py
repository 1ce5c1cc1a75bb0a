"""The one round loop of genefl, shared by both runtimes.

It drives a method's server half (`Strategy`) and reaches clients only through a `Transport`: the
simulator's transport calls client halves in this process, the Flower transport sends messages to
SuperNodes. Everything that decides what happens (sampling, dropout, newcomer schedule, the
population's arrivals, departures, availability and returns, byte accounting, rejecting malformed
replies, evaluation) lives here, once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from ..protocol import adversary
from .. import rng
from ..algorithms.base import Strategy
from ..config import Config
from ..errors import GeneflError
from ..protocol.ledger import Ledger
from ..protocol.messages import Broadcast, ClientUpdate
from ..protocol.newcomer import NewcomerCurve
from ..protocol.population import Population, share
from ..protocol.reputation import Reputation
from .events import Callback, NewcomerReport, RoundReport
from .checkpoint import check_snapshot
from .wire import Wire


class Transport(Protocol):
    """How the loop reaches clients. Methods return only what came back: a client that failed or
    timed out is missing from the result and named in `failures` (client id -> reason)."""

    failures: dict[int, str]

    # `available`: the ids that can be reached now (a connected SuperNode); the others are not sampled,
    # nor evaluated, that round, and are recorded as "unreachable" (`genefl.protocol.population`)
    def available(self, ids: list[int]) -> list[int]: ...
    def signatures(self, round: int, ids: list[int]) -> dict[int, ClientUpdate]: ...
    def train(self, round: int, broadcasts: dict[int, Broadcast]) -> Iterator[tuple[int, ClientUpdate]]: ...
    def welcome(self, round: int, cid: int, broadcast: Broadcast) -> NewcomerCurve | ClientUpdate | None: ...
    def evaluate(self, round: int, broadcasts: dict[int, Broadcast]) -> dict[int, dict[str, float]]: ...  # "acc", ...
    def depart(self, round: int, cid: int) -> None: ...  # a client left for good: drop its state
    # `evaluate_absent`: absent clients' own models (`Strategy.configure_absent`) tested where they are; no
    # message, nothing counted; {} where they cannot be reached (an offline Flower node)
    def evaluate_absent(self, round: int, models: dict[int, Broadcast]) -> dict[int, dict[str, float]]: ...
    # `local_baseline`: a newcomer's local-only model's test accuracy (`population.local_baseline`)
    def local_baseline(self, round: int, cid: int) -> float | None: ...


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
    dataset: str = ""  # the data's name when it is not `config.dataset` (a user's own dataset)
    population: dict[str, Any] = field(default_factory=dict)  # arrivals, departures, returns (`Population.record`)


def sample_clients(config: Config, round: int, present: list[int],
                   online: list[int] | None = None) -> tuple[list[int], list[int]]:
    """(clients that take part and report, clients that were sampled but drop out), both sorted. The
    cohort is `participation` of the clients present, drawn among those `online` (default: all of
    them), and no larger than their number."""
    k = max(1, share(config.participation, len(present)))
    pool = present if online is None else online
    order = torch.randperm(len(pool), generator=rng.generator(config.seed, "sample", round))
    chosen = sorted(pool[i] for i in order[:k].tolist())
    drop = torch.rand(len(chosen), generator=rng.generator(config.seed, "dropout", round)) < config.dropout
    return [c for c, d in zip(chosen, drop) if not d], [c for c, d in zip(chosen, drop) if d]


def is_eval_round(config: Config, round: int) -> bool:
    return round % config.eval_every == 0 or round == config.rounds


class RoundLoop:
    def __init__(self, config: Config, strategy: Strategy, transport: Transport, model_bytes: int,
                 num_training: int, arrivals: dict[int, int], callbacks: list[Callback] = (), dataset: str = ""):
        self.config, self.strategy, self.transport = config, strategy, transport
        self.model_bytes, self.num_training, self.arrivals = model_bytes, num_training, arrivals
        self.callbacks, self.dataset = list(callbacks), dataset
        self.ledger = Ledger()
        self.notes: list[str] = []
        self.signature_rows: int | None = None  # the training clients' signature row count
        self.wire = Wire(config, strategy)
        self.population = Population(config, arrivals)
        self.reputation = Reputation(config.defence) if config.defence.reputation else None

    def _asked_for_initial(self, round: int, cid: int, reply: ClientUpdate, kind: str, sent: Broadcast) -> int:
        """A client's `NEED_INITIAL` reply to `sent` (its seeded initial model, or its reference for
        broadcast changes, is not the server's): counted, noted, and the next broadcast to it carries
        the tensors (`Wire.answer`); returns its bytes (0: not such a reply). A second one for the
        same reason is an ordinary bad reply."""
        why = self.wire.answer(cid, reply, sent)
        if why is None:
            return 0
        self.notes.append(f"round {round}: client {cid}: {why}")
        return self.ledger.record(round, cid, "up", kind, reply)

    def _trained(self, round: int, planned: dict[int, Broadcast], sent: dict[int, Broadcast], references: dict) -> Iterator:
        """The transport's training replies; a client that asks for the initial tensors is sent them
        (its reference for a packed change updated) and trains again."""
        for cid, update in self.transport.train(round, sent):
            if not self._asked_for_initial(round, cid, update, "train", sent[cid]):
                yield cid, update
                continue
            again = self.wire.outgoing(planned[cid], round, cid)
            self.ledger.record(round, cid, "down", "train", again)
            if cid in references:
                references[cid] = (self.wire.as_received(again, round, cid), references[cid][1])
            yield from self.transport.train(round, {cid: again})

    def _checked_signatures(self, signatures: dict[int, ClientUpdate]) -> dict[int, ClientUpdate]:
        """Signatures that pass `check_hello`; their common row count is the most frequent one."""
        decoded = {}
        for cid, update in signatures.items():
            try:
                decoded[cid] = self.wire.decoded_signature(update)
            except GeneflError as exc:
                self.notes.append(f"round 0: client {cid}: {exc}")
        signatures = decoded
        rows = [u.extras["signature"].shape[0] for u in signatures.values()
                if isinstance(u, ClientUpdate) and isinstance(u.extras.get("signature"), torch.Tensor)
                and u.extras["signature"].dim() == 2]
        self.signature_rows = max(set(rows), key=rows.count) if rows else None
        kept = {}
        for cid, update in signatures.items():
            try:
                self.strategy.check_hello(update, self.signature_rows)
                kept[cid] = update
            except GeneflError as exc:
                self.notes.append(f"round 0: client {cid}: {exc}")
        return kept

    def _checked(self, round: int, updates: Iterator[tuple[int, ClientUpdate]], rejected: list[int],
                 references: dict[int, tuple[Broadcast, Broadcast]] | None = None):
        """The updates that pass the method's checks, decoded; the others noted and `rejected`.
        `references`: (received, planned) broadcast per client (see `Wire.decoded_update`)."""
        references = references or {}
        for cid, update in updates:
            self.ledger.record(round, cid, "up", "train", update)
            try:
                decoded = self.wire.decoded_update(update, references.get(cid), cid)
                self.strategy.check(decoded)
            except GeneflError as exc:
                rejected.append(cid)
                self.notes.append(f"round {round}: client {cid}: {exc}")
                continue
            for cb in self.callbacks:
                cb.on_upload(round, cid, update, decoded)
            yield cid, decoded

    def _hello(self, round: int, cid: int) -> tuple[ClientUpdate | None, int]:
        """A client's signature after Stage 0, counted and checked: (it, its bytes); None when none
        came or it was rejected (the reason in `transport.failures`)."""
        hello = self.transport.signatures(round, [cid]).get(cid)
        if hello is None:
            return None, 0
        nbytes = self.ledger.record(round, cid, "up", "signature", hello)
        try:
            hello = self.wire.decoded_signature(hello)
            self.strategy.check_hello(hello, self.signature_rows)
        except GeneflError as exc:
            self.transport.failures[cid] = str(exc)
            return None, nbytes
        return hello, nbytes

    def _welcome(self, state: Any, round: int, cid: int) -> tuple[Any, NewcomerReport | None]:
        hello, hello_bytes = None, 0
        if self.strategy.needs_signatures:
            hello, hello_bytes = self._hello(round, cid)
            if hello is None:
                return state, None
        state, planned = self.strategy.welcome(state, round, cid, hello)
        broadcast = self.wire.outgoing(planned, round, cid)
        init_bytes = hello_bytes + self.ledger.record(round, cid, "down", "newcomer_init", broadcast)
        curve = self.transport.welcome(round, cid, broadcast)
        asked = self._asked_for_initial(round, cid, curve, "newcomer_init", broadcast)
        if asked:
            init_bytes += asked
            broadcast = self.wire.outgoing(planned, round, cid)
            init_bytes += self.ledger.record(round, cid, "down", "newcomer_init", broadcast)
            curve = self.transport.welcome(round, cid, broadcast)
        if curve is None or isinstance(curve, ClientUpdate):
            return state, None
        received = self.wire.as_received(broadcast, round, cid)
        for cb in self.callbacks:
            cb.on_newcomer_start(round, cid, received)
        info = {k: v for k, v in broadcast.meta.items() if k != "init"}
        local = self.transport.local_baseline(round, cid) if self.config.population.local_baseline else None
        return state, NewcomerReport(cid, round, str(broadcast.meta.get("init", "method")), init_bytes, curve.test[0],
                                     curve.test[1:], info, curve.val, curve.chosen_epoch, hello_bytes, curve.backdoor,
                                     local)

    def _membership(self, state: Any, t: int, active: list[int], waiting: list[int]) -> Any:
        """This round's departures and returns (`genefl.protocol.population`), before anyone arrives or is sampled."""
        population = self.population
        for cid in population.departing(t):
            if cid in waiting:  # kept offline past its departure round: it never arrives
                waiting.remove(cid)
            elif cid in active:
                active.remove(cid)
                self.transport.depart(t, cid)
                self.wire.forget(cid)
                state = self.strategy.depart(state, t, cid)
            else:  # a newcomer whose welcome failed, a client refused at Stage 0
                continue
            population.note(t, cid, "departed")
        for cid in population.leaving(t):
            if cid in active:
                population.note(t, cid, "away")
        for cid in population.coming_back(t):
            population.note(t, cid, "back")
            if self.config.population.recluster and cid in population.plan.drifted and self.strategy.needs_signatures:
                state = self._rejoin(state, t, cid)
        return state

    def _rejoin(self, state: Any, t: int, cid: int) -> Any:
        """A client back with changed data sends a new signature, and the method places it again."""
        hello, _ = self._hello(t, cid)
        if hello is None:
            self.notes.append(f"round {t}: client {cid} is back, but sent no usable signature: "
                              f"{self.transport.failures.get(cid, 'no reply')}")
            return state
        self.population.note(t, cid, "signature")
        return self.strategy.rejoin(state, t, cid, hello)

    def _arrivals(self, state: Any, t: int, active: list[int], waiting: list[int]) -> Any:
        """Newcomers due by this round that are online (and reachable) arrive and are welcomed."""
        due = [c for c in waiting if self.arrivals[c] <= t and self.population.online(c, t)]
        for cid in [c for c in due if c in self.transport.available([c])]:
            waiting.remove(cid)
            state, report = self._welcome(state, t, cid)
            if report is None:
                self.notes.append(f"round {t}: newcomer {cid} failed: {self.transport.failures.get(cid, 'no reply')}")
                continue
            active.append(cid)
            self.population.note(t, cid, "arrived")
            self.newcomers.append(report)
            for cb in self.callbacks:
                cb.after_newcomer(report)
        return state

    def _round(self, state: Any, t: int, active: list[int], waiting: list[int]) -> tuple[Any, RoundReport]:
        t0, mark, notes_mark = time.perf_counter(), len(self.ledger.transfers), len(self.notes)
        state = self._membership(state, t, active, waiting)
        state = self._arrivals(state, t, active, waiting)
        present = self.population.present(active)
        connected = set(self.transport.available(present))  # a Flower node that is up; the simulator: all
        for cid in present:
            if cid not in connected:
                self.population.note(t, cid, "unreachable")
        online = [c for c in self.population.reachable(t, present) if c in connected]
        participants, dropped = sample_clients(self.config, t, present, online)
        for cid in dropped:  # sampled, downloaded, never reported back
            self.ledger.record(t, cid, "down", "train", self.wire.outgoing(self.strategy.configure_train(state, t, cid), t, cid))
        planned = {cid: self.strategy.configure_train(state, t, cid) for cid in participants}
        broadcasts = {cid: self.wire.outgoing(b, t, cid) for cid, b in planned.items()}
        for cid, broadcast in broadcasts.items():
            self.ledger.record(t, cid, "down", "train", broadcast)
        references = {}  # what uploads are decoded against: needed only when a codec is on
        if self.config.codec.up != "none" or self.config.codec.down != "none":
            exact = self.config.codec.down != "none"
            references = {cid: (self.wire.as_received(b, t, cid), planned[cid] if exact else None) for cid, b in broadcasts.items()}
        self.transport.failures.clear()
        rejected: list[int] = []
        reported: list[int] = []
        checked = self._checked(t, self._trained(t, planned, broadcasts, references), rejected, references)
        checked = adversary.collude(checked, self.config, lambda cid: planned[cid].tensors)  # ALIE only
        if self.reputation is not None:  # it judges the round's updates all at once, before any is aggregated
            checked = list(checked)
            self.strategy.left_out = self.reputation.judge(t, checked, lambda cid: planned[cid].tensors, self.notes)
        updates = ((cid, u) for cid, u in checked if not reported.append(cid))
        state = self.strategy.aggregate(state, t, updates)
        self.strategy.left_out = frozenset()
        self.notes.extend(self.strategy.take_notes())  # what a defence left out or scaled down
        failed = sorted(set(participants) - set(reported) - set(rejected))
        for cid in failed:
            self.notes.append(f"round {t}: client {cid} dropped: {self.transport.failures.get(cid, 'no reply')}")
        absent = sorted(set(active) - set(present)) + [c for c in present if c not in connected]
        metrics, absent_accs = {}, None
        if is_eval_round(self.config, t):
            metrics = self._evaluate(state, t, self.population.evaluated(t, present))
            absent_accs = self._evaluate_absent(state, t, absent)
        accs = {cid: m["acc"] for cid, m in metrics.items()}
        new = self.ledger.transfers[mark:]
        report = RoundReport(
            t, sorted(reported), sorted(dropped + failed + rejected), accs, self.num_training,
            sum(x.nbytes for x in new if x.direction == "up" and x.kind != "eval"),
            sum(x.nbytes for x in new if x.direction == "down" and x.kind != "eval"),
            time.perf_counter() - t0, self.notes[notes_mark:], sorted(rejected),
            {cid: m["backdoor"] for cid, m in metrics.items() if "backdoor" in m},
            len(online), len(present), len(self.population.departed), len(absent), absent_accs,
        )
        return state, report

    def _evaluate(self, state: Any, t: int, clients: list[int]) -> dict[int, dict[str, float]]:
        clients = self.transport.available(clients)  # no message to a Flower node that is down
        broadcasts = {cid: self.wire.outgoing(self.strategy.configure_evaluate(state, cid), t, cid, by_seed=False) for cid in clients}
        for cid, broadcast in broadcasts.items():
            self.ledger.record(t, cid, "down", "eval", broadcast)
        replies = self.transport.evaluate(t, broadcasts)
        # a client whose reference for broadcast changes is not the server's asks for the weights
        asked = [cid for cid, r in replies.items() if self._asked_for_initial(t, cid, r, "eval", broadcasts[cid])]
        if asked:
            again = {cid: self.wire.outgoing(self.strategy.configure_evaluate(state, cid), t, cid, by_seed=False) for cid in asked}
            for cid, broadcast in again.items():
                self.ledger.record(t, cid, "down", "eval", broadcast)
            replies.update(self.transport.evaluate(t, again))
        return {cid: r for cid, r in replies.items() if isinstance(r, dict)}

    def _evaluate_absent(self, state: Any, t: int, absent: list[int]) -> dict[int, float] | None:
        """The absent clients' own models (`Strategy.configure_absent`; a seeded sample of them with
        `population.eval_sample`, from a stream of its own) tested on their own test data: client id ->
        accuracy, None when there is nothing to test (nobody absent, or the method keeps no model of
        a client's own). Not communication: no message is sent, nothing enters the ledger (so neither
        `bytes_total` nor `bytes_eval`), and it draws from no stream that training, sampling or the
        present clients' evaluation use, so every other result is as without it. On Flower an absent
        node is not connected and cannot be asked: {} (null in results.json)."""
        models = {cid: b for cid in self.population.evaluated(t, absent, "eval-sample-absent")
                  if (b := self.strategy.configure_absent(state, cid)) is not None}
        if not models:
            return None
        return {cid: m["acc"] for cid, m in self.transport.evaluate_absent(t, models).items()}

    def run(self, start_info: dict[str, Any], resume: dict[str, Any] | None = None,
            checkpoint: Callable[[dict[str, Any]], None] | None = None) -> RunResult:
        """The whole run, or its rest after `resume` (a `snapshot` taken after a finished round).
        `checkpoint(snapshot)` is called every `checkpoint_every` rounds."""
        config, start = self.config, time.perf_counter()
        if resume is not None:
            state, active, waiting, first, start = self._restore(resume, start)
            start_info = {**start_info, "finished_rounds": list(self.rounds)}
        for cb in self.callbacks:
            cb.on_start(start_info)
        if resume is None:
            state, active, waiting, first = *self._begin(), 1
        for t in range(first, config.rounds + 1):
            state, report = self._round(state, t, active, waiting)
            self.rounds.append(report)
            for cb in self.callbacks:
                cb.after_round(report)
            if checkpoint and config.checkpoint_every and (t % config.checkpoint_every == 0) and t < config.rounds:
                checkpoint(self.snapshot(state, t, active, waiting, time.perf_counter() - start))
        result = RunResult(config, self.rounds, self.newcomers, self.ledger, self.model_bytes,
                           time.perf_counter() - start, self.strategy.summary(state), self.strategy.weights(state),
                           dataset=self.dataset, population=self.population.record())
        if self.notes:
            result.method_info["notes"] = list(self.notes)
        if self.reputation is not None:
            result.method_info["reputation"] = self.reputation.report()
        for cb in self.callbacks:
            cb.on_end(result)
        return result

    def _begin(self) -> tuple[Any, list[int], list[int]]:
        """Server state before round 1: Stage 0 for methods that cluster."""
        state = self.strategy.init()
        active = self.transport.available(list(range(self.num_training)))
        if self.strategy.needs_signatures:
            signatures = self.transport.signatures(0, active)
            for cid, update in signatures.items():
                self.ledger.record(0, cid, "up", "signature", update)
            signatures = self._checked_signatures(signatures)
            active = sorted(signatures)
            state = self.strategy.register(state, signatures)
        self.rounds, self.newcomers = [], []
        return state, active, sorted(self.arrivals)

    def snapshot(self, state: Any, round: int, active: list[int], waiting: list[int], elapsed: float) -> dict[str, Any]:
        """What the loop needs to go on after `round`."""
        return {"round": round, "server": state, "active": list(active), "waiting": list(waiting),
                "rounds": list(self.rounds), "newcomers": list(self.newcomers), "ledger": self.ledger,
                "notes": list(self.notes), "signature_rows": self.signature_rows, "elapsed": elapsed,
                "explicit": sorted(self.wire.explicit), "population": self.population.snapshot(),
                "references": dict(self.wire.references),
                "reputation": self.reputation.snapshot() if self.reputation is not None else {}}

    def check_resume(self, snap: Any) -> None:
        """Refuse, in one line, a snapshot this loop cannot go on from (a damaged checkpoint, or one
        of another genefl version): better now than a traceback rounds later."""
        problem = check_snapshot(snap, self.config.rounds)
        kind = type(self.strategy.init())
        if problem is None and not isinstance(snap["server"], kind):
            problem = f"its server state is a {type(snap['server']).__name__}, {self.config.method} keeps a {kind.__name__}"
        if problem:
            raise GeneflError(f"resume: the checkpoint is damaged: {problem}; rerun from the start with --force")

    def _restore(self, snap: dict[str, Any], now: float):
        self.check_resume(snap)
        self.rounds, self.newcomers, self.ledger = list(snap["rounds"]), list(snap["newcomers"]), snap["ledger"]
        self.notes, self.signature_rows = list(snap["notes"]), snap["signature_rows"]
        self.wire.explicit = set(snap["explicit"])
        self.wire.references = dict(snap.get("references", {}))  # a checkpoint written before codec.down_delta holds none
        self.population.restore(snap["population"])
        if self.reputation is not None:
            self.reputation.restore(snap.get("reputation", {}))  # a checkpoint written before it holds none
        return snap["server"], list(snap["active"]), list(snap["waiting"]), snap["round"] + 1, now - snap["elapsed"]
