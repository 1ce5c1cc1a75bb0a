"""The Flower app's declared run config matches genefl's Config, and maps back to it."""

import tomllib

import pytest

from conftest import REPO
from genefl.config import Config, load_config

pytest.importorskip("flwr")

from genefl.flower.runconfig import config_from_run_config, flat_defaults  # noqa: E402


def test_pyproject_declares_every_config_key_with_its_default():
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    assert declared == flat_defaults()


def test_run_config_maps_back_to_the_same_config():
    flat = flat_defaults()
    assert config_from_run_config(flat) == Config()
    flat.update({"method": "fedavg", "genefl.fisher_top": 0.3, "newcomer_rounds": "[2, 3]", "num_newcomers": 2})
    expected = load_config(None, ["method=fedavg", "genefl.fisher_top=0.3", "newcomer_rounds=[2,3]", "num_newcomers=2"])
    assert config_from_run_config(flat) == expected
    flat.update({"method": "pacfl", "adversary.signature_classes": "[4, 1]", "adversary.fraction": 0.1})  # a nested list
    expected = load_config(None, ["method=pacfl", "genefl.fisher_top=0.3", "newcomer_rounds=[2,3]", "num_newcomers=2",
                                  "adversary.signature_classes=[4, 1]", "adversary.fraction=0.1"])
    assert config_from_run_config(flat) == expected


def test_the_tests_flwr_run_ships_the_checkouts_fab(tmp_path):
    """The Flower tests `flwr run` a copy of the app's files (flower_harness.app_folder) to spare the walk
    over the checkout's .venv: the FAB built from it is byte for byte the checkout's."""
    from flower_harness import app_folder
    from flwr.cli.build import build_fab_from_disk

    assert build_fab_from_disk(app_folder(tmp_path)) == build_fab_from_disk(REPO)


def test_bad_run_config_is_a_one_line_error():
    from genefl.errors import ConfigError

    with pytest.raises(ConfigError, match="dataset: must be one of"):
        config_from_run_config({**flat_defaults(), "dataset": "nope"})


def test_node_store_gives_back_the_state_a_resume_or_a_restart_needs(tmp_path):
    """A SuperNode's state-dir (real files): a resumed run reads the state as of its checkpoint round and
    drops later ones; a restarted node in the same run reads its newest earlier state; a new run reads none."""
    from genefl.flower.node_store import NodeStore

    config = load_config(None, ["method=genefl", "checkpoint_every=1"])
    store = NodeStore(tmp_path, config, cid=4)
    assert store.restore(run_id=7, round=1, resumed_from=None) is None  # run 7 starts
    for r in (0, 1, 2, 3):
        store.save(r, f"state after {r}".encode())
    assert sorted(p.name for p in store.folder.glob("round*.bin")) == ["round000001.bin", "round000002.bin", "round000003.bin"]
    # the node restarts in round 4 of run 7: its state after round 3
    assert NodeStore(tmp_path, config, 4).restore(run_id=7, round=4, resumed_from=None) == b"state after 3"
    # run 9 resumes run 7 from its round-2 checkpoint: the state after round 2; round 3's is gone
    assert NodeStore(tmp_path, config, 4).restore(run_id=9, round=3, resumed_from=2) == b"state after 2"
    assert not (store.folder / "round000003.bin").exists()
    # flower settings do not change the key; another config, or a fresh run 11, starts empty
    other_flower = load_config(None, ["method=genefl", "checkpoint_every=1", "flower.round_timeout=5.0", "flower.resume=true"])
    assert NodeStore(tmp_path, other_flower, 4).folder == store.folder
    assert NodeStore(tmp_path, load_config(None, ["method=genefl", "checkpoint_every=1", "seed=3"]), 4).folder != store.folder
    assert NodeStore(tmp_path, config, 4).restore(run_id=11, round=5, resumed_from=None) is None
    assert not list(store.folder.glob("round*.bin"))


def test_serverapp_refuses_a_used_out_and_resumes_only_its_own_checkpoint(tmp_path):
    from genefl.errors import GeneflError
    from genefl.config import run_table
    from genefl.flower.server_app import checkpoint_to_resume
    from genefl.runtime import checkpoint

    config = load_config(None, ["method=fedavg", "flower.resume=true"])
    fresh = load_config(None, ["method=fedavg"])
    assert checkpoint_to_resume(fresh, tmp_path / "new") is None
    with pytest.raises(GeneflError, match="flower.resume: no checkpoint in"):
        checkpoint_to_resume(config, tmp_path)
    checkpoint.save(tmp_path / checkpoint.FILE, {"round": 2, "config": run_table(config)})
    with pytest.raises(GeneflError, match="already holds a run; continue it with flower.resume=true"):
        checkpoint_to_resume(fresh, tmp_path)
    assert checkpoint_to_resume(config, tmp_path)["round"] == 2
    other = load_config(None, ["method=fedavg", "flower.resume=true", "rounds=7"])
    with pytest.raises(GeneflError, match="is of a different run .checkpoint vs this config.: rounds 20 vs 7"):
        checkpoint_to_resume(other, tmp_path)
