"""The Flower runtime against real Flower processes on 127.0.0.1: a SuperLink and SuperNodes
through `flwr run`, and Flower's own Ray simulation. Skipped as a module only when flwr is not
installed (the README's test command installs it, so CI runs these)."""

from __future__ import annotations

import csv
import json
import re
import signal
import subprocess
import threading
import time

import numpy as np
import pytest
import torch

pytest.importorskip("flwr")

from flower_harness import Federation  # noqa: E402
from readme import tls_certificate_commands, tls_node_flags, tls_superlink_command, write_own_packages  # noqa: E402

from genefl.config import load_config  # noqa: E402
from genefl.data.scenario import build_scenario  # noqa: E402
from genefl.protocol.population import trace_of  # noqa: E402
from genefl.results import build_results  # noqa: E402
from genefl.runtime.simulator import Simulator  # noqa: E402

KILLED = ["method=my_methods:MYPROX", "rounds=2", "num_clients=3", "num_newcomers=0", "eval_every=2"]


def own_packages(root, monkeypatch):
    """The README's own method (my_methods.py) and a model factory (my_package.models), importable by this
    process and, through PYTHONPATH, by every Flower process."""
    folder = write_own_packages(root / "pkgs")
    monkeypatch.syspath_prepend(str(folder))
    return folder


def run_config(overrides: list[str], out) -> str:
    quoted = []
    for item in overrides:
        key, value = item.split("=", 1)
        quoted.append(f"{key}='{value}'" if not value.replace(".", "").replace("-", "").isdigit() and value not in ("true", "false") else item)
    return " ".join(quoted + [f"flower.out='{out}'", "flower.node_wait=60.0", "flower.round_timeout=120.0"])


def assert_same_weights(out, sim_weights) -> None:
    """The Flower run's final weights (`out/weights.pt`) are the simulator's, tensor by tensor (atol 1e-6)."""
    flower_weights = torch.load(out / "weights.pt")
    assert flower_weights.keys() == sim_weights.keys() and sim_weights
    for name, value in sim_weights.items():
        assert torch.allclose(flower_weights[name].float(), value.float(), atol=1e-6, rtol=0), name


def simulate(overrides: list[str]):
    config = load_config(None, overrides)
    result = Simulator(config, build_scenario(config)).run()
    return build_results(result), result.final_weights


# payload codecs on: the ledger counts packed bytes, and error feedback's residuals and the references of
# broadcasts sent as changes (`codec.down_delta`) live in the nodes' state;
# an attacker (client 1) signs with client 2's main classes to join its cluster and flips its changes' signs
# there, and the server aggregates each cluster by the median of changes clipped to norm 0.3, leaving out
# whoever's mean cosine with the median change is negative (`defence.reputation`, scored from round 1)
RESUMED = ["method=genefl", "rounds=3", "num_clients=3", "num_newcomers=0", "eval_every=3",
           "codec.up=int4", "codec.down=int8", "codec.error_feedback=true", "codec.signature=fp16", "codec.down_delta=true",
           "adversary.kind=signflip", "adversary.fraction=0.34", "adversary.signature_classes=[3,5,6,7]",
           "defence.aggregator=median", "defence.norm_bound=0.3", "defence.reputation=true",
           "defence.reputation_rounds=1"]


