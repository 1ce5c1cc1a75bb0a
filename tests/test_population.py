"""The population process (`[population]`, genefl/protocol/population.py): arrivals, departures, availability,
returns with drifted data and evaluation at scale, each checked in short real digits runs against
the seeded plan it must follow; GENE-FL's clusters under departures and returns; same seed, same
results; a run killed mid-population and resumed equals the uninterrupted one."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from genefl.algorithms.clustered import join_cluster, leave_cluster, rejoin_cluster
from genefl.config import Config, load_config
from genefl.data.scenario import arrival_rounds, build_scenario
from genefl.errors import ConfigError
from genefl.protocol.messages import ClientUpdate
from genefl.protocol.population import (Population, make_plan, median_rounds_to_useful, refuse_in_flower, return_windows,
                                rounds_to_useful, spans_of, trace_of)
from genefl.results import build_results
from genefl.runtime.assembly import assemble
from genefl.runtime.events import Callback, NewcomerReport, RoundReport
from genefl.runtime.simulator import Simulator
from genefl.runtime.states import DiskStates, MemoryStates

from test_cli import strip_times

BASE = ["rounds=6", "num_clients=6", "num_newcomers=2", "newcomer_epochs=1", "seed=1", "genefl.fisher_samples=16"]


def run(*overrides: str, callbacks=(), before=None):
    """(simulator, RunResult, results.json document) of BASE with `overrides`; `before(sim)` is called
    before it runs."""
    config = load_config(None, BASE + list(overrides))
    sim = Simulator(config, build_scenario(config), list(callbacks))
    for cb in callbacks:
        cb.sim = sim
    if before:
        before(sim)
    result = sim.run()
    return sim, result, build_results(result)


def contacted(result, cid: int) -> list[int]:
    """The rounds in which `cid` sent or was sent anything (evaluation included)."""
    return sorted({t.round for t in result.ledger.transfers if t.client == cid})


def test_the_defaults_are_a_static_population():
    sim, result, doc = run("method=fedavg", "rounds=3")
    plan = sim.loop.population.plan
    assert plan.departures == {} and plan.returns == {} and plan.drifted == frozenset()
    assert plan.arrivals == arrival_rounds(sim.config) == {6: 2, 7: 3}
    assert [(r.online, r.present, r.departed, len(r.participants)) for r in result.rounds] == [(6, 6, 0, 6), (7, 7, 0, 7),
                                                                                              (8, 8, 0, 8)]
    assert doc["population"] == {"arrivals": [{"client": 6, "round": 2}, {"client": 7, "round": 3}], "not_arrived": [],
                                 "departures": [], "returns": [], "unreachable": []}


def test_poisson_arrivals_are_seeded_and_those_after_the_last_round_never_arrive():
    def arrivals(seed: int) -> dict[int, int]:
        return arrival_rounds(load_config(None, ["rounds=8", "num_clients=4", "num_newcomers=12", f"seed={seed}",
                                                 "population.arrivals=poisson", "population.arrival_rate=1.0"]))

    first, again, other = arrivals(0), arrivals(0), arrivals(1)
    assert first == again and first != other
    for drawn in (first, other):
        assert 0 < len(drawn) < 12  # about 7 expected in 7 rounds of time
        assert list(drawn) == list(range(4, 4 + len(drawn)))  # a process: the first ones, in order
        assert all(2 <= r <= 8 for r in drawn.values()) and list(drawn.values()) == sorted(drawn.values())
    sim, result, doc = run("method=fedavg", "rounds=4", "num_newcomers=4", "population.arrivals=poisson")
    planned = sim.scenario.arrivals
    assert {n.id: n.arrival_round for n in result.newcomers} == planned
    assert doc["population"]["not_arrived"] == sorted(set(range(6, 10)) - set(planned)) != []
    for cid in range(6, 10):  # a newcomer is contacted from its arrival on, never before
        assert contacted(result, cid)[:1] == ([planned[cid]] if cid in planned else [])


def test_a_departed_client_is_never_contacted_again_and_its_state_is_dropped(tmp_path):
    sim, result, doc = run("method=fedper", "population.departures=0.5", "state_store=disk", f"state_dir={tmp_path}")
    departures = {d["client"]: d["round"] for d in doc["population"]["departures"]}
    assert departures == sim.loop.population.plan.departures and len(departures) == 4  # round(0.5 * 8)
    for cid, gone in departures.items():
        assert contacted(result, cid)[-1] == gone - 1  # it trained and was evaluated until then
        assert all(cid not in r.participants + r.dropped and cid not in r.acc_by_client for r in result.rounds[gone - 1:])
        assert not (sim.states.folder / f"client{cid}.pt").exists()
    kept = {int(p.stem[len("client"):]) for p in sim.states.folder.glob("client*.pt")}
    assert kept == set(range(8)) - set(departures)  # every other client's personal model is still there
    assert [r.departed for r in result.rounds] == [sum(g <= t for g in departures.values()) for t in range(1, 7)]
    assert [r.present for r in result.rounds] == [len(r.participants) for r in result.rounds]  # always online


def test_an_offline_client_is_never_sampled_and_a_newcomer_arrives_only_when_online():
    sim, result, doc = run("method=fedavg", "participation=0.5", "population.availability=diurnal",
                           "population.day_rounds=4", "population.online_fraction=0.5")
    availability = sim.loop.population.plan.availability
    for cid in range(8):  # online 2 rounds in 4, at its own time of day
        assert [availability.online(cid, t) for t in range(1, 9)].count(True) == 4
    assert len({tuple(availability.online(c, t) for t in range(1, 5)) for c in range(8)}) > 1
    present = set(range(6))
    for r in result.rounds:
        present |= {n.id for n in result.newcomers if n.arrival_round == r.round}
        online = {c for c in present if availability.online(c, r.round)}
        assert set(r.participants) <= online and r.online == len(online) and r.present == len(present)
        # the cohort: participation of the population, capped by who is online
        assert len(r.participants) == min(max(1, int(0.5 * len(present) + 0.5)), len(online))
    late = 0
    for n in result.newcomers:
        scheduled = sim.scenario.arrivals[n.id]
        assert [availability.online(n.id, t) for t in range(scheduled, n.arrival_round + 1)] == \
            [False] * (n.arrival_round - scheduled) + [True]
        late += n.arrival_round > scheduled
    assert late  # this seed puts a newcomer off by its time zone


def test_a_trace_file_sets_who_is_online_and_when_newcomers_arrive(tmp_path):
    trace = tmp_path / "trace.csv"
    # client 5 and newcomer 7 have no rows: never online, never arriving
    trace.write_text("client,online_from,online_until\n0,1,6\n1,1,2\n1,5,6\n2,3,4\n3,1,6\n4,2,6\n6,3,3\n 6 , 5 , 6 \n")
    sim, result, doc = run("method=fedavg", "population.arrivals=trace", "population.availability=trace",
                           f"population.trace_file={trace}")
    windows = {0: [(1, 6)], 1: [(1, 2), (5, 6)], 2: [(3, 4)], 3: [(1, 6)], 4: [(2, 6)], 6: [(3, 3), (5, 6)]}

    def online(c, t):
        return any(a <= t <= b for a, b in windows.get(c, []))

    assert {n.id: n.arrival_round for n in result.newcomers} == {6: 3} and doc["population"]["not_arrived"] == [7]
    for r in result.rounds:
        present = list(range(6)) + ([6] if r.round >= 3 else [])
        assert r.participants == [c for c in present if online(c, r.round)]  # participation 1: everyone online
    assert 5 not in {c for r in result.rounds for c in r.participants}


def test_trace_file_rows_are_checked_naming_the_line(tmp_path):
    from genefl.errors import DataError
    from genefl.protocol.population import read_trace

    cases = {"id,from,to\n": "line 1: expected the header 'client,online_from,online_until'",
             "client,online_from,online_until\n0,1\n": "line 2: expected three whole numbers",
             "client,online_from,online_until\n0,1,2\n\n0,-1,2\n": "line 4: expected three whole numbers",
             "client,online_from,online_until\n8,1,2\n": "line 2: client 8 is not one of 0..7",
             "client,online_from,online_until\n0,3,2\n": "line 2: expected 1 <= online_from <= online_until, got 3, 2",
             "client,online_from,online_until\n0,0,2\n": "line 2: expected 1 <= online_from"}
    for text, fragment in cases.items():
        (tmp_path / "t.csv").write_text(text)
        with pytest.raises(DataError) as err:
            read_trace(str(tmp_path / "t.csv"), 8)
        assert fragment in str(err.value) and "\n" not in str(err.value), str(err.value)
    (tmp_path / "ok.csv").write_text("client,online_from,online_until\r\n1,2,3\r\n")  # Windows line ends are fine
    assert read_trace(str(tmp_path / "ok.csv"), 8) == {1: [(2, 3)]}


def histogram(labels: torch.Tensor) -> torch.Tensor:
    return torch.bincount(labels, minlength=10)


def test_returning_clients_data_change_as_drawn_with_the_scenario():
    config = load_config(None, BASE + ["population.returns=0.34", "population.absence=2"])
    scenario = build_scenario(config)
    assert scenario.returns == return_windows(config) and len(scenario.returns) == 2 == len(scenario.drifted)
    for cid, (left, back) in scenario.returns.items():
        assert 2 <= left and back == left + 2 <= 6
        old, new = scenario.clients[cid], scenario.drifted[cid]
        assert new.num_train == old.num_train and len(new.y_test) == len(old.y_test)
        assert not torch.equal(histogram(old.y_train), histogram(new.y_train))
        assert scenario.data(cid, back - 1) is old and scenario.data(cid, back) is new
    again = build_scenario(config)
    assert all(torch.equal(again.drifted[c].x_train, d.x_train) for c, d in scenario.drifted.items())
    # swap: the class mix of another training client (so no class that client lacks)
    swapped = build_scenario(load_config(None, BASE + ["population.returns=0.34", "population.absence=2",
                                                       "population.drift=swap"]))
    for cid, data in swapped.drifted.items():
        classes = set(data.y_train.tolist())
        assert any(classes <= set(swapped.clients[o].y_train.tolist()) for o in range(6) if o != cid)
    unchanged = build_scenario(load_config(None, BASE + ["population.returns=0.34", "population.drift=none"]))
    assert unchanged.returns and not unchanged.drifted
    assert all(unchanged.data(c, 6) is unchanged.clients[c] for c in unchanged.returns)


def test_a_returning_client_is_away_then_back_and_trains_on_its_new_data():
    sim, result, doc = run("method=fedavg", "population.returns=0.34", "population.absence=2")
    returns = sim.scenario.returns
    assert [(r["client"], r["left"], r["back"]) for r in doc["population"]["returns"]] == \
        [(c, a, b) for c, (a, b) in sorted(returns.items())]
    for cid, (left, back) in returns.items():
        for r in result.rounds:
            away = left <= r.round < back
            assert (cid in r.participants) != away and (cid in r.acc_by_client) != away
        assert sim.clients.states.open(cid) == {}  # fedavg keeps nothing per client
    assert [r.present for r in result.rounds] == [6 + (t >= 2) + (t >= 4) - sum(a <= t < b for a, b in returns.values())
                                                  for t in range(1, 7)]


def test_a_client_back_with_drifted_data_resends_its_signature_and_can_change_cluster():
    common = ["method=genefl", "rounds=5", "num_newcomers=1", "seed=0", "clustering.num_clusters=3",
              "population.returns=0.5", "population.absence=2"]
    _, plain, plain_doc = run(*common)
    sim, result, doc = run(*common, "population.recluster=true")
    returns = doc["population"]["returns"]
    late = [t for t in result.ledger.transfers if t.kind == "signature" and t.client < 6 and t.round > 0]
    assert sorted((t.client, t.round) for t in late) == [(r["client"], r["back"]) for r in returns]
    assert all(r["signature_round"] == r["back"] for r in returns)
    assert not [t for t in plain.ledger.transfers if t.kind == "signature" and t.client < 6 and t.round > 0]
    assert result.ledger.total("up", "signature") == plain.ledger.total("up", "signature") + sum(t.nbytes for t in late)
    moved = [r["client"] for r in returns
             if doc["method_info"]["cluster_of"][str(r["client"])] != plain_doc["method_info"]["cluster_of"][str(r["client"])]]
    assert moved  # seed 0: clients 0 and 1 come back nearer another cluster


def test_genefl_finishes_with_a_cluster_emptied_by_departures_and_places_newcomers_in_the_others():
    common = ["method=genefl", "rounds=5", "seed=0", "clustering.num_clusters=3", "newcomer_rounds=[5, 5]"]
    _, _, plain = run(*common)
    _, result, doc = run(*common, "population.departures=0.5")
    # without departures, cluster 1 is client 3 and newcomer 7; client 3 leaves in round 3 and empties it
    assert [c for c, k in plain["method_info"]["cluster_of"].items() if k == 1] == ["3", "7"]
    assert {d["client"]: d["round"] for d in doc["population"]["departures"]}[3] == 3
    assert doc["method_info"]["cluster_sizes"][1] == 0 and "3" not in doc["method_info"]["cluster_of"]
    assert [n["cluster"] for n in plain["newcomers"]] == [0, 1] and [n["cluster"] for n in doc["newcomers"]] == [0, 0]
    assert doc["summary"]["acc_clients"] > 0.3 and len(result.rounds) == 5


def test_clusters_under_departures_and_returns_by_hand():
    """Signatures: unit vectors in R^2 (p = 1); clusters 0 (x axis) and 1 (y axis)."""
    x, y = torch.tensor([[1.0], [0.0]]), torch.tensor([[0.0], [1.0]])
    cluster_of, sigs = {0: 0, 1: 0, 2: 1, 3: 1}, {0: x, 1: x, 2: y, 3: y}
    hello = ClientUpdate(extras={"signature": y})
    assert rejoin_cluster(Config(), cluster_of, sigs, 0, hello)[0] == 1  # back nearer the y axis
    emptied, left = leave_cluster(*leave_cluster(cluster_of, sigs, 2), 3)
    assert emptied == {0: 0, 1: 0} and set(left) == {0, 1}
    assert join_cluster(Config(), emptied, left, 9, hello)[0] == 0  # cluster 1 is empty: the nearest non-empty one
    nobody = leave_cluster(*leave_cluster(emptied, left, 0), 1)
    assert join_cluster(Config(), *nobody, 9, hello)[0] == 0  # nothing to compare with: cluster 0
    assert rejoin_cluster(Config(), {5: 1}, {5: x}, 5, hello)[:2] == (1, {5: 1})  # alone: it stays


@pytest.mark.parametrize("method", ["genefl", "pacfl", "scaffold", "fedper", "flearngene", "local"])
def test_methods_with_per_client_state_finish_a_changing_population(method):
    _, result, doc = run(f"method={method}", "rounds=5", "num_clients=5", "clustering.num_clusters=2",
                         "population.departures=0.3", "population.returns=0.4", "population.absence=2",
                         *(["population.recluster=true"] if method in ("genefl", "pacfl") else []))
    assert doc["population"]["departures"] and doc["population"]["returns"] and len(result.rounds) == 5
    assert doc["summary"]["acc_clients"] > 0.2


def test_scaffold_counts_its_members_as_they_come_and_go():
    config = load_config(None, BASE + ["method=scaffold"])
    strategy = assemble(config, (1, 8, 8), 10).strategy()
    state = strategy.init()
    state, _ = strategy.welcome(state, 2, 6, None)
    state = strategy.depart(strategy.depart(state, 3, 0), 3, 6)
    assert state.population == 6 + 1 - 2


def test_evaluation_samples_present_clients_and_everyone_after_the_last_round():
    sim, result, _ = run("method=fedavg", "population.eval_sample=3", "population.departures=0.3")
    samples = [sorted(r.acc_by_client) for r in result.rounds]
    assert all(len(s) == 3 for s in samples[:-1]) and len({tuple(s) for s in samples[:-1]}) > 1
    assert len(samples[-1]) == result.rounds[-1].present == 8 - len(sim.loop.population.departed)
    assert all(c not in sim.loop.population.departed for c in samples[-1])
    evals = [sum(1 for t in result.ledger.transfers if t.kind == "eval" and t.round == r) for r in range(1, 7)]
    assert evals == [3, 3, 3, 3, 3, samples[-1].__len__()]


DYNAMIC = ["population.arrivals=poisson", "population.arrival_rate=1.0", "population.departures=0.3",
           "population.availability=diurnal", "population.day_rounds=3", "population.online_fraction=0.67",
           "population.returns=0.4", "population.absence=2", "population.recluster=true"]


def test_same_seed_same_results_other_seed_other_population():
    docs = [strip_times(run("method=fedavg", "rounds=5", *DYNAMIC, f"seed={s}")[2]) for s in (0, 0, 1)]
    assert docs[0] == docs[1]
    assert docs[0]["population"] != docs[2]["population"]


def test_states_drop_a_client(tmp_path):
    for states in (MemoryStates(), DiskStates(tmp_path, "run")):
        for cid in (1, 2):
            states.close(cid, states.open(cid) | {"x": torch.tensor([float(cid)])})
        states.drop(1)
        states.drop(7)  # never stored: nothing to do
        assert [c for c, _ in states.items()] == [2] and states.open(1) == {}


def test_flower_refuses_the_simulators_shares_of_departures_and_returns():
    for key in ("departures=0.2", "returns=0.2"):
        with pytest.raises(ConfigError, match=f"population.{key.split('=')[0]}: simulator only; on Flower"):
            refuse_in_flower(load_config(None, [f"population.{key}"]))
    with pytest.raises(ConfigError, match="population.local_baseline: simulator only"):
        refuse_in_flower(load_config(None, ["population.local_baseline=true"]))
    with pytest.raises(ConfigError, match="population.local_baseline: not used without newcomers"):
        load_config(None, ["population.local_baseline=true", "num_newcomers=0"])
    refuse_in_flower(load_config(None, ["population.arrivals=poisson", "population.availability=diurnal",
                                        "population.eval_sample=2"]))  # the round loop's alone


def test_a_plan_depends_on_the_config_alone():
    config = load_config(None, BASE + DYNAMIC)
    a, b = make_plan(config, arrival_rounds(config)), make_plan(config, arrival_rounds(config))
    assert (a.arrivals, a.departures, a.returns, a.drifted) == (b.arrivals, b.departures, b.returns, b.drifted)
    assert not set(a.departures) & set(a.returns)  # a returning client does not also leave for good


# ---- kill and resume mid-population (a real `genefl run` process SIGKILLs itself: GENEFL_FAULT) ----
RESUMABLE = ["method=genefl", "rounds=6", "num_clients=5", "num_newcomers=3", "newcomer_epochs=1", "seed=0",
             "genefl.fisher_samples=16", "clustering.num_clusters=2", "population.local_baseline=true", *DYNAMIC]


def test_a_run_killed_mid_population_and_resumed_equals_the_uninterrupted_run(tmp_path, capsys):
    """Seed 0: newcomers arrive in rounds 2-4, client 1 is away in rounds 2-3 and back (new signature)
    in round 4, client 4 away from round 3, clients 2 and 3 leave in round 4: killed in round 4, after
    its first client trained, the resumed run replays round 4 from the checkpoint of round 3."""
    from genefl.cli import main

    args = [a for item in RESUMABLE for a in ("--set", item)]
    assert main(["run", *args, "--out", str(tmp_path / "whole")]) == 0
    want = strip_times(json.loads((tmp_path / "whole" / "results.json").read_text()))
    events = want["population"]
    assert [d["round"] for d in events["departures"]] == [4, 4] and [r["back"] for r in events["returns"]] == [4, 6]
    assert [r["absent"] for r in want["rounds"]] == [0, 1, 2, 1, 1, 0]  # clients 1 and 4 away (see the docstring)
    assert all((r["acc_absent"] is None) == (r["absent"] == 0) for r in want["rounds"])
    assert len(want["newcomers"]) == 3 and all(n["acc_local"] is not None for n in want["newcomers"])
    assert want["newcomer_cohorts"] and "rounds_to_useful" in want["newcomers"][0]
    out = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-m", "genefl.cli", "run", *args, "--out", str(out)], capture_output=True,
                          text=True, env={**os.environ, "GENEFL_FAULT": "round:4"}, timeout=300)
    assert proc.returncode == -9, proc.stderr  # it really died by SIGKILL
    assert not (out / "results.json").exists() and (out / "checkpoint.pt").exists()
    assert main(["run", "--resume", str(out)]) == 0, capsys.readouterr().err
    assert strip_times(json.loads((out / "results.json").read_text())) == want
    rows = (out / "rounds.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4", "5", "6"]


def test_unreachable_nodes_are_returns_and_departures_and_a_trace():
    """What a Flower run records when nodes stop: client 2's node down in rounds 3-4 (a return at 5),
    newcomer 3 arrived at 3 and down in round 6, the last (a departure from 6)."""
    config = load_config(None, ["rounds=6", "num_clients=3", "num_newcomers=1", "newcomer_rounds=[2]"])
    population = Population(config, arrival_rounds(config))
    population.note(3, 3, "arrived")
    for round, cid in ((3, 2), (4, 2), (6, 3)):
        population.note(round, cid, "unreachable")
    record = population.record()
    assert record["returns"] == [{"client": 2, "left": 3, "back": 5, "drift": "none", "signature_round": None}]
    assert record["departures"] == [{"client": 3, "round": 6, "arrived": True}]
    assert record["unreachable"] == [{"client": 2, "rounds": [3, 4]}, {"client": 3, "rounds": [6]}]
    assert trace_of(record, 3, 6) == "client,online_from,online_until\n0,1,6\n1,1,6\n2,1,2\n2,5,6\n3,3,5\n"
    assert spans_of([7, 3, 4]) == [(3, 4), (7, 7)] and spans_of([]) == []


# ---- evaluation over time: absent clients, time to useful, cohorts, the plot ----
class StoredModels(Callback):
    """After each round, every away client's stored model tested by hand on its own test data then."""

    def __init__(self):
        self.sim, self.by_round = None, {}

    def after_round(self, report) -> None:
        from genefl.protocol.training import accuracy, load_into

        sim, model = self.sim, self.sim.spec.build(0, "by-hand")
        accs = {}
        for cid in sorted(sim.loop.population.away):
            load_into(model, sim.clients.states.open(cid)["model"])
            data = sim.scenario.data(cid, report.round)
            accs[cid] = accuracy(model, data.x_test, data.y_test)
        self.by_round[report.round] = accs


