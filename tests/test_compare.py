"""`genefl compare` and `genefl plot` through the CLI: identical scenarios, tables equal to the
per-run results, real PNG files, redrawing from saved results (also with null accuracies)."""

from __future__ import annotations

import csv
import json
import statistics

from test_cli import genefl

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


def test_plot_survives_null_accuracies_and_rejects_an_empty_folder(tmp_path):
    out = tmp_path / "cmp"
    assert genefl("compare", *TINY, "--methods", "fedavg", "--out", str(out)).returncode == 0
    path = out / "fedavg" / "seed0" / "results.json"
    doc = json.loads(path.read_text())
    doc["newcomers"][0]["acc_by_epoch"][0] = None  # what an empty test split leaves
    path.write_text(json.dumps(doc))
    proc = genefl("plot", str(out))
    assert proc.returncode == 0, proc.stderr
    proc = genefl("plot", str(tmp_path / "nothing"))
    assert proc.returncode == 2 and "no results found" in proc.stderr and proc.stderr.count("\n") == 1
