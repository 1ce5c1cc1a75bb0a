"""Your own code, named in a config as "package.module:name": a method, a model factory, an attack."""

from __future__ import annotations

import importlib
import re

from .errors import ConfigError

IMPORT_SPEC = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")  # "package.module:name"


def import_named(spec: str, key: str) -> object:
    """The object `spec` names; anything that cannot be imported is a one-line ConfigError for `key`."""
    module_name, _, attr = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"{key}: cannot import {spec!r} ({type(exc).__name__}: {exc})".replace("\n", " ")) from None
