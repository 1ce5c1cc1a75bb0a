"""The population process (`[population]`): who belongs to the federation, and who can be reached,
round by round.

A cross-device federation is no fixed set of clients: devices join late, leave for good, can be
reached only part of the day, and come back after a while with data that changed. Each of these is
drawn here from the run's seed alone (`genefl.rng`) before round 1, as a `Plan`: a pure function of
the config and the newcomers' arrival rounds, so a resumed run, or the other runtime, draws the same
one. The round loop applies it through `Population`, which also keeps what happened (its events go
into checkpoints and results.json). The defaults are a static population, exactly as before
`[population]` existed: the training clients throughout, newcomers at their scheduled rounds,
everyone always reachable and evaluated.

The choices, each kept simple:
- arrivals: "schedule" is `newcomer_rounds` (or spread evenly); "poisson" draws the newcomers'
  arrival times as a Poisson process of `arrival_rate` per round from the end of round 1 (round
  1 + ⌈time⌉), and those drawn after the last round never arrive; "trace" is a newcomer's first
  `online_from` in `trace_file`. A newcomer arrives at the first round from then on when it is online.
- departures: round(`departures` · (training clients + arriving newcomers)) of them, a seeded choice
  among those that do not return, leave for good at a round drawn uniformly after their first (a
  newcomer's planned arrival; one arriving in the last round cannot leave). The loop drops the
  client's personal state, never contacts it again and tells the method (`Strategy.depart`). A
  newcomer kept offline past its departure round never arrives.
- availability: "always"; "diurnal": a day is `day_rounds` rounds, each client has a seeded time zone
  (an offset in rounds) and is online for the first round(`online_fraction` · `day_rounds`) rounds
  of its local day (the night, when a phone charges on Wi-Fi); "trace": online exactly in its rows'
  windows in `trace_file` (rounds, inclusive), never when it has no row. This models the devices,
  the same in both runtimes; the transport's own `available()` (a Flower node that is up) still
  applies on top.
- sampling: `participation` is a share of the clients present (the cross-device convention: the
  server sets its cohort size from its population), drawn among those online, capped by how many are.
- returns: round(`returns` · num_clients) training clients, a seeded choice, go away for `absence`
  rounds from a seeded round in 2..rounds − absence, and are back at the first round after that when
  they are online. Their data changed meanwhile (`drift`; built with the scenario, `data/scenario.py`,
  from the planned return round on); with `recluster`, a client back with changed data sends a new
  signature (counted as a newcomer's is) and the method places it again (`Strategy.rejoin`).
- evaluation: the clients present (arrived, not departed, not away), or a seeded sample of
  `eval_sample` of them; all of them after the last round. Offline clients are evaluated too:
  evaluation is measurement, not protocol. The absent ones (away; on Flower, a node not connected)
  are tested on their own models where the method keeps one per client (`Strategy.configure_absent`,
  `RoundLoop._evaluate_absent`: no message, no bytes; sampled alike from a stream of their own).
- newcomers over time: results.json's `newcomer_cohorts` groups them by arrival round; with `local_baseline`, each
  is compared with its own local-only model (`runtime.client_side.local_baseline`) and
  `rounds_to_useful` counts the rounds until its model beats it.
- Stage 0 (signatures before round 1) is enrolment: every training client takes part in it, online
  or not.
- on Flower, the nodes themselves: a present client whose SuperNode is not connected at the start of
  a round (the transport's `available()`) is "unreachable" that round: not sampled, not evaluated.
  A node that is stopped and restarted (with its `state-dir`, its personal state intact) simply takes
  part again: results.json lists it under `returns` (drift "none"); one not connected in the last
  round is listed under `departures`, from the first round of that absence (a run cannot tell a node
  that left for good from one that would have come back later; the method is not told). A newcomer
  node that connects late arrives as any newcomer does. `trace_of` turns a run's record into a
  `trace_file` with which the simulator (`availability = "trace"`) samples exactly the same clients.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .. import rng
from ..errors import ConfigError, DataError
from ..paths import read_small_text, shown

EVENTS = ("arrived", "departed", "away", "back", "signature", "unreachable")  # what `Population.events` records
TRACE_HEADER = ["client", "online_from", "online_until"]
MAX_TRACE_BYTES = 64 << 20  # a million clients' windows fit; /dev/zero does not


def share(fraction: float, n: int) -> int:
    """round(fraction · n), halves up, as `participation` counts."""
    return int(math.floor(fraction * n + 0.5))


def read_trace(path: str, num_ids: int) -> dict[int, list[tuple[int, int]]]:
    """`trace_file` as client id -> its online windows (first round, last round); a bad file is one
    DataError naming its line."""
    where = f"population.trace_file {shown(str(path))}"
    lines = read_small_text("population.trace_file", path, MAX_TRACE_BYTES, DataError).splitlines()
    if not lines or [cell.strip() for cell in lines[0].split(",")] != TRACE_HEADER:
        raise DataError(f"{where}, line 1: expected the header '{','.join(TRACE_HEADER)}'")
    windows: dict[int, list[tuple[int, int]]] = {}
    for number, line in enumerate(lines[1:], 2):
        if not line.strip():
            continue
        cells = [cell.strip() for cell in line.split(",")]
        if len(cells) != 3 or not all(re.fullmatch(r"[0-9]{1,9}", cell) for cell in cells):
            raise DataError(f"{where}, line {number}: expected three whole numbers 'client,online_from,online_until', "
                            f"got {shown(line, 60)!r}")
        cid, first, last = (int(cell) for cell in cells)
        if cid >= num_ids:
            raise DataError(f"{where}, line {number}: client {cid} is not one of 0..{num_ids - 1} (num_clients + num_newcomers)")
        if not 1 <= first <= last:
            raise DataError(f"{where}, line {number}: expected 1 <= online_from <= online_until, got {first}, {last}")
        windows.setdefault(cid, []).append((first, last))
    return windows


def newcomer_arrivals(config, ids: list[int]) -> dict[int, int]:
    """Newcomer id -> arrival round for `arrivals = "poisson"` or `"trace"` (`config`: a Config or a
    ScenarioSpec); newcomers that never arrive are left out."""
    opts = config.population
    if opts.arrivals == "trace":
        windows = read_trace(opts.trace_file, config.num_clients + config.num_newcomers)
        first = {cid: min(f for f, _ in rows) for cid, rows in windows.items()}
        return {cid: first[cid] for cid in ids if first.get(cid, config.rounds + 1) <= config.rounds}
    gaps = rng.numpy_rng(config.seed, "population", "arrivals").exponential(1.0 / opts.arrival_rate, len(ids))
    rounds = 1 + np.ceil(np.cumsum(gaps))  # time 0 is the end of round 1
    return {cid: int(r) for cid, r in zip(ids, rounds) if r <= config.rounds}


def return_windows(config) -> dict[int, tuple[int, int]]:
    """Returning training client -> (first round away, planned round back); `config`: a Config or a
    ScenarioSpec (the scenario builds their changed data for exactly these)."""
    opts = config.population
    count = min(share(opts.returns, config.num_clients), config.num_clients)
    if not count:
        return {}
    gen = rng.numpy_rng(config.seed, "population", "returns")
    who = sorted(int(c) for c in gen.permutation(config.num_clients)[:count])
    leaves = gen.integers(2, config.rounds - opts.absence + 1, size=count)  # back by the last round
    return {cid: (int(leave), int(leave) + opts.absence) for cid, leave in zip(who, leaves)}


def departure_rounds(config, arrivals: dict[int, int], returning: dict[int, tuple[int, int]]) -> dict[int, int]:
    """Departing client -> the round from which it is gone (see the module doc)."""
    opts = config.population
    candidates = [c for c in range(config.num_clients) if c not in returning] + sorted(arrivals)
    count = min(share(opts.departures, config.num_clients + len(arrivals)), len(candidates))
    if not count:
        return {}
    gen = rng.numpy_rng(config.seed, "population", "departures")
    chosen = sorted(candidates[i] for i in gen.permutation(len(candidates))[:count])
    rounds = {}
    for cid in chosen:
        start = arrivals.get(cid, 1)
        if start < config.rounds:
            rounds[cid] = int(gen.integers(start + 1, config.rounds + 1))
    return rounds


class Availability:
    """When each client can be reached (`population.availability`, see the module doc)."""

    def __init__(self, config, num_ids: int):
        opts = config.population
        self.kind = opts.availability
        if self.kind == "diurnal":
            self.day, self.window = opts.day_rounds, max(1, share(opts.online_fraction, opts.day_rounds))
            self.offset = rng.numpy_rng(config.seed, "population", "timezone").integers(0, self.day, size=num_ids)
        elif self.kind == "trace":
            self.windows = read_trace(opts.trace_file, num_ids)

    def online(self, cid: int, round: int) -> bool:
        if self.kind == "diurnal":
            return (round + int(self.offset[cid])) % self.day < self.window
        if self.kind == "trace":
            return any(first <= round <= last for first, last in self.windows.get(cid, ()))
        return True


@dataclass(frozen=True)
class Plan:
    """The run's population process, drawn before round 1 from the config and arrival rounds alone."""

    arrivals: dict[int, int]  # newcomer -> the round from which it arrives (when online)
    departures: dict[int, int]  # client -> the round from which it is gone for good
    returns: dict[int, tuple[int, int]]  # training client -> (first round away, round from which it may be back)
    drifted: frozenset[int]  # returning clients whose data changed
    availability: Availability


