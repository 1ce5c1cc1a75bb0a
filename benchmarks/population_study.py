"""Every method on three changing populations (issue 20 §4): which method to run for which population.

Populations (configs/population_*.toml): `fashion_diurnal` (1,000 Fashion-MNIST clients, 5% a round
among those online, diurnal availability, Poisson newcomers, 10% departures), `fashion_returns` (the
same with 20% of the clients returning after 6 rounds with a drifted class mix; GENE-FL and PACFL
also with `population.recluster = true`, labels `*_recluster`), `synthetic_10k` (10,000
Synthetic(1, 1) clients, 1% a round).

Each (population, method, seed) is one `genefl run` at one torch thread under /usr/bin/time (its peak
RSS), written to OUT/<population>/<label>/seed<s>/ (peak.json beside results.json) and skipped when
its results.json exists, so the script can be stopped and started again. `--table` writes
OUT/population.md (per population and method, mean over the seeds found: training clients present
at the last evaluation, the mean over evaluated rounds, absent clients' own models, newcomers after
fine-tuning, the median rounds until a newcomer's model beats its local-only one, total MB, wall
seconds, peak RSS) and OUT/<population>.png (accuracy of the present clients over rounds, a line per
method).

Usage:
  GENEFL_DATA=../shared/data python benchmarks/population_study.py --populations fashion_diurnal --seeds 0
  python benchmarks/population_study.py --table
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "population"
POPULATIONS = {"fashion_diurnal": "population_fashion.toml", "fashion_returns": "population_fashion_returns.toml",
               "synthetic_10k": "population_synthetic.toml"}
METHODS = ("genefl", "fedavg", "fedprox", "scaffold", "fedlp", "flearngene", "pacfl", "fedper", "local")
RECLUSTER = {"genefl_recluster": "genefl", "pacfl_recluster": "pacfl"}  # on the returns population only


def labels_of(population: str, methods: list[str]) -> dict[str, list[str]]:
    """label -> its --set overrides."""
    labels = {m: [f"method={m}"] for m in methods}
    if population == "fashion_returns":
        labels |= {label: [f"method={m}", "population.recluster=true"] for label, m in RECLUSTER.items() if m in methods}
    return labels


def run_missing(populations: list[str], methods: list[str], seeds: list[int], sets: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for seed in seeds:
        for population in populations:
            for label, overrides in labels_of(population, methods).items():
                folder = OUT / population / label / f"seed{seed}"
                if (folder / "results.json").exists():
                    continue
                args = [f"seed={seed}", *overrides, *sets]
                with tempfile.NamedTemporaryFile("r", suffix=".time") as timing:
                    cmd = ["/usr/bin/time", "-f", "%M %e %U %S", "-o", timing.name, sys.executable, "-m", "genefl.cli", "run",
                           "--config", str(ROOT / "configs" / POPULATIONS[population]),
                           *[a for s in args for a in ("--set", s)], "--out", str(folder), "--force"]
                    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                    fields = timing.read().split()[-4:]
                if proc.returncode == 0:
                    peak_kb, wall, user, system = (float(v) for v in fields)
                    (folder / "peak.json").write_text(json.dumps({"peak_rss_mb": peak_kb / 1024, "wall_s": wall,
                                                                   "cpu_s": user + system}) + "\n")
                    print(f"finished: {folder}", flush=True)
                else:
                    print(f"failed: {folder} ({proc.stderr.strip().splitlines()[-1:]})", flush=True)


def mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def runs_of(folder: Path) -> list[dict]:
    runs = []
    for seed in sorted(folder.glob("seed*")):
        if (seed / "results.json").exists():
            doc = json.loads((seed / "results.json").read_text())
            peak = json.loads((seed / "peak.json").read_text()) if (seed / "peak.json").exists() else {}
            runs.append({"doc": doc, "peak": peak})
    return runs


def fmt(value: float | None, scale: float = 100, digits: int = 1) -> str:
    return "-" if value is None else f"{scale * value:.{digits}f}"


def table() -> str:
    lines = []
    for population in POPULATIONS:
        folder = OUT / population
        if not folder.is_dir():
            continue
        found = {label.name: runs_of(label) for label in sorted(folder.iterdir()) if label.is_dir()}
        found = {k: v for k, v in found.items() if v}
        if not found:
            continue
        lines += [f"### {population}", "",
                  "| method | seeds | present clients, last | mean over evaluated rounds | absent clients' own models, last | "
                  "newcomers, last epoch | rounds to useful (median) | total MB | wall s | peak RSS MB |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        curves = {}
        for label, runs in found.items():
            summaries = [r["doc"]["summary"] for r in runs]
            evaluated = [[x["acc_clients"] for x in r["doc"]["rounds"] if x.get("acc_clients") is not None] for r in runs]
            absent = [[x["acc_absent"] for x in r["doc"]["rounds"] if x.get("acc_absent") is not None] for r in runs]
            per_round = {}  # the mean over seeds, round by round (the same evaluation rounds in every seed)
            for r in runs:
                for x in r["doc"]["rounds"]:
                    if x.get("acc_clients") is not None:
                        per_round.setdefault(x["round"], []).append(x["acc_clients"])
            curves[label] = sorted((t, statistics.fmean(v)) for t, v in per_round.items())
            lines.append(
                f"| {label} | {len(runs)} | {fmt(mean([s['acc_clients'] for s in summaries]))} | "
                f"{fmt(mean([statistics.fmean(e) for e in evaluated if e]))} | {fmt(mean([a[-1] for a in absent if a]))} | "
                f"{fmt(mean([s['acc_newcomers_last_epoch'] for s in summaries]))} | "
                f"{fmt(mean([s.get('newcomers_rounds_to_useful_median') for s in summaries]), 1, 1)} | "
                f"{fmt(mean([s['bytes_total'] for s in summaries]), 1e-6, 1)} | "
                f"{fmt(mean([r['peak'].get('wall_s') for r in runs]), 1, 0)} | {fmt(mean([r['peak'].get('peak_rss_mb') for r in runs]), 1, 0)} |")
        lines.append("")
        plot(population, curves)
    return "\n".join(lines)


def plot(population: str, curves: dict[str, list[tuple[int, float]]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    for i, (label, points) in enumerate(sorted(curves.items())):
        ax.plot([t for t, _ in points], [a for _, a in points], marker=".", color=f"C{i % 10}",
                ls="-" if label.startswith("genefl") else "--", label=label)
    ax.set_xlabel("round")
    ax.set_ylabel("accuracy of the present clients (evaluated sample)")
    ax.set_title(population, fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(OUT / f"{population}.png", dpi=120)
    plt.close(fig)


def main() -> None:
    global OUT
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--populations", default=",".join(POPULATIONS), help=f"comma-separated, of {', '.join(POPULATIONS)}")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--set", action="append", default=[], dest="sets", help="KEY=VALUE for every run (repeatable)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"default {OUT.relative_to(ROOT)}")
    parser.add_argument("--table", action="store_true", help="only write population.md and the figures from what exists")
    args = parser.parse_args()
    OUT = args.out.resolve()
    populations = args.populations.split(",")
    if set(populations) - set(POPULATIONS):
        parser.error(f"--populations: unknown {', '.join(sorted(set(populations) - set(POPULATIONS)))}")
    if not args.table:
        run_missing(populations, args.methods.split(","), [int(s) for s in args.seeds.split(",")], args.sets)
    OUT.mkdir(parents=True, exist_ok=True)
    text = table()
    (OUT / "population.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
