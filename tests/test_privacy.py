"""The attack harness can succeed and can fail: iDLG recovers a digits image and its label
from a full-model gradient of the MLP (positive control); the same attack fed a random tensor of the
gradient's shape recovers nothing better than an unrelated image (negative control); the payload
attacked is, byte for byte, what the run's ledger counted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from genefl.cli import main
from genefl.config import Config
from genefl.data.datasets import load_dataset
from genefl.protocol.messages import encode
from genefl.experiments.privacy import attack_payload, exact_payloads, image_scores, observed_gradient, run_attack


def digits(n: int):
    data = load_dataset("digits", None)
    return data.x_train[:n], data.y_train[:n], data.x_train[100:100 + n]


def test_positive_control_recovers_the_image_and_its_label():
    x, y, unrelated = digits(2)
    result = run_attack(Config(method="fedavg"), x, y, batch=1, attack="idlg", iterations=50, restarts=1)
    baseline = [psnr for _, psnr, _ in image_scores(x, unrelated)]
    assert result["label_acc"] == 1.0
    assert min(result["per_image"]["psnr"]) > 60 and min(result["per_image"]["psnr"]) > max(baseline) + 40
    assert min(result["per_image"]["ssim"]) > 0.99


def test_negative_control_a_random_gradient_recovers_nothing():
    x, y, unrelated = digits(1)
    payloads, sim = exact_payloads(Config(method="fedavg"), x, y, 1)
    trainable = {k for k, _ in sim.model.named_parameters()}
    real = observed_gradient(payloads[0].update, sim.strategy.initial, trainable, sim.config.lr)
    noise = {k: torch.randn(v.shape, generator=torch.Generator().manual_seed(1)) * float(v.std()) for k, v in real.items()}
    attacked = attack_payload(payloads[0], sim, "idlg", 50, 1, 0, target=noise)
    baseline = image_scores(x, unrelated)[0][1]
    assert attacked["psnr"][0] < baseline + 3  # no better than an unrelated image (plus a little slack)


def test_the_attacked_payload_is_what_the_ledger_counted():
    x, y, _ = digits(4)
    for method in ("fedavg", "genefl", "scaffold", "fedlp"):
        payloads, sim = exact_payloads(Config(method=method), x, y, 2)
        assert len(payloads) == 2
        for p in payloads:
            assert len(p.wire) == p.ledger_bytes and encode(p.update) == p.wire
        if method == "genefl":  # round 1: only the client's own learnGene layers travel
            assert set(payloads[0].update.tensors) < set(sim.strategy.initial)


def test_a_compressed_upload_is_attacked_as_the_server_decodes_it():
    """With an upload codec the wire holds packed changes; the attacked update is the decoded model
    (what the server aggregates), within the codec's step of the uncompressed upload."""
    x, y, _ = digits(2)
    plain, _ = exact_payloads(Config(method="fedavg"), x, y, 1)
    packed, _ = exact_payloads(Config(method="fedavg", codec={"up": "int8"}), x, y, 1)
    for a, b in zip(plain, packed):
        assert len(b.wire) == b.ledger_bytes < len(a.wire) / 3
        for name, value in a.update.tensors.items():  # same start, same training: only the codec differs
            got = b.update.tensors[name]
            assert isinstance(got, torch.Tensor) and got.shape == value.shape
            assert float((got - value).abs().max()) < 0.02, name  # int8 of a one-step change


