"""Every README example runs: the Python blocks as written (the test supplies the arrays and the
`my_package` they assume), and every `genefl ...` command line, shortened to one round on a few
clients and one seed (appended `--set` options, `--seeds 0`; a comparison of all methods runs two
of them) so that the suite stays fast: what is checked is that each documented command, flag and
config file works."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys

import numpy as np
import pytest
import torch

import genefl
from conftest import REPO, SHARED_DATA
from readme import cli_examples, python_example, write_own_packages

SHRINK = ["--set", "rounds=1", "--set", "num_clients=3", "--set", "num_newcomers=1", "--set", "newcomer_epochs=1"]
FILE_DATA = ["--set", "train_subset=800", "--set", "test_subset=500", "--set", "min_samples=20"]  # the MNIST / Fashion-MNIST configs


@pytest.fixture
def packages(tmp_path, monkeypatch):
    """my_methods.py (the README's block) and my_package/models.py, importable here and in subprocesses."""
    monkeypatch.syspath_prepend(str(write_own_packages(tmp_path / "pkgs")))
    yield tmp_path / "pkgs"
    for name in ("my_methods", "my_package", "my_package.models"):
        sys.modules.pop(name, None)


def test_python_api_example_runs_as_written(tmp_path, monkeypatch, packages):
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images[:, None] / 16.0).astype(np.float32)
    monkeypatch.chdir(tmp_path)
    names = {"x_train": x[:1400], "y_train": digits.target[:1400], "x_test": x[1400:], "y_test": digits.target[1400:],
             "print": lambda *a: None}
    exec(compile(python_example("import genefl"), "README.md", "exec"), names)
    assert names["result"].summary["acc_clients"] > 0.5
    assert (tmp_path / "runs" / "py" / "results.json").exists() and (tmp_path / "runs" / "cmp" / "summary.csv").exists()
    assert [row["method"] for row in names["table"].rows] == ["genefl", "fedavg"]
    assert names["mine"].input_shape == (1, 8, 8)


def test_your_own_method_from_the_readme_is_fedprox_bit_for_bit(packages):
    """The README's FedProx-over-FedAvg block gives the built-in `fedprox` exactly, through genefl.run,
    a registered name and genefl.compare."""
    from genefl.algorithms import REGISTRY, register

    tiny = dict(rounds=2, num_clients=3, num_newcomers=1, newcomer_epochs=1)
    builtin = genefl.run(genefl.Config(method="fedprox", **tiny))
    mine = genefl.run(genefl.Config(method="my_methods:MYPROX", **tiny))
    assert mine.summary["acc_clients"] == builtin.summary["acc_clients"]
    assert mine.summary["bytes_total"] == builtin.summary["bytes_total"]
    assert all(torch.equal(mine.weights[k], builtin.weights[k]) for k in builtin.weights)
    import my_methods

    register("myprox", *my_methods.MYPROX)
    try:
        table = genefl.compare(genefl.Config(**tiny), methods="myprox,my_methods:MYPROX", out=packages.parent / "c")
        assert table.rows[0]["acc_clients"] == table.rows[1]["acc_clients"] == builtin.summary["acc_clients"]
    finally:
        REGISTRY.pop("myprox")
    with pytest.raises(genefl.ConfigError):
        genefl.run(genefl.Config(method="my_methods:NOPE", **tiny))


@pytest.mark.parametrize("line", cli_examples())
def test_every_cli_example_runs(line, tmp_path):
    args = shlex.split(line.replace("../shared/data", str(SHARED_DATA)).replace("--seeds 0,1,2", "--seeds 0"))
    uses_files = any(a.startswith("configs/") and "digits" not in a for a in args)
    if uses_files and not (SHARED_DATA / "FashionMNIST" / "raw").is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATA}")
    (tmp_path / "configs").symlink_to(REPO / "configs")
    if args[1] == "plot":  # redraws what an earlier example wrote: make that first
        subprocess.run([sys.executable, "-m", "genefl.cli", "compare", "--methods", "fedavg", *SHRINK,
                        "--out", args[2]], cwd=tmp_path, check=True, capture_output=True)
    else:
        args += SHRINK + (FILE_DATA if uses_files else []) + (["--replicates", "1"] if args[1] == "newcomers" else [])
        if args[1] == "compare" and "--methods" not in args:  # every method runs in tests of its own
            args += ["--methods", "genefl,fedavg"]
    env = {**os.environ, "GENEFL_DATA": str(SHARED_DATA)}
    proc = subprocess.run([sys.executable, "-m", "genefl.cli", *args[1:]], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{line}\n{proc.stderr[-3000:]}"
