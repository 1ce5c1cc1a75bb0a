"""Checkpoints: everything a run needs to continue after a finished round, written atomically.

Every random choice in genefl comes from a generator derived from the run's seed and a few tags
(`genefl.rng`), never from a stream consumed in call order, so there is no generator position to
save: the loop's state after round t (server state, which clients are active or still to arrive,
the population's events, reports, ledger, notes) plus every client's persistent state (personal models, control variates,
ξ) determine the rest of the run. A resumed run therefore ends with the results of an uninterrupted
one, all but wall times. The file is written to a temporary name, fsynced and renamed, so a kill at
any moment leaves the previous checkpoint intact.

The simulator's client states are kept beside the checkpoint, in `checkpoint.clients/`: one file per
client and version, named `client<id>-r<round>.pt`, and the checkpoint holds the manifest (client
-> file) of those it is made of. A checkpoint writes only the states stored or dropped since the
previous one (`ClientStateFiles`), so its cost follows the clients that took part, not the
population (at 10,000 clients with personal models it would otherwise rewrite every state each
time); a file is deleted only once a checkpoint that no longer names it is in place, so a kill at
any moment still leaves a complete previous checkpoint.

A checkpoint also holds the identity of its run (`config.run_table`: the whole config but the
Flower runtime's own settings), and `load` resumes it only into a run of the same identity: a
checkpoint of another method, seed or lr, or a config.toml edited after the kill, would otherwise be
mixed into results that no single config produced.
"""

from __future__ import annotations

import os
import pickle
import re
import signal
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..config import Config, run_table, table_differences
from ..errors import GeneflError
from ..protocol.ledger import Ledger
from ..protocol.population import EVENTS
from .events import NewcomerReport, RoundReport

FILE = "checkpoint.pt"
CLIENTS = "checkpoint.clients"  # the folder beside FILE holding the simulator's client state files
VERSION = 1
# Modules that moved when the package was laid out in layers: a checkpoint pickled before the move
# names its classes by the old paths, and still resumes.
MOVED = {f"genefl.{name}": f"genefl.protocol.{name}" for name in (
    "adversary", "aggregate", "compression", "defence", "layers", "ledger", "messages", "models", "newcomer",
    "population", "robust", "server_opt", "training")}
MOVED.update({f"genefl.{name}": f"genefl.algorithms.genefl.{name}" for name in ("constraints", "fisher", "sensitivity")})
MOVED.update({"genefl.clustering": "genefl.algorithms.clustering"})


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        return super().find_class(MOVED.get(module, module), name)


_PICKLE = types.SimpleNamespace(**{**vars(pickle), "Unpickler": _Unpickler})  # pickle, but finding moved classes


def save(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    _save_synced(tmp, {"version": VERSION, **payload})
    fault("checkpoint", payload["round"])
    os.replace(tmp, path)
    _fsync_folder(path.parent)  # the rename itself survives a crash


def _save_synced(path: Path, value: Any) -> None:
    """`torch.save` to `path`, on the disk (not only in the page cache) when it returns."""
    with open(path, "wb") as f:
        torch.save(value, f)
        f.flush()
        os.fsync(f.fileno())


def _fsync_folder(folder: Path) -> None:
    """Make the names created in or renamed into `folder` survive a crash."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ClientStateFiles:
    """The client-state files of the checkpoints in one folder, written incrementally.

    `write(round, states)` writes the states of the clients stored or dropped since the last
    checkpoint (`states.take_touched()`) and returns the new checkpoint's manifest (client -> file
    name); once that checkpoint is saved, `prune` deletes every file it does not name.
    (`read_client_states` gives the states a manifest names back.)"""

    def __init__(self, checkpoint_path: Path, manifest: dict[int, str] | None = None):
        """`manifest`: the resumed checkpoint's; entries whose file is not in this folder (a checkpoint
        loaded from elsewhere) are dropped, and those clients' states are written at the next save."""
        self.folder = checkpoint_path.with_name(CLIENTS)
        self.manifest: dict[int, str] = {cid: name for cid, name in (manifest or {}).items()
                                         if (self.folder / name).is_file()}
        self.pending: set[int] = set()  # clients to write at the next checkpoint besides those touched

    def write(self, round: int, states) -> dict[int, str]:
        self.folder.mkdir(exist_ok=True)
        manifest = dict(self.manifest)
        touched, self.pending = states.take_touched() | self.pending, set()
        for cid in sorted(touched):
            state = states.get(cid)
            if state is None:  # dropped (departed), or nothing stored
                manifest.pop(cid, None)
                continue
            name = f"client{cid}-r{round}.pt"
            _save_synced(self.folder / name, state)
            manifest[cid] = name
        _fsync_folder(self.folder)
        self.manifest = manifest
        return dict(manifest)

    def prune(self) -> None:
        """Delete the files the current manifest does not name (older versions, a killed save's)."""
        keep = set(self.manifest.values())
        for path in self.folder.glob("client*.pt") if self.folder.is_dir() else ():
            if path.name not in keep:
                path.unlink(missing_ok=True)

    def remove(self) -> None:
        """The run is complete: no file is needed any more."""
        self.manifest = {}
        self.prune()
        if self.folder.is_dir() and not any(self.folder.iterdir()):
            self.folder.rmdir()


