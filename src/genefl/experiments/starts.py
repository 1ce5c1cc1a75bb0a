"""What each newcomer was sent on arrival, recorded during a run for the newcomer study (`study`) and the
privacy attacks, and saved beside the run's results by `genefl compare`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..protocol.messages import Broadcast
from ..runtime.events import Callback

STARTS_FILE = "newcomer_starts.pt"  # what each newcomer was sent, kept for the newcomer study


class StartRecorder(Callback):
    """Keeps what every newcomer was sent (tensors and meta) and saves it at the end of the run."""

    def __init__(self, path: Path | None):
        self.path, self.starts = (Path(path) if path is not None else None), {}

    def on_newcomer_start(self, round: int, cid: int, broadcast: Broadcast) -> None:
        self.starts[cid] = {"round": round, "meta": dict(broadcast.meta),
                            "tensors": {k: v.detach().cpu().clone() for k, v in broadcast.tensors.items()}}

    def on_end(self, result: Any) -> None:
        if self.path is None:  # kept in memory only
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(self.starts, self.path)
