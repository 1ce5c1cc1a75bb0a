"""The comparison's plots, drawn from saved results.json files (so `genefl plot DIR` can redraw):
accuracy vs round, accuracy vs cumulative MB (the communication-efficiency curve), and newcomer
accuracy vs fine-tuning epoch. Curves are means over seeds; shaded bands are ± one std. Runs whose
population changed (`population_changed`) add a fourth: the accuracy of the clients present and of
those absent over rounds (`population_accuracy.png`)."""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.ticker  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from ..paths import shown, writing  # noqa: E402


def _by_label(docs: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for doc in docs:
        groups.setdefault(doc["label"], []).append(doc)
    return groups


def _shortest(rows: list[list]) -> list[list]:
    """Rows cut to the shortest one (runs whose files were edited, or cut short, differ in length)."""
    n = min((len(r) for r in rows), default=0)
    return [r[:n] for r in rows]


def _curve(runs: list[dict], x_of, y_key: str):
    """Mean and std over seeds of the evaluated rounds (x from the first seed)."""
    rows = [[r for r in d["rounds"] if r.get(y_key) is not None] for d in runs]
    n = min(len(r) for r in rows)
    x = np.array([x_of(rows[0], i) for i in range(n)])
    y = np.array([[r[i][y_key] for i in range(n)] for r in rows]) * 100
    return x, y.mean(0), y.std(0)


def _cumulative_mb(doc: dict) -> dict[int, float]:
    total, out = 0.0, {}
    for r in doc["rounds"]:
        total += (r["bytes_up"] + r["bytes_down"]) / 1e6
        out[r["round"]] = total
    return out


def _band(ax, x, mean, std, label):
    line, = ax.plot(x, mean, label=shown(label, 60), marker="o", markersize=3)
    ax.fill_between(x, mean - std, mean + std, alpha=0.15, color=line.get_color())


def population_changed(doc: dict) -> bool:
    """Did this run's population move beyond the static default: departures, returns, unreachable
    nodes, newcomers that never arrived, clients offline in some round, or absent clients measured?"""
    pop = doc.get("population")
    moved = isinstance(pop, dict) and any(pop.get(k) for k in ("departures", "returns", "unreachable", "not_arrived"))
    return moved or any(isinstance(r, dict) and (r.get("acc_absent") is not None or
                                                 (isinstance(r.get("online"), int) and isinstance(r.get("present"), int)
                                                  and r["online"] < r["present"])) for r in doc["rounds"])


def _by_round(runs: list[dict], key: str):
    """Mean and std over the seeds that have `key` in a round, round by round (seeds draw different
    populations, so a round may have an absent client in one seed and none in another)."""
    values: dict[int, list[float]] = {}
    for doc in runs:
        for r in doc["rounds"]:
            if r.get(key) is not None:
                values.setdefault(r["round"], []).append(r[key] * 100)
    x = np.array(sorted(values))
    return (x, np.array([np.mean(values[t]) for t in x]), np.array([np.std(values[t]) for t in x]))


def plot_all(docs: list[dict], out: Path) -> list[Path]:
    groups = _by_label(docs)
    paths = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, runs in groups.items():
        _band(ax, *_curve(runs, lambda rows, i: rows[i]["round"], "acc_clients"), label)
    ax.set(xlabel="communication round", ylabel="mean accuracy of training clients (%)", title="Accuracy per round")
    paths.append(_save(fig, ax, out / "accuracy_vs_round.png"))

    fig, ax = plt.subplots(figsize=(7, 4.5))
    positive = False
    for label, runs in groups.items():
        mb = _cumulative_mb(runs[0])
        x, mean, std = _curve(runs, lambda rows, i: mb[rows[i]["round"]], "acc_clients")
        keep = x > 0  # a log axis has no place for 0 MB (nothing sent yet, or an edited file)
        positive |= bool(keep.any())
        _band(ax, x[keep], mean[keep], std[keep], label)
    ax.set(xlabel="cumulative communication (MB, up + down)", ylabel="mean accuracy of training clients (%)",
           title="Accuracy vs communication", xscale="log" if positive else "linear")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}" if str(v)[0] in "25" else ""))
    paths.append(_save(fig, ax, out / "accuracy_vs_mb.png"))

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, runs in groups.items():
        # a newcomer with an empty test split has null accuracies: leave it out of the mean
        with warnings.catch_warnings():  # an epoch every newcomer has null at is NaN in the mean: no warning
            warnings.simplefilter("ignore", RuntimeWarning)
            curves = [np.nanmean(np.array(_shortest([[n["acc_init"]] + n["acc_by_epoch"] for n in d["newcomers"]]),
                                          dtype=float), axis=0) for d in runs if d["newcomers"]]
        if curves:
            arr = np.array(_shortest([list(c) for c in curves])) * 100
            _band(ax, np.arange(arr.shape[1]), arr.mean(0), arr.std(0), label)
    ax.set(xlabel="newcomer fine-tuning epoch (0 = at initialisation)", ylabel="newcomer test accuracy (%)",
           title="Newcomers: accuracy while fine-tuning")
    paths.append(_save(fig, ax, out / "newcomer_accuracy.png"))

    moving = {label: [d for d in runs if population_changed(d)] for label, runs in groups.items()}
    if any(moving.values()):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for label, runs in moving.items():
            if not runs:
                continue
            x, mean, std = _by_round(runs, "acc_clients")
            line, = ax.plot(x, mean, label=shown(f"{label}: present", 60), marker="o", markersize=3)
            ax.fill_between(x, mean - std, mean + std, alpha=0.15, color=line.get_color())
            x, mean, std = _by_round(runs, "acc_absent")
            if len(x):
                ax.plot(x, mean, label=shown(f"{label}: absent", 60), marker="s", markersize=3, linestyle="--",
                        color=line.get_color())
        ax.set(xlabel="communication round", ylabel="mean accuracy on own test data (%)",
               title="A changing population: clients present and absent")
        paths.append(_save(fig, ax, out / "population_accuracy.png"))
    return paths


def _save(fig, ax, path: Path) -> Path:
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        with writing(path):
            fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
    return path
