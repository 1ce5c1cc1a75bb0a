"""Per-client state kept on disk gives the same run as state kept in memory."""

from __future__ import annotations

import torch

from genefl.config import load_config, run_key
from genefl.data.scenario import build_scenario
from genefl.results import build_results
from genefl.runtime.simulator import Simulator

BASE = ["method=genefl", "rounds=3", "num_clients=4", "num_newcomers=1", "newcomer_epochs=1", "eval_every=1"]


def run(extra):
    config = load_config(None, BASE + extra)
    sim = Simulator(config, build_scenario(config))
    doc = build_results(sim.run())
    doc["summary"].pop("wall_s")
    for r in doc["rounds"]:
        r.pop("wall_s")
    return doc, sim


def test_disk_states_match_memory_and_hold_nothing_in_memory(tmp_path):
    memory_doc, memory_sim = run([])
    disk_doc, disk_sim = run(["state_store=disk", f"state_dir={tmp_path}"])
    assert disk_doc == memory_doc
    assert disk_sim.states.folder == tmp_path / run_key(disk_sim.config)  # the run's own subfolder
    files = sorted(p.name for p in disk_sim.states.folder.glob("client*.pt"))
    assert files == [f"client{i}.pt" for i in range(5)]  # 4 training clients + the newcomer
    assert disk_sim.states.nbytes_in_memory() == 0 and memory_sim.states.nbytes_in_memory() > 0
    for (cid_m, mem), (cid_d, disk) in zip(memory_sim.states.items(), sorted(disk_sim.states.items())):
        assert cid_m == cid_d
        assert all(torch.equal(mem["model"][k], disk["model"][k]) for k in mem["model"])


def test_temporary_state_folder_is_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    run(["state_store=disk"])
    assert not list(tmp_path.glob("genefl-states-*"))


def test_folder_of_a_killed_run_is_removed_by_the_next(tmp_path):
    """SIGKILL leaves no chance to clean up: the next run with a temporary state folder removes the
    folders of genefl processes that are gone, and only those."""
    import os
    import signal
    import subprocess
    import sys

    from genefl.runtime.states import DiskStates

    env = {**os.environ, "TMPDIR": str(tmp_path), "GENEFL_FAULT": "round:2"}
    killed = subprocess.run([sys.executable, "-m", "genefl.cli", "run", "--set", "rounds=3", "--set", "num_clients=3",
                             "--set", "num_newcomers=0", "--set", "method=genefl", "--set", "state_store=disk",
                             "--out", str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    left = list(tmp_path.glob("genefl-states-*"))
    assert len(left) == 1 and list(left[0].glob("client*.pt"))  # the killed run's folder, with states in it
    mine = tmp_path / f"genefl-states-{os.getpid()}-alive"  # a live process's folder is not touched
    mine.mkdir()
    import tempfile
    saved = tempfile.tempdir
    tempfile.tempdir = str(tmp_path)
    try:
        states = DiskStates()
        assert not left[0].exists() and mine.exists() and states.folder.exists()
        states.cleanup()
    finally:
        tempfile.tempdir = saved
    assert sorted(p.name for p in tmp_path.glob("genefl-states-*")) == [mine.name]


def test_a_reused_state_dir_gives_the_fresh_run(tmp_path):
    """A second run with the same state_dir once went on from the first run's SCAFFOLD control
    variates (accuracy 0.756 instead of 0.915). Each run starts from its own state: a fresh one from
    none, whatever the folder holds (an earlier run's states, even a damaged file)."""
    fresh, _ = run(["method=scaffold"])
    disk = ["method=scaffold", "state_store=disk", f"state_dir={tmp_path}"]
    first, sim = run(disk)
    assert first == fresh
    (sim.states.folder / "client0.pt").write_bytes(b"not a state")  # left over by whatever came before
    second, _ = run(disk)
    assert second == fresh
    other, other_sim = run(disk + ["seed=5"])  # another config: its own subfolder, this one untouched
    assert other_sim.states.folder != sim.states.folder and len(list(sim.states.folder.glob("client*.pt"))) == 5


def test_a_damaged_client_state_file_is_one_line_and_keeps_finished_rounds(tmp_path):
    import pytest

    import genefl
    from genefl.runtime.events import Callback

    class DamageClient0(Callback):  # the disk goes bad between rounds 1 and 2
        def after_round(self, report):
            if report.round == 1:
                next((tmp_path / "states").glob("*/client0.pt")).write_bytes(b"\x80garbage")

    config = load_config(None, BASE + ["method=scaffold", "state_store=disk", f"state_dir={tmp_path / 'states'}"])
    with pytest.raises(genefl.GeneflError) as err:
        genefl.run(config, callbacks=[DamageClient0()], out=tmp_path / "out")
    message = str(err.value)
    assert message.startswith("state_dir: client state file ") and "client0.pt is unreadable (" in message
    assert "\n" not in message
    rows = (tmp_path / "out" / "rounds.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1"]  # the finished round is kept