def test_attack_cli_writes_records_and_grids_and_refuses_bad_input(tmp_path, capsys):
    out = tmp_path / "a"
    assert main(["attack", "--methods", "fedavg,genefl,genefl[genefl.gene_budget=0.9]", "--images", "2",
                 "--iterations", "20", "--restarts", "1", "--out", str(out)]) == 0
    records = json.loads((out / "attack.json").read_text())
    head = records.pop(2)  # a variant is attacked under its label, with its own options
    assert head["method"] == "genefl[genefl.gene_budget=0.9]" and head["payload_bytes"] > records[1]["payload_bytes"]
    assert (out / "grid_genefl_genefl.gene_budget=0.9.png").stat().st_size > 1000
    assert [r["method"] for r in records] == ["fedavg", "genefl", "genefl/pacfl signature"]
    assert all(set(r) >= {"method", "attack", "case", "batch", "psnr", "ssim", "label_acc"} for r in records[:2])
    signature = records[2]  # the subspace holds more of an image than its best single vector
    assert signature["case"] == "signature" and signature["projection"]["psnr"] > signature["single_vector"]["psnr"] > 0
    assert len(records[0]["per_image"]["psnr"]) == 2 and (out / "grid_genefl.png").stat().st_size > 1000
    for args, fragment in ((["--methods", "local"], "sends nothing upward"), (["--methods", "nope"], "method:"),
                           (["--methods", "genefl[genefl.nokey=1]"], "unknown config key 'genefl.nokey'"),
                           (["--batch", "0"], "--batch: must be >= 1"), (["--images", "3", "--batch", "2"], "multiple")):
        capsys.readouterr()
        assert main(["attack", *args, "--out", str(tmp_path / "b")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and fragment in err, err


def test_membership_inference_on_what_a_newcomer_is_handed():
    from genefl.experiments.privacy import membership_auc

    config = Config(rounds=3, num_clients=4, num_newcomers=1, newcomer_epochs=1)
    records = membership_auc(config, ("fedavg", "genefl"), limit=300)
    assert [(r["method"], r["start"]) for r in records] == [("fedavg", "global"), ("genefl", "learngene")]
    assert all(0.0 <= r["auc"] <= 1.0 and r["samples_each"] == 300 for r in records)
    assert membership_auc(config, ("fedavg",), limit=300)[0]["auc"] == records[0]["auc"]  # seeded, repeatable


def test_membership_auc_on_a_hand_built_model():
    """A linear model that predicts class 0 with certainty: samples labelled 0 have loss ~0, others a
    large loss. Members all labelled 0 -> AUC 1; members all labelled 1 -> 0; a 2-of-4 overlap by hand."""
    from torch import nn

    from genefl.experiments.privacy import loss_threshold_auc

    model = nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.copy_(torch.tensor([10.0, -10.0]))
    x = torch.zeros(8, 2)
    member = np.r_[np.ones(4), np.zeros(4)]
    assert loss_threshold_auc(model, x, torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]), member) == 1.0
    assert loss_threshold_auc(model, x, torch.tensor([1, 1, 1, 1, 0, 0, 0, 0]), member) == 0.0
    # members: two low-loss, two high-loss; non-members: all high. Pairs (member, non-member) won:
    # 2 x 4 low-vs-high wins + 2 x 4 ties counted half = 8 + 4 = 12 of 16 -> 0.75
    assert loss_threshold_auc(model, x, torch.tensor([0, 0, 1, 1, 1, 1, 1, 1]), member) == 0.75


def test_clip_and_noise_defence_bounds_the_change_and_blinds_the_attack():
    x, y, _ = digits(2)
    clipped, sim = exact_payloads(Config(method="fedavg", dp_clip=0.01), x, y, 1)
    for p in clipped:  # no noise: the change is exactly clipped to norm 0.01
        change = sum(float(((p.update.tensors[k] - v) ** 2).sum()) for k, v in sim.strategy.initial.items())
        assert abs(change ** 0.5 - 0.01) < 1e-6
    open_result = run_attack(Config(method="fedavg"), x, y, 1, "idlg", 50, 1)
    noisy = run_attack(Config(method="fedavg", dp_clip=0.01, dp_noise=1.0), x, y, 1, "idlg", 50, 1)
    assert min(open_result["per_image"]["psnr"]) > 60 and max(noisy["per_image"]["psnr"]) < 30
    from genefl.api import run

    summary = run(Config(method="fedavg", rounds=1, num_clients=3, num_newcomers=0, dp_clip=1.0, dp_noise=2.0)).summary
    assert abs(summary["dp_epsilon_per_upload"] - (2 * __import__("math").log(1.25 / 1e-5)) ** 0.5 / 2.0) < 1e-12