def without_absent(doc):
    """A results.json document less what absent clients' evaluation adds."""
    doc = strip_times(doc)
    for r in doc["rounds"]:
        r.pop("acc_absent")
    return doc


@pytest.mark.parametrize("method", ["genefl", "local"])
def test_an_absent_client_is_its_own_stored_model_on_its_own_test_data_and_costs_nothing(method):
    """4 clients, one away in rounds 4-5 (seed 1): in those rounds its accuracy is its stored model's,
    tested by hand; the same run with absent clients not evaluated is identical in everything else:
    accuracies, bytes (eval bytes too), newcomers, final models, client states."""
    common = [f"method={method}", "num_clients=4", "population.returns=0.25", "population.absence=2"]
    hand = StoredModels()
    sim, result, doc = run(*common, callbacks=[hand])
    (cid, (left, back)), = sim.scenario.returns.items()
    assert (cid, left, back) == (3, 4, 6)
    for r in result.rounds:
        away = left <= r.round < back
        assert r.absent == away and (r.acc_absent_by_client == hand.by_round[r.round] if away else r.acc_absent_by_client is None)
    assert [row["acc_absent"] for row in doc["rounds"]] == [None] * 3 + [hand.by_round[t][cid] for t in (4, 5)] + [None]
    assert [row["absent"] for row in doc["rounds"]] == [0, 0, 0, 1, 1, 0]
    assert not [t for t in result.ledger.transfers if t.client == cid and left <= t.round < back]  # no bytes counted

    def no_absent(s):
        s.loop.strategy.configure_absent = lambda state, c: None

    quiet, plain, plain_doc = run(*common, before=no_absent)
    assert all(r.acc_absent_by_client is None for r in plain.rounds)
    assert without_absent(doc) == without_absent(plain_doc)
    assert [(t.round, t.client, t.direction, t.kind, t.nbytes) for t in result.ledger.transfers] == \
        [(t.round, t.client, t.direction, t.kind, t.nbytes) for t in plain.ledger.transfers]
    assert all(torch.equal(v, plain.final_weights[k]) for k, v in result.final_weights.items())
    mine, theirs = dict(sim.clients.states.items()), dict(quiet.clients.states.items())
    assert mine.keys() == theirs.keys() and all(torch.equal(v, theirs[c]["model"][k])
                                                for c, state in mine.items() for k, v in state["model"].items())


