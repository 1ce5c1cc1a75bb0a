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

from test_cli import genefl, strip_times

# newcomers arrive in rounds 2 and 3 (4 rounds, 2 newcomers)
TINY = ["--set", "rounds=4", "--set", "num_clients=4", "--set", "num_newcomers=2", "--set", "newcomer_epochs=1"]


def killed_run(out, fault: str, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, "GENEFL_FAULT": fault}
    return subprocess.run([sys.executable, "-m", "genefl.cli", "run", *TINY, *args, "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("method", ["genefl", "scaffold", "fedavg", "fedadam"])
def test_killed_anywhere_and_resumed_equals_uninterrupted(tmp_path, method):
    args = ["--set", f"method={method}"]
    assert genefl("run", *TINY, *args, "--out", str(tmp_path / "whole")).returncode == 0
    want = strip_times(json.loads((tmp_path / "whole" / "results.json").read_text()))
    assert not (tmp_path / "whole" / "checkpoint.pt").exists()  # removed once the run is complete
    for fault in ("round:3", "newcomer:3", "checkpoint:2"):
        out = tmp_path / fault.replace(":", "-")
        proc = killed_run(out, fault, *args)
        assert proc.returncode == -9, proc.stderr  # it really died by SIGKILL
        assert not (out / "results.json").exists() and (out / "checkpoint.pt").exists()
        resumed = genefl("run", "--resume", str(out))
        assert resumed.returncode == 0, resumed.stderr
        got = strip_times(json.loads((out / "results.json").read_text()))
        assert got == want, fault
        rows = (out / "rounds.csv").read_text().splitlines()
        assert [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4"]  # no round twice, none missing


def test_resume_refuses_a_finished_run_and_extra_arguments(tmp_path):
    out = tmp_path / "r"
    assert genefl("run", *TINY, "--set", "method=fedavg", "--out", str(out)).returncode == 0
    proc = genefl("run", "--resume", str(out))
    assert proc.returncode == 2 and "already finished" in proc.stderr
    proc = genefl("run", "--resume", str(out), "--set", "rounds=9")
    assert proc.returncode == 2 and "takes no --config, --set" in proc.stderr
    proc = genefl("run", "--resume", str(tmp_path / "nothing"))
    assert proc.returncode == 2 and "no config.toml" in proc.stderr
    proc = genefl("run", *TINY, "--out", str(out))
    assert proc.returncode == 2 and "--resume" in proc.stderr and "--force" in proc.stderr