def test_realistic_case_counts_the_local_steps_it_attacks():
    from genefl.experiments.privacy import local_steps

    config = Config(method="fedavg", batch_size=8, local_epochs=2)
    assert local_steps(config, 4, "one_step") == (4, 1, 1)
    assert local_steps(config, 4, "local_epochs") == (2, 2, 4)  # batches of 2: 2 steps an epoch, 2 epochs
    x, y, _ = digits(4)
    result = run_attack(config, x, y, 4, "idlg", 10, 1, "local_epochs")
    assert result["case"] == "local_epochs" and result["steps"] == 4 and len(result["per_image"]["psnr"]) == 4


def test_privacy_table_in_parallel_chunks_equals_the_sequential_run(tmp_path):
    """benchmarks/privacy_table.py --jobs/--split (how the published cells were run, partly on a GPU):
    each cell's methods attacked in separate processes and merged must give the very records, grids
    and baseline a single process gives; a rerun skips the finished cell."""
    script = Path(__file__).parents[1] / "benchmarks" / "privacy_table.py"
    common = [sys.executable, str(script), "--datasets", "digits", "--models", "mlp", "--seeds", "0", "--batches", "2",
              "--cases", "one_step", "--methods", "fedavg,fedlp,genefl", "--images", "4", "--attack", "cosine",
              "--iterations", "5", "--restarts", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(common + ["--out", str(tmp_path / "seq")], check=True, env=env, capture_output=True)
    subprocess.run(common + ["--out", str(tmp_path / "par"), "--jobs", "2", "--split", "2"], check=True, env=env,
                   capture_output=True)
    seq, par = (tmp_path / d / "digits_mlp" / "seed0_B2_one_step" for d in ("seq", "par"))
    seq_records = json.loads((seq / "attack.json").read_text())
    assert [r["method"] for r in seq_records] == ["fedavg", "fedlp", "genefl", "genefl/pacfl signature"]
    assert json.loads((par / "attack.json").read_text()) == seq_records
    assert (par / "baseline.json").read_text() == (seq / "baseline.json").read_text()
    assert sorted(p.name for p in par.glob("grid_*.png")) == sorted(p.name for p in seq.glob("grid_*.png")) != []
    assert not (tmp_path / "par" / ".parts").exists()  # chunks removed once merged
    rerun = subprocess.run(common + ["--out", str(tmp_path / "par"), "--jobs", "2", "--split", "2"], check=True, env=env,
                           capture_output=True, text=True)
    assert "finished" not in rerun.stdout


def test_uploads_reach_a_callback_as_sent_and_as_the_server_aggregates_them():
    """The capture is an ordinary run callback (`on_upload`): its wire bytes are what the ledger
    counted, and FedAvg's new model is the sample-weighted mean of its decoded copies (an int8 upload
    codec on, so decoding is not the identity)."""
    from conftest import small_config
    from genefl.data.scenario import build_scenario
    from genefl.experiments.privacy import UploadCapture
    from genefl.runtime.simulator import Simulator

    config = small_config("method=fedavg", "rounds=1", "num_newcomers=0", "codec.up=int8")
    capture = UploadCapture()
    result = Simulator(config, build_scenario(config), [capture]).run()
    counted = {t.client: t.nbytes for t in result.ledger.transfers if t.direction == "up" and t.kind == "train"}
    assert sorted(capture.uploads) == sorted(counted) == [0, 1, 2, 3]
    for cid, (wire, decoded) in capture.uploads.items():
        assert len(wire) == counted[cid] and all(isinstance(v, torch.Tensor) for v in decoded.tensors.values())
    weights = {cid: decoded.meta["num_samples"] for cid, (_, decoded) in capture.uploads.items()}
    for name, value in result.final_weights.items():
        mean = sum(weights[c] * capture.uploads[c][1].tensors[name] for c in weights) / sum(weights.values())
        assert torch.allclose(value, mean, atol=1e-6), name
