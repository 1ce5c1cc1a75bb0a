"""A SuperNode's client state on disk (node config `state-dir`), so that it outlives the SuperNode
process and the Flower run.

Flower keeps a ClientApp's `Context.state` in the SuperNode's memory, per run: a restarted SuperNode
starts it empty, and a resumed ServerApp (`flower.resume = true`) is a new Flower run, so there every
node starts it empty. Methods whose clients keep state between rounds (the personal models of
GENE-FL, FLearngene and local, GENE-FL's ξ, SCAFFOLD's control variate) would then go on from a
fresh state. With `state-dir`,
the ClientApp writes its store after every message it answers, one file per round, and reads it
back whenever its Context holds none:
- in a resumed run (the server names the round it resumed from): the newest state saved at or before
  that round; states saved after it (rounds the killed ServerApp never checkpointed) are removed;
- in the same run (a SuperNode restarted mid-run): the newest state saved before the message's round;
- in a new run that is not a resume: none (the folder is emptied).
The folder is keyed by the run's config (all but its `flower` table) and the partition id, so
several runs and nodes can share one `state-dir`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..config import Config, run_key
from ..errors import ConfigError
from ..paths import checked, file_in_the_way, shown


class NodeStore:
    def __init__(self, root: str | os.PathLike, config: Config, cid: int):
        root = checked("state-dir", root)
        blocker = file_in_the_way(root)
        if blocker is not None:
            raise ConfigError(f"state-dir {shown(str(root))}: {shown(str(blocker))} exists and is not a folder")
        self.folder = root / f"{run_key(config)}-client{cid}"
        self.keep = max(config.checkpoint_every, 1) + 1  # rounds a resume may have to go back, plus one

    def restore(self, run_id: int, round: int, resumed_from: int | None) -> bytes | None:
        """The saved store to continue from, when the Context holds none (see the module doc)."""
        marker = self.folder / "run-id"
        same_run = marker.is_file() and marker.read_text().strip() == str(run_id)
        if resumed_from is None and not same_run:
            shutil.rmtree(self.folder, ignore_errors=True)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"state-dir: cannot create {shown(str(self.folder))} ({exc.strerror or exc})") from None
        marker.write_text(str(run_id))
        if resumed_from is not None and not same_run:
            for r, path in self._saved():
                if r > resumed_from:
                    path.unlink()
        limit = resumed_from if resumed_from is not None and not same_run else round - 1
        usable = [path for r, path in self._saved() if r <= limit]
        return usable[-1].read_bytes() if usable else None

    def save(self, round: int, data: bytes) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"round{round:06d}.bin"
        tmp = path.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # a kill never leaves half a state
        saved = self._saved()
        newest = saved[-1][0]
        older = [p for r, p in saved if r <= newest - self.keep]
        for stale in older[:-1]:  # keep the newest state from before the window: a client may sit rounds out
            stale.unlink()

    def _saved(self) -> list[tuple[int, Path]]:
        return sorted((int(p.stem[len("round"):]), p) for p in self.folder.glob("round*.bin"))
