"""`genefl compare` and `genefl plot` through the CLI: identical scenarios, tables equal to the
per-run results, real PNG files, redrawing from saved results (also with null accuracies)."""

from __future__ import annotations

import csv
import json
import statistics

from genefl.config import load_config
from test_cli import genefl, strip_times

TINY = ["--set", "rounds=2", "--set", "num_clients=3", "--set", "num_newcomers=1", "--set", "newcomer_epochs=1"]
PNGS = ("accuracy_vs_round.png", "accuracy_vs_mb.png", "newcomer_accuracy.png")


def is_png(path) -> bool:
    data = path.read_bytes()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_compare_writes_runs_tables_and_plots(tmp_path):
    out = tmp_path / "cmp"
    proc = genefl("compare", *TINY, "--methods", "fedavg,genefl,genefl[newcomer_init=random]", "--seeds", "0,1",
                  "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    docs = {}
    for folder in ("fedavg", "genefl", "genefl_newcomer_init=random"):
        for seed in (0, 1):
            docs[folder, seed] = json.loads((out / folder / f"seed{seed}" / "results.json").read_text())
    # identical scenario per seed: same newcomers at the same rounds, same local test-set sizes
    for seed in (0, 1):
        arrivals = {f: [(n["id"], n["arrival_round"]) for n in docs[f, seed]["newcomers"]] for f, s in docs if s == seed}
        assert len(set(map(tuple, arrivals.values()))) == 1
    assert docs["genefl_newcomer_init=random", 0]["newcomers"][0]["init"] == "random"
    assert docs["genefl", 0]["newcomers"][0]["init"] == "learngene"
    # summary.csv: mean over seeds of each run's summary
    rows = {r["method"]: r for r in csv.DictReader(open(out / "summary.csv"))}
    assert set(rows) == {"fedavg", "genefl", "genefl[newcomer_init=random]"} and rows["fedavg"]["seeds"] == "2"
    for label, folder in (("fedavg", "fedavg"), ("genefl", "genefl")):
        total_mb = statistics.mean(docs[folder, s]["summary"]["bytes_total"] / 1e6 for s in (0, 1))
        assert abs(float(rows[label]["mb_total"]) - total_mb) < 1e-9
    assert "| genefl |" in (out / "summary.md").read_text()
    for name in PNGS:
        assert is_png(out / name), name
    # genefl plot redraws everything from the saved results
    for name in PNGS:
        (out / name).unlink()
    (out / "summary.csv").unlink()
    proc = genefl("plot", str(out))
    assert proc.returncode == 0, proc.stderr
    assert all(is_png(out / name) for name in PNGS) and (out / "summary.csv").exists()


def test_plot_survives_null_accuracies_and_rejects_an_empty_folder(tmp_path, cli):
    out = tmp_path / "cmp"
    assert cli("compare", *TINY, "--methods", "fedavg", "--out", str(out))[0] == 0
    path = out / "fedavg" / "seed0" / "results.json"
    doc = json.loads(path.read_text())
    doc["newcomers"][0]["acc_by_epoch"][0] = None  # what an empty test split leaves
    path.write_text(json.dumps(doc))
    code, _, err = cli("plot", str(out))
    assert code == 0, err
    code, _, err = cli("plot", str(tmp_path / "nothing"))
    assert code == 2 and "no results found" in err and err.count("\n") == 1


def test_a_variant_with_its_own_dataset_trains_on_it_whatever_the_jobs(tmp_path, shared_data):
    """`fedavg[dataset=mnist]` beside a digits base once trained on digits with --jobs 1 (the
    in-process path loaded the base's dataset once for every scenario) but on MNIST with --jobs 2.
    (An MLP on MNIST and no plots: the same code paths in a few seconds.)"""
    import torch

    from genefl.experiments.comparison import parse_variants, run_comparison, threads_per_job

    base = load_config(None, ["rounds=1", "num_clients=3", "num_newcomers=1", "newcomer_epochs=1", "train_subset=300",
                              f"data_dir={json.dumps(str(shared_data))}"])
    variants = parse_variants("fedavg,fedavg[dataset=mnist;partition=iid;model=mlp]")
    threads = torch.get_num_threads()
    torch.set_num_threads(threads_per_job(2))  # each worker's thread count: matmuls may round by it
    try:
        runs = {jobs: {d["label"]: strip_times(d) for d in run_comparison(base, variants, [0], tmp_path / f"j{jobs}", jobs)}
                for jobs in (1, 2)}
    finally:
        torch.set_num_threads(threads)
    assert runs[1] == runs[2]
    base_run, variant = runs[1]["fedavg"], runs[1]["fedavg[dataset=mnist;partition=iid;model=mlp]"]
    assert variant["dataset"] == "mnist" and base_run["dataset"] == "digits"
    assert variant["summary"]["model_bytes"] > 2 * base_run["summary"]["model_bytes"]  # an MLP of 784 inputs, not 64
    written = (tmp_path / "j1" / "fedavg_dataset=mnist_partition=iid_model=mlp" / "seed0" / "config.toml").read_text()
    assert 'dataset = "mnist"' in written and 'partition = "iid"' in written


def test_scenario_spec_tells_apart_exactly_the_configs_that_change_the_data():
    from genefl.config import replace
    from genefl.data.scenario import ScenarioSpec

    base = load_config(None, ["rounds=2"])
    same = [replace(base, method="scaffold"), replace(base, lr=0.2), replace(base, **{"genefl.fisher_top": 0.5})]
    assert all(ScenarioSpec.of(c) == ScenarioSpec.of(base) for c in same)
    other = [replace(base, dataset="mnist"), replace(base, data_dir="/elsewhere"), replace(base, checksum_file="x.md5"),
             replace(base, alpha=0.1), replace(base, seed=3), replace(base, rounds=3)]
    assert len({ScenarioSpec.of(c) for c in [base, *other]}) == len(other) + 1
