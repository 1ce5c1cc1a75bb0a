"""Result files of one run: `config.toml`, `rounds.csv` (appended as rounds finish, so an
interrupted run keeps what it finished) and `results.json` (schema below, written at the end).

results.json: {method, dataset, seed, summary{acc_clients, acc_newcomers_first_epoch,
acc_newcomers_last_epoch, bytes_up, bytes_down, bytes_total, bytes_eval, bytes_newcomer_init_mean,
model_bytes, wall_s, ...}, acc_by_client{id: accuracy in the last evaluated round}, code{genefl, git_commit,
git_dirty, torch}, rounds[{round, acc_clients, bytes_up, bytes_down, wall_s, ...}],
newcomers[{id, arrival_round, init, init_bytes, acc_init, acc_by_epoch, acc_local, rounds_to_useful, ...}],
newcomer_cohorts[{arrival_round, clients, acc_init, acc_by_epoch, acc_by_round, rounds_to_useful_median}],
method_info{...}, population{arrivals, not_arrived, departures, returns, unreachable}}. Accuracies are
fractions in [0, 1]; `acc_clients` is the mean over the training clients evaluated in the last
evaluated round (those present: `genefl.protocol.population`); newcomer accuracies are means over newcomers.
Each round also counts the clients `online`, `present`, `absent` and `departed` by then, and in
evaluated rounds gives `acc_absent`, the mean accuracy of the absent clients' own models on their own
test data (`RoundLoop._evaluate_absent`; null when nobody is absent or the method keeps no model of a
client's own). In a run with attackers (`adversary`), `acc_clients_honest` is `acc_clients` over the
training clients that do not attack. `acc_local`, `rounds_to_useful` and `newcomers_rounds_to_useful_median` are null
unless `population.local_baseline` (`population.rounds_to_useful`); cohorts: `newcomer_cohorts`.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import tomli_w

from .config import Config, config_to_dict
from .protocol.adversary import run_attackers
from .protocol.defence import epsilon_per_upload
from .errors import ConfigError
from .paths import shown
from .protocol.population import median_rounds_to_useful, rounds_to_useful
from .runtime.events import Callback, NewcomerReport, RoundReport

ROUND_FIELDS = ["round", "acc_clients", "acc_all", "acc_absent", "bytes_up", "bytes_down", "participants", "dropped", "online",
                "present", "absent", "departed", "wall_s"]


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None and not math.isnan(v)]
    return sum(values) / len(values) if values else None


def round_row(r: RoundReport, attackers: frozenset[int] = frozenset()) -> dict[str, Any]:
    backdoor = {"backdoor_success": r.mean_backdoor(attackers)} if r.backdoor_by_client else {}
    return {"round": r.round, "acc_clients": r.mean_acc(), "acc_all": r.mean_acc(training_only=False),
            "acc_absent": r.mean_absent(), "bytes_up": r.bytes_up, "bytes_down": r.bytes_down,
            "participants": len(r.participants), "dropped": len(r.dropped), "online": r.online, "present": r.present,
            "absent": r.absent, "departed": r.departed,
            "wall_s": round(r.wall_s, 4), **backdoor, **({"notes": r.notes} if r.notes else {})}


def newcomer_row(n: NewcomerReport, useful: int | None = None) -> dict[str, Any]:
    """A newcomer's results.json entry; `useful`: its `rounds_to_useful` (`population.rounds_to_useful`)."""
    return {"id": n.id, "arrival_round": n.arrival_round, "init": n.init, "init_bytes": n.init_bytes,
            "signature_bytes": n.signature_bytes,
            "acc_init": n.acc_init, "acc_by_epoch": n.acc_by_epoch, "val_by_epoch": n.val_by_epoch,
            "chosen_epoch": n.chosen_epoch, "acc_chosen": n.acc_chosen,
            "acc_local": n.acc_local, "rounds_to_useful": useful,
            **({"backdoor_success": n.backdoor_success} if n.backdoor_success is not None else {}), **n.info}


