"""TensorBoard logging as one more callback (`pip install 'genefl[tensorboard]'`):

    genefl.run(config, callbacks=[genefl.tensorboard.TensorBoard("runs/tb")])
    genefl run --tensorboard runs/tb          # the same from the command line
    tensorboard --logdir runs/tb

Per round (step = round): `accuracy/training_clients` and `accuracy/all_clients` on evaluated
rounds, `bytes/up`, `bytes/down` and `bytes/total_so_far` (what the ledger counted, evaluation
broadcasts excluded as in results.json's round rows), `clients/participants` and `clients/dropped`.
Per newcomer: its fine-tuning curve `newcomer/<id>/accuracy` (step = epoch, 0 = as initialised),
and `newcomers/accuracy_last_epoch` and `newcomers/init_bytes` at its arrival round. At the end,
the run's summary as text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .paths import writable_folder
from .runtime.events import Callback, NewcomerReport, RoundReport


class TensorBoard(Callback):
    """`log_dir` is checked (a folder genefl can write, created now) when the callback is made, so
    that a bad one is one line before the run; the event file is opened when the run starts."""

    def __init__(self, log_dir: str | Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("TensorBoard logging needs the tensorboard package: pip install 'genefl[tensorboard]'") from None
        self.log_dir, _ = writable_folder("TensorBoard log_dir", log_dir, ConfigError)
        self.make_writer = SummaryWriter
        self.total = 0

    def on_start(self, info: dict[str, Any]) -> None:
        self.writer = self.make_writer(log_dir=str(self.log_dir))
        config = info["config"]
        self.writer.add_text("config", f"method {config.method}, dataset {config.dataset}, seed {config.seed}, "
                                       f"model {info.get('model', config.model)}")
        for report in info.get("finished_rounds", []):  # a resumed run: its bytes so far
            self.total += report.bytes_up + report.bytes_down

    def after_round(self, report: RoundReport) -> None:
        w, t = self.writer, report.round
        self.total += report.bytes_up + report.bytes_down
        for tag, value in (("accuracy/training_clients", report.mean_acc()), ("accuracy/all_clients", report.mean_acc(False))):
            if value is not None:
                w.add_scalar(tag, value, t)
        w.add_scalar("bytes/up", report.bytes_up, t)
        w.add_scalar("bytes/down", report.bytes_down, t)
        w.add_scalar("bytes/total_so_far", self.total, t)
        w.add_scalar("clients/participants", len(report.participants), t)
        w.add_scalar("clients/dropped", len(report.dropped), t)
        w.flush()

    def after_newcomer(self, report: NewcomerReport) -> None:
        for epoch, acc in enumerate([report.acc_init, *report.acc_by_epoch]):
            self.writer.add_scalar(f"newcomer/{report.id}/accuracy", acc, epoch)
        if report.acc_by_epoch:
            self.writer.add_scalar("newcomers/accuracy_last_epoch", report.acc_by_epoch[-1], report.arrival_round)
        self.writer.add_scalar("newcomers/init_bytes", report.init_bytes, report.arrival_round)

    def on_end(self, result: Any) -> None:
        from .results import build_results

        self.writer.add_text("summary", "    " + json.dumps(build_results(result)["summary"], indent=1).replace("\n", "\n    "))
        self.writer.close()
