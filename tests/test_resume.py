"""Kill-and-resume: a real `genefl run` process is SIGKILLed mid-round,
mid-newcomer and mid-checkpoint (GENEFL_FAULT makes it kill itself at exactly that point), then
`genefl run --resume DIR` finishes it; results.json must equal the uninterrupted run's, all but
wall times. For genefl, scaffold, fedavg and fedadam (whose Adam moments live in the server state)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from test_cli import strip_times

# newcomers arrive in rounds 2 and 3 (4 rounds, 2 newcomers)
TINY = ["--set", "rounds=4", "--set", "num_clients=4", "--set", "num_newcomers=2", "--set", "newcomer_epochs=1"]


def killed_run(out, fault: str, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "GENEFL_FAULT": fault}
    return subprocess.run([sys.executable, "-m", "genefl.cli", "run", *TINY, *args, "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)


# Where a run is killed is the loop's business, the same for every method: GENE-FL and SCAFFOLD
# (per-client state on both sides) are killed at each of the three places, FedAvg and FedAdam (the
# server optimizer's moments) in a round only.
@pytest.mark.parametrize("method, faults", [("genefl", ("round:3", "newcomer:3", "checkpoint:2")),
                                            ("scaffold", ("round:3", "newcomer:3", "checkpoint:2")),
                                            ("fedavg", ("round:3",)), ("fedadam", ("round:3",))])
def test_killed_anywhere_and_resumed_equals_uninterrupted(tmp_path, cli, method, faults):
    """The killed runs are real processes; the uninterrupted run and the resumes run `genefl run` in
    this process (the same code path, without a process start each)."""
    args = ["--set", f"method={method}"]
    assert cli("run", *TINY, *args, "--out", str(tmp_path / "whole"))[0] == 0
    want = strip_times(json.loads((tmp_path / "whole" / "results.json").read_text()))
    assert not (tmp_path / "whole" / "checkpoint.pt").exists()  # removed once the run is complete
    assert not (tmp_path / "whole" / "checkpoint.clients").exists()  # and the client states' files with it
    for fault in faults:
        out = tmp_path / fault.replace(":", "-")
        proc = killed_run(out, fault, *args)
        assert proc.returncode == -9, proc.stderr  # it really died by SIGKILL
        assert not (out / "results.json").exists() and (out / "checkpoint.pt").exists()
        code, _, err = cli("run", "--resume", str(out))
        assert code == 0, err
        got = strip_times(json.loads((out / "results.json").read_text()))
        assert got == want, fault
        rows = (out / "rounds.csv").read_text().splitlines()
        assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4"]  # no round twice, none missing


def test_resume_refuses_a_finished_run_and_extra_arguments(tmp_path, cli):
    out = tmp_path / "r"
    assert cli("run", *TINY, "--set", "method=fedavg", "--out", str(out))[0] == 0
    for args, expected in ((["--resume", str(out)], ["already finished"]),
                           (["--resume", str(out), "--set", "rounds=9"], ["takes no --config, --set"]),
                           (["--resume", str(tmp_path / "nothing")], ["no config.toml"]),
                           ([*TINY, "--out", str(out)], ["--resume", "--force"])):
        code, _, err = cli("run", *args)
        assert code == 2, args
        assert all(text in err for text in expected) and err.count("\n") == 1, err


def copy_run(source, target):
    import shutil

    shutil.copytree(source, target)
    return target


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path, cli):
    """The checkpoint names its run: one of another method, or a config.toml edited after the kill,
    is refused in one line naming what differs, and the run's files stay as they were."""
    for method in ("fedavg", "scaffold"):
        assert killed_run(tmp_path / method, "round:3", "--set", f"method={method}").returncode == -9
    killed = tmp_path / "fedavg"
    rounds_csv = (killed / "rounds.csv").read_text()

    other_method = copy_run(killed, tmp_path / "other-method")
    (other_method / "checkpoint.pt").write_bytes((tmp_path / "scaffold" / "checkpoint.pt").read_bytes())
    edits = {"rounds = 4": "rounds = 2", "num_clients = 4": "num_clients = 5", "seed = 0": "seed = 1",
             "lr = 0.05": "lr = 0.5"}
    edited = copy_run(killed, tmp_path / "edited")
    text = (edited / "config.toml").read_text()
    for old, new in edits.items():
        assert f"\n{old}\n" in text
        text = text.replace(f"\n{old}\n", f"\n{new}\n")
    (edited / "config.toml").write_text(text)

    for out, named in ((other_method, "method 'scaffold' vs 'fedavg'"),
                       (edited, "lr 0.05 vs 0.5, num_clients 4 vs 5, rounds 4 vs 2, seed 0 vs 1")):
        code, _, err = cli("run", "--resume", str(out))
        assert code == 2 and err.count("\n") == 1, err
        assert f"resume: the checkpoint in {out} is of a different run (checkpoint vs this config): {named}" in err
        assert (out / "rounds.csv").read_text() == rounds_csv and not (out / "results.json").exists()
    # the untouched folder still resumes
    assert cli("run", "--resume", str(killed))[0] == 0 and (killed / "results.json").exists()