def test_absent_clients_of_methods_without_personal_models_are_null_and_pacfls_are_their_clusters():
    _, result, doc = run("method=fedavg", "population.returns=0.34", "population.absence=2")
    assert any(r["absent"] for r in doc["rounds"]) and all(r["acc_absent"] is None for r in doc["rounds"])
    _, result, doc = run("method=pacfl", "population.returns=0.34", "population.absence=2")
    assert all((r["acc_absent"] is None) == (not r["absent"]) for r in doc["rounds"])
    _, _, static = run("method=local", "rounds=3")
    assert all(r["absent"] == 0 and r["acc_absent"] is None for r in static["rounds"])


def reports(arrival: int, by_epoch: list[float], local: float | None, accs: dict[int, float]):
    """Newcomer 9 arriving at `arrival`, and rounds 1..6 with its accuracy in `accs` (others: not evaluated)."""
    newcomer = NewcomerReport(9, arrival, "random", 0, 0.1, by_epoch, acc_local=local)
    rounds = [RoundReport(t, [], [], {9: accs[t]} if t in accs else {}, 4, 0, 0, 0.0) for t in range(1, 7)]
    return newcomer, rounds


def test_rounds_to_useful_by_hand():
    nan = float("nan")
    cases = [((3, [0.4, 0.5], 0.6, {3: 0.55, 5: 0.6, 6: 0.7}), 3),  # 0.6 ties (no win); not evaluated in round 4
             ((3, [0.4, 0.65], 0.6, {3: 0.1}), 0),  # its fine-tuned model already beats it
             ((3, [0.4, 0.5], 0.6, {3: 0.61}), 0),  # so does its evaluation at the end of its arrival round
             ((3, [0.4, 0.5], 0.6, {2: 0.9, 4: 0.61}), 1),  # a round before its arrival does not count
             ((3, [0.4, 0.5], 0.6, {4: 0.5, 6: nan}), None),  # never within the run; NaN never beats
             ((3, [0.9], None, {3: 0.9}), None),  # no local-only model (the option off)
             ((3, [0.4], nan, {3: 0.9}), None)]  # a local-only model with an empty test split
    for args, want in cases:
        assert rounds_to_useful(*reports(*args)) == want, args
    assert median_rounds_to_useful([0, 3, None]) == 3 and median_rounds_to_useful([1, 2]) == 1.5
    assert median_rounds_to_useful([0, None]) is None and median_rounds_to_useful([None, None, 2]) is None
    assert median_rounds_to_useful([]) is None