def make_plan(config, arrivals: dict[int, int]) -> Plan:
    returns = return_windows(config)
    drifted = frozenset(returns) if config.population.drift != "none" else frozenset()
    return Plan(dict(arrivals), departure_rounds(config, arrivals, returns), returns, drifted,
                Availability(config, config.num_clients + config.num_newcomers))


class Population:
    """The plan as the round loop applies it, and what happened: events {"round", "client", "event"}
    (one of EVENTS; "signature": a new one sent when back), the only state a checkpoint must keep."""

    def __init__(self, config, arrivals: dict[int, int]):
        self.config = config
        self.plan = make_plan(config, arrivals)
        self.events: list[dict[str, Any]] = []
        self.away: set[int] = set()
        self.departed: set[int] = set()
        self._departing, self._leaving = defaultdict(list), defaultdict(list)
        for cid, r in sorted(self.plan.departures.items()):
            self._departing[r].append(cid)
        for cid, (leave, _) in sorted(self.plan.returns.items()):
            self._leaving[leave].append(cid)

    def note(self, round: int, cid: int, event: str) -> None:
        self.events.append({"round": round, "client": cid, "event": event})
        if event == "departed":
            self.departed.add(cid)
        elif event == "away":
            self.away.add(cid)
        elif event == "back":
            self.away.discard(cid)

    def departing(self, round: int) -> list[int]:
        return list(self._departing.get(round, ()))

    def leaving(self, round: int) -> list[int]:
        return list(self._leaving.get(round, ()))

    def coming_back(self, round: int) -> list[int]:
        return sorted(c for c in self.away if self.plan.returns[c][1] <= round and self.online(c, round))

    def online(self, cid: int, round: int) -> bool:
        return self.plan.availability.online(cid, round)

    def present(self, active: list[int]) -> list[int]:
        return [c for c in active if c not in self.away]

    def reachable(self, round: int, present: list[int]) -> list[int]:
        return [c for c in present if self.online(c, round)]

    def evaluated(self, round: int, present: list[int], stream: str = "eval-sample") -> list[int]:
        """Who is evaluated: everyone present, or a seeded sample of `eval_sample` (not after the last
        round). `stream`: the purpose its sample is drawn for (the absent clients have their own)."""
        n = self.config.population.eval_sample
        if not n or n >= len(present) or round == self.config.rounds:
            return present
        order = torch.randperm(len(present), generator=rng.generator(self.config.seed, stream, round))
        return sorted(present[i] for i in order[:n].tolist())

    def snapshot(self) -> list[dict[str, Any]]:
        return [dict(e) for e in self.events]

    def restore(self, events: list[dict[str, Any]]) -> None:
        self.events, self.away, self.departed = [], set(), set()
        for e in events:
            self.note(e["round"], e["client"], e["event"])

    def record(self) -> dict[str, Any]:
        """results.json's `population` section: what happened, with rounds."""
        def rounds_of(event: str) -> dict[int, int]:
            return {e["client"]: e["round"] for e in self.events if e["event"] == event}

        unreachable = defaultdict(list)
        for e in self.events:
            if e["event"] == "unreachable":
                unreachable[e["client"]].append(e["round"])
        absences = {cid: spans_of(rounds) for cid, rounds in unreachable.items()}  # (first, last) rounds

        arrived, away, back, signed = rounds_of("arrived"), rounds_of("away"), rounds_of("back"), rounds_of("signature")
        c = self.config
        drift = {cid: c.population.drift if cid in self.plan.drifted else "none" for cid in away}
        return {
            "arrivals": [{"client": cid, "round": r} for cid, r in sorted(arrived.items())],
            "not_arrived": sorted(set(range(c.num_clients, c.num_clients + c.num_newcomers)) - set(arrived)),
            "departures": [{"client": cid, "round": r, "arrived": cid < c.num_clients or cid in arrived}
                           for cid, r in rounds_of("departed").items()]
            + [{"client": cid, "round": spans[-1][0], "arrived": True} for cid, spans in sorted(absences.items())
               if spans[-1][1] == c.rounds],
            "returns": [{"client": cid, "left": r, "back": back.get(cid), "drift": drift[cid], "signature_round": signed.get(cid)}
                        for cid, r in sorted(away.items())]
            + [{"client": cid, "left": first, "back": last + 1, "drift": "none", "signature_round": None}
               for cid, spans in sorted(absences.items()) for first, last in spans if last < c.rounds],
            "unreachable": [{"client": cid, "rounds": rounds} for cid, rounds in sorted(unreachable.items())],
        }


