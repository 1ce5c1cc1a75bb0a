"""What a hostile (or hurried) user might try: every input below must give one line on stderr and
exit 2, naming the problem, with no traceback and no results (nor an empty output folder) written;
from Python, a `genefl.errors` exception with a one-line message. Run in-process through
`genefl.cli.main` (no subprocess per case). A property test at the end runs or refuses random
configs."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import math
import shutil
import sys
import tempfile
import types

import numpy as np
import pytest
import torch

import genefl
from genefl.cli import main
from genefl.errors import ConfigError, DataError, GeneflError
from conftest import run_cli

TINY = ["--set", "rounds=1", "--set", "num_clients=3"]
DEEP = "[" * 2000 + "1" + "]" * 2000
LONG = "x" * 300  # one name over the 255-byte limit
NOUSER = "~genefl_no_such_user"


def one_line_exit_2(code, err, fragment):
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err and fragment in err, (code, err)


def prepare(tmp_path):
    """Files the cases point at: a plain file, a 2 MB 'checksum file', and an MNIST folder whose
    training images' IDX header claims 4 x 2^31 x 2^31 images (2^64 bytes: 0 in int64), accepted by
    its checksum file."""
    (tmp_path / "a_file").write_text("x")
    with open(tmp_path / "big.md5", "wb") as f:
        f.truncate(2 << 20)
    raw = tmp_path / "idx" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    header = bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in (4, 1 << 31, 1 << 31))
    (raw / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(header))
    digest = hashlib.md5((raw / "train-images-idx3-ubyte.gz").read_bytes()).hexdigest()
    (tmp_path / "idx" / "sums.md5").write_text(f"{digest}  MNIST/raw/train-images-idx3-ubyte.gz\n")
    header = "client,online_from,online_until\n"
    for name, text in {"no_header": "0,1,2\n", "short_row": header + "0,1,2\n1,2\n", "late_first": header + "0,5,2\n",
                       "stranger": header + "99,1,2\n", "words": header + "zero,1,2\n"}.items():
        (tmp_path / f"{name}.csv").write_text(text)


def filled(args, tmp_path):
    return [a.replace("{tmp}", str(tmp_path)) for a in args]


CONFIG_CASES = [
    (["--set", "device=cuda:99"], "device: 'cuda:99' asked for"),
    (["--set", "device=mps"], "device: 'mps'"),
    (["--set", "device=cuda:x"], "device: must be cpu, cuda, cuda:N or mps"),
    (["--set", f"rounds={DEEP}"], "nested too deeply"),
    (["--set", "lr=1e308"], "lr: must be in [1e-08, 10]"),
    (["--set", "weight_decay=1e300"], "weight_decay: must be in [0, 1]"),
    (["--set", "lr=inf"], "lr: must be a finite number"),
    (["--set", "lr=1e30"], "lr: must be in [1e-08, 10]"),
    (["--set", "lr=1e-39"], "lr: must be in [1e-08, 10]"),  # GENE-FL's coefficient cap 1/lr overflowed float32
    (["--set", "newcomer_lr=1e-39"], "newcomer_lr: must be 0 (the training lr) or in [1e-08, 10]"),
    (["--set", "newcomer_inherited_lr=1e308"], "newcomer_inherited_lr: must be in [0, 1]"),
    (["--set", "newcomer_inherited_lr=1e6"], "newcomer_inherited_lr: must be in [0, 1]"),  # newcomers collapsed to 1%
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
    (["--set", "clustering.method=fast"], "clustering.method: must be one of exact, sampled"),
    (["--set", "clustering.sample=1"], "clustering.sample: must be in 2..1000000"),
    (["--set", "clustering.sample=3", "--set", "clustering.num_clusters=4"], "clustering.sample: 3 sampled clients cannot"),
    (["--set", "dataset=synthetic", "--set", "synthetic_alpha=-1"], "synthetic_alpha: must be in [0, 100]"),
    (["--set", "dataset=synthetic", "--set", "synthetic_beta=inf"], "synthetic_beta: must be a finite number"),
    (["--set", "dataset=synthetic", "--set", "train_subset=100"], "train_subset: dataset = synthetic is generated"),
    (["--set", "dataset=synthetic", "--set", "min_samples=5000"], "min_samples: dataset = synthetic caps a client"),
    (["--set", "dataset=synthetic", "--set", "model=logreg"], "model: 'logreg' is a single layer (the head), and genefl"),
    (["--set", "dataset=synthetic", "--set", "population.returns=0.2", "--set", "rounds=6"], "synthetic clients have no class mix"),
    (["--set", "dp_noise=1"], "dp_noise: needs dp_clip > 0"),
    (["--set", "dp_clip=-1"], "dp_clip: must be in [0, 1e6]"),
    (["--set", "data_dir=/tmp/\udcff"], "data_dir: is not valid UTF-8"),
    (["--set", "rounds=1\nlr=0.1"], "holds a line break"),  # TOML read lr=0.1 as another key and dropped it
    (["--set", "model=torch.nn:Linear"], "model: torch.nn:Linear(input_shape=(1, 8, 8), num_classes=10) failed"),
    (["--set", "dataset=mnist", "--set", f"data_dir={LONG}"], "data_dir: holds a name of 300 bytes"),
    (["--set", "dataset=mnist", "--set", "data_dir=a\x00b"], "data_dir: holds a control character"),
    (["--set", "dataset=mnist", "--set", "data_dir={tmp}", "--set", "checksum_file=a\x00b"],
     "checksum_file: holds a control character"),
    (["--set", "state_store=disk", "--set", "state_dir=a\x00b"], "state_dir: holds a control character"),
    (["--set", "dataset=mnist", "--set", f"data_dir={NOUSER}/x"], f"cannot expand {NOUSER}"),
    (["--set", "state_store=disk", "--set", f"state_dir={NOUSER}/x"], f"state_dir {NOUSER}/x: cannot expand"),
    (["--set", "dataset=mnist", "--set", "data_dir={tmp}", "--set", "checksum_file=/dev/zero"],
     "checksum_file /dev/zero: is not a regular file"),  # was read without bound
    (["--set", "dataset=mnist", "--set", "data_dir={tmp}", "--set", "checksum_file={tmp}/big.md5"],
     "larger than 1048576 bytes"),
    (["--set", "dataset=mnist", "--set", "data_dir={tmp}/idx", "--set", "checksum_file={tmp}/idx/sums.md5"],
     "expected 18446744073709551616"),  # the header's size wrapped to 0 in int64
    (["--set", "dataset=mnist", "--set", "data_dir={tmp}/none"], "does not exist"),
    (["--set", "dataset=mnist", "--set", "data_dir={tmp}"], "missing data file"),
    # [population]: TINY is 1 round, 3 training clients and 4 newcomers
    (["--set", "population.arrivals=sometimes"], "population.arrivals: must be one of schedule, poisson, trace"),
    (["--set", "population.arrivals=poisson", "--set", "population.arrival_rate=0"], "population.arrival_rate: must be in (0, 1e6]"),
    (["--set", "population.arrivals=poisson", "--set", "population.arrival_rate=inf"], "population.arrival_rate: must be a finite"),
    (["--set", "population.arrival_rate=2"], "population.arrival_rate: not used unless population.arrivals = 'poisson'"),
    (["--set", "population.arrivals=poisson", "--set", "newcomer_rounds=[1]", "--set", "num_newcomers=1"],
     "newcomer_rounds: not used with population.arrivals = 'poisson'"),
    (["--set", "population.departures=1"], "population.departures: must be in [0, 1)"),
    (["--set", "population.departures=-0.1"], "population.departures: must be in [0, 1)"),
    (["--set", "population.availability=weekdays"], "population.availability: must be one of always, diurnal, trace"),
    (["--set", "population.availability=diurnal", "--set", "population.day_rounds=0"], "population.day_rounds: must be in 1.."),
    (["--set", "population.availability=diurnal", "--set", "population.online_fraction=0"],
     "population.online_fraction: must be in (0, 1]"),
    (["--set", "population.day_rounds=12"], "population.day_rounds: not used unless population.availability = 'diurnal'"),
    (["--set", "population.availability=trace"], "population.trace_file: needed when population.arrivals or"),
    (["--set", "population.trace_file={tmp}/x.csv"], "population.trace_file: not used unless"),
    (["--set", "population.availability=trace", "--set", "population.trace_file=a\x00b"],
     "population.trace_file: holds a control character"),
    (["--set", "population.availability=trace", "--set", "population.trace_file={tmp}/none.csv"], "none.csv: no such file"),
    (["--set", "population.availability=trace", "--set", "population.trace_file={tmp}"], ": is not a regular file"),
    (["--set", "population.arrivals=trace", "--set", "population.trace_file=/dev/zero"], "/dev/zero: is not a regular file"),
    (["--set", "population.availability=trace", "--set", "population.trace_file={tmp}/no_header.csv"],
     "no_header.csv, line 1: expected the header 'client,online_from,online_until'"),
    (["--set", "population.availability=trace", "--set", "population.trace_file={tmp}/short_row.csv"],
     "short_row.csv, line 3: expected three whole numbers"),
    (["--set", "population.arrivals=trace", "--set", "population.trace_file={tmp}/late_first.csv"],
     "late_first.csv, line 2: expected 1 <= online_from <= online_until, got 5, 2"),
    (["--set", "population.availability=trace", "--set", "population.trace_file={tmp}/stranger.csv"],
     "stranger.csv, line 2: client 99 is not one of 0..6"),
    (["--set", "population.availability=trace", "--set", "population.trace_file={tmp}/words.csv"],
     "words.csv, line 2: expected three whole numbers"),
    (["--set", "population.returns=1.5"], "population.returns: must be in [0, 1]"),
    (["--set", "population.returns=0.5"], "population.absence: a client away 3 rounds from round 2 on is not back by the last"),
    (["--set", "rounds=5", "--set", "population.returns=0.5", "--set", "population.absence=0"], "population.absence: must be > 0"),
    (["--set", "population.absence=2"], "population.absence: not used unless population.returns > 0"),
    (["--set", "rounds=5", "--set", "population.returns=0.5", "--set", "population.drift=shift"],
     "population.drift: must be one of dirichlet, swap, none"),
    (["--set", "rounds=5", "--set", "population.returns=0.5", "--set", "population.recluster=yes"],
     "population.recluster: expected bool"),
    (["--set", "rounds=5", "--set", "population.returns=0.5", "--set", "population.drift=none", "--set",
      "population.recluster=true"], "population.recluster: with population.drift = 'none'"),
    (["--set", "rounds=5", "--set", "num_clients=1", "--set", "population.returns=0.5", "--set", "population.drift=swap"],
     "population.drift: 'swap' takes another training client's class mix"),
    (["--set", "population.recluster=true"], "population.recluster: not used unless population.returns > 0"),
    (["--set", "population.eval_sample=-1"], "population.eval_sample: must be >= 0"),
    (["--set", "population.eval_sample=2.5"], "population.eval_sample: expected int"),
    (["--set", "population.colour=red"], "unknown config key 'population.colour'"),
    (["--set", "population=1"], "population: expected a table of options"),
]


@pytest.mark.parametrize("args, fragment", CONFIG_CASES, ids=[" ".join(a)[:40] for a, _ in CONFIG_CASES])
def test_bad_config_values_are_one_line_exit_2(tmp_path, capsys, args, fragment):
    prepare(tmp_path)
    code, _, err = run_cli(capsys, "run", *TINY, *filled(args, tmp_path), "--out", str(tmp_path / "o"))
    one_line_exit_2(code, err, fragment)
    assert not (tmp_path / "o").exists()  # not even an empty folder


def test_device_cuda_is_refused_in_one_line_without_a_gpu_and_runs_with_one(tmp_path, capsys):
    """`device=cuda` where torch sees no CUDA device is one line and exit 2, nothing written; where it
    sees one (a GPU machine), the same command runs and writes its results."""
    import torch

    code, _, err = run_cli(capsys, "run", *TINY, "--set", "device=cuda", "--out", str(tmp_path / "o"))
    if torch.cuda.is_available():
        assert code == 0 and (tmp_path / "o" / "results.json").exists(), err
    else:
        one_line_exit_2(code, err, "device: 'cuda' asked for")
        assert not (tmp_path / "o").exists()


PATH_CASES = [
    (["--config", "{tmp}"], "is not a regular file"),
    (["--config", ""], "--config: empty path"),
    (["--config", "/dev/zero"], "is not a regular file"),
    (["--config", "{tmp}/missing.toml"], "config file not found"),
    (["--config", LONG], "--config: holds a name of 300 bytes"),
    (["--out", "{tmp}/a_file"], "is a file, not a folder"),
    (["--out", "{tmp}/a_file/sub"], "is a file, not a folder"),
    (["--out", "{tmp}/" + LONG], "--out: holds a name of 300 bytes"),
    (["--out", "/proc/x"], "--out /proc/x: cannot write there"),
    (["--set", "state_store=disk", "--set", "state_dir={tmp}/a_file", "--out", "{tmp}/o"], "state_dir:"),
    (["--tensorboard", "/proc/x", "--out", "{tmp}/o"], "--tensorboard /proc/x: cannot write there"),
    (["--tensorboard", "{tmp}/a_file", "--out", "{tmp}/o"], "is a file, not a folder"),
    (["--tensorboard", "{tmp}/a_file/sub", "--out", "{tmp}/o"], "is a file, not a folder"),
    (["--tensorboard", "/dev/null", "--out", "{tmp}/o"], "/dev/null is not a folder"),
    (["--tensorboard", "x" * 5000, "--out", "{tmp}/o"], "--tensorboard: is 5000 bytes long"),
    (["--tensorboard", "{tmp}/\udcff", "--out", "{tmp}/o"], "--tensorboard: is not valid UTF-8"),
]


@pytest.mark.parametrize("args, fragment", PATH_CASES, ids=[" ".join(a)[:40] for a, _ in PATH_CASES])
def test_bad_paths_are_one_line_exit_2(tmp_path, capsys, args, fragment):
    prepare(tmp_path)
    before = sorted(tmp_path.rglob("*"))
    code, _, err = run_cli(capsys, "run", *TINY, *filled(args, tmp_path))
    one_line_exit_2(code, err, fragment)
    assert sorted(tmp_path.rglob("*")) == before  # nothing created, not even the --out folder


COMMAND_CASES = [
    (["run", "--resume", "{tmp}/" + LONG], "--resume: holds a name of 300 bytes"),
    (["plot", "{tmp}/" + LONG], "plot: holds a name of 300 bytes"),
    (["plot", "{tmp}/a_file"], "is not a folder"),
    (["plot", "{tmp}/nothing"], "no results found"),
    (["attack", *TINY, "--out", "{tmp}/" + LONG], "--out: holds a name of 300 bytes"),
    (["attack", *TINY, "--images", "2000", "--out", "{tmp}/o"], "--images: 2000 asked for, but digits holds 1437"),
    (["attack", *TINY, "--case", "bad", "--out", "{tmp}/o"], "--case: must be one of"),
    (["compare", *TINY, "--jobs", "99999999999999999999", "--out", "{tmp}/o"], "--jobs: must be an integer in 1..1024"),
    (["compare", *TINY, "--seeds", "0,0", "--out", "{tmp}/o"], "--seeds: 0 is listed twice"),
    (["compare", *TINY, "--methods", "fedavg,no_such_module:X", "--out", "{tmp}/o"], "method: cannot import"),
    (["compare", *TINY, "--methods", "fedavg[model=no_such_module:f]", "--out", "{tmp}/o"], "model: cannot import"),
    (["compare", *TINY, "--methods", "fedavg[model=torch.nn:Linear]", "--out", "{tmp}/o"], "model: torch.nn:Linear("),
    (["newcomers", *TINY, "--set", "newcomer_epochs=0", "--out", "{tmp}/o"], "newcomer_epochs: the newcomer study"),
    (["newcomers", *TINY, "--set", "num_newcomers=0", "--out", "{tmp}/o"], "num_newcomers: the newcomer study"),
]


@pytest.mark.parametrize("args, fragment", COMMAND_CASES, ids=[" ".join(a)[:50] for a, _ in COMMAND_CASES])
def test_bad_command_arguments_are_one_line_exit_2(tmp_path, capsys, args, fragment):
    """Each refused before an output folder or a progress bar exists (its line used to be glued to the bar)."""
    prepare(tmp_path)
    code, _, err = run_cli(capsys, *filled(args, tmp_path))
    one_line_exit_2(code, err, fragment)
    assert not (tmp_path / "o").exists()


def test_a_run_that_fails_before_it_starts_leaves_no_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default --out is runs/<method>-<dataset>-<time>
    code, _, err = run_cli(capsys, "run", *TINY, "--set", "dataset=mnist", "--set", f"data_dir={tmp_path}")
    one_line_exit_2(code, err, "missing data file")
    assert list(tmp_path.iterdir()) == []


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


def test_a_second_run_into_the_same_folder_is_refused_unless_forced(tmp_path, capsys):
    out = str(tmp_path / "o")
    assert main(["run", *TINY, "--set", "num_newcomers=0", "--out", out]) == 0
    first = (tmp_path / "o" / "results.json").read_text()
    capsys.readouterr()
    code, _, err = run_cli(capsys, "run", *TINY, "--set", "num_newcomers=0", "--set", "seed=3", "--out", out)
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
    code, _, err = run_cli(capsys, "compare", *TINY, "--methods", methods, "--out", str(tmp_path / "c"))
    one_line_exit_2(code, err, fragment)


def test_a_forced_comparison_into_an_older_folder_tabulates_only_its_own_runs(tmp_path, capsys):
    """--force (or force=True) over an older comparison: plot and the tables used to mix in the older
    method and seed folders left there."""
    out = tmp_path / "c"
    small = [*TINY, "--set", "num_newcomers=0", "--set", "train_subset=300"]
    assert main(["compare", *small, "--methods", "fedavg", "--seeds", "0,1", "--out", str(out)]) == 0
    assert main(["compare", *small, "--methods", "local", "--seeds", "0", "--out", str(out), "--force"]) == 0
    capsys.readouterr()
    assert main(["plot", str(out)]) == 0
    rows = (out / "summary.csv").read_text().splitlines()[1:]
    assert [r.split(",")[:2] for r in rows] == [["local", "1"]]
    assert (out / "fedavg" / "seed1" / "results.json").exists()  # kept, not deleted: only not tabulated
    with pytest.raises(GeneflError, match="already holds results"):
        genefl.compare(genefl.Config(rounds=1, num_clients=3, num_newcomers=0, train_subset=300), methods="fedavg",
                       out=out)
    table = genefl.compare(genefl.Config(rounds=1, num_clients=3, num_newcomers=0, train_subset=300),
                           methods="fedavg", seeds=[1], out=out, force=True)
    assert [(r["method"], r["seeds"]) for r in table.rows] == [("fedavg", 1)]
    assert main(["plot", str(out)]) == 0 and "| fedavg |" in (out / "summary.md").read_text()


def test_a_long_variant_label_gets_a_short_folder(tmp_path, capsys):
    label = "fedavg[genefl.lambda_s=0." + "0" * 300 + "1]"  # its folder name was 330 bytes
    out = tmp_path / "c"
    assert main(["compare", *TINY, "--set", "num_newcomers=0", "--set", "train_subset=300", "--methods", label,
                 "--out", str(out)]) == 0
    folders = [p.name for p in out.iterdir() if p.is_dir()]
    assert len(folders) == 1 and len(folders[0]) <= 200
    assert main(["plot", str(out)]) == 0
    assert json.loads((out / folders[0] / "seed0" / "results.json").read_text())["method"] == "fedavg"


# ---- plot on edited results files --------------------------------------------------------------
STUDY = {"records": [{"seed": 0, "newcomer": 3, "arrival_round": 1, "start": start, "replicate": 0,
                      "init_bytes": 1000, "acc_init": 0.1, "acc_by_epoch": [0.5, 0.6], "val_by_epoch": [0.5, 0.6],
                      "chosen_epoch": 2} for start in ("learngene", "global", "random")]}


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """A comparison folder (fedavg, seeds 0 and 1, one newcomer with two epochs) and a study.json."""
    out = tmp_path_factory.mktemp("plot") / "c"
    assert main(["compare", *TINY, "--set", "num_newcomers=1", "--set", "newcomer_epochs=2", "--set", "train_subset=300",
                 "--methods", "fedavg", "--seeds", "0,1", "--out", str(out)]) == 0
    (out / "newcomers").mkdir()
    (out / "newcomers" / "study.json").write_text(json.dumps(STUDY))
    return out


def _edit(path, change):
    def apply(root):
        doc = json.loads((root / path).read_text())
        result = change(doc)
        (root / path).write_text(json.dumps(doc if result is None else result))
    return apply


def _folder(path):
    def apply(root):
        target = root / path
        if target.is_file():
            target.unlink()
        target.mkdir(parents=True)
    return apply


RUN0, RUN1, STUDY_JSON = "fedavg/seed0/results.json", "fedavg/seed1/results.json", "newcomers/study.json"


def _newcomers(key, value=None, drop=False):
    def change(doc):
        for n in doc["newcomers"]:
            n.pop(key) if drop else n.__setitem__(key, value)
    return change


def _record(key, value=None, drop=False):
    def change(doc):
        doc["records"][0].pop(key) if drop else doc["records"][0].__setitem__(key, value)
    return change


def _all(*edits):
    def apply(root):
        for edit in edits:
            edit(root)
    return apply


PLOT_CASES = [  # (name, edit, None = still plots cleanly, else the fragment of its one-line error)
    ("ragged epochs in a run, across seeds; null accuracies",  # plotting them used to fail
     _all(_edit(RUN0, lambda d: d["newcomers"].append({**d["newcomers"][0], "acc_by_epoch": [0.5], "acc_init": None})),
          _edit(RUN1, _newcomers("acc_by_epoch", [0.5, 0.4, 0.3])),
          _edit(RUN0, lambda d: d["summary"].__setitem__("wall_s", 1e308))), None),  # its std overflowed
    ("no epochs, no rounds, bytes_total null; a study without learngene, ragged",
     _all(_edit(RUN0, _newcomers("acc_by_epoch", [])), _edit(RUN1, lambda d: d.update(rounds=[])),
          _edit(RUN0, lambda d: d["summary"].__setitem__("bytes_total", None)),
          _edit(STUDY_JSON, lambda d: {"records": [{**d["records"][1], "acc_by_epoch": [0.5], "chosen_epoch": 1},
                                                   d["records"][2]]})), None),
    ("label a list", _edit(RUN0, lambda d: d.__setitem__("label", [1])), "label is not text"),
    ("label an int", _edit(RUN0, lambda d: d.__setitem__("label", 3)), "label is not text"),
    ("missing acc_init", _edit(RUN0, _newcomers("acc_init", drop=True)), "a newcomer without acc_init"),
    ("acc_init text", _edit(RUN0, _newcomers("acc_init", "x")), "a newcomer without acc_init"),
    ("round a bool", _edit(RUN0, lambda d: d["rounds"][0].__setitem__("round", True)), "a round without"),
    ("bytes beyond float", _edit(RUN0, lambda d: d["rounds"][0].__setitem__("bytes_up", 10 ** 400)), "a round without"),
    ("accuracy 1e308", _edit(RUN0, lambda d: d["rounds"][0].__setitem__("acc_clients", 1e308)), "a round without"),
    ("summary Infinity", _edit(RUN0, lambda d: d["summary"].__setitem__("wall_s", math.inf)), "summary missing, or holding"),
    ("summary a bool", _edit(RUN0, lambda d: d["summary"].__setitem__("acc_clients", True)), "summary missing, or holding"),
    ("records [{}]", _edit(STUDY_JSON, lambda d: {"records": [{}]}), "a record without an integer seed"),
    ("records []", _edit(STUDY_JSON, lambda d: {"records": []}), "holds no records"),
    ("records [1]", _edit(STUDY_JSON, lambda d: {"records": [1]}), "a record is not a JSON object"),
    ("records a dict", _edit(STUDY_JSON, lambda d: {"records": {}}), "records is not a list"),
    ("record start a list", _edit(STUDY_JSON, _record("start", [1])), "a record without an integer seed"),
    ("record seed a list", _edit(STUDY_JSON, _record("seed", [1])), "a record without an integer seed"),
    ("record missing acc_init", _edit(STUDY_JSON, _record("acc_init", drop=True)), "a record without acc_init"),
    ("record acc_init text", _edit(STUDY_JSON, _record("acc_init", "x")), "a record without acc_init"),
    ("record no epochs", _edit(STUDY_JSON, _record("acc_by_epoch", [])), "a record without acc_init"),
    ("record chosen epoch 99", _edit(STUDY_JSON, _record("chosen_epoch", 99)), "chosen_epoch is not one of its epochs"),
    ("record chosen epoch text", _edit(STUDY_JSON, _record("chosen_epoch", "1")), "chosen_epoch is not one of"),
    ("record init_bytes text", _edit(STUDY_JSON, _record("init_bytes", "1")), "a record without an integer seed"),
    ("summary.csv a folder", _folder("summary.csv"), "cannot write"),
    ("a plot a folder", _folder("accuracy_vs_round.png"), "cannot write"),
    ("study.md a folder", _folder("newcomers/study.md"), "cannot write"),
    ("study plot a folder", _folder("newcomers/newcomer_study.png"), "cannot write"),
]


@pytest.mark.parametrize("name, edit, fragment", PLOT_CASES, ids=[c[0] for c in PLOT_CASES])
def test_plot_on_edited_results_files(compared, tmp_path, capsys, name, edit, fragment):
    folder = tmp_path / "c"
    shutil.copytree(compared, folder)
    edit(folder)
    capsys.readouterr()
    code, _, err = run_cli(capsys, "plot", str(folder))
    if fragment is None:
        assert code == 0 and err == "", err
    else:
        one_line_exit_2(code, err, fragment)


def test_plot_refuses_broken_results_files(compared, tmp_path, capsys):
    folder = tmp_path / "c"
    shutil.copytree(compared, folder)
    path = folder / "fedavg" / "seed0" / "results.json"
    good = path.read_text()
    for broken in (good[: len(good) // 2], "[]", json.dumps({"seed": 0, "rounds": [], "newcomers": []}), "\x00\xff\x01"):
        path.write_text(broken, errors="surrogateescape")
        capsys.readouterr()
        code, _, err = run_cli(capsys, "plot", str(folder))
        one_line_exit_2(code, err, "results.json")


def test_argument_errors_name_the_right_help(capsys):
    code, _, err = run_cli(capsys, "run", "--bogus")
    assert code == 2 and "see 'genefl run --help'" in err
    code, _, err = run_cli(capsys, "frobnicate")
    assert code == 2 and "see 'genefl --help'" in err


# ---- your own model ------------------------------------------------------------------------------
MODELS = '''
import torch
from torch import nn

def flat(shape): return shape[0] * shape[1] * shape[2]
def small_head(s, k): return nn.Sequential(nn.Flatten(), nn.Linear(flat(s), k - 1))
def frozen(s, k):
    m = nn.Sequential(nn.Flatten(), nn.Linear(flat(s), k))
    m.requires_grad_(False)
    return m
class Squeezed(nn.Module):
    def __init__(self, s, k):
        super().__init__()
        self.fc = nn.Linear(flat(s), k)
    def forward(self, x): return self.fc(x.flatten(1)).flatten()
class Pair(Squeezed):
    def forward(self, x): return self.fc(x.flatten(1)), 0
class Scaled(Squeezed):
    def __init__(self, s, k):
        super().__init__(s, k)
        self.scale = nn.Parameter(torch.tensor(1.0))
    def forward(self, x): return self.fc(x.flatten(1)) * self.scale
def f64(s, k): return nn.Sequential(nn.Flatten(), nn.Linear(flat(s), k)).double()
def half(s, k): return nn.Sequential(nn.Flatten(), nn.Linear(flat(s), k)).half()
def lazy(s, k): return nn.Sequential(nn.Flatten(), nn.LazyLinear(k))
def broken(s, k): return nn.Sequential(nn.Linear(3, k))
'''

MODEL_CASES = [
    ("torch.nn:Linear", "model: torch.nn:Linear(input_shape=(1, 8, 8), num_classes=10) failed"),
    ("hostile_models:small_head", "returns shape (1, 9) for one input, expected (1, 10)"),
    ("hostile_models:frozen", "has no trainable parameters"),
    ("hostile_models:Squeezed", "returns shape (10,) for one input"),
    ("hostile_models:Pair", "returns tuple, expected a tensor"),
    ("hostile_models:Scaled", "holds parameter 'scale' itself, beside its layers"),
    ("hostile_models:f64", "has torch.float64 parameters"),
    ("hostile_models:half", "has torch.float16 parameters"),
    ("hostile_models:lazy", "has lazy (uninitialised) parameters"),
    ("hostile_models:broken", "fails on one input of shape (1, 8, 8)"),
]


@pytest.mark.parametrize("model, fragment", MODEL_CASES, ids=[m for m, _ in MODEL_CASES])
@pytest.mark.parametrize("method", ["fedavg", "genefl"])
def test_a_model_that_does_not_fit_is_refused_at_assembly(tmp_path, capsys, monkeypatch, model, fragment, method):
    (tmp_path / "hostile_models.py").write_text(MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "hostile_models", raising=False)
    code, _, err = run_cli(capsys, "run", *TINY, "--set", f"method={method}", "--set", f"model={model}",
                        "--out", str(tmp_path / "o"))
    one_line_exit_2(code, err, fragment)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("name", ["lenet5", "fedavg_cnn"])
def test_built_in_models_fit_non_square_images(name):
    """Their fully connected size was computed from the height alone."""
    from genefl.protocol.models import build_model, check_model

    model = build_model(name, (1, 12, 20), 3, 0)
    check_model(model, name, (1, 12, 20), 3)
    assert model(torch.zeros(2, 1, 12, 20)).shape == (2, 3)


# ---- from Python ---------------------------------------------------------------------------------
X = np.random.default_rng(0).normal(size=(100, 1, 6, 6)).astype(np.float32)
Y = np.arange(100) % 3
CONFIG = dict(rounds=1, num_clients=3, num_newcomers=1, newcomer_epochs=1, min_samples=5)
DEEP_LIST = 1
for _ in range(10_000):
    DEEP_LIST = [DEEP_LIST]


def _raw_dataset():
    from genefl.data.datasets import Dataset

    return Dataset("raw", torch.from_numpy(X), torch.from_numpy(Y[:90]), torch.from_numpy(X), torch.from_numpy(Y), 3)


def _used(tmp_path):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "results.json").write_text("{}")
    return tmp_path / "used"


API_CASES = [
    ("run dataset='mnist'", lambda t: genefl.run(CONFIG, dataset="mnist"), ConfigError, "dataset: expected a Dataset"),
    ("run out=/proc/x", lambda t: genefl.run(CONFIG, out="/proc/x"), GeneflError, "out /proc/x: cannot write there"),
    ("run out=a used folder", lambda t: genefl.run(CONFIG, out=_used(t)), GeneflError, "already holds results"),
    ("compare into a used folder", lambda t: genefl.compare(CONFIG, methods="fedavg", out=_used(t)), GeneflError,
     "already holds results"),
    ("compare seeds=[]", lambda t: genefl.compare(CONFIG, methods="fedavg", seeds=[], out=t / "c"), ConfigError,
     "seeds: name at least one seed"),
    ("compare seeds=[1, 1]", lambda t: genefl.compare(CONFIG, seeds=[1, 1], out=t / "c"), ConfigError, "1 is listed twice"),
    ("compare jobs=10**20", lambda t: genefl.compare(CONFIG, jobs=10 ** 20, out=t / "c"), ConfigError, "--jobs: must be"),
    ("run(5)", lambda t: genefl.run(5), ConfigError, "config: expected a genefl.Config"),
    ("Config(foo=1)", lambda t: genefl.Config(foo=1), ConfigError, "unknown config key 'foo'"),
    ("run({'foo': 1})", lambda t: genefl.run({"foo": 1}), ConfigError, "unknown config key 'foo'"),
    ("Config(genefl={'x': 1})", lambda t: genefl.Config(genefl={"x": 1}), ConfigError, "unknown config key 'genefl.x'"),
    ("a list 10,000 deep", lambda t: genefl.Config(newcomer_rounds=DEEP_LIST), ConfigError,
     "newcomer_rounds: expected int, got [[[[...]]]]"),
    ("num_classes=10.5", lambda t: genefl.data.from_arrays(X, Y, X, Y, num_classes=10.5), DataError,
     "num_classes must be an integer"),
    ("num_classes='10'", lambda t: genefl.data.from_arrays(X, Y, X, Y, num_classes="10"), DataError,
     "num_classes must be an integer"),
    ("2**64 classes", lambda t: genefl.data.from_arrays(X, Y, X, Y, num_classes=2 ** 64), DataError,
     "num_classes must be an integer in 2..100000"),
    ("1e300 pixels", lambda t: genefl.data.from_arrays(np.full(X.shape, 1e300), Y, X, Y), DataError,
     "images hold NaN or inf"),  # finite in float64, inf in the float32 it becomes
    ("images of 0 pixels", lambda t: genefl.data.from_arrays(X[:, :, :0], Y, X[:, :, :0], Y), DataError, "hold no pixels"),
    ("labels of another length", lambda t: genefl.data.from_arrays(X, Y[:90], X, Y), DataError, "100 images but 90 labels"),
    ("a raw Dataset, 100 images and 90 labels", lambda t: genefl.run(CONFIG, dataset=_raw_dataset()), DataError,
     "100 images but 90 labels"),
    ("TensorBoard('/dev/null')", lambda t: __import__("genefl.tensorboard").tensorboard.TensorBoard("/dev/null"),
     ConfigError, "/dev/null is not a folder"),
]


@pytest.mark.parametrize("name, call, kind, fragment", API_CASES, ids=[c[0] for c in API_CASES])
def test_bad_python_api_input_raises_a_genefl_error(tmp_path, name, call, kind, fragment):
    import genefl.data  # noqa: F401 (the cases use genefl.data.from_arrays)

    with pytest.raises(kind) as err:
        call(tmp_path)
    assert type(err.value) is kind and "\n" not in str(err.value) and fragment in str(err.value), str(err.value)
    if (tmp_path / "used").exists():
        assert (tmp_path / "used" / "results.json").read_text() == "{}" and len(list((tmp_path / "used").iterdir())) == 1
    assert not (tmp_path / "c").exists()


def test_a_tensor_that_requires_grad_is_taken_detached():
    data = genefl.data.from_arrays(torch.from_numpy(X).requires_grad_(), Y, X, Y)
    assert not data.x_train.requires_grad and data.num_classes == 3


# ---- Flower's configs and a node's own data (the functions the apps call; no Flower processes) ---
def _flat(**changes):
    from genefl.flower.runconfig import flat_defaults

    return {**flat_defaults(), **changes}


def _npz(tmp_path, **changes):
    rng = np.random.default_rng(0)
    arrays = {"x_train": rng.normal(size=(30, 1, 8, 8)).astype(np.float32), "y_train": np.arange(30) % 10,
              "x_test": rng.normal(size=(10, 1, 8, 8)).astype(np.float32), "y_test": np.arange(10) % 10}
    arrays.update(changes)
    np.savez(tmp_path / "mine.npz", **{k: v for k, v in arrays.items() if v is not None})
    return str(tmp_path / "mine.npz")


FLOWER_CASES = [
    ("run config '[1'", lambda t, c: c.config_from_run_config(_flat(newcomer_rounds="[1")), ConfigError,
     "newcomer_rounds: expected a list of int"),
    ("run config 5,000 deep", lambda t, c: c.config_from_run_config(_flat(newcomer_rounds="[" * 5000 + "]" * 5000)),
     ConfigError, "nested too deeply"),
    ("run config method.x beside method", lambda t, c: c.config_from_run_config(_flat(**{"method.x": 1})), ConfigError,
     "'method.x' is given, but so is 'method'"),
    ("partition-id 'abc'", lambda t, c: c.partition_id({"partition-id": "abc"}, genefl.Config()), ConfigError,
     "partition-id must be an integer"),
    ("partition-id 99", lambda t, c: c.partition_id({"partition-id": 99}, genefl.Config()), ConfigError,
     "partition-id=99 is outside 0..13"),
    ("partition-id -1", lambda t, c: c.partition_id({"partition-id": -1}, genefl.Config()), ConfigError,
     "partition-id=-1 is outside 0..13"),  # took the last (newcomer) partition
    ("partition-id 1.7", lambda t, c: c.partition_id({"partition-id": 1.7}, genefl.Config()), ConfigError,
     "partition-id must be an integer"),  # became 1
    ("partition-id missing", lambda t, c: c.partition_id({}, genefl.Config()), ConfigError, "partition-id is missing"),
    ("state-dir a file", lambda t, c: c.NodeStore(t / "a_file", genefl.Config(), 0), ConfigError,
     "exists and is not a folder"),
    ("data-file NaN pixels", lambda t, c: c.load_own_data(_npz(t, x_train=np.full((30, 1, 8, 8), np.nan, np.float32)),
                                                         genefl.Config()), DataError, "images hold NaN or inf"),
    ("data-file a negative label", lambda t, c: c.load_own_data(_npz(t, y_train=np.arange(30) % 10 - 1), genefl.Config()),
     DataError, "a label of -1"),
    ("data-file a label of 10", lambda t, c: c.load_own_data(_npz(t, y_test=np.arange(10) + 1), genefl.Config()),
     DataError, "a label of 10, expected 0..9"),
    ("data-file float labels", lambda t, c: c.load_own_data(_npz(t, y_train=np.zeros(30)), genefl.Config()),
     DataError, "must hold integer labels"),
    ("data-file lengths differ", lambda t, c: c.load_own_data(_npz(t, y_train=np.arange(29) % 10), genefl.Config()),
     DataError, "30 images but 29 labels"),
    ("data-file another shape", lambda t, c: c.load_own_data(_npz(t, x_train=np.zeros((30, 1, 5, 5), np.float32),
                                                                  x_test=np.zeros((10, 1, 5, 5), np.float32)),
                                                             genefl.Config()),
     DataError, "images of shape (1, 5, 5), but dataset = 'digits' has (1, 8, 8)"),
    ("data-file empty", lambda t, c: c.load_own_data(_npz(t, x_test=np.zeros((0, 1, 8, 8), np.float32),
                                                          y_test=np.zeros(0, np.int64)), genefl.Config()),
     DataError, "holds no images"),
    ("data-file without y_test", lambda t, c: c.load_own_data(_npz(t, y_test=None), genefl.Config()), DataError,
     "cannot read x_train, y_train, x_test, y_test"),
]


@pytest.mark.parametrize("name, call, kind, fragment", FLOWER_CASES, ids=[c[0] for c in FLOWER_CASES])
def test_bad_flower_configs_and_node_data_raise_a_genefl_error(tmp_path, name, call, kind, fragment):
    pytest.importorskip("flwr")
    from genefl.flower import client_app, node_store, runconfig

    calls = types.SimpleNamespace(config_from_run_config=runconfig.config_from_run_config, NodeStore=node_store.NodeStore,
                                  partition_id=client_app.partition_id, load_own_data=client_app.load_own_data)
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(kind) as err:
        call(tmp_path, calls)
    assert "\n" not in str(err.value) and fragment in str(err.value), str(err.value)


def test_a_damaged_client_state_file_is_one_line(tmp_path):
    from genefl.runtime.states import DiskStates

    states = DiskStates(tmp_path, "run")
    (tmp_path / "run" / "client0.pt").write_bytes(b"\x00garbage")
    with pytest.raises(GeneflError) as err:
        states.open(0)
    assert "client state file" in str(err.value) and "is unreadable" in str(err.value) and "\n" not in str(err.value)


# ---- any config: it runs a round, or it is refused in one line -----------------------------------
def _property_test(max_examples: int = 80, derandomize: bool = True):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from genefl.algorithms import REGISTRY
    from genefl.protocol.compression import CODECS

    def toml(value) -> str:
        if isinstance(value, float):
            return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
        if isinstance(value, bool):
            return str(value).lower()
        if isinstance(value, str):
            return json.dumps(value)
        return str(value).replace("'", '"')

    def mostly(usual, rare, one_in: int = 8):
        """`usual`, and `rare` once in about `one_in` draws."""
        return st.integers(1, one_in).flatmap(lambda i: rare if i == 1 else usual)

    numbers = mostly(st.one_of(st.floats(0.001, 0.999), st.sampled_from([0.01, 0.5, 1.0])),
                     st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(-0.5, 1.5), st.just(0.0)), 6)
    garbage = st.one_of(st.text(max_size=4), st.booleans(), st.lists(st.integers(-1, 3), max_size=3))
    keys = {  # key: values, mostly in or near the valid range, sometimes anything
        "method": st.sampled_from([*REGISTRY, "nope", "no_module:X"]),
        "model": st.sampled_from(["auto", "logreg", "mlp", "cnn", "lenet5", "fedavg_cnn"]),
        "dataset": st.sampled_from(["digits", "synthetic"]), "synthetic_alpha": numbers, "synthetic_beta": numbers,
        "rounds": st.integers(-1, 2), "num_clients": st.integers(-1, 5), "num_newcomers": st.integers(-1, 2),
        "newcomer_rounds": st.lists(st.integers(-1, 3), max_size=2), "partition": st.sampled_from(["iid", "dirichlet", "pathological", "x"]),
        "alpha": numbers, "classes_per_client": st.integers(0, 11), "min_samples": st.integers(0, 40),
        "train_subset": st.sampled_from([0, 0, 1, 50, 200]), "local_epochs": st.integers(0, 2), "batch_size": st.integers(0, 70),
        "lr": numbers, "momentum": numbers, "weight_decay": numbers, "participation": numbers, "dropout": numbers,
        "newcomer_epochs": st.integers(-1, 2), "newcomer_lr": numbers, "newcomer_momentum": numbers,
        "newcomer_val_fraction": numbers, "newcomer_freeze_epochs": st.integers(-1, 3), "newcomer_inherited_lr": numbers,
        "newcomer_init": st.sampled_from(["method", "random", "x"]), "newcomer_schedule": st.sampled_from(["constant", "cosine"]),
        "dp_clip": numbers, "dp_noise": numbers, "first_contact": st.sampled_from(["seed", "tensors"]),
        "eval_every": st.integers(0, 2), "checkpoint_every": st.integers(-1, 2), "state_store": st.sampled_from(["memory", "disk"]),
        "seed": st.integers(-(2 ** 70), 2 ** 70),
        "clustering.p": st.integers(0, 6), "clustering.num_clusters": st.integers(-1, 4), "clustering.beta": numbers,
        "genefl.fisher_samples": st.integers(0, 16), "genefl.fisher_top": numbers, "genefl.gene_budget": numbers,
        "genefl.lambda_e": numbers, "genefl.lambda_s": numbers, "genefl.gene_selection": st.sampled_from(
            ["window", "greedy", "random", "input", "output"]), "genefl.gene_reselect_every": st.integers(0, 2),
        "genefl.fisher_estimator": st.sampled_from(["per_sample", "batch"]), "genefl.sensitivity": st.sampled_from(["stability", "taylor"]),
        "fedprox.mu": numbers, "scaffold.server_lr": numbers, "fedlp.p": numbers,
        "server_opt.name": st.sampled_from(["none", "avgm", "adam", "yogi", "adagrad"]), "server_opt.lr": numbers,
        "codec.up": st.sampled_from(CODECS), "codec.down": st.sampled_from(CODECS), "codec.topk": numbers,
        "codec.error_feedback": st.booleans(), "codec.min_numel": st.integers(0, 300),
        "population.arrivals": st.sampled_from(["schedule", "poisson", "trace"]), "population.arrival_rate": numbers,
        "population.departures": numbers, "population.availability": st.sampled_from(["always", "diurnal"]),
        "population.day_rounds": st.integers(0, 3), "population.online_fraction": numbers, "population.returns": numbers,
        "population.eval_sample": st.integers(-1, 3),
    }
    entry = st.sampled_from(sorted(keys)).flatmap(lambda k: st.tuples(st.just(k), mostly(keys[k], garbage, 20)))
    base = ["rounds=1", "num_clients=3", "num_newcomers=1", "newcomer_epochs=1", "train_subset=200",
            "genefl.fisher_samples=8", "min_samples=5"]

    @settings(max_examples=max_examples, derandomize=derandomize, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(st.lists(entry, max_size=6))
    def check(changes):
        args = ["run"]
        for item in base + [f"{k}={toml(v)}" for k, v in changes]:
            args += ["--set", item]
        err = io.StringIO()
        with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(args + ["--out", f"{tmp}/o"])
        text = err.getvalue()
        assert "Traceback" not in text, text
        if code != 0:
            lines = [line for line in text.splitlines() if line.startswith("genefl: error:")]
            assert code == 2 and len(lines) == 1 and text.endswith(lines[0] + "\n"), (code, text)

    return check


def test_any_config_runs_a_round_or_is_refused_in_one_line():
    pytest.importorskip("hypothesis")
    _property_test()()
