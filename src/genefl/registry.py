"""The method registry: each `method` name -> (server half, client half), and each method's options.

It sits below `config` and `algorithms` alike, so that the config can check a method's name and its
options table without importing the methods (they import the config). `genefl.algorithms` fills it
with the built-in methods when `genefl` is imported, and offers `register` and `get` (which also
checks that a pair is made of a server half and a client half).

A method's options are the `options` class attribute of its server half: an `Options` subclass
whose `section` names its table (`FedProx.options = FedProxOptions`, the `[fedprox]` table).
"""

from __future__ import annotations

from typing import Any

from .options import Options
from .own_code import import_named

REGISTRY: dict[str, tuple[type, type]] = {}  # name -> (Strategy subclass, ClientAlgorithm subclass)
BUILT_IN: list[str] = []  # the library's own methods, whose option tables every config holds


def pair_of(method: str) -> Any:
    """What `method` names: a registered pair, or the object imported for "package.module:NAME"
    (a ConfigError if it cannot be imported; `algorithms.get` checks that it is a pair)."""
    if method in REGISTRY:
        return REGISTRY[method]
    return import_named(method, "method")


def options_of(method: str) -> type[Options] | None:
    """The options class the server half of `method` declares, if any."""
    pair = pair_of(method)
    strategy = pair[0] if isinstance(pair, tuple) and len(pair) == 2 else None
    options = getattr(strategy, "options", None)
    return options if isinstance(options, type) and issubclass(options, Options) else None


def built_in_options() -> list[type[Options]]:
    """The option classes of the library's own methods, each once, in registry order."""
    found: list[type[Options]] = []
    for name in BUILT_IN:
        options = options_of(name)
        if options is not None and options not in found:
            found.append(options)
    return found


def known_options() -> dict[str, type[Options]]:
    """Section -> options class of every registered method (built-in or `register`ed)."""
    return {options.section: options for options in map(options_of, REGISTRY) if options is not None}