def spans_of(rounds: list[int]) -> list[tuple[int, int]]:
    """Rounds as (first, last) spans of consecutive ones: [3, 4, 7] -> [(3, 4), (7, 7)]."""
    spans: list[tuple[int, int]] = []
    for r in sorted(rounds):
        if spans and spans[-1][1] == r - 1:
            spans[-1] = (spans[-1][0], r)
        else:
            spans.append((r, r))
    return spans


def trace_of(record: dict[str, Any], num_clients: int, rounds: int) -> str:
    """A `trace_file` (CSV) from a run's `population` record: every training client and every newcomer
    from its arrival round, online in each round but those it was unreachable. Run the simulator with
    it (`availability = "trace"`, the same arrivals settings) to sample exactly the clients a Flower
    run sampled, when every training node was connected at the start. (It also evaluates, at an
    evaluation round, a present client the trace has offline, which the Flower run could not reach.)"""
    start = {cid: 1 for cid in range(num_clients)} | {a["client"]: a["round"] for a in record["arrivals"]}
    gone = {u["client"]: set(u["rounds"]) for u in record.get("unreachable", [])}
    lines = [",".join(TRACE_HEADER)]
    for cid, first in sorted(start.items()):
        online = [r for r in range(first, rounds + 1) if r not in gone.get(cid, ())]
        lines += [f"{cid},{a},{b}" for a, b in spans_of(online)]
    return "\n".join(lines) + "\n"


