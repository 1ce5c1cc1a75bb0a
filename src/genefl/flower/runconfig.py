"""genefl's config <-> Flower's run config.

Flower's run config is flat (`genefl.fisher_top = 0.2`) and holds only bool/int/float/str, so list
values travel as TOML strings (`newcomer_rounds = "[3, 5]"`). The `[tool.flwr.app.config]` table of
pyproject.toml declares every key with its default; a test checks it against `Config()` so the
two cannot drift.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..config import Config, config_to_dict, toml_value
from ..options import build, shown
from ..errors import ConfigError


def _flat(table: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf of a nested config table."""
    for key, value in table.items():
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{key}.")
        else:
            yield prefix + key, value


def flat_defaults() -> dict[str, bool | int | float | str]:
    """Every config key, flattened, as Flower's run config declares it."""
    return {k: repr(list(v)) if isinstance(v, (list, tuple)) else v for k, v in _flat(config_to_dict(Config()))}


def config_from_run_config(run_config: dict[str, Any]) -> Config:
    """A validated Config from Flower's flat run config (unknown keys are errors, as in genefl run;
    a key given both as a value and as a table, `method` beside `method.x`, is one too)."""
    table: dict[str, Any] = {}
    lists = {k for k, v in _flat(config_to_dict(Config())) if isinstance(v, (list, tuple))}
    for key, value in run_config.items():
        if not isinstance(key, str):
            raise ConfigError(f"run config: a key must be text, got {shown(key)}")
        *parents, leaf = key.split(".")
        node = table
        for i, part in enumerate(parents):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"run config: {shown(key)} is given, but so is {'.'.join(parents[: i + 1])!r}, which is "
                                  "then not a table of options")
        if isinstance(node.get(leaf), dict):
            raise ConfigError(f"run config: {shown(key)} is given, but so are keys below it ({shown(key)}.*)")
        if key in lists and isinstance(value, str):  # a TOML list in a string; what is not one is refused as a string
            value = toml_value(f"run config {shown(key)}", value or "[]")
        node[leaf] = value
    return build(Config, table)
