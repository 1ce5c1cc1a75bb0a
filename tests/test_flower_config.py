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


def test_bad_run_config_is_a_one_line_error():
    from genefl.errors import ConfigError

    with pytest.raises(ConfigError, match="dataset: must be one of"):
        config_from_run_config({**flat_defaults(), "dataset": "nope"})
