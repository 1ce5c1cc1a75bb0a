"""Options: typed, frozen dataclasses whose every field carries its own check.

One declaration per table of options, beside the code that reads it (pfl-research's `*Params`): a
method's own (`FedProxOptions` in `algorithms/fedprox.py`, `ServerOptOptions` in `protocol/server_opt.py`),
and the run's general ones in `config.py`. A field is

    mu: float = option(0.01, weight(), "proximal term weight")

its type, its default, its check (a predicate and the message that says what is allowed) and, for a
method's options, the help text the README's options table shows. Building an options table checks
every field, from Python as from TOML: an unknown key, a value of the wrong type, a non-finite float
or a value its check refuses is a one-line `ConfigError` naming the dotted key
(`fedprox.mu: must be in [0, 1e6], got -1.0`). Nested tables may be given as dicts.

This module imports nothing of genefl's but its errors and paths, so that every module may declare
its options here without import cycles.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import reprlib
import typing
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

from . import paths
from .errors import ConfigError

_REPR = reprlib.Repr()  # Python 3.11's takes no arguments
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 3, 80, 80, 40


def shown(value: Any) -> str:
    """A value in a one-line message: bounded in length and depth (a list nested 10,000 deep, a
    5,000-character string), line breaks escaped."""
    return paths.shown(_REPR.repr(value), 120)


# ---- checks: (predicate, what is allowed) ----------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Check:
    """A field's rule: `test(value)` must hold, else the error says the value `allowed`."""

    test: Callable[[Any], bool]
    allowed: str | Callable[[], str]  # a callable when the choices can change (the registered methods)

    def says(self) -> str:
        return self.allowed() if callable(self.allowed) else self.allowed


def check(test: Callable[[Any], bool], allowed: str | Callable[[], str]) -> Check:
    return Check(test, allowed)


def choices(options: Iterable[str]) -> Check:
    options = tuple(options)
    return Check(lambda v: v in options, "must be one of " + ", ".join(options))


def positive() -> Check:
    return Check(lambda v: v > 0, "must be > 0")


def nonneg() -> Check:
    return Check(lambda v: v >= 0, "must be >= 0")


def fraction() -> Check:
    return Check(lambda v: 0 < v <= 1, "must be in (0, 1]")


def probability() -> Check:
    return Check(lambda v: 0 <= v < 1, "must be in [0, 1)")


def weight() -> Check:
    """A loss-term weight: 0 (off) up to a bound that keeps float32 arithmetic finite."""
    return Check(lambda v: 0 <= v <= 1e6, "must be in [0, 1e6]")


def option(default: Any, rule: Check | None = None, help: str = "") -> Any:
    """A field with its default, its check (None: any value of its type) and its help text. A tuple
    default is immutable, so it is used as is."""
    return dataclasses.field(default=default, metadata={"check": rule, "help": help})


# ---- the validated base ----------------------------------------------------------------------------
class _KnownKeys(type):
    """`FedProxOptions(muu=1)` is a `ConfigError` naming the key, as `--set fedprox.muu=1` is, not a
    `TypeError`."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        kwargs = cls.gather(kwargs)
        names = cls.keys()
        if len(args) > len(dataclasses.fields(cls)):
            raise ConfigError(f"{cls.__name__}: takes its options by name (key=value), got {len(args)} positional values")
        for key in kwargs:
            if key not in names and not cls.accepts(key, kwargs):
                where = f" in [{cls.section}]" if cls.section else ""
                raise ConfigError(f"unknown config key {shown(cls.prefix() + str(key))} (valid keys{where}: "
                                  f"{', '.join(sorted(names))})")
        return super().__call__(*args, **kwargs)


class Options(metaclass=_KnownKeys):
    """Base of every options table: subclass it as a frozen dataclass and name its `section` (the
    TOML table and the dotted prefix: "fedprox" for `fedprox.mu`). Every field is checked on
    construction."""

    section: ClassVar[str] = ""

    @classmethod
    def prefix(cls) -> str:
        return cls.section + "." if cls.section else ""

    @classmethod
    def keys(cls) -> list[str]:
        """The keys this table takes (a field named `_x` is internal, not a key)."""
        return [f.name for f in dataclasses.fields(cls) if not f.name.startswith("_")]

    @classmethod
    def gather(cls, given: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments as the dataclass takes them (a `Config` gathers the methods' tables)."""
        return given

    @classmethod
    def accepts(cls, key: str, given: dict[str, Any]) -> bool:
        """Whether `key`, not in `keys()`, is still taken (a `Config`'s internal `_methods`)."""
        return False

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            kind = _hints(type(self)).get(f.name)
            if kind is not None and not f.name.startswith("_"):
                object.__setattr__(self, f.name, checked(self.prefix() + f.name, getattr(self, f.name), kind,
                                                         f.metadata.get("check")))


