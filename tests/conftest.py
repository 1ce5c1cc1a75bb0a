"""Shared test helpers: small configs and the path to the real datasets beside the checkout."""

from __future__ import annotations

import functools
import os
from pathlib import Path

if os.environ.get("PYTEST_XDIST_WORKER"):
    # Under `pytest -n N` the workers (and the genefl and Flower processes they start) share the
    # cores: one torch thread each, since torch's default of one per core oversubscribes them (10-50x
    # slower rounds here). Set before torch is imported, so subprocesses inherit it too.
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["MKL_NUM_THREADS"] = "1"

import pytest

from genefl.config import load_config

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("GENEFL_TEST_DATA", REPO.parent / "shared" / "data"))


def small_config(*overrides: str):
    """A seconds-long digits scenario."""
    base = ["rounds=3", "num_clients=4", "num_newcomers=1", "newcomer_epochs=2", "seed=1"]
    return load_config(None, base + list(overrides))


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "FashionMNIST" / "raw").is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATA} (set GENEFL_TEST_DATA)")
    return SHARED_DATA


@pytest.fixture
def one_thread():
    """One torch thread for the test: recorded references and measured thresholds are of one thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    """`genefl ARGS...` run by the CLI's own main() in this process: (exit status, stdout, stderr).
    For tests whose subject is not the process itself (a few tests start real processes for that)."""
    from genefl.cli import main

    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def cli(capsys):
    """`run_cli` bound to this test's captured output."""
    return functools.partial(run_cli, capsys)
