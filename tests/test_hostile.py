"""What a hostile (or hurried) user might try: every input below must give one line on stderr and
exit 2, naming the problem, with no traceback and no results written. Run in-process through
`genefl.cli.main` (no subprocess per case)."""

from __future__ import annotations

import json

import pytest

from genefl.cli import main

TINY = ["--set", "rounds=1", "--set", "num_clients=3"]
DEEP = "[" * 2000 + "1" + "]" * 2000


def run_cli(capsys, *args):
    code = main(list(args))
    err = capsys.readouterr().err
    return code, err


CONFIG_CASES = [
    (["--set", "device=cuda"], "device: 'cuda' asked for"),
    (["--set", "device=cuda:99"], "device: 'cuda:99' asked for"),
    (["--set", "device=mps"], "device: 'mps'"),
    (["--set", "device=cuda:x"], "device: must be cpu, cuda, cuda:N or mps"),
    (["--set", f"rounds={DEEP}"], "nested too deeply"),
    (["--set", "lr=1e308"], "lr: must be in [1e-08, 10]"),
    (["--set", "weight_decay=1e300"], "weight_decay: must be in [0, 1]"),
    (["--set", "lr=inf"], "lr: must be a finite number"),
    (["--set", "lr=1e30"], "lr: must be in [1e-08, 10]"),
    (["--set", "genefl.lambda_e=inf"], "genefl.lambda_e: must be a finite number"),
    (["--set", "genefl.lambda_s=1e308"], "genefl.lambda_s: must be in [0, 1e6]"),
    (["--set", "fedprox.mu=inf"], "fedprox.mu: must be a finite number"),
    (["--set", "scaffold.server_lr=inf"], "scaffold.server_lr: must be a finite number"),
    (["--set", "alpha=inf"], "alpha: must be a finite number"),
    (["--set", "batch_size=1"], "batch_size: must be >= 2"),
    (["--set", "num_clients=2000", "--set", "partition=iid"], "num_clients: 2004 clients"),
    (["--set", "partition=iid", "--set", "train_subset=3", "--set", "num_newcomers=1"], "train_subset: 3 samples"),
    (["--set", "partition=pathological", "--set", "num_clients=1000", "--set", "classes_per_client=1"], "num_clients:"),
    (["--set", "partition=pathological", "--set", "num_clients=30", "--set", "classes_per_client=1",
      "--set", "min_samples=40"], "partition: client"),
    (["--set", "train_subset=5", "--set", "partition=iid"], "train_subset: 5 samples"),
    (["--set", "train_subset=1"], "train_subset: 1 samples"),
    (["--set", "min_samples=3"], "min_samples: must be >= clustering.p"),
    (["--set", "dp_noise=1"], "dp_noise: needs dp_clip > 0"),
    (["--set", "dp_clip=-1"], "dp_clip: must be in [0, 1e6]"),
    (["--set", "data_dir=/tmp/\udcff"], "data_dir: is not valid UTF-8"),
]


@pytest.mark.parametrize("args, fragment", CONFIG_CASES, ids=[" ".join(a)[:40] for a, _ in CONFIG_CASES])
def test_bad_config_values_are_one_line_exit_2(tmp_path, capsys, args, fragment):
    code, err = run_cli(capsys, "run", *TINY, *args, "--out", str(tmp_path / "o"))
    assert code == 2 and err.count("\n") == 1 and fragment in err, err
    assert not (tmp_path / "o" / "rounds.csv").exists()


