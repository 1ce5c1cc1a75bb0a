"""The shipped CIFAR-10/100 ResNet-18 configs, run through the CLI on a tiny synthetic stand-in
written in the real CIFAR pickle layout (with its own md5sum file via `checksum_file`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_cli import genefl
from test_datasets import write_cifar

ROOT = Path(__file__).resolve().parents[1]


def write_standin(root: Path, name: str, per_file: int) -> Path:
    """Stand-in files in the official folder and file names (test_datasets' writer); returns the
    md5sum file covering them."""
    sums = root / "MD5SUMS"
    root.mkdir(parents=True)
    sums.write_text("".join(f"{md5}  {rel}\n" for rel, md5 in write_cifar(root, name, per_file).items()))
    return sums


# GENE-FL (Fisher, learnGene, a newcomer) on the CIFAR-10 stand-in; the CIFAR-100 one (100 classes,
# its own pickle keys) with one FedAvg round, as ResNet-18 rounds are the suite's most expensive
@pytest.mark.parametrize("name, per_file, method", [("cifar10", 12, "genefl"), ("cifar100", 60, "fedavg")])
def test_cifar_config_runs_on_a_standin(tmp_path, name, per_file, method):
    data = tmp_path / "data"
    sums = write_standin(data, name, per_file)
    out = tmp_path / "out"
    short = ["rounds=2", "num_newcomers=1", "eval_every=2"] if method == "genefl" else ["rounds=1", "num_newcomers=0"]
    sets = [f"data_dir={data}", f"checksum_file={sums}", "num_clients=2", "newcomer_epochs=1", "partition=iid",
            f"method={method}", "genefl.fisher_samples=8", *short]
    proc = genefl("run", "--config", str(ROOT / "configs" / f"{name}_resnet18.toml"), *[a for s in sets for a in ("--set", s)],
                  "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / "results.json").read_text())
    assert doc["dataset"] == name and len(doc["rounds"]) == (2 if method == "genefl" else 1)
    s = doc["summary"]
    assert s["model_bytes"] > 40e6  # ResNet-18: ~11M float32 parameters
    assert 0 < s["acc_clients"] <= 1
    if method == "genefl":
        assert 0 < s["gene_bytes"] <= 0.25 * s["model_bytes"] and len(doc["newcomers"]) == 1
        assert doc["newcomers"][0]["init"] == "learngene" and doc["newcomers"][0]["init_bytes"] >= s["gene_bytes"]


def test_standin_without_its_checksum_file_is_refused(tmp_path):
    data = tmp_path / "data"
    write_standin(data, "cifar10", 4)
    proc = genefl("run", "--config", str(ROOT / "configs" / "cifar10_resnet18.toml"), "--set", f"data_dir={data}")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "corrupt data file" in proc.stderr and "data_batch_1" in proc.stderr


def test_malformed_checksum_file_is_one_line(tmp_path):
    bad = tmp_path / "sums"
    bad.write_text("not-a-checksum  x\n")
    proc = genefl("run", "--set", "dataset=cifar10", "--set", f"data_dir={tmp_path}", "--set", f"checksum_file={bad}")
    assert proc.returncode == 2 and "checksum_file" in proc.stderr and "line 1" in proc.stderr
