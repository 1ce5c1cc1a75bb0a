"""`genefl newcomers`: every start on the identical newcomers, paired statistics recomputed from
the records, the learnGene and global rows equal to the runs' own newcomers, parallel = serial."""

from __future__ import annotations

import json
import statistics

import torch
from scipy.stats import t

from genefl.protocol import compression
from genefl.config import Config
from genefl.protocol.messages import Broadcast, nbytes

from test_cli import genefl
from test_compare import is_png

TINY = ["--set", "rounds=3", "--set", "num_clients=4", "--set", "num_newcomers=3", "--set", "newcomer_epochs=2",
        "--set", "newcomer_val_fraction=0.2"]


def test_newcomer_study_end_to_end(tmp_path):
    out = tmp_path / "study"
    proc = genefl("newcomers", *TINY, "--seeds", "0,1", "--replicates", "2", "--methods", "local", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / "newcomers" / "study.json").read_text())
    records, rows = doc["records"], {r["start"]: r for r in doc["analysis"]["rows"]}
    assert set(rows) == {"learngene", "global", "random", "fedavg_layers", "flearngene", "pacfl",
                         "global_int8", "global_int4", "global_int3", "global_int2", "learngene_int8", "learngene_int4"}
    assert (out / "local" / "seed0" / "results.json").exists()  # extra methods run for the table
    by = {(r["seed"], r["newcomer"], r["start"], r["replicate"]): r for r in records}
    for seed in (0, 1):
        genefl_run = json.loads((out / "genefl" / f"seed{seed}" / "results.json").read_text())
        fedavg_run = json.loads((out / "fedavg" / f"seed{seed}" / "results.json").read_text())
        for run, start in ((genefl_run, "learngene"), (fedavg_run, "global")):
            for n in run["newcomers"]:  # replicate 0 is exactly the run's own fine-tuning
                r = by[(seed, n["id"], start, 0)]
                assert r["acc_by_epoch"] == n["acc_by_epoch"] and r["init_bytes"] == n["init_bytes"]
                assert r["chosen_epoch"] == n["chosen_epoch"]
        starts = {m: torch.load(out / m / f"seed{seed}" / "newcomer_starts.pt") for m in ("fedavg", "genefl")}
        for n in fedavg_run["newcomers"]:  # a quantized start costs exactly its packed message
            recorded = starts["fedavg"][n["id"]]
            for bits in (8, 4, 3, 2):
                packed = compression.encode_message(Broadcast(tensors=recorded["tensors"], meta=recorded["meta"]),
                                                    f"int{bits}", Config().codec, False, lambda s, n: None)
                assert by[(seed, n["id"], f"global_int{bits}", 0)]["init_bytes"] == nbytes(packed) < n["init_bytes"]
        for n in genefl_run["newcomers"]:
            # the control sends the learnGene's layers: the same bytes as the learnGene, signature included
            assert n["signature_bytes"] > 0 and n["init_bytes"] > n["signature_bytes"]
            assert by[(seed, n["id"], "fedavg_layers", 0)]["init_bytes"] == n["init_bytes"]
            assert n["signature_bytes"] < by[(seed, n["id"], "learngene_int4", 0)]["init_bytes"] < n["init_bytes"]
            # every start of a newcomer is tested on the same data: same accuracy resolution
            assert len({len(by[(seed, n["id"], s, 0)]["val_by_epoch"]) for s in rows}) == 1
            assert (seed, n["id"], "random", 1) in by and (seed, n["id"], "pacfl", 1) not in by
    # the paired difference and its 95% interval, recomputed by hand
    pairs = sorted({(r["seed"], r["newcomer"]) for r in records})
    diffs = [by[(s, c, "random", 0)]["acc_by_epoch"][-1] - by[(s, c, "learngene", 0)]["acc_by_epoch"][-1] for s, c in pairs]
    assert abs(rows["random"]["diff_last"] - statistics.mean(diffs)) < 1e-12
    half = t.ppf(0.975, len(diffs) - 1) * statistics.stdev(diffs) / len(diffs) ** 0.5
    assert abs(rows["random"]["ci_last"] - half) < 1e-12
    assert rows["learngene"]["n"] == len(pairs) == 6
    assert "noise_floor" in doc["analysis"] and doc["analysis"]["noise_floor"]["last"]["n"] == 3 * 6
    assert "| fedavg_layers |" in (out / "newcomers" / "study.md").read_text()
    assert is_png(out / "newcomers" / "newcomer_study.png")
    # two jobs side by side give the identical records
    par = tmp_path / "par"
    proc = genefl("newcomers", *TINY, "--seeds", "0,1", "--replicates", "2", "--jobs", "2", "--out", str(par))
    assert proc.returncode == 0, proc.stderr
    assert json.loads((par / "newcomers" / "study.json").read_text())["records"] == records


def test_bad_study_arguments_are_one_line_errors(tmp_path, cli):
    for args in (["--jobs", "0"], ["--replicates", "0"], ["--set", "num_newcomers=0"], ["--seeds", "x"]):
        code, _, err = cli("newcomers", *TINY, *args, "--out", str(tmp_path / "x"))
        assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, args


def test_starts_are_built_from_the_recorded_tensors():
    """The control is FedAvg's tensors at exactly the learnGene's layers; a quantized start is the
    int codec's decoding of the recorded start; init bytes come from the runs' ledgers (signature
    included) or, for derived starts, from the message that would carry them."""
    from genefl.experiments.study import starts_for

    g = torch.Generator().manual_seed(0)
    model = {name: torch.randn(shape, generator=g) for name, shape in (("a.weight", (20, 20)), ("a.bias", (20,)), ("b.weight", (10, 20)))}
    fedavg = {k: v + 1 for k, v in model.items()}
    recorded = {"genefl": {7: {"round": 3, "meta": {"init": "learngene", "cluster": 1}, "tensors": {"a.weight": model["a.weight"]}}},
                "fedavg": {7: {"round": 3, "meta": {"init": "global"}, "tensors": fedavg}}}
    ledger = {"genefl": {7: {"init_bytes": 5000, "signature_bytes": 3000}}, "fedavg": {7: {"init_bytes": 9000}}}
    codec = Config().codec
    starts = starts_for(7, recorded, ledger, codec)
    assert starts["learngene"].init_bytes == 5000 and starts["global"].init_bytes == 9000
    assert starts["fedavg_layers"].tensors.keys() == {"a.weight"}
    assert torch.equal(starts["fedavg_layers"].tensors["a.weight"], fedavg["a.weight"])
    assert starts["fedavg_layers"].init_bytes == 3000 + nbytes(Broadcast(tensors={"a.weight": fedavg["a.weight"]},
                                                                           meta={"init": "learngene", "cluster": 1}))
    for name, source, meta, signature in (("global_int4", fedavg, {"init": "global"}, 0),
                                          ("learngene_int8", {"a.weight": model["a.weight"]}, {"init": "learngene", "cluster": 1}, 3000)):
        bits = name[-1]
        packed = compression.encode_message(Broadcast(tensors=source, meta=meta), f"int{bits}", codec, False, lambda s, n: None)
        want = compression.decode_message(packed).tensors
        assert starts[name].tensors.keys() == source.keys()
        assert all(torch.equal(starts[name].tensors[k], want[k]) for k in want)
        assert starts[name].init_bytes == signature + nbytes(packed)
    assert not torch.equal(starts["global_int4"].tensors["a.weight"], fedavg["a.weight"])  # really quantized
    assert torch.equal(starts["global_int4"].tensors["a.bias"], fedavg["a.bias"])  # under codec.min_numel: as it was