def read_client_states(checkpoint_path: Path, manifest: dict[int, str]) -> dict[int, dict[str, Any]]:
    """The states a checkpoint's manifest names (files in `checkpoint.clients/` beside it), refused in
    one line if a file is missing or damaged."""
    folder = checkpoint_path.with_name(CLIENTS)
    states = {}
    for cid, name in manifest.items():
        path = folder / name
        try:
            state = torch.load(path, weights_only=True)
        except FileNotFoundError:
            raise GeneflError(f"resume: client state file {path} of the checkpoint is missing; "
                              "rerun from the start with --force") from None
        except Exception as exc:  # a damaged file can fail in many ways
            raise GeneflError(f"resume: client state file {path} of the checkpoint is unreadable "
                              f"({type(exc).__name__}); rerun from the start with --force") from None
        states[cid] = state
    return states


def client_manifest(payload: dict[str, Any]) -> dict[int, str]:
    """A checkpoint's manifest of client-state files ({} for one holding its states inline), refused
    in one line unless it is a table of client id -> plain file name."""
    manifest = payload.get("client_files", {})
    if not (isinstance(manifest, dict) and all(
            isinstance(c, int) and not isinstance(c, bool) and c >= 0 and isinstance(n, str)
            and re.fullmatch(r"client\d+-r\d+\.pt", n) for c, n in manifest.items())):
        raise GeneflError("resume: the checkpoint is damaged: its client files are not a table of client id -> "
                          "file name; rerun from the start with --force")
    return manifest


def identity(config: Config) -> dict[str, Any]:
    """What `save`'s callers store under "config": the run's identity."""
    return run_table(config)


def load(path: Path, config: Config) -> dict[str, Any]:
    """The checkpoint at `path`, refused with one line unless it is a readable genefl checkpoint of
    this version saved by a run of `config`'s identity. (Its content is checked where it is used:
    `RoundLoop.check_resume`, the simulator's client states.)"""
    if not path.is_file():
        raise GeneflError(f"resume: checkpoint {path} is not a file")
    try:
        # our own file, written by `save`: it holds the strategy's state dataclasses, hence full unpickling
        payload = torch.load(path, weights_only=False, pickle_module=_PICKLE)
    except Exception as exc:  # a damaged file can fail in many ways
        raise GeneflError(f"checkpoint {path} is unreadable ({type(exc).__name__}); rerun from the start with --force") from None
    if not isinstance(payload, dict) or payload.get("version") != VERSION:
        raise GeneflError(f"checkpoint {path} is not a genefl checkpoint of version {VERSION}")
    saved = payload.get("config")
    if not isinstance(saved, dict):
        raise GeneflError(f"resume: checkpoint {path} does not say which run it is of (made by an older genefl?); "
                          "rerun from the start with --force")
    differences = table_differences(saved, identity(config))
    if differences:
        raise GeneflError(f"resume: the checkpoint in {path.parent} is of a different run (checkpoint vs this config): "
                          + ", ".join(differences))
    manifest = client_manifest(payload)
    if manifest:  # the simulator's client states, from their files beside the checkpoint
        payload["clients"] = read_client_states(path, manifest)
    return payload


def fault(point: str, round: int) -> None:
    """Fault injection for the kill-and-resume tests: GENEFL_FAULT="<point>:<round>" makes this
    process SIGKILL itself at that point (checkpoint = after writing the temporary file, before the
    rename; round = after the first client of the round trained; newcomer = after a newcomer
    fine-tuned, before the server saw its reply)."""
    wanted = os.environ.get("GENEFL_FAULT")
    if wanted and wanted == f"{point}:{round}":
        os.kill(os.getpid(), signal.SIGKILL)


# ---- what a snapshot read back must hold ------------------------------------------------------
def _ints(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)


def _list_of(kind: type):
    return lambda value: isinstance(value, list) and all(isinstance(v, kind) for v in value)


SNAPSHOT_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {  # what `snapshot` writes, but the server state
    "round": (lambda v: isinstance(v, int) and not isinstance(v, bool), "a round number"),
    "active": (_ints, "a list of client ids"), "waiting": (_ints, "a list of client ids"),
    "rounds": (_list_of(RoundReport), "a list of round reports"),
    "newcomers": (_list_of(NewcomerReport), "a list of newcomer reports"),
    "ledger": (lambda v: isinstance(v, Ledger), "a byte ledger"), "notes": (_list_of(str), "a list of notes"),
    "signature_rows": (lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)), "a row count or None"),
    "elapsed": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < float("inf"), "seconds"),
    "explicit": (_ints, "a list of client ids"),
    "population": (lambda v: isinstance(v, list) and all(
        isinstance(e, dict) and set(e) == {"round", "client", "event"} and _ints([e["round"], e["client"]])
        and e["event"] in EVENTS for e in v), "a list of population events"),
}


def check_snapshot(snap: Any, rounds: int) -> str | None:
    """What is wrong with a snapshot read back from a checkpoint (for a run of `rounds` rounds), or
    None. A file from another genefl version, or a damaged one, is refused here rather than failing
    somewhere in the rest of the run."""
    if not isinstance(snap, dict):
        return "it is not a table"
    missing = [name for name in ("server", *SNAPSHOT_FIELDS) if name not in snap]
    if missing:
        return f"it has no {missing[0]!r}"
    for name, (valid, what) in SNAPSHOT_FIELDS.items():
        if not valid(snap[name]):
            return f"{name!r} must be {what}, got {type(snap[name]).__name__}"
    references = snap.get("references", {})  # codec.down_delta's (absent from older checkpoints)
    if not isinstance(references, dict) or not all(
            isinstance(c, int) and isinstance(r, dict) and all(isinstance(n, str) and isinstance(t, torch.Tensor) for n, t in r.items())
            for c, r in references.items()):
        return "'references' must be a table of client ids to named tensors"
    if not 1 <= snap["round"] < rounds or len(snap["rounds"]) != snap["round"]:
        return f"it is of round {snap['round']} with {len(snap['rounds'])} round reports, in a run of {rounds} rounds"
    return None