def test_resume_refuses_crafted_or_damaged_checkpoints_in_one_line(tmp_path, cli):
    import torch

    from genefl.config import load_config
    from genefl.runtime import checkpoint

    assert killed_run(tmp_path / "killed", "round:3", "--set", "method=fedavg").returncode == -9
    real = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=False)
    identity = checkpoint.identity(load_config(tmp_path / "killed" / "config.toml"))
    assert real["config"] == identity and real["round"] == 2

    cases = {
        "only-version": ({"version": 1}, "does not say which run it is of"),
        "no-snapshot": ({"version": 1, "config": identity}, "is damaged: it has no 'server'"),
        "round-text": ({**real, "round": "2"}, "is damaged: 'round' must be a round number, got str"),
        "round-late": ({**real, "round": 9}, "is damaged: it is of round 9 with 2 round reports, in a run of 4 rounds"),
        "rounds-text": ({**real, "rounds": ["x"]}, "'rounds' must be a list of round reports"),
        "ledger": ({**real, "ledger": {}}, "'ledger' must be a byte ledger, got dict"),
        "server": ({**real, "server": {"weights": {}}}, "its server state is a dict, fedavg keeps a GlobalState"),
        "clients": ({**real, "clients": [1, 2]}, "its client states are not a table of client id -> state"),
        "identity-text": ({**real, "config": "fedavg"}, "does not say which run it is of"),
    }
    for name, (payload, fragment) in cases.items():
        out = copy_run(tmp_path / "killed", tmp_path / name)
        torch.save(payload, out / "checkpoint.pt")
        code, _, err = cli("run", "--resume", str(out))
        assert code == 2 and err.count("\n") == 1 and fragment in err, (name, err)
        assert not (out / "results.json").exists()
        assert (out / "rounds.csv").read_text() == (tmp_path / "killed" / "rounds.csv").read_text()
    folder = copy_run(tmp_path / "killed", tmp_path / "folder")
    (folder / "checkpoint.pt").unlink()
    (folder / "checkpoint.pt").mkdir()
    code, _, err = cli("run", "--resume", str(folder))
    assert code == 2 and f"checkpoint {folder / 'checkpoint.pt'} is not a file" in err and err.count("\n") == 1