def test_serverapp_killed_and_resumed_equals_the_simulator(tmp_path_factory):
    """The ServerApp is SIGKILLed mid-run (after round 1's checkpoint, during round 2) and a second
    `flwr run` with flower.resume=true finishes it: weights, bytes and accuracies equal an
    uninterrupted simulator run of the same config, so the Flower runtime agrees with the simulator
    and nothing is lost on the way. GENE-FL's clients keep personal models, error-feedback
    residuals and the references their broadcasts are changes from (`codec.down_delta`), which survive
    the new Flower run through the nodes' state-dir; every payload is
    codec-packed, and both runtimes count the same packed bytes. An attacker and a defence run too, the
    same way in both: the attacker's crafted signature puts it in the same cluster, its sign-flipped
    updates and the clipped medians give the same weights, and the defence's notes are the same, as are
    the reputation scores the ServerApp kept across its restart."""
    fed = Federation(tmp_path_factory.mktemp("resume"))
    out, states = fed.root / "out", fed.root / "node-states"
    try:
        fed.start_superlink()
        for i in range(3):
            fed.start_node(i, 3, state_dir=str(states))
        config = run_config(RESUMED, out)
        submitted = fed.run(config, stream=False)
        assert submitted.returncode == 0, submitted.stdout[-3000:] + submitted.stderr[-3000:]
        deadline = time.monotonic() + 300
        while not (out / "checkpoint.pt").exists():
            assert time.monotonic() < deadline, "the ServerApp wrote no checkpoint"
            time.sleep(0.2)
        assert fed.kill_serverapps() == 1
        assert len((out / "rounds.csv").read_text().splitlines()) == 2  # header + round 1: killed in round 2
        # as an operator would: mark the dead run stopped (else the SuperLink notices only later)
        run_id = re.search(r"(\d{6,})", submitted.stdout).group(1)
        assert fed.stop_run(int(run_id)).returncode == 0
        proc = fed.run(config + " flower.resume=true")
    finally:
        fed.stop()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not (out / "checkpoint.pt").exists()
    assert sorted(p.name.rsplit("-", 1)[1] for p in states.iterdir()) == ["client0", "client1", "client2"]
    flower_doc = json.loads((out / "results.json").read_text())
    sim_doc, sim_weights = simulate(RESUMED)
    assert len(flower_doc["rounds"]) == 3 and len((out / "rounds.csv").read_text().splitlines()) == 4
    for key in ("bytes_up", "bytes_down", "bytes_total", "bytes_eval"):
        assert flower_doc["summary"][key] == sim_doc["summary"][key], key
    assert [r["bytes_up"] for r in flower_doc["rounds"]] == [r["bytes_up"] for r in sim_doc["rounds"]]
    assert_same_weights(out, sim_weights)
    assert flower_doc["summary"]["acc_clients"] == pytest.approx(sim_doc["summary"]["acc_clients"], abs=1e-6)
    assert flower_doc["method_info"]["gene_layers"] == sim_doc["method_info"]["gene_layers"]
    for key in ("cluster_of", "adversary", "notes", "reputation"):
        assert flower_doc["method_info"][key] == sim_doc["method_info"][key], key
    assert [count for _, count in sim_doc["method_info"]["reputation"].values()] == [3, 3, 3]
    assert sim_doc["method_info"]["notes"][0].startswith("round 1: reputation left out client 1 (")
    assert sim_doc["method_info"]["cluster_of"] == {"0": 0, "1": 1, "2": 1}  # honest signatures: {0, 1} and {2}
    assert any("clipped" in note for note in sim_doc["method_info"]["notes"])


def test_run_goes_on_when_a_supernode_dies(tmp_path_factory, monkeypatch):
    """On the README's secure deployment (its certificate commands as written, its TLS + SuperNode
    authentication SuperLink and node flags, one registered key pair per node), with your own method
    on the nodes (the README's FedProx-over-FedAvg): a node killed after round 1 is dropped from round 2
    and the run goes on."""
    root = tmp_path_factory.mktemp("kill")
    fed = Federation(root, pythonpath=own_packages(root, monkeypatch))
    out = fed.root / "out"
    for command in tls_certificate_commands():
        subprocess.run(command, shell=True, cwd=root, check=True, capture_output=True)
    try:
        fed.start_tls_superlink(tls_superlink_command())
        for i in range(3):
            fed.register_node_key(i, tls_node_flags())
            fed.start_node(i, 3)
        # kill node 2 once round 1 is written
        def killer():
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                rounds = out / "rounds.csv"
                if rounds.exists() and len(rounds.read_text().splitlines()) >= 2:
                    fed.kill_node(2)
                    return
                time.sleep(0.5)
        thread = threading.Thread(target=killer, daemon=True)
        thread.start()
        cfg = run_config(KILLED, out)
        proc = fed.run(cfg.replace("flower.round_timeout=120.0", "flower.round_timeout=40.0"))
        thread.join(timeout=5)
    finally:
        fed.stop()
    assert proc.returncode == 0, proc.stdout[-3000:]
    doc = json.loads((out / "results.json").read_text())
    assert len(doc["rounds"]) == 2
    assert doc["rounds"][0]["participants"] == 3
    last = doc["rounds"][-1]
    assert last["participants"] == 2
    # Which of two things happens is a race with the SuperLink noticing the dead node: either round 2
    # samples node 2 and it never replies (dropped, with a note), or the SuperLink has already
    # forgotten it and round 2 counts it unreachable (not online, recorded as a departure).
    if last["dropped"] == 1:
        assert last["online"] == 3
        assert any("client 2 dropped" in note for note in doc["method_info"]["notes"])
    else:
        assert last["dropped"] == 0 and last["online"] == 2
        assert {"client": 2, "round": 2, "arrived": True} in doc["population"]["departures"]
    # round 1, before the kill, is the simulator's round 1 of the same method, byte for byte
    sim_doc, _ = simulate(KILLED)
    assert (doc["rounds"][0]["bytes_up"], doc["rounds"][0]["bytes_down"]) == \
        (sim_doc["rounds"][0]["bytes_up"], sim_doc["rounds"][0]["bytes_down"])


