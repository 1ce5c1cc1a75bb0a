"""Paths the user gives (`--out`, `--config`, `--tensorboard`, `data_dir`, `state_dir`, ...), checked
before anything is read or written, so that a bad one is one line naming it instead of an `OSError`
from deep inside a run.

A path must be non-empty UTF-8 text without control characters (a NUL cannot be passed to the OS,
and a newline would break the one-line error that names it), at most `MAX_PATH` bytes long with
no name over `MAX_NAME` bytes (Linux's limits, leaving room for the files genefl writes below an
output folder), and a leading `~user` must name a user. An output folder must be a folder genefl
can write into; one it had to create for a run that then failed before writing anything is removed
again (`output_folder`), so a refused run leaves no empty folder behind.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

from .errors import ConfigError, GeneflError

RESULT_FILES = ("results.json", "rounds.csv", "config.toml", "summary.csv", "attack.json", "comparison.json",
                "newcomers/study.json")  # an output folder holding any of these holds results
MAX_NAME = 255  # bytes in one file or folder name (NAME_MAX)
MAX_PATH = 3072  # bytes in a whole path: PATH_MAX is 4096, and genefl appends its own names below it
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def shown(text: str, limit: int = 160) -> str:
    """`text` for a one-line message: control characters escaped, a long text cut in the middle."""
    text = _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    half = (limit - 3) // 2
    return text if len(text) <= limit else text[:half] + "..." + text[-half:]


def problem(path: str | os.PathLike) -> str | None:
    """What is wrong with `path` as a path name, or None. Does not look at the filesystem."""
    text = os.fspath(path)
    if isinstance(text, bytes):
        return "expected a path as text, got bytes"
    if text == "":
        return "empty path"
    if _CONTROL.search(text):
        return "holds a control character (a NUL byte or a line break)"
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid UTF-8"
    if len(encoded) > MAX_PATH:
        return f"is {len(encoded)} bytes long (at most {MAX_PATH})"
    for name in Path(text).parts:
        if len(name.encode("utf-8")) > MAX_NAME:
            return f"holds a name of {len(name.encode('utf-8'))} bytes ('{shown(name, 30)}'; at most {MAX_NAME})"
    return None


def checked(what: str, path: str | os.PathLike, error: type[GeneflError] = ConfigError) -> Path:
    """`path` with `~` expanded, or `error` naming `what` and the problem."""
    found = problem(path)
    if found:
        raise error(f"{what}: {found}")
    try:
        return Path(path).expanduser()
    except RuntimeError:  # ~someone with no such user, or no home directory
        head = Path(path).parts[0]
        raise error(f"{what} {shown(os.fspath(path))}: cannot expand {shown(head)} (no such user or home folder)") from None


def read_small_text(what: str, path: str | os.PathLike, limit: int, error: type[GeneflError],
                    too_large: str = "") -> str:
    """The text of a small file a user named (a config, checksums, a trace): a missing, unreadable,
    oversized (read no further than `limit` bytes: /dev/zero is a "file") or non-UTF-8 one is one
    `error` line that starts with `what` and the path."""
    path = checked(what, path, error)
    where = f"{what} {shown(str(path))}"
    try:
        if not path.is_file():
            raise error(f"{where}: " + ("is not a regular file" if path.exists() else "no such file"))
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise error(f"{where}: cannot read it ({exc.strerror or exc})") from None
    if len(data) > limit:
        raise error(f"{where}: larger than {limit} bytes{too_large}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{where}: not UTF-8 text") from None


def file_in_the_way(path: Path) -> Path | None:
    """The first of `path` and its parents that exists but is not a folder."""
    for parent in [path, *path.parents]:
        try:
            if parent.exists() and not parent.is_dir():
                return parent
        except OSError:
            return parent
    return None


def writable_folder(what: str, path: str | os.PathLike, error: type[GeneflError] = GeneflError) -> tuple[Path, list[Path]]:
    """`path` as a folder genefl can write into, created if needed; returns it and the folders that
    were created (outermost first), so that a caller can remove them again."""
    folder = checked(what, path, error)
    blocker = file_in_the_way(folder)
    if blocker is not None:
        kind = "is a file, not a folder" if blocker.is_file() else "is not a folder"
        raise error(f"{what} {shown(str(folder))}: {shown(str(blocker))} {kind}")
    created = [p for p in reversed([folder, *folder.parents]) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".genefl-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        remove_if_empty(created)
        raise error(f"{what} {shown(str(folder))}: cannot write there ({exc.strerror or exc})") from None
    return folder, created


def remove_if_empty(created: list[Path]) -> None:
    """Remove the folders in `created` (outermost first) that are still empty, innermost first."""
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:  # not empty (the run wrote something), or gone already
            return


@contextlib.contextmanager
def writing(path: Path) -> Iterator[Path]:
    """Writing one output file: an `OSError` (a folder in its place, a full disk) becomes one line
    naming the file."""
    try:
        yield path
    except OSError as exc:
        raise GeneflError(f"cannot write {shown(str(path))} ({exc.strerror or exc})") from None


@contextlib.contextmanager
def output_folder(what: str, path: str | os.PathLike, force: bool, result_files: tuple[str, ...],
                  advice: str = "choose another folder, or pass force=True to overwrite them",
                  error: type[GeneflError] = GeneflError) -> Iterator[Path]:
    """An output folder for one command: it must hold none of `result_files` (nor a run folder of a
    comparison, `*/seed*/results.json`) unless `force` (else the error ends with `advice`), and is
    created now; if the command fails before writing anything there, the folders created for it are
    removed again."""
    folder = checked(what, path, error)
    if folder.is_dir() and not force and (any((folder / name).exists() for name in result_files)
                                          or any(folder.glob("*/seed*/results.json"))):
        raise error(f"{what} {shown(str(folder))} already holds results; {advice}")
    folder, created = writable_folder(what, folder, error)
    try:
        yield folder
    except BaseException:
        remove_if_empty(created)
        raise