def test_the_local_only_model_is_as_defined_and_changes_nothing_else():
    from genefl import rng
    from genefl.protocol.newcomer import FinetuneSettings, finetune, newcomer_split_generator

    common = ["method=genefl", "newcomer_epochs=2"]
    sim, result, doc = run(*common, "population.local_baseline=true")
    _, _, off = run(*common)
    c = sim.config
    for n in result.newcomers:  # a fresh seeded model, the newcomer protocol on its own data, nothing inherited
        model = sim.spec.build(c.seed, "local-baseline", n.id)
        curve = finetune(model, sim.scenario.data(n.id, n.arrival_round), set(), FinetuneSettings.from_config(c),
                         rng.generator(c.seed, "local-baseline", n.id), newcomer_split_generator(c.seed, n.id))
        assert n.acc_local == curve.test[-1]
    assert [n["rounds_to_useful"] for n in doc["newcomers"]] == [rounds_to_useful(n, result.rounds) for n in result.newcomers]
    assert doc["summary"]["newcomers_rounds_to_useful_median"] == \
        median_rounds_to_useful([rounds_to_useful(n, result.rounds) for n in result.newcomers])
    assert all(n["acc_local"] is None and n["rounds_to_useful"] is None for n in off["newcomers"])
    assert off["summary"]["newcomers_rounds_to_useful_median"] is None
    on = strip_times(doc)
    on["summary"].pop("newcomers_rounds_to_useful_median"), strip_times(off)["summary"].pop("newcomers_rounds_to_useful_median")
    for d in (on, off):
        for n in d["newcomers"] + d["newcomer_cohorts"]:
            n.pop("acc_local", None), n.pop("rounds_to_useful", None), n.pop("rounds_to_useful_median", None)
    assert on == off