def test_checkpointed_ledger_and_signatures_come_back_as_they_were():
    """The ledger is pickled as columns and a clustering method's signatures as one stack per shape
    (a checkpoint's cost at 10,000 clients): read back, they are the same, in the same order."""
    import io

    import torch

    from genefl.algorithms.genefl import GeneflState
    from genefl.algorithms.pacfl import ClusterModels
    from genefl.protocol.ledger import Ledger, Transfer
    from genefl.protocol.server_opt import Moments

    sigs = {3: torch.randn(4, 2), 1: torch.randn(5, 2), 2: torch.randn(4, 2).double()}
    ledger = Ledger([Transfer(0, 3, "up", "signature", 80), Transfer(1, 1, "down", "train", 12)])
    states = [GeneflState({3: 0, 1: 1, 2: 0}, sigs, [{"w": torch.ones(2)}], [None], frozenset({1}), [Moments()]),
              ClusterModels({}, {}, [])]
    buffer = io.BytesIO()
    torch.save({"ledger": ledger, "empty": Ledger(), "states": states}, buffer)
    buffer.seek(0)
    back = torch.load(buffer, weights_only=False)
    assert back["ledger"].transfers == ledger.transfers and back["empty"].transfers == []
    state = back["states"][0]
    assert list(state.signatures) == [3, 1, 2] and state.contacted == frozenset({1}) and state.cluster_of == {3: 0, 1: 1, 2: 0}
    assert all(torch.equal(state.signatures[c], sigs[c]) and state.signatures[c].dtype == sigs[c].dtype for c in sigs)
    assert back["states"][1].signatures == {}


def test_a_checkpoint_pickled_before_the_modules_moved_still_resumes(tmp_path, cli):
    """Checkpoints name their classes by module path; one written when the protocol modules were at
    the package's top (genefl.ledger, genefl.messages, ...) resumes to the uninterrupted result."""
    import importlib
    import sys

    import torch

    from genefl.runtime import checkpoint

    args = ["--set", "method=genefl"]
    assert cli("run", *TINY, *args, "--out", str(tmp_path / "whole"))[0] == 0
    want = strip_times(json.loads((tmp_path / "whole" / "results.json").read_text()))
    out = tmp_path / "killed"
    assert killed_run(out, "round:3", *args).returncode == -9
    payload = torch.load(out / "checkpoint.pt", weights_only=False)
    renamed = []  # write it again as the old layout would have: its classes under their old module names
    try:
        for old, new in checkpoint.MOVED.items():
            module = importlib.import_module(new)
            sys.modules[old] = module
            for value in vars(module).values():
                if isinstance(value, type) and value.__module__ == new:
                    value.__module__ = old
                    renamed.append((value, new))
        torch.save(payload, out / "checkpoint.pt")
    finally:
        for cls, new in renamed:
            cls.__module__ = new
        for old in checkpoint.MOVED:
            sys.modules.pop(old, None)
    assert any(b"genefl.ledger" in data for data in _zip_members(out / "checkpoint.pt"))  # really the old names
    code, _, err = cli("run", "--resume", str(out))
    assert code == 0, err
    assert strip_times(json.loads((out / "results.json").read_text())) == want


def _zip_members(path):
    import zipfile

    with zipfile.ZipFile(path) as archive:
        return [archive.read(name) for name in archive.namelist()]