def newcomer_cohorts(newcomers: list[NewcomerReport], rounds: list[RoundReport],
                     useful: dict[int, int | None]) -> list[dict[str, Any]]:
    """Newcomers grouped by arrival round (a cohort): its `clients`, the mean `acc_init` and mean
    `acc_by_epoch` (epoch by epoch) of their fine-tuning curves, their mean accuracy in each evaluated
    round from arrival on (`acc_by_round`: [round, mean over the cohort's clients evaluated then]),
    and with `population.local_baseline` the median of their rounds to useful (`useful`, by newcomer id;
    `population.median_rounds_to_useful`). Means leave out NaN (an empty test split)."""
    by_round = defaultdict(list)
    for n in newcomers:
        by_round[n.arrival_round].append(n)
    cohorts = []
    for a, members in sorted(by_round.items()):
        ids = {n.id for n in members}
        epochs = max(len(n.acc_by_epoch) for n in members)
        later = [[r.round, _mean([acc for cid, acc in r.acc_by_client.items() if cid in ids])]
                 for r in rounds if r.round >= a and ids & set(r.acc_by_client)]
        cohorts.append({"arrival_round": a, "clients": sorted(ids), "acc_init": _mean([n.acc_init for n in members]),
                        "acc_by_epoch": [_mean([n.acc_by_epoch[e] for n in members if e < len(n.acc_by_epoch)])
                                         for e in range(epochs)],
                        "acc_by_round": later,
                        "rounds_to_useful_median": median_rounds_to_useful(
                            [useful[n.id] for n in members if n.acc_local is not None])})
    return cohorts


def build_results(result) -> dict[str, Any]:
    """The results.json document for a `RunResult` (simulator or Flower)."""
    config: Config = result.config
    ledger = result.ledger
    evaluated = [r for r in result.rounds if r.acc_by_client]
    last = evaluated[-1] if evaluated else None
    news = result.newcomers
    useful = {n.id: rounds_to_useful(n, result.rounds) for n in news}
    summary = {
        "acc_clients": last.mean_acc() if last else None,
        "acc_all": last.mean_acc(training_only=False) if last else None,
        "acc_newcomers_init": _mean([n.acc_init for n in news]),
        "acc_newcomers_first_epoch": _mean([n.acc_by_epoch[0] for n in news if n.acc_by_epoch]),
        "acc_newcomers_last_epoch": _mean([n.acc_by_epoch[-1] for n in news if n.acc_by_epoch]),
        "acc_newcomers_val_chosen": _mean([n.acc_chosen for n in news]),
        "newcomers_rounds_to_useful_median": median_rounds_to_useful([useful[n.id] for n in news if n.acc_local is not None]),
        "bytes_up": ledger.total("up"),
        "bytes_down": ledger.total("down"),
        "bytes_total": ledger.total(),
        "bytes_per_round": ledger.total() / max(len(result.rounds), 1),
        "bytes_eval": ledger.total(kind="eval"),
        "bytes_newcomer_init_mean": _mean([n.init_bytes for n in news]),
        "model_bytes": result.model_bytes,
        "wall_s": round(result.wall_s, 3),
        "dp_epsilon_per_upload": epsilon_per_upload(config.dp_noise) if config.dp_clip > 0 else None,
    }
    attackers = run_attackers(config)
    if attackers:  # what a defence protects: the training clients that do not attack
        summary["acc_clients_honest"] = last.mean_acc(leaving_out=attackers) if last else None
    if config.adversary.kind == "backdoor":  # on the training clients that do not attack; newcomers after fine-tuning
        summary["backdoor_success"] = last.mean_backdoor(attackers) if last else None
        summary["backdoor_success_newcomers"] = _mean([n.backdoor_success for n in news])
    summary.update(result.method_info.get("summary", {}))
    info = {k: v for k, v in result.method_info.items() if k != "summary"}
    if attackers:
        info["adversary"] = {"kind": config.adversary.kind, "attackers": sorted(attackers)}
        if config.adversary.signature_classes:
            info["adversary"]["signature_classes"] = list(config.adversary.signature_classes)
    return {
        "method": config.method, "dataset": result.dataset or config.dataset, "seed": config.seed, "summary": summary,
        # per client, so that a subset (e.g. another run's honest clients) can be compared between runs
        "acc_by_client": {str(c): a for c, a in sorted(last.acc_by_client.items())
                          if c < last.num_training_clients} if last else {},
        "rounds": [round_row(r, attackers) for r in result.rounds],
        "newcomers": [newcomer_row(n, useful[n.id]) for n in news],
        "newcomer_cohorts": newcomer_cohorts(news, result.rounds, useful),
        "method_info": info,
        "population": result.population,
        "code": code_version(),
    }


