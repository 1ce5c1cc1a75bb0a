"""The command line: results files, determinism, one-line errors; as real processes where the process
matters (a run reproduced by a second process, one error of each kind), else through `genefl.cli.main`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib

import pytest
import torch

import genefl as genefl_package
from conftest import REPO
from genefl.cli import main

FAST = ["--set", "rounds=3", "--set", "num_clients=4", "--set", "num_newcomers=1", "--set", "newcomer_epochs=2"]


def genefl(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "genefl.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def strip_times(doc):
    doc["summary"].pop("wall_s")
    for r in doc["rounds"]:
        r.pop("wall_s")
    return doc


def test_run_writes_results_and_is_reproducible(tmp_path):
    docs = []
    for name in ("a", "b"):
        proc = genefl("run", *FAST, "--set", "method=fedavg", "--out", str(tmp_path / name))
        assert proc.returncode == 0, proc.stderr
        assert "training-client accuracy" in proc.stdout
        docs.append(json.loads((tmp_path / name / "results.json").read_text()))
        assert tomllib.loads((tmp_path / name / "config.toml").read_text())["rounds"] == 3
        assert len((tmp_path / name / "rounds.csv").read_text().splitlines()) == 4  # header + 3 rounds
    a, b = docs
    for key in ("method", "dataset", "seed", "summary", "rounds", "newcomers"):
        assert key in a
    s = a["summary"]
    assert 0 <= s["acc_clients"] <= 1 and s["bytes_total"] == s["bytes_up"] + s["bytes_down"] > 0
    assert len(a["newcomers"]) == 1 and len(a["newcomers"][0]["acc_by_epoch"]) == 2
    assert strip_times(a) == strip_times(b)
    # what produced them: this checkout's commit when the tests run from one (CI's clean checkout does)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True)
    assert a["code"]["git_commit"] == (head.stdout.strip() if head.returncode == 0 else None)
    assert a["code"]["genefl"] == genefl_package.__version__ and a["code"]["torch"] == torch.__version__


def test_a_copy_of_genefl_outside_a_checkout_names_no_commit(tmp_path):
    """An installed (copied) genefl has no commit to name: null, not the commit of whatever repository
    surrounds it."""
    shutil.copytree(REPO / "src" / "genefl", tmp_path / "pkg" / "genefl", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "notes.txt").write_text("a repository around it, with a commit, that does not track it\n")
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    for args in (["init", "-q"], ["add", "notes.txt"], ["commit", "-q", "-m", "notes"]):
        subprocess.run(git + args, check=True, capture_output=True)
    proc = subprocess.run([sys.executable, "-c", "import json; from genefl.results import code_version; "
                           "print(json.dumps(code_version()))"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(tmp_path / "pkg")}, cwd=tmp_path)
    code = json.loads(proc.stdout)
    assert code["git_commit"] is None and code["git_dirty"] is None and code["genefl"] == genefl_package.__version__


def test_config_file_and_overrides(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('method = "local"\nrounds = 2\nnum_clients = 3\nnum_newcomers = 0\n')
    assert main(["run", "--config", str(cfg), "--set", "rounds=1", "--out", str(tmp_path / "o")]) == 0
    doc = json.loads((tmp_path / "o" / "results.json").read_text())
    assert doc["method"] == "local" and len(doc["rounds"]) == 1


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--set", "dataset=nope"], "dataset: must be one of digits"),
        (["--set", "alpha=-1"], "alpha: must be > 0"),
        (["--set", "colour=red"], "unknown config key 'colour'"),
        (["--set", "rounds=many"], "rounds: expected int"),
        (["--set", "dataset=mnist", "--set", "data_dir=/nonexistent/genefl"], "/nonexistent/genefl"),
        (["--bogus"], "unrecognized arguments"),
        (["--set", "genefl.gene_budget=0"], "genefl.gene_budget: must be in (0, 1]"),
        (["--set", "genefl.gene_budget=1.5"], "genefl.gene_budget: must be in (0, 1]"),
        (["--set", "genefl.fisher_top=0"], "genefl.fisher_top: must be in (0, 1]"),
        (["--set", "genefl.fisher_top=2"], "genefl.fisher_top: must be in (0, 1]"),
        (["--set", "clustering.p=0"], "clustering.p: must be >= 1"),
        (["--set", "method=genefl", "--set", "genefl.gene_budget=0.001"], "cannot hold any of its body layers"),
        (["--set", "method=flearngene", "--set", "flearngene.gene_budget=0.001"], "cannot hold any body layer"),
    ],
)
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, args, fragment):
    """In-process through `genefl.cli.main` (what the console script calls); the three cases below
    run as real processes, one per kind of check (config values, arguments, the assembled run)."""
    code = main(["run", *args, "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert fragment in err
    assert not (tmp_path / "x").exists()  # refused before any round ran, no folder left


@pytest.mark.parametrize("args, fragment", [
    (["--set", "dataset=nope"], "dataset: must be one of digits"),
    (["--bogus"], "unrecognized arguments"),
    (["--set", "method=genefl", "--set", "genefl.gene_budget=0.001"], "cannot hold any of its body layers"),
])
def test_bad_input_from_a_real_process_is_one_line_exit_2(tmp_path, args, fragment):
    proc = genefl("run", *args, "--out", str(tmp_path / "x"))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert fragment in proc.stderr
    assert not (tmp_path / "x").exists()


def test_malformed_toml_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("rounds = = 3\n")
    proc = genefl("run", "--config", str(bad))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "not valid TOML" in proc.stderr


def test_nan_accuracy_becomes_null_not_a_crash(tmp_path):
    from genefl.results import write_json

    write_json({"summary": {"acc": float("nan")}, "newcomers": [{"acc_by_epoch": [0.5, float("inf")]}]}, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text()) == {"summary": {"acc": None}, "newcomers": [{"acc_by_epoch": [0.5, None]}]}
