"""The compression frontier: FedAvg and GENE-FL with payload codecs, on the newcomer study's scenarios.

Every (scenario, model, variant, seed) is one `genefl run` (one torch thread), written to
benchmarks/results/frontier/<scenario>_<model>/<variant>/seed<s>/ and skipped when its results.json
exists, so the script can be stopped and started again and finishes config by config. `--table`
then writes frontier.md (mean ± sd over the seeds found: training-client accuracy, newcomer
accuracy, total MB, MB to initialise a newcomer, and the reduction against FedAvg fp32; then both
accuracies seed by seed) and one
figure per scenario and model (training-client and newcomer accuracy against total MB, newcomer
accuracy against MB to initialise a newcomer with the study's starts beside the runs; log scale,
Pareto front marked).

`--starts` runs the plain `fedavg` and `genefl` variants keeping what each newcomer was sent
(`newcomer_starts.pt`, not committed: 1-3 MB a run; the same run as without it, the same results),
re-running those whose starts are missing. `--newcomers` then re-starts every newcomer of every seed
whose two runs kept their starts, in the groups that --scenarios and --models name, from each start
of the newcomer study (the learnGene, FedAvg's global model, and both through the
int8/int4/int3/int2 codecs, ...; `genefl.experiments.study`), one fine-tuning each, and writes
`<scenario>_<model>/newcomers/study.md` and `starts.md`: every start's last-epoch accuracy paired
against the FedAvg-initialised newcomer over all seeds' newcomers. `--starts --variants genefl_output`
keeps the output-side learnGene's starts as well (GENE-FL with `genefl.gene_selection = "output"`); the
study adds that start (`genefl_output`) where every seed has it.

Usage:
  GENEFL_DATA=../shared/data python benchmarks/codec_frontier.py --models cnn,lenet5 --seeds 0
  GENEFL_DATA=../shared/data python benchmarks/codec_frontier.py --starts --newcomers --models cnn --seeds 0,1,2 --variants fedavg,genefl
  python benchmarks/codec_frontier.py --table
  GENEFL_DATA=../shared/data python benchmarks/codec_frontier.py --pairs --scenarios fashion_alpha0.1 --models cnn --seeds 0,1,2

`--pairs` remakes the uncompressed GENE-FL runs on this machine under benchmarks/results/frontier_pairs/
and writes pairs.md there: each codec variant minus its same-machine uncompressed run, seed by seed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "frontier"
# uncompressed GENE-FL runs remade beside the codec runs they are paired with (a 2-bit run's trajectory
# moves by points between machines, an fp32 one by less but not nothing: pair on one machine)
PAIRS = ROOT / "benchmarks" / "results" / "frontier_pairs"
CODEC8 = ["codec.signature=fp16"]
# variant label -> its --set overrides (besides the scenario's config)
VARIANTS = {
    "fedavg": ["method=fedavg"],
    "fedavg_int8": ["method=fedavg", "codec.up=int8", "codec.down=int8"],
    "fedavg_int4": ["method=fedavg", "codec.up=int4", "codec.down=int4"],
    "fedavg_qsgd": ["method=fedavg", "codec.up=qsgd", "codec.down=int8"],
    "fedavg_top10_ef": ["method=fedavg", "codec.up=topk", "codec.topk=0.1", "codec.error_feedback=true", "codec.down=int8"],
    "fedavg_top1_ef": ["method=fedavg", "codec.up=topk", "codec.topk=0.01", "codec.error_feedback=true", "codec.down=int4"],
    "genefl": ["method=genefl"],
    "genefl_int8": ["method=genefl", "codec.up=int8", "codec.down=int8", *CODEC8],
    "genefl_int4": ["method=genefl", "codec.up=int4", "codec.down=int4", *CODEC8],
    "genefl_int2": ["method=genefl", "codec.up=int2", "codec.down=int4", *CODEC8],
    "genefl_int2_both": ["method=genefl", "codec.up=int2", "codec.down=int2", *CODEC8],
    "genefl_int2_min0": ["method=genefl", "codec.up=int2", "codec.down=int2", *CODEC8, "codec.min_numel=0"],
    "genefl_int2_min0_ef": ["method=genefl", "codec.up=int2", "codec.down=int2", *CODEC8, "codec.min_numel=0",
                            "codec.error_feedback=true"],
    "genefl_up2_down3_min0": ["method=genefl", "codec.up=int2", "codec.down=int3", *CODEC8, "codec.min_numel=0"],
    # the control for the one above: is it the broadcast's bits that matter, or any third bit?
    "genefl_up3_down2_min0": ["method=genefl", "codec.up=int3", "codec.down=int2", *CODEC8, "codec.min_numel=0"],
    "genefl_int2_seed": ["method=genefl", "codec.up=int2", "codec.down=int4", *CODEC8, "first_contact=seed"],
    # broadcasts as the change from each client's last upload (codec.down_delta): the 2-bit broadcast's error
    # is then a fraction of the change's range instead of the weights'
    "genefl_int2_delta": ["method=genefl", "codec.up=int2", "codec.down=int2", *CODEC8, "codec.min_numel=0",
                          "codec.down_delta=true"],
    "genefl_up3_down2_delta": ["method=genefl", "codec.up=int3", "codec.down=int2", *CODEC8, "codec.min_numel=0",
                               "codec.down_delta=true"],
    # MNIST's CNN (11-14 clusters of 20 clients) lost 2-4 points with 2-bit broadcast changes: the third bit back on the broadcast
    "genefl_up2_down3_delta": ["method=genefl", "codec.up=int2", "codec.down=int3", *CODEC8, "codec.min_numel=0",
                               "codec.down_delta=true"],
    "fedavg_int2_delta": ["method=fedavg", "codec.up=int2", "codec.down=int2", "codec.min_numel=0", "codec.down_delta=true"],
    "fedavg_int4_delta": ["method=fedavg", "codec.up=int4", "codec.down=int4", "codec.down_delta=true"],
    "flearngene": ["method=flearngene"],
    "fedper": ["method=fedper"],
    # the output-side learnGene (the original Learngene's choice: the last body layers) at GENE-FL's budget;
    # the input side is the sensitivity-chosen window itself on both models ({conv1, conv2} in every run here)
    "genefl_output": ["method=genefl", "genefl.gene_selection=output"],
}
SCENARIOS = ("fashion_alpha0.1", "fashion_alpha0.5", "mnist_alpha0.1")
STARTED = ("fedavg", "genefl")  # the runs whose newcomers' starts `--starts` keeps (the study needs both)
EXTRA_STARTS = ("genefl_output",)  # kept too when --starts names them; the study then adds their start
STARTS_FILE = "newcomer_starts.pt"  # genefl.experiments.starts.STARTS_FILE


def run_missing(scenarios: list[str], models: list[str], variants: list[str], seeds: list[int], starts: bool,
                out: Path = OUT) -> None:
    """Every (scenario, model, variant, seed) run missing under `out` (PAIRS for `--pairs`)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for seed in seeds:
        for scenario in scenarios:
            for model in models:
                for label in variants:
                    folder = out / f"{scenario}_{model}" / label / f"seed{seed}"
                    keep = starts and label in (*STARTED, *EXTRA_STARTS)
                    if (folder / "results.json").exists() and (not keep or (folder / STARTS_FILE).exists()):
                        continue
                    sets = [f"model={model}", f"seed={seed}", "checkpoint_every=0", *VARIANTS[label]]
                    config = str(ROOT / "configs" / f"newcomers_{scenario}.toml")
                    if keep:  # the same run through the comparison runner, which records the starts
                        cmd = [sys.executable, __file__, "--one", str(folder), "--config", config, *sets]
                    else:
                        cmd = [sys.executable, "-m", "genefl.cli", "run", "--config", config,
                               *[a for s in sets for a in ("--set", s)], "--out", str(folder), "--force"]
                    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                    status = "finished" if proc.returncode == 0 else f"failed ({proc.stderr.strip().splitlines()[-1:]})"
                    print(f"{status}: {folder.relative_to(ROOT)}", flush=True)