def rounds_to_useful(newcomer, rounds) -> int | None:
    """A newcomer's time to useful: the fewest rounds r >= 0 after its arrival round a by which its model
    beats (strictly) its own local-only model (`acc_local`, `population.local_baseline`) on its test
    data. r = 0 counts its model at the last epoch of the welcome's fine-tuning (`acc_by_epoch[-1]`)
    and its evaluation at the end of round a; r > 0 its evaluation at the end of round a + r. Only
    the rounds in which it was evaluated count (`eval_every`, `eval_sample`). None: no local-only
    model (the option off), or never beaten within the run. `newcomer`: a NewcomerReport; `rounds`:
    the RoundReports."""
    local, a = newcomer.acc_local, newcomer.arrival_round
    if local is None:
        return None
    if newcomer.acc_by_epoch and newcomer.acc_by_epoch[-1] > local:
        return 0
    for r in rounds:
        acc = r.acc_by_client.get(newcomer.id)
        if r.round >= a and acc is not None and acc > local:  # NaN (an empty test split) never beats
            return r.round - a
    return None


def median_rounds_to_useful(values: list[int | None]) -> float | None:
    """The median over newcomers with a local-only model of their rounds to useful, those that never got
    there counted as later than any; None when that median is "never", or nobody had such a model."""
    if not values:
        return None
    ordered = sorted(math.inf if v is None else v for v in values)
    mid = len(ordered) // 2
    median = ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2
    return median if math.isfinite(median) else None