def test_flower_ray_simulation_runs_genefl(tmp_path_factory, monkeypatch):
    """On your own model (a factory imported by the Ray workers), with its learnGene and byte sizes."""
    root = tmp_path_factory.mktemp("sim")
    fed = Federation(root, simulation=True, pythonpath=own_packages(root, monkeypatch))
    out = fed.root / "out"
    overrides = ["method=genefl", "rounds=2", "num_clients=3", "num_newcomers=1", "eval_every=2", "newcomer_rounds=[2]",
                 "model=my_package.models:factory"]
    try:
        fed.start_superlink()
        proc = fed.run(run_config(overrides, out), federation_config="num-supernodes=4")
    finally:
        fed.stop()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((out / "results.json").read_text())
    assert len(doc["rounds"]) == 2 and doc["summary"]["acc_clients"] > 0.2
    assert len(doc["newcomers"]) == 1 and doc["newcomers"][0]["init"] == "learngene"
    sim_doc, _ = simulate(overrides)
    assert doc["summary"]["model_bytes"] == sim_doc["summary"]["model_bytes"]
    assert doc["method_info"]["gene_layers"] == sim_doc["method_info"]["gene_layers"] == [["0"]] * len(doc["method_info"]["gene_layers"])


# seed 29 samples 2 of the 3 training clients: client 2 in round 1, not in rounds 2 and 3 (with or
# without the newcomer), so node 2, stopped after round 1, has no message pending when it goes
NODES_COME_AND_GO = ["method=genefl", "rounds=5", "num_clients=3", "num_newcomers=1", "newcomer_rounds=[2]",
                     "eval_every=5", "newcomer_epochs=2", "participation=0.6", "seed=29"]


def wait_until(ready, what: str) -> None:
    """Polls `ready()`; the 300 s limit is generous: it only matters when something is wrong."""
    deadline = time.monotonic() + 300
    while not ready():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within 300 s")
        time.sleep(0.2)


def rounds_written(out) -> list[dict[str, str]]:
    """rounds.csv's complete rows so far."""
    text = (out / "rounds.csv").read_text() if (out / "rounds.csv").exists() else ""
    return list(csv.DictReader(text[:text.rfind("\n") + 1].splitlines()))


