"""Progress display: a tqdm bar over rounds (accuracy and MB so far), log lines for newcomers."""

from __future__ import annotations

import logging
from typing import Any

from tqdm.auto import tqdm

from .events import Callback, NewcomerReport, RoundReport

log = logging.getLogger("genefl")


class ProgressBar(Callback):
    def __init__(self, total_rounds: int, description: str = "rounds", position: int = 0, leave: bool = True):
        self.total, self.description, self.position, self.leave = total_rounds, description, position, leave
        self.bar: tqdm | None = None
        self.megabytes = 0.0
        self.acc: float | None = None

    def on_start(self, info: dict[str, Any]) -> None:
        self.bar = tqdm(total=self.total, desc=self.description, unit="round", position=self.position,
                        leave=self.leave, dynamic_ncols=True, initial=len(info.get("finished_rounds", [])))

    def after_newcomer(self, report: NewcomerReport) -> None:
        accs = " ".join(f"{a:.3f}" for a in report.acc_by_epoch)
        log.info("newcomer %d arrived in round %d (%s, %.1f kB): acc by epoch %s",
                 report.id, report.arrival_round, report.init, report.init_bytes / 1e3, accs)

    def after_round(self, report: RoundReport) -> None:
        answered = len(report.participants) + len(report.rejected)
        if report.rejected and 2 * len(report.rejected) >= answered:
            tqdm.write(f"genefl: warning: round {report.round}: {len(report.rejected)} of {answered} replies were "
                       f"rejected and not aggregated ({report.notes[0] if report.notes else 'see rounds[].notes'})")
        self.megabytes += (report.bytes_up + report.bytes_down) / 1e6
        acc = report.mean_acc()
        self.acc = acc if acc is not None else self.acc
        if self.bar is not None:
            self.bar.set_postfix(acc=f"{self.acc:.3f}" if self.acc is not None else "-", MB=f"{self.megabytes:.2f}")
            self.bar.update(1)

    def on_end(self, result) -> None:
        if self.bar is not None:
            self.bar.close()