def summary_of(folder: Path) -> dict | None:
    path = folder / "results.json"
    return json.loads(path.read_text())["summary"] if path.exists() else None


def by_seed_text(values: dict[str, float], spec: str) -> str:
    """`{"seed0": 74.6, "seed1": 71.0}` -> "0: 74.6, 1: 71.0" (each value formatted with `spec`)."""
    return ", ".join(f"{seed.removeprefix('seed')}: {v:{spec}}" for seed, v in values.items())


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def table() -> str:
    lines = []
    for group in sorted(p for p in OUT.iterdir() if p.is_dir()):
        by_seed = {label: {f.name: s for f in sorted((group / label).glob("seed*")) if (s := summary_of(f))}
                   for label in VARIANTS if (group / label).is_dir()}
        by_seed = {k: v for k, v in by_seed.items() if v}
        runs = {k: list(v.values()) for k, v in by_seed.items()}
        if "fedavg" not in runs:
            continue
        base = statistics.fmean(s["bytes_total"] for s in runs["fedavg"])
        lines += [f"### {group.name}", "",
                  "| variant | seeds | training clients | newcomers, last epoch | total MB | x less than FedAvg fp32 | MB to init a newcomer "
                  "| training clients, by seed (%) | newcomers, by seed (%) |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for label, summaries in runs.items():
            acc, acc_sd = mean_sd([s["acc_clients"] for s in summaries])
            new, new_sd = mean_sd([s["acc_newcomers_last_epoch"] for s in summaries])
            total = statistics.fmean(s["bytes_total"] for s in summaries)
            init = statistics.fmean(s["bytes_newcomer_init_mean"] for s in summaries)
            clients = by_seed_text({seed: 100 * s["acc_clients"] for seed, s in by_seed[label].items()}, ".1f")
            newcomers = by_seed_text({seed: 100 * s["acc_newcomers_last_epoch"] for seed, s in by_seed[label].items()}, ".1f")
            lines.append(f"| {label} | {len(summaries)} | {acc:.3f} ± {acc_sd:.3f} | {new:.3f} ± {new_sd:.3f} | "
                         f"{total / 1e6:.2f} | {base / total:.1f} | {init / 1e6:.4f} | {clients} | {newcomers} |")
        lines.append("")
        plot(group, runs)
    return "\n".join(lines)


def pareto(points: list[tuple[float, float, str]]) -> set[str]:
    """Labels not dominated: no other point has fewer bytes and at least the accuracy (or equal
    bytes and more accuracy)."""
    front = set()
    for b, a, label in points:
        if not any((b2 <= b and a2 >= a) and (b2, a2) != (b, a) for b2, a2, _ in points):
            front.add(label)
    return front


def study_starts(group: Path) -> list[tuple[float, float, str]]:
    """(init MB, last-epoch accuracy, start) of every newcomer start the group's study tried (none
    before `--newcomers` ran)."""
    path = group / "newcomers" / "study.json"
    if not path.exists():
        return []
    rows = json.loads(path.read_text())["analysis"]["rows"]
    return [(row["init_bytes"] / 1e6, row["last"], f"start:{row['start']}") for row in rows if row["init_bytes"] > 0]


def plot(group: Path, runs: dict[str, list[dict]]) -> None:
    """Three panels, log MB, Pareto front marked: training clients and newcomers against total MB, and
    newcomers against the MB a newcomer exchanges before it trains (with the study's starts, when run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def mean(v: list[dict], key: str) -> float:
        return statistics.fmean(s[key] for s in v)

    panels = (("bytes_total", "acc_clients", "training clients", "total MB sent (log)"),
              ("bytes_total", "acc_newcomers_last_epoch", "newcomers (last epoch)", "total MB sent (log)"),
              ("bytes_newcomer_init_mean", "acc_newcomers_last_epoch", "newcomers (last epoch)", "MB to init a newcomer (log)"))
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.4))
    for ax, (x, y, title, xlabel) in zip(axes, panels):
        points = [(mean(v, x) / 1e6, mean(v, y), k) for k, v in runs.items()]
        if x == "bytes_newcomer_init_mean":
            points += study_starts(group)
        front = pareto(points)
        for mb, acc, label in points:
            marker = "^" if label.startswith("start:") else "o" if label.startswith("genefl") else "s"
            ax.scatter(mb, acc, marker=marker, color="C1" if label in front else "C0")
            ax.annotate(label, (mb, acc), fontsize=6, xytext=(3, 3), textcoords="offset points")
        line = sorted((mb, acc) for mb, acc, label in points if label in front)
        ax.plot([p[0] for p in line], [p[1] for p in line], color="C1", lw=1, ls="--", label="Pareto front")
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("accuracy")
        ax.set_title(f"{group.name}: {title}", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(group / "frontier.png", dpi=120)
    plt.close(fig)


def run_one_keeping_starts(folder: Path, config_path: str, sets: list[str]) -> None:
    import shutil

    from genefl.config import load_config
    from genefl.experiments.comparison import run_one

    config = load_config(config_path, sets)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    run_one(config, folder, folder.parent.name, record_starts=True)


def newcomers(seeds: list[int], groups: list[str]) -> None:
    """The newcomer study's starts on every group named (`<scenario>_<model>`) whose fedavg and genefl runs kept their starts."""
    from genefl.config import load_config
    from genefl.experiments.comparison import Variant
    from genefl.experiments.study import add_run_bytes, analyse, metric, study_seed, t_interval, write_report

    for group in sorted(p for p in OUT.iterdir() if p.is_dir() and p.name in groups):
        found = [s for s in seeds if all((group / m / f"seed{s}" / STARTS_FILE).exists() for m in STARTED)]
        if not found:
            continue
        extra = [label for label in EXTRA_STARTS if all((group / label / f"seed{s}" / STARTS_FILE).exists() for s in found)]
        records = []
        for s in found:
            config = load_config(group / "genefl" / f"seed{s}" / "config.toml")
            records += study_seed(config, group, 1, tuple(Variant(label, "genefl", {}) for label in extra))
        analysis = analyse(records)
        add_run_bytes(analysis, group, extra, found)
        write_report(analysis, records, group, found)
        key = {(r["seed"], r["newcomer"], r["start"]): r for r in records}
        pairs = sorted({(r["seed"], r["newcomer"]) for r in records})
        lines = [f"### {group.name}: newcomer starts against the FedAvg-initialised newcomer (seeds {','.join(map(str, found))}, "
                 f"{len(pairs)} newcomers, last epoch, paired, 95% t-interval)", "",
                 "| start | init kB | acc. last epoch | vs global (points) |", "|---|---|---|---|"]
        for row in analysis["rows"]:
            diffs = [metric(key[(s, c, row["start"])], "last") - metric(key[(s, c, "global")], "last") for s, c in pairs
                     if (s, c, row["start"]) in key and (s, c, "global") in key]
            mean, ci = t_interval(diffs) if diffs and row["start"] != "global" else (0.0, 0.0)
            vs = "-" if row["start"] == "global" else f"{100 * mean:+.2f} ± {100 * ci:.2f}"
            lines.append(f"| {row['start']} | {row['init_bytes'] / 1e3:.1f} | {100 * row['last']:.2f} | {vs} |")
        (group / "newcomers" / "starts.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines), flush=True)


def last_evaluations(folder: Path, count: int = 3) -> float:
    """Training-client accuracy averaged over a run's last `count` evaluated rounds (rounds.csv): less
    at the mercy of one round's swing than the final accuracy alone."""
    with open(folder / "rounds.csv") as f:
        accs = [float(r["acc_clients"]) for r in csv.DictReader(f) if r["acc_clients"]]
    return statistics.fmean(accs[-count:])


def pairs_table() -> str:
    """PAIRS/pairs.md: every GENE-FL variant's (each codec, and `genefl_output`, the output-side learnGene)
    training-client accuracy minus the uncompressed GENE-FL run
    of the same scenario, model and seed made on the same machine (PAIRS/<group>/genefl/seed<s>/, run with
    `--pairs`), per seed, with the mean, sd and the number of seeds within 1 point; then the difference
    over the last three evaluations (rounds 24, 27 and 30 of these runs), by seed and on the mean, and the
    newcomers' mean difference after the last epoch."""
    lines = []
    for group in sorted(p for p in PAIRS.iterdir() if p.is_dir()):
        base = {f.name: s for f in sorted((group / "genefl").glob("seed*")) if (s := summary_of(f))}
        rows = []
        for label in VARIANTS:
            if not label.startswith("genefl_") or not (OUT / group.name / label).is_dir():
                continue
            runs = {seed: s for seed in sorted(base) if (s := summary_of(OUT / group.name / label / seed))}
            diffs = {seed: 100 * (s["acc_clients"] - base[seed]["acc_clients"]) for seed, s in runs.items()}
            if diffs:
                sizes = [s["bytes_total"] for s in runs.values()]
                fedavg = summary_of(OUT / group.name / "fedavg" / "seed0")
                ratio = f"{fedavg['bytes_total'] / statistics.fmean(sizes):.1f}" if fedavg else "-"
                mean, sd = mean_sd(list(diffs.values()))
                late = {seed: 100 * (last_evaluations(OUT / group.name / label / seed) - last_evaluations(group / "genefl" / seed))
                        for seed in runs}
                newcomers = statistics.fmean(100 * (s["acc_newcomers_last_epoch"] - base[seed]["acc_newcomers_last_epoch"])
                                             for seed, s in runs.items())
                rows.append(f"| {label} | {ratio} | {by_seed_text(diffs, '+.2f')} | "
                            f"{mean:+.2f} ± {sd:.2f} | {sum(abs(v) <= 1 for v in diffs.values())} of {len(diffs)} | "
                            f"{by_seed_text(late, '+.2f')} | {statistics.fmean(late.values()):+.2f} | "
                            f"{newcomers:+.2f} |")
        if rows:
            lines += [f"### {group.name}", "", "| variant | x less than FedAvg fp32 | variant − uncompressed GENE-FL, by seed (points) "
                      "| mean ± sd | seeds within 1 point | last 3 evaluations, by seed | mean, last 3 evaluations "
                      "| newcomers, mean |", "|---|---|---|---|---|---|---|---|", *rows, ""]
    return "\n".join(lines)


def main() -> None:
    if sys.argv[1:2] == ["--one"]:  # internal: one run keeping its starts (a subprocess of run_missing)
        folder, _, config_path, *sets = sys.argv[2:]
        run_one_keeping_starts(Path(folder), config_path, sets)
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default="fashion_alpha0.1", help=f"comma-separated, of {', '.join(SCENARIOS)}")
    parser.add_argument("--models", default="cnn,lenet5")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated labels of VARIANTS")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--table", action="store_true", help="only write frontier.md and the figures from what exists")
    parser.add_argument("--starts", action="store_true", help="keep the fedavg and genefl runs' newcomer starts")
    parser.add_argument("--newcomers", action="store_true", help="then re-start their newcomers from every study start (the --scenarios x --models groups)")
    parser.add_argument("--pairs", action="store_true",
                        help="run the uncompressed genefl runs of --scenarios x --models x --seeds into frontier_pairs/ "
                             "(beside codec runs made on this machine), then write frontier_pairs/pairs.md")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.pairs:  # the uncompressed GENE-FL runs `pairs_table` pairs codec runs with, made on this machine
        run_missing(args.scenarios.split(","), args.models.split(","), ["genefl"], seeds, starts=False, out=PAIRS)
        PAIRS.mkdir(parents=True, exist_ok=True)
        text = pairs_table()
        (PAIRS / "pairs.md").write_text(text + "\n")
        print(text)
        return
    if not args.table:
        unknown = sorted(set(args.variants.split(",")) - set(VARIANTS))
        if unknown:
            parser.error(f"unknown variants: {', '.join(unknown)}")
        run_missing(args.scenarios.split(","), args.models.split(","), args.variants.split(","), seeds, args.starts)
    if args.newcomers:
        newcomers(seeds, [f"{s}_{m}" for s in args.scenarios.split(",") for m in args.models.split(",")])
    OUT.mkdir(parents=True, exist_ok=True)
    text = table()
    (OUT / "frontier.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