def test_a_diverging_run_ends_cleanly_with_its_rejected_updates_noted(tmp_path, capsys):
    """lr 0.5 makes FedAvg diverge on digits: weights grow huge (once crashing the update check with
    'generator raised StopIteration'), then NaN. The run must finish, say so, and write its results."""
    out = tmp_path / "o"
    code = main(["run", "--set", "num_clients=3", "--set", "num_newcomers=1", "--set", "rounds=6",
                 "--set", "method=fedavg", "--set", "lr=0.5", "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    terminal = captured.out + captured.err
    assert "Traceback" not in terminal and "replies were rejected and not aggregated" in terminal
    doc = json.loads((out / "results.json").read_text())
    assert len(doc["rounds"]) == 6 and doc["summary"]["acc_clients"] is not None
    notes = doc["method_info"]["notes"]
    assert notes and all("rejected update: tensor" in n and "holds NaN or inf" in n for n in notes)
    last = doc["rounds"][-1]
    assert last["participants"] == 0 and last["dropped"] == 4  # every reply of the last round was rejected


def test_bad_paths_are_one_line_exit_2(tmp_path, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    cases = [
        (["--config", str(tmp_path)], "is not a regular file"),
        (["--config", ""], "--config: empty path"),
        (["--config", "/dev/zero"], "is not a regular file"),
        (["--config", str(tmp_path / "missing.toml")], "config file not found"),
        (["--out", str(a_file)], "is a file, not a folder"),
        (["--out", str(a_file / "sub")], "is a file, not a folder"),
        (["--set", "state_store=disk", "--set", f"state_dir={a_file}", "--out", str(tmp_path / "s")],
         "state_dir:"),
    ]
    for args, fragment in cases:
        code, err = run_cli(capsys, "run", *TINY, *args)
        assert code == 2 and err.count("\n") == 1 and fragment in err, (args, err)


def test_a_second_run_into_the_same_folder_is_refused_unless_forced(tmp_path, capsys):
    out = str(tmp_path / "o")
    assert main(["run", *TINY, "--set", "num_newcomers=0", "--out", out]) == 0
    first = (tmp_path / "o" / "results.json").read_text()
    capsys.readouterr()
    code, err = run_cli(capsys, "run", *TINY, "--set", "num_newcomers=0", "--set", "seed=3", "--out", out)
    assert code == 2 and "already holds results" in err and "--force" in err
    assert (tmp_path / "o" / "results.json").read_text() == first  # untouched
    assert main(["run", *TINY, "--set", "num_newcomers=0", "--set", "seed=3", "--out", out, "--force"]) == 0
    assert json.loads((tmp_path / "o" / "results.json").read_text())["seed"] == 3


@pytest.mark.parametrize("methods, fragment", [
    ("fedavg[seed=5]", "set it with --seeds"),
    ("fedavg[method=local]", "set it with the name before the brackets"),
    ("fedavg[foo.bar=1]", "unknown config key 'foo.bar'"),
    ("fedavg[rounds.x=1]", "unknown config key 'rounds.x'"),
    ("genefl[", "unbalanced brackets"),
    ("local,local", "'local' is listed twice"),
    ("fedavg[lr=0.1],fedavg[lr:0.1]", "expected key=value"),
])
def test_bad_method_lists_are_one_line_exit_2(tmp_path, capsys, methods, fragment):
    code, err = run_cli(capsys, "compare", *TINY, "--methods", methods, "--out", str(tmp_path / "c"))
    assert code == 2 and err.count("\n") == 1 and fragment in err, err


def test_plot_refuses_broken_results_files(tmp_path, capsys):
    assert main(["compare", *TINY, "--set", "num_newcomers=0", "--methods", "fedavg", "--out", str(tmp_path / "c")]) == 0
    path = tmp_path / "c" / "fedavg" / "seed0" / "results.json"
    good = path.read_text()
    for broken in (good[: len(good) // 2], "[]", json.dumps({"seed": 0, "rounds": [], "newcomers": []}), "\x00\xff\x01"):
        path.write_text(broken, errors="surrogateescape") if isinstance(broken, str) else path.write_bytes(broken)
        capsys.readouterr()
        code, err = run_cli(capsys, "plot", str(tmp_path / "c"))
        assert code == 2 and err.count("\n") == 1 and "results.json" in err, err


def test_argument_errors_name_the_right_help(capsys):
    code, err = run_cli(capsys, "run", "--bogus")
    assert code == 2 and "see 'genefl run --help'" in err
    code, err = run_cli(capsys, "frobnicate")
    assert code == 2 and "see 'genefl --help'" in err


def test_a_rule_for_a_key_that_does_not_exist_is_refused():
    from genefl.config import RULES, check_rules
    from genefl.errors import ConfigError

    check_rules(RULES)  # the real rules all name a key
    with pytest.raises(ConfigError, match="genefl.fisher_topp"):
        check_rules({**RULES, "genefl.fisher_topp": (lambda v: True, "")})