def test_a_checkpoint_writes_only_the_client_states_that_changed(tmp_path, cli):
    """Client states live beside the checkpoint, one file per client and version: a checkpoint writes
    the states of the clients that trained since the previous one and keeps naming the others' older
    files (its cost follows the participants, not the population; evaluating everyone every round
    writes nothing). Read back they are the states the run holds. A missing or damaged file is a
    one-line refusal; a checkpoint holding its states inline (as before the files) still resumes to
    the uninterrupted result."""
    import torch

    from genefl.config import load_config
    from genefl.runtime import checkpoint

    # GENE-FL keeps a personal model and xi per client that trained; 2 of 8 train a round, all are evaluated
    args = ["--set", "method=genefl", "--set", "num_clients=8", "--set", "participation=0.25", "--set", "num_newcomers=0",
            "--set", "seed=1"]  # rounds 1-3 train clients 4 and 7, 0 and 4, 2 and 7
    assert cli("run", *TINY, *args, "--out", str(tmp_path / "whole"))[0] == 0
    want = strip_times(json.loads((tmp_path / "whole" / "results.json").read_text()))
    out = tmp_path / "killed"
    assert killed_run(out, "round:4", *args).returncode == -9  # checkpoints after rounds 1, 2 and 3 are made
    payload = torch.load(out / "checkpoint.pt", weights_only=False)
    manifest = payload["client_files"]
    assert payload["round"] == 3 and payload["clients"] == {}
    trained = {report.round: set(report.participants) for report in payload["rounds"]}  # rounds 1-3
    last_round_of = {cid: max(t for t, ids in trained.items() if cid in ids) for ids in trained.values() for cid in ids}
    assert manifest == {cid: f"client{cid}-r{t}.pt" for cid, t in sorted(last_round_of.items())}
    assert len(set(last_round_of.values())) > 1  # some files are from earlier checkpoints: not rewritten since
    files = sorted(p.name for p in (out / checkpoint.CLIENTS).iterdir())
    assert files == sorted(manifest.values())  # the older versions were deleted once no checkpoint named them
    loaded = checkpoint.load(out / "checkpoint.pt", load_config(out / "config.toml"))
    assert sorted(loaded["clients"]) == sorted(manifest)
    assert set(loaded["clients"][min(manifest)]) == {"model", "xi"}

    # a missing and a damaged file: one line each, nothing lost
    for name, damage in (("missing", lambda p: p.unlink()), ("damaged", lambda p: p.write_bytes(b"not a state"))):
        broken = copy_run(out, tmp_path / name)
        victim = broken / checkpoint.CLIENTS / manifest[min(manifest)]
        damage(victim)
        code, _, err = cli("run", "--resume", str(broken))
        assert code == 2 and err.count("\n") == 1 and f"client state file {victim} of the checkpoint is {name if name == 'missing' else 'unreadable'}" in err, err
        assert not (broken / "results.json").exists() and (broken / "checkpoint.pt").exists()

    # the format before the files: every state inline in checkpoint.pt
    inline = copy_run(out, tmp_path / "inline")
    old = {**payload, "clients": loaded["clients"]}
    del old["client_files"]
    torch.save(old, inline / "checkpoint.pt")
    for path in (inline / checkpoint.CLIENTS).iterdir():
        path.unlink()
    code, _, err = cli("run", "--resume", str(inline))
    assert code == 0, err
    assert strip_times(json.loads((inline / "results.json").read_text())) == want

    code, _, err = cli("run", "--resume", str(out))
    assert code == 0, err
    assert strip_times(json.loads((out / "results.json").read_text())) == want
    assert not (out / checkpoint.CLIENTS).exists() and not (out / "checkpoint.pt").exists()


def test_a_resumed_run_keeps_the_reputation_scores(tmp_path, cli):
    """`defence.reputation`'s per-client scores are the loop's state: killed after round 2 and resumed,
    round 3 still leaves out the sign flipper (it would be let back in with its scores lost: one score,
    under `reputation_rounds`)."""
    args = ["--set", "method=fedavg", "--set", "adversary.kind=signflip", "--set", "adversary.fraction=0.25",
            "--set", "defence.reputation=true", "--set", "defence.reputation_rounds=2"]
    assert cli("run", *TINY, *args, "--out", str(tmp_path / "whole"))[0] == 0
    want = strip_times(json.loads((tmp_path / "whole" / "results.json").read_text()))
    bad = want["method_info"]["adversary"]["attackers"]
    for t in (3, 4):
        assert want["rounds"][t - 1]["notes"][0].startswith(f"round {t}: reputation left out client {bad[0]} (")
    out = tmp_path / "killed"
    proc = killed_run(out, "round:3", *args)
    assert proc.returncode == -9, proc.stderr
    assert cli("run", "--resume", str(out))[0] == 0
    assert strip_times(json.loads((out / "results.json").read_text())) == want
