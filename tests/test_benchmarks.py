"""Every benchmark script starts: each `benchmarks/*.py` answers --help, run as `__main__` with this
checkout's src on PYTHONPATH, and every `from genefl... import name` in them, those inside functions
too (some are lazy, beside an optional dependency), names something that exists."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

BENCHMARKS = REPO / "benchmarks"
HELPERS = {"common.py"}  # imported by the scripts, never run itself: their --help imports it
SCRIPTS = sorted(p for p in BENCHMARKS.glob("*.py") if p.name not in HELPERS)

# One subprocess runs every script's --help in turn, as `python SCRIPT --help` would (run as __main__,
# its folder first on sys.path): torch is imported once, not once per script (2-3 s each here).
HELP_ALL = """
import contextlib, io, runpy, sys
sys.path.insert(0, sys.argv[1])
for path in sys.argv[2:]:
    sys.argv, out = [path, "--help"], io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(path, run_name="__main__")
        code = "no exit"
    except SystemExit as exc:
        code = exc.code
    except Exception as exc:
        code = f"{type(exc).__name__}: {exc}"
    if code != 0 or not out.getvalue().startswith("usage:"):
        print(f"{path}: {code}")
"""


def test_every_benchmark_script_answers_help():
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", HELP_ALL, str(BENCHMARKS), *map(str, SCRIPTS)], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=300)
    assert len(SCRIPTS) >= 15
    assert proc.returncode == 0 and proc.stdout == "", proc.stdout + proc.stderr[-2000:]


def test_every_genefl_import_in_the_benchmarks_exists():
    missing = []
    for path in sorted(BENCHMARKS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "genefl":
                module = importlib.import_module(node.module)
                missing += [f"{path.name}: {node.module}.{a.name}" for a in node.names if not hasattr(module, a.name)
                            and not (hasattr(module, "__path__") and importlib.util.find_spec(f"{node.module}.{a.name}"))]
    assert not missing


def test_security_grid_pairs_each_cell_with_its_own_methods_clean_run(tmp_path, monkeypatch):
    """The grid's "vs clean, no defence" column subtracts, seed by seed, the clean undefended run of the
    cell's own method, also for a method whose name holds an underscore (labels are method_defence); the
    "honest vs the same clients clean" column, the attacked run's honest clients against the same clients
    of that clean run (its `acc_by_client`), "-" where the clean run predates `acc_by_client`."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    grid = importlib.import_module("security_grid")

    def write(folder, seed, acc, by_client=None, attackers=(), honest=None):
        (folder / f"seed{seed}").mkdir(parents=True)
        doc = {"seed": seed, "method_info": {"adversary": {"attackers": list(attackers)}} if attackers else {}, "newcomers": [],
               "summary": {"acc_clients": acc, "acc_newcomers_last_epoch": None, "backdoor_success": None,
                           "backdoor_success_newcomers": None, "bytes_total": 1e6}}
        if by_client:
            doc["acc_by_client"] = by_client
        if attackers:
            doc["summary"]["acc_clients_honest"] = honest
        (folder / f"seed{seed}" / "results.json").write_text(json.dumps(doc))
    write(tmp_path / "clean" / "my_method_mean", 0, 0.80, {"0": 0.7, "1": 0.9, "2": 0.8})
    write(tmp_path / "clean" / "my_method_mean", 1, 0.90)  # written before acc_by_client
    write(tmp_path / "clean" / "my_trimmed_mean", 0, 0.10)  # a method named "my" with trimmed_mean: not the reference
    # an attacked run needs no acc_by_client of its own: the honest clients are the clean run's, less the attackers
    write(tmp_path / "signflip" / "my_method_trimmed_mean" / "f0.2", 0, 0.75, attackers=[2], honest=0.725)
    write(tmp_path / "signflip" / "my_method_trimmed_mean" / "f0.2", 1, 0.80)
    rows = grid.collect(tmp_path, "signflip", [0.0, 0.2])
    assert grid.method_of("my_method_trimmed_mean") == "my_method" and grid.method_of("my_multikrum") == "my"
    assert grid.versus_clean(rows, "my_method_trimmed_mean", rows[("my_method_trimmed_mean", 0.2)]) \
        == pytest.approx(((0.75 - 0.80) + (0.80 - 0.90)) / 2)
    # seed 0 only: honest clients 0 and 1 at 0.725 against the same clients' 0.80 in the clean run
    assert grid.honest_versus_clean(rows, "my_method_trimmed_mean", rows[("my_method_trimmed_mean", 0.2)]) \
        == pytest.approx(0.725 - 0.80)
    # the figure draws each line over the seeds it has at all its fractions: my_method_mean has seeds 0 and 1
    # clean; with only seed 0 at 20% its line is seed 0's (0.80 -> 0.75 would be 0.85 -> 0.75 over both seeds)
    write(tmp_path / "signflip" / "my_method_mean" / "f0.2", 0, 0.75, attackers=[2], honest=0.7)
    rows = grid.collect(tmp_path, "signflip", [0.0, 0.2])
    assert grid.line(rows, "my_method_mean", "acc_clients") == ([0], [(0.0, 0.80), (0.2, 0.75)])
    # summary.md: a row per method_defence, also one run only under attack (no clean run of its own)
    summary = grid.by_seed(tmp_path, ["signflip"], 0.2, [0, 1]).splitlines()
    assert summary[2:] == ["| my_method_mean | 80.0; 90.0 | -5.0; - | -; - | -; - |",
                           "| my_method_trimmed_mean | -; - | -5.0; -10.0 | -; - | -; - |",
                           "| my_trimmed_mean | 10.0; - | -; - | -; - | -; - |"]
    grid.plot(tmp_path, "signflip", rows)
    assert (tmp_path / "signflip.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