def test_newcomer_cohorts_group_by_arrival_round():
    _, result, doc = run("method=fedavg", "num_newcomers=3", "newcomer_rounds=[3, 3, 5]", "newcomer_epochs=2",
                         "population.local_baseline=true")
    news = {n["id"]: n for n in doc["newcomers"]}
    cohorts = doc["newcomer_cohorts"]
    assert [(k["arrival_round"], k["clients"]) for k in cohorts] == [(3, [6, 7]), (5, [8])]
    first = cohorts[0]
    assert first["acc_init"] == pytest.approx((news[6]["acc_init"] + news[7]["acc_init"]) / 2)
    assert first["acc_by_epoch"] == pytest.approx([(a + b) / 2 for a, b in zip(news[6]["acc_by_epoch"], news[7]["acc_by_epoch"])])
    rounds = {r.round: r for r in result.rounds}
    assert first["acc_by_round"] == [[t, pytest.approx((rounds[t].acc_by_client[6] + rounds[t].acc_by_client[7]) / 2)]
                                     for t in range(3, 7)]
    assert cohorts[1]["acc_by_epoch"] == news[8]["acc_by_epoch"] and [t for t, _ in cohorts[1]["acc_by_round"]] == [5, 6]
    assert cohorts[1]["rounds_to_useful_median"] == news[8]["rounds_to_useful"]
    assert first["rounds_to_useful_median"] == median_rounds_to_useful([news[6]["rounds_to_useful"], news[7]["rounds_to_useful"]])


def test_genefl_plot_draws_present_and_absent_accuracy_for_a_changing_population(tmp_path):
    from genefl.experiments.plots import plot_all, population_changed
    from genefl.results import results_problem

    _, _, moving = run("method=local", "population.returns=0.34", "population.absence=2")
    _, _, static = run("method=local", "rounds=3")
    assert population_changed(moving) and not population_changed(static)
    assert results_problem(moving) is None
    (tmp_path / "a").mkdir()
    names = [p.name for p in plot_all([{**static, "label": "static"}], tmp_path / "a")]
    assert "population_accuracy.png" not in names and not (tmp_path / "a" / "population_accuracy.png").exists()
    (tmp_path / "b").mkdir()
    paths = plot_all([{**moving, "label": "local"}, {**static, "label": "static"}], tmp_path / "b")
    assert paths[-1].name == "population_accuracy.png" and paths[-1].stat().st_size > 1000
