"""Checkpoints: everything a run needs to continue after a finished round, written atomically.

Every random choice in genefl comes from a generator derived from the run's seed and a few tags
(`genefl.rng`), never from a stream consumed in call order, so there is no generator position to
save: the loop's state after round t (server state, which clients are active or still to arrive,
reports, ledger, notes) plus every client's persistent state (personal models, control variates,
ξ) determine the rest of the run. A resumed run therefore ends with the results of an uninterrupted
one, all but wall times. The file is written to a temporary name, fsynced and renamed, so a kill at
any moment leaves the previous checkpoint intact.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import torch

from ..errors import GeneflError

FILE = "checkpoint.pt"
VERSION = 1


def save(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save({"version": VERSION, **payload}, f)
        f.flush()
        os.fsync(f.fileno())
    fault("checkpoint", payload["round"])
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a crash
    finally:
        os.close(directory)


def load(path: Path) -> dict[str, Any]:
    try:
        # our own file, written by `save`: it holds the strategy's state dataclasses, hence full unpickling
        payload = torch.load(path, weights_only=False)
    except Exception as exc:  # a damaged file can fail in many ways
        raise GeneflError(f"checkpoint {path} is unreadable ({type(exc).__name__}); rerun from the start with --force") from None
    if not isinstance(payload, dict) or payload.get("version") != VERSION:
        raise GeneflError(f"checkpoint {path} is not a genefl checkpoint of version {VERSION}")
    return payload


def fault(point: str, round: int) -> None:
    """Fault injection for the kill-and-resume tests: GENEFL_FAULT="<point>:<round>" makes this
    process SIGKILL itself at that point (checkpoint = after writing the temporary file, before the
    rename; round = after the first client of the round trained; newcomer = after a newcomer
    fine-tuned, before the server saw its reply)."""
    wanted = os.environ.get("GENEFL_FAULT")
    if wanted and wanted == f"{point}:{round}":
        os.kill(os.getpid(), signal.SIGKILL)