def checked(key: str, value: Any, kind: Any, rule: Check | None) -> Any:
    """`value` for the field `key` of type `kind`: a table built from a dict, a number coerced, and
    its `rule` applied; anything else is a one-line ConfigError naming `key`."""
    if isinstance(kind, type) and issubclass(kind, Options):
        if isinstance(value, dict):
            return build(kind, value)
        if not isinstance(value, kind):
            raise ConfigError(f"{key}: expected a table of options, got {shown(value)}")
        return value
    value = coerce(key, value, kind)
    if rule is not None and not rule.test(value):
        raise ConfigError(f"{key}: {rule.says()}, got {shown(value)}")
    return value


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in typing.get_type_hints(cls).items() if k in names}


def coerce(key: str, value: Any, kind: Any) -> Any:
    """Check `value` against the field's type; ints are accepted for floats."""
    if kind is bool and isinstance(value, bool):
        return value
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            value = float(value)
        except OverflowError:
            value = math.inf
        if not math.isfinite(value):
            raise ConfigError(f"{key}: must be a finite number, got {shown(value)}")
        return value
    if kind is str and isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigError(f"{key}: is not valid UTF-8 text ({value.encode('utf-8', 'replace')[:60]!r})") from None
        return value
    if typing.get_origin(kind) is tuple and isinstance(value, (list, tuple)):
        inner = typing.get_args(kind)[0]
        return tuple(coerce(key, v, inner) for v in value)
    name = getattr(kind, "__name__", str(kind))
    if typing.get_origin(kind) is tuple:
        name = f"a list of {typing.get_args(kind)[0].__name__}"
    raise ConfigError(f"{key}: expected {name}, got {shown(value)}")


def build(cls: type[Options], table: dict[str, Any]) -> Any:
    """`cls` from a (TOML) table; every key and value is checked by `cls` itself."""
    for key in table:
        if not isinstance(key, str):
            raise ConfigError(f"{cls.prefix()}{shown(key)}: a key must be text")
    return cls(**table)


def table(value: Options) -> dict[str, Any]:
    """An options table as plain values (nested tables as dicts), in declaration order."""
    return dataclasses.asdict(value)


# ---- the declaration as documentation --------------------------------------------------------------
def markdown_rows(cls: type[Options]) -> list[str]:
    """One README table row per field of `cls`: key, default, what is allowed, the help text."""
    rows = []
    for f in dataclasses.fields(cls):
        rule = f.metadata.get("check")
        default = f.default  # as TOML writes it
        written = str(default).lower() if isinstance(default, bool) else f'"{default}"' if isinstance(default, str) else str(default)
        allowed = rule.says().removeprefix("must be ") if rule else "true or false" if isinstance(default, bool) else "any"
        rows.append(f"| `{cls.prefix()}{f.name}` | `{written}` | {allowed} | {f.metadata.get('help', '')} |")
    return rows


def markdown_table(classes: Iterable[type[Options]]) -> str:
    """The README's table of the options `classes` declare (a test keeps the README equal to it)."""
    head = ["| key | default | allowed | meaning |", "|---|---|---|---|"]
    return "\n".join(head + [row for cls in classes for row in markdown_rows(cls)]) + "\n"