def check(config) -> None:
    """One-line errors for `[population]` settings that cannot work or would be ignored."""
    opts, defaults = config.population, type(config.population)()
    traced = "trace" in (opts.arrivals, opts.availability)
    if traced and not opts.trace_file:
        raise ConfigError("population.trace_file: needed when population.arrivals or population.availability is 'trace'")
    if opts.trace_file and not traced:
        raise ConfigError("population.trace_file: not used unless population.arrivals or population.availability is 'trace'")
    if opts.arrivals != "schedule" and config.newcomer_rounds:
        raise ConfigError(f"newcomer_rounds: not used with population.arrivals = {opts.arrivals!r}")
    for key, (switch, value) in {"arrival_rate": ("arrivals", "poisson"), "day_rounds": ("availability", "diurnal"),
                                 "online_fraction": ("availability", "diurnal")}.items():
        if getattr(opts, key) != getattr(defaults, key) and getattr(opts, switch) != value:
            raise ConfigError(f"population.{key}: not used unless population.{switch} = {value!r}")
    if opts.local_baseline and config.num_newcomers == 0:
        raise ConfigError("population.local_baseline: not used without newcomers (num_newcomers = 0)")
    if opts.returns == 0:
        for key in ("absence", "drift", "recluster"):
            if getattr(opts, key) != getattr(defaults, key):
                raise ConfigError(f"population.{key}: not used unless population.returns > 0")
        return
    if config.rounds < opts.absence + 2:
        raise ConfigError(f"population.absence: a client away {opts.absence} rounds from round 2 on is not back by the "
                          f"last round; needs rounds >= absence + 2, got rounds = {config.rounds}")
    if opts.drift == "swap" and config.num_clients < 2:
        raise ConfigError("population.drift: 'swap' takes another training client's class mix; needs num_clients >= 2")
    if opts.recluster and opts.drift == "none":
        raise ConfigError("population.recluster: with population.drift = 'none' a returning client's data do not change")


def refuse_in_flower(config) -> None:
    """On Flower, departures and returns are what the nodes do (a SuperNode stopped for good, or stopped
    and restarted; see the module doc), so the simulator's drawn shares of them (and the drift and
    reclustering that go with returns) are refused in one line rather than ignored, as is
    `local_baseline` (trained in the simulator's process). Arrivals, availability and `eval_sample` are
    the round loop's alone and apply in Flower as in the simulator."""
    for key in ("departures", "returns"):
        if getattr(config.population, key) > 0:
            raise ConfigError(f"population.{key}: simulator only; on Flower, departures and returns are the "
                              "SuperNodes that stop, or stop and restart (run the share with genefl run)")
    if config.population.local_baseline:
        raise ConfigError("population.local_baseline: simulator only (a newcomer's local-only model is trained "
                          "in the simulator's process; run it with genefl run)")