@functools.cache
def code_version() -> dict[str, Any]:
    """What produced a result, since the same config and seed give the same numbers only on the same code:
    genefl's installed version (null when it is not installed); the git commit of its source when it runs from
    a checkout, and whether the package's files differed from that commit (null both when not a checkout);
    torch's version (its arithmetic can change between releases)."""
    import importlib.metadata

    import torch

    try:  # the installed distribution's version (importing the package root from here would be an upward import)
        version = importlib.metadata.version("genefl")
    except importlib.metadata.PackageNotFoundError:
        version = None
    source = Path(__file__).resolve().parent
    commit = dirty = None
    try:
        git = functools.partial(subprocess.run, cwd=source, capture_output=True, text=True, timeout=10)
        if git(["git", "ls-files", "--error-unmatch", "results.py"]).returncode == 0:  # this file is tracked here
            commit = git(["git", "rev-parse", "HEAD"]).stdout.strip() or None
            dirty = bool(git(["git", "status", "--porcelain", "--", "."]).stdout.strip())
    except (OSError, subprocess.SubprocessError):  # no git, or it hangs: the version alone
        pass
    return {"genefl": version, "git_commit": commit, "git_dirty": dirty if commit else None, "torch": torch.__version__}


def write_config(config: Config, path: Path) -> None:
    path.write_text(tomli_w.dumps(config_to_dict(config)))


class ResultWriter(Callback):
    """Writes config.toml at the start, a rounds.csv row per round, results.json at the end."""

    def __init__(self, out: Path):
        self.out = Path(out)

    def on_start(self, info: dict[str, Any]) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        write_config(info["config"], self.out / "config.toml")
        with open(self.out / "rounds.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, ROUND_FIELDS, extrasaction="ignore")
            writer.writeheader()
            for report in info.get("finished_rounds", []):  # a resumed run: the checkpoint's rounds
                writer.writerow(round_row(report))

    def after_round(self, report: RoundReport) -> None:
        with open(self.out / "rounds.csv", "a", newline="") as f:
            csv.DictWriter(f, ROUND_FIELDS, extrasaction="ignore").writerow(round_row(report))

    def on_end(self, result) -> None:
        write_json(build_results(result), self.out / "results.json")


def write_json(doc: dict[str, Any], path: Path) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_finite(doc), indent=1, allow_nan=False))
    tmp.replace(path)  # atomic: a reader never sees half a file


def _finite(value: Any) -> Any:
    """NaN / inf (e.g. the accuracy on an empty test split) become null: JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


# ---- reading results.json back (`genefl plot`): what tables and plots rely on, checked ----------
def integer_in(v, low: float = 0, high: float = 1 << 62) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and low <= v <= high


def number_in(v, low: float = 0.0, high: float = math.inf) -> bool:
    """A number in [low, high], or null or NaN (an accuracy on an empty test split)."""
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and (low <= v <= high or v != v))


def accuracy_in(v) -> bool:
    return number_in(v, 0.0, 1.0)


def results_problem(doc) -> str | None:
    """What in a results.json document tables and plots cannot read, or None."""
    if not isinstance(doc, dict):
        return "not a JSON object"
    summary = doc.get("summary")
    if not isinstance(summary, dict) or not all(v is None or (number_in(v, -math.inf) and math.isfinite(v))
                                                for v in summary.values()):
        return "summary missing, or holding something other than finite numbers"
    if not integer_in(doc.get("seed"), -math.inf, math.inf):
        return "seed missing or not an integer"
    if "label" in doc and not isinstance(doc["label"], str):
        return "label is not text"
    rounds, newcomers = doc.get("rounds"), doc.get("newcomers")
    if not isinstance(rounds, list) or not isinstance(newcomers, list):
        return "rounds or newcomers missing or not lists"
    for r in rounds:
        if not (isinstance(r, dict) and integer_in(r.get("round")) and integer_in(r.get("bytes_up"))
                and integer_in(r.get("bytes_down")) and accuracy_in(r.get("acc_clients")) and accuracy_in(r.get("acc_absent"))):
            return "a round without an integer round, bytes_up and bytes_down and an accuracy in [0, 1]"
    for n in newcomers:
        if not (isinstance(n, dict) and "acc_init" in n and accuracy_in(n["acc_init"])
                and isinstance(n.get("acc_by_epoch"), list) and all(accuracy_in(a) for a in n["acc_by_epoch"])):
            return "a newcomer without acc_init and acc_by_epoch, accuracies in [0, 1]"
    return None


def read_results(path: Path) -> dict:
    """A results.json document, checked for the parts that tables and plots read."""
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ConfigError(f"{shown(str(path))}: not a readable results.json ({type(exc).__name__})") from None
    found = results_problem(doc)
    if found:
        raise ConfigError(f"{shown(str(path))}: not a genefl results.json ({found})")
    return doc
