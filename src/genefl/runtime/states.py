"""Where the simulator keeps per-client state between rounds (personal models, control variates).

`MemoryStates` is a dict of dicts: fastest, and right for most runs. `DiskStates` keeps one file per
client and holds in memory only the state of the client being served, so thousands of clients with
personal models (GENE-FL's private layers) fit in bounded memory. Both are opened and closed around
every client call, so client halves see a plain dict either way, and both `drop` the state of a
client that left the federation for good. Both remember which clients they stored since the last
`take_touched()`, so a checkpoint rewrites only those (`checkpoint.ClientStateFiles`).

A run starts from its own state only: the simulator `restore`s the store at the start of every run,
to nothing for a fresh run and to its checkpoint's client states for a resumed one. A given
`state_dir` holds each run's files in a folder named by the run's config (`config.run_key`), so runs
of other configs (a `genefl compare --jobs 2` sharing one `state_dir`) never read or overwrite them;
a fresh run of the same config empties that folder first.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ..config import Config, run_key
from ..errors import ConfigError, GeneflError
from ..paths import checked


class MemoryStates:
    def __init__(self):
        self._states: dict[int, dict[str, Any]] = {}
        self._touched: set[int] = set()

    def open(self, cid: int) -> dict[str, Any]:
        return self._states.setdefault(cid, {})

    def close(self, cid: int, state: dict[str, Any]) -> None:
        self._touched.add(cid)  # the dict is the storage; the client half may have changed it

    def get(self, cid: int) -> dict[str, Any] | None:
        """The client's stored state, None when it has none (never opened, or dropped)."""
        state = self._states.get(cid)
        return state if state else None

    def take_touched(self) -> set[int]:
        """The clients stored, or dropped, since the last call."""
        touched, self._touched = self._touched, set()
        return touched

    def items(self) -> Iterator[tuple[int, dict[str, Any]]]:
        return iter(list(self._states.items()))

    def drop(self, cid: int) -> None:
        """Forget a client that left for good (`population.departures`)."""
        self._states.pop(cid, None)
        self._touched.add(cid)

    def restore(self, states: dict[int, dict[str, Any]]) -> None:
        check_restored(states)
        self._states = {cid: dict(state) for cid, state in states.items()}
        self._touched = set()

    def nbytes_in_memory(self) -> int:
        return sum(_tensor_bytes(state) for _, state in self.items())

    def cleanup(self) -> None:
        pass


class DiskStates:
    """One `torch.save` file per client in `root/run` (`root` itself without a `run`; a temporary
    folder, removed at the end, when no root is given).

    A temporary folder is named after the process that owns it (`genefl-states-<pid>-...`): a run
    killed with SIGKILL cannot remove its own, so each new one first removes those whose process is
    gone."""

    def __init__(self, root: str | os.PathLike | None = None, run: str = ""):
        self._own = root is None or str(root) == ""
        if self._own:
            remove_orphaned_state_folders()
        root = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-")) if self._own else checked("state_dir", root)
        self.root, self.folder = root, root / run if run else root
        self._touched: set[int] = set()
        try:
            root.mkdir(parents=True, exist_ok=True)
            self.folder.mkdir(exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            in_the_way = self.folder if root.is_dir() else root
            raise ConfigError(f"state_dir: {in_the_way} exists and is not a folder") from None
        except OSError as exc:
            raise ConfigError(f"state_dir: cannot create {self.folder} ({exc.strerror})") from None

    def _path(self, cid: int) -> Path:
        return self.folder / f"client{cid}.pt"

    def open(self, cid: int) -> dict[str, Any]:
        path = self._path(cid)
        return _read(path) if path.exists() else {}

    def close(self, cid: int, state: dict[str, Any]) -> None:
        if not state:
            return
        tmp = self._path(cid).with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self._path(cid))  # never a half-written state file
        self._touched.add(cid)

    def get(self, cid: int) -> dict[str, Any] | None:
        """The client's stored state, None when it has none (never stored, or dropped)."""
        path = self._path(cid)
        return _read(path) if path.exists() else None

    def take_touched(self) -> set[int]:
        """The clients stored, or dropped, since the last call."""
        touched, self._touched = self._touched, set()
        return touched

    def drop(self, cid: int) -> None:
        """Delete the file of a client that left for good (`population.departures`)."""
        self._path(cid).unlink(missing_ok=True)
        self._touched.add(cid)

    def items(self) -> Iterator[tuple[int, dict[str, Any]]]:
        for path in sorted(self.folder.glob("client*.pt")):
            yield int(path.stem[len("client"):]), _read(path)

    def nbytes_in_memory(self) -> int:
        return 0

    def restore(self, states: dict[int, dict[str, Any]]) -> None:
        check_restored(states)
        for path in self.folder.glob("client*.pt"):
            path.unlink()
        for cid, state in states.items():
            self.close(cid, state)
        self._touched = set()

    def cleanup(self) -> None:
        if self._own:
            shutil.rmtree(self.root, ignore_errors=True)


def _read(path: Path) -> dict[str, Any]:
    """A client's state file: a damaged one (a full disk, a stray edit) is one line, not a traceback."""
    try:
        with warnings.catch_warnings():  # torch warns about the garbage before failing on it
            warnings.simplefilter("ignore")
            state = torch.load(path, weights_only=True)
    except Exception as exc:  # a damaged file can fail in many ways
        state = exc
    if not isinstance(state, dict):
        raise GeneflError(f"state_dir: client state file {path} is unreadable ({type(state).__name__}); a resumed run "
                          "rewrites every client's state from its checkpoint") from None
    return state


def check_restored(states: Any) -> None:
    """Client states read back from a checkpoint must be a table of client id -> state table."""
    if not (isinstance(states, dict) and all(isinstance(c, int) and not isinstance(c, bool) and c >= 0
                                             and isinstance(s, dict) for c, s in states.items())):
        raise GeneflError("resume: the checkpoint is damaged: its client states are not a table of client id -> "
                          "state; rerun from the start with --force")


TEMP_PREFIX = "genefl-states-"


def remove_orphaned_state_folders() -> list[Path]:
    """Remove temporary state folders left by genefl processes that no longer exist; returns them."""
    removed = []
    for folder in Path(tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*-*"):
        pid = folder.name[len(TEMP_PREFIX):].split("-", 1)[0]
        if folder.is_dir() and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _tensor_bytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(v) for v in value)
    return 0


def make_states(config: Config) -> MemoryStates | DiskStates:
    if config.state_store != "disk":
        return MemoryStates()
    if not config.state_dir:
        return DiskStates()  # a temporary folder: this run's own
    return DiskStates(config.state_dir, run_key(config))