def test_nodes_that_arrive_leave_and_come_back_equal_the_simulator_on_their_trace(tmp_path_factory):
    """Node 2 joins with its own .npz file (the documented format). The population is what the nodes
    do: after round 1, node 2 is stopped (SIGTERM) and newcomer node 3 starts (an arrival, welcomed the GENE-FL way: signature -> cluster -> learnGene only); once a round
    has run without node 2, it is restarted with its state-dir (a return, its personal model intact). results.json records who was unreachable
    when; the simulator given that as a trace file samples the same clients each round and ends with
    the same bytes, weights and accuracies."""
    fed = Federation(tmp_path_factory.mktemp("own"))
    out, states = fed.root / "out", fed.root / "node-states"
    config = load_config(None, NODES_COME_AND_GO)
    own = build_scenario(config).clients[2]
    data_file = fed.root / "client2.npz"
    np.savez(data_file, x_train=own.x_train.numpy(), y_train=own.y_train.numpy(), x_test=own.x_test.numpy(),
             y_test=own.y_test.numpy())
    problems = []

    def nodes_come_and_go():
        try:
            # after round 1: the server has node 2's update (a node that goes before the ServerApp pulls
            # its reply loses it: Flower drops the replies of a node that has left)
            wait_until(lambda: len(rounds_written(out)) >= 1, "round 1")
            # SIGTERM; a node that has to be killed after the grace stays listed until its heartbeats
            # lapse (README), and seed 29 samples clients 0 and 1 in rounds 2 and 3 whether it is listed or
            # not (newcomer 3 not yet in round 2)
            fed.kill_node(2)
            fed.start_node(3, 4)
            wait_until(lambda: any(int(r["online"]) < int(r["present"]) for r in rounds_written(out)),
                       "a round without node 2")
            fed.start_node(2, data_file=str(data_file), state_dir=str(states))
        except Exception as exc:  # reported by the test's own thread
            problems.append(repr(exc))
    try:
        fed.start_superlink()
        fed.start_node(0, 4)
        fed.start_node(1, 4)
        fed.start_node(2, data_file=str(data_file), state_dir=str(states))
        thread = threading.Thread(target=nodes_come_and_go, daemon=True)
        thread.start()
        proc = fed.run(run_config(NODES_COME_AND_GO, out), timeout=900)  # 5 rounds took 7 min at load 10 on 2 cores
        thread.join(timeout=5)
    finally:
        fed.stop()
    assert proc.returncode == 0 and not problems, problems + [proc.stdout[-3000:] + proc.stderr[-3000:]]
    doc = json.loads((out / "results.json").read_text())
    assert 2 in [int(p.name.rsplit("client", 1)[1]) for p in states.iterdir()]
    assert all(r["dropped"] == 0 for r in doc["rounds"]), [r.get("notes") for r in doc["rounds"]]  # nobody lost mid-round
    population = doc["population"]
    (away,) = [u for u in population["unreachable"] if u["client"] == 2]
    assert population["returns"] == [{"client": 2, "left": away["rounds"][0], "back": away["rounds"][-1] + 1,
                                      "drift": "none", "signature_round": None}], "node 2 was not back by the last round"
    assert population["departures"] == [] and [u["client"] for u in population["unreachable"]] == [2]
    (newcomer,) = doc["newcomers"]
    assert newcomer["id"] == 3 and newcomer["arrival_round"] >= 2 and newcomer["init"] == "learngene"
    assert population["arrivals"] == [{"client": 3, "round": newcomer["arrival_round"]}]
    assert 0 < newcomer["init_bytes"] < doc["summary"]["model_bytes"] and len(newcomer["acc_by_epoch"]) == 2
    assert doc["method_info"]["cluster_of"]["3"] == newcomer["cluster"]
    # the simulator, told when each client could be reached, does what the nodes did
    trace = fed.root / "trace.csv"
    trace.write_text(trace_of(population, 3, 5))
    sim_doc, sim_weights = simulate(NODES_COME_AND_GO + ["population.availability=trace", f"population.trace_file={trace}"])
    per_round = ("participants", "online", "present", "bytes_up", "bytes_down")
    assert [[r[k] for k in per_round] for r in doc["rounds"]] == [[r[k] for k in per_round] for r in sim_doc["rounds"]]
    assert doc["rounds"][0]["participants"] == 2 and doc["rounds"][-1]["online"] == 4  # node 2 trained on its own file
    for key in ("bytes_up", "bytes_down", "bytes_total", "bytes_eval"):
        assert doc["summary"][key] == sim_doc["summary"][key], key
    assert sim_doc["newcomers"][0]["arrival_round"] == newcomer["arrival_round"]
    assert_same_weights(out, sim_weights)
    assert doc["summary"]["acc_clients"] == pytest.approx(sim_doc["summary"]["acc_clients"], abs=1e-6)


# seed 2 samples clients 1 and 2 in round 1 and clients 0 and 1 in round 2, whether node 2 is still listed
# then or not (2 of the 3 present clients are drawn among those online); later rounds have 0 and 1 only
NODE_LEAVES = ["method=genefl", "rounds=4", "num_clients=3", "num_newcomers=0", "eval_every=4",
               "participation=0.67", "seed=2"]


