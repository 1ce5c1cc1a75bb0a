"""What a run reports as it goes: one record per round and per newcomer, and the callback hooks
(logging, progress bars, result files) that receive them. The round loop only emits events."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RoundReport:
    round: int
    participants: list[int]  # sampled clients that reported back
    dropped: list[int]  # sampled clients that did not (dropout, failure, rejected reply)
    acc_by_client: dict[int, float]  # {} when this round was not evaluated
    num_training_clients: int  # ids below this are training clients
    bytes_up: int
    bytes_down: int
    wall_s: float
    notes: list[str] = field(default_factory=list)  # e.g. why a reply was rejected
    rejected: list[int] = field(default_factory=list)  # clients whose reply failed the checks (also in dropped)
    backdoor_by_client: dict[int, float] = field(default_factory=dict)  # a backdoor's success per client (backdoor runs)
    online: int = 0  # clients present that could be reached this round (`genefl.protocol.population`)
    present: int = 0  # clients in the federation this round: arrived, not departed, not away
    departed: int = 0  # clients gone for good by this round
    absent: int = 0  # clients in the federation but not present: away (a return), or a Flower node not connected
    acc_absent_by_client: dict[int, float] | None = None  # absent clients' own models, evaluated (`RoundLoop._evaluate_absent`)

    def mean_acc(self, training_only: bool = True, leaving_out: frozenset[int] = frozenset()) -> float | None:
        accs = [a for c, a in self.acc_by_client.items()  # NaN: an empty test split, left out
                if (c < self.num_training_clients or not training_only) and c not in leaving_out and not math.isnan(a)]
        return sum(accs) / len(accs) if accs else None

    def mean_absent(self) -> float | None:
        """The mean accuracy of the absent clients' own models on their own test data (None: none measured)."""
        accs = [a for a in (self.acc_absent_by_client or {}).values() if not math.isnan(a)]
        return sum(accs) / len(accs) if accs else None

    def mean_backdoor(self, attackers: frozenset[int] = frozenset()) -> float | None:
        """The backdoor's mean success on the training clients that do not attack (None: not measured)."""
        rates = [r for c, r in self.backdoor_by_client.items()
                 if c < self.num_training_clients and c not in attackers and not math.isnan(r)]
        return sum(rates) / len(rates) if rates else None


@dataclass(frozen=True)
class NewcomerReport:
    id: int
    arrival_round: int
    init: str  # how it started: "global", "cluster", "learngene", "random"
    init_bytes: int  # bytes it exchanged before training: its signature upload (if its method asks for one) + the welcome
    acc_init: float  # test accuracy before fine-tuning
    acc_by_epoch: list[float]  # test accuracy after each fine-tuning epoch
    info: dict[str, Any] = field(default_factory=dict)  # method-specific, e.g. its cluster
    val_by_epoch: list[float] = field(default_factory=list)  # validation accuracy after each epoch
    chosen_epoch: int = 0  # the epoch (1-based) its validation split picks; the last without one
    signature_bytes: int = 0  # the part of init_bytes that was its signature upload
    backdoor_success: float | None = None  # a backdoor's success on its fine-tuned model (backdoor runs)
    acc_local: float | None = None  # its local-only model's test accuracy (`population.local_baseline`; None: off)

    @property
    def acc_chosen(self) -> float | None:
        """Test accuracy at the validation-chosen epoch."""
        return self.acc_by_epoch[self.chosen_epoch - 1] if self.acc_by_epoch and self.chosen_epoch else None


class Callback:
    def on_start(self, info: dict[str, Any]) -> None: ...
    def on_newcomer_start(self, round: int, cid: int, broadcast: Any) -> None: ...  # what it starts from (as decoded)
    def after_newcomer(self, report: NewcomerReport) -> None: ...
    # an accepted training upload: `sent` as it came over the wire (`protocol.messages.encode(sent)` is
    # its bytes), `decoded` what the server then aggregates (a payload codec's change already added back)
    def on_upload(self, round: int, cid: int, sent: Any, decoded: Any) -> None: ...
    def after_round(self, report: RoundReport) -> None: ...
    def on_end(self, result: Any) -> None: ...