def test_a_node_stopped_for_good_is_a_departure_equal_to_the_simulator_on_its_trace(tmp_path_factory):
    """Node 2 trains in round 1, then its SuperNode is stopped (SIGTERM) and never comes back: a
    departure. The ServerApp is paused (SIGSTOP) from the moment round 1 is written until the SuperLink
    no longer lists node 2, so no later round can sample a node that is gone (the pause lasts the
    node's exit, ~2 s). results.json lists node 2 under `departures` from its first unreachable round;
    GENE-FL goes on with its cluster short of a member; the simulator given the run's trace samples
    the same clients and ends with the same bytes, weights and accuracy."""
    fed = Federation(tmp_path_factory.mktemp("leaves"))
    out = fed.root / "out"
    problems, listed_after_exit = [], []

    def node_leaves():
        try:
            wait_until(lambda: len(rounds_written(out)) >= 1, "round 1")
            paused = fed.signal_serverapps(signal.SIGSTOP)
            try:
                gone = fed.node_id(2)
                fed.kill_node(2, grace=120)  # time to exit cleanly, unregistering itself
                listed_after_exit.append(gone in fed.online_node_ids())
                wait_until(lambda: gone not in fed.online_node_ids(), "node 2 unlisted")
            finally:
                fed.signal_serverapps(signal.SIGCONT)
            if paused != 1:
                problems.append(f"{paused} ServerApp processes paused, not 1")
        except Exception as exc:  # reported by the test's own thread
            problems.append(repr(exc))
    try:
        fed.start_superlink()
        for pid in range(3):
            fed.start_node(pid, 3)
        thread = threading.Thread(target=node_leaves, daemon=True)
        thread.start()
        proc = fed.run(run_config(NODE_LEAVES, out), timeout=900)
        thread.join(timeout=5)
    finally:
        fed.stop()
    assert proc.returncode == 0 and not problems, problems + [proc.stdout[-3000:] + proc.stderr[-3000:]]
    assert listed_after_exit == [False]  # a SuperNode that exits cleanly is unlisted at once
    doc = json.loads((out / "results.json").read_text())
    assert all(r["dropped"] == 0 for r in doc["rounds"]), [r.get("notes") for r in doc["rounds"]]
    population = doc["population"]
    (away,) = population["unreachable"]
    first = away["rounds"][0]
    # round 2 began before the pause or after it: either way node 2 was not sampled in it
    assert away["client"] == 2 and first in (2, 3) and away["rounds"] == list(range(first, 5))
    assert population["departures"] == [{"client": 2, "round": first, "arrived": True}]
    assert population["returns"] == [] and population["arrivals"] == []
    assert [r["participants"] for r in doc["rounds"]] == [2, 2, 2, 2]
    assert [r["online"] for r in doc["rounds"]] == [3] * (first - 1) + [2] * (5 - first)
    trace = fed.root / "trace.csv"
    trace.write_text(trace_of(population, 3, 4))
    config = load_config(None, NODE_LEAVES + ["population.availability=trace", f"population.trace_file={trace}"])
    sim = Simulator(config, build_scenario(config)).run()
    sim_doc = build_results(sim)
    # the trace says when node 2 could be reached, not why: the simulator sees it offline, not departed
    assert sim_doc["population"]["departures"] == []
    per_round = ("participants", "online", "present", "bytes_up", "bytes_down")
    assert [[r[k] for k in per_round] for r in doc["rounds"]] == [[r[k] for k in per_round] for r in sim_doc["rounds"]]
    for key in ("bytes_up", "bytes_down", "bytes_total"):
        assert doc["summary"][key] == sim_doc["summary"][key], key
    assert_same_weights(out, sim.final_weights)
    # the simulator also tests the offline client on its own data at the end; Flower cannot reach it
    final = sim.rounds[-1].acc_by_client
    assert sorted(final) == [0, 1, 2]
    assert doc["summary"]["acc_clients"] == pytest.approx((final[0] + final[1]) / 2, abs=1e-6)
    reachable_eval = sum(x.nbytes for x in sim.ledger.transfers if x.kind == "eval" and x.client != 2)
    assert doc["summary"]["bytes_eval"] == reachable_eval < sim_doc["summary"]["bytes_eval"]
