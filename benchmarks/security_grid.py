"""Attacks against defences: every (attack, attacker fraction, method, defence, seed) as one `genefl run`.

Each cell is one run at one torch thread, written to
OUT/<attack>/<method>_<defence>/f<fraction>/seed<s>/ and skipped when its results.json exists, so
the script can be stopped and started again and finishes cell by cell; several copies started on the
same OUT (one per core) share the cells, each claiming one at a time. Fraction 0 is the clean run
(no attacker), shared by every attack: OUT/clean/<method>_<defence>/seed<s>/. Every call (`--table`: only this)
then writes, over every cell in OUT, OUT/grid.md (per attack, method and defence: training-client accuracy and its difference from the
method's clean run without a defence (paired by seed; after the last round, and over the last three
evaluations), newcomer accuracy after the last epoch, the backdoor's success on
the honest training clients, on the newcomers and on the newcomers placed in a cluster holding an
attacker, total MB; mean over the seeds found, per fraction) and OUT/<attack>.png (training-client accuracy, or for the
backdoor its success on the newcomers, against the attacker fraction: one line per method x defence, each
averaged over the seeds it has at every one of its fractions, named in the legend).

Defences are `defence.aggregator` values (`trimmed_mean` with `defence.trim` = `--trim`, 0.25 by default:
genefl's own default 0.1 trims 2 of 20 updates, fewer than 20% attackers; `krum` and `multikrum` with
`defence.byzantine` = `--byzantine`; `cosine`), plus `normbound` (the mean of
changes clipped to `defence.norm_bound`, `--norm-bound`), the standard backdoor defence without the noise,
`reputation` (the mean with `defence.reputation`: clients whose mean cosine with the median change
over their rounds is negative are left out), `reputation_normbound` (both), and `reputation_trusted`,
`reputation_trusted_normbound` (the same with `defence.reputation_reference = "trusted"`: scored against
the median of the clients not yet left out). Any defence whose aggregator is not the mean (not `mean`,
`normbound`, `reputation*` or `absent`) takes a
`_bucket<s>` suffix (`median_bucket2`): `defence.bucket` = s, the aggregator run on the means of seeded
buckets of s updates.
`absent` is not a defence but the reference for one: the attackers never take part (a trace file has
them offline every round, `population.availability = "trace"`; they still enrol in Stage 0 and are
still evaluated), which is what a defence that found every attacker and nothing else would leave.
The table gives `acc_clients_honest` beside `acc_clients`: the training clients that do not attack, and
their difference from the same clients in the clean undefended run of the same seed (its results.json's
`acc_by_client`; runs written before that key existed give "-").

Usage:
  GENEFL_DATA=../shared/data python benchmarks/security_grid.py --config configs/newcomers_fashion_alpha0.1.toml \\
      --set model=lenet5 --out benchmarks/results/security/fashion_alpha0.1_lenet5 --seeds 0
  python benchmarks/security_grid.py --out benchmarks/results/security/digits --table
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ATTACKS = ("signflip", "scale", "gaussian", "alie", "labelflip", "backdoor")
DEFENCES = ("mean", "median", "trimmed_mean", "krum", "multikrum", "cosine", "normbound", "reputation",
            "reputation_normbound", "reputation_trusted", "reputation_trusted_normbound", "absent")


BUCKETED = re.compile(r"(.+)_bucket(\d+)$")  # "median_bucket2": the median of buckets of 2


def known_defence(defence: str) -> bool:
    bucketed = BUCKETED.match(defence)
    return defence in DEFENCES or bool(bucketed and bucketed[1] in DEFENCES  # only where the aggregator is not the mean
                                       and bucketed[1] not in ("mean", "normbound", "absent") and not bucketed[1].startswith("reputation"))


def defence_sets(defence: str, args) -> list[str]:
    if bucketed := BUCKETED.match(defence):
        return [*defence_sets(bucketed[1], args), f"defence.bucket={int(bucketed[2])}"]
    if defence == "absent":  # the trace file is per cell and seed: `absent_trace`
        return ["defence.aggregator=mean", "population.availability=trace"]
    if defence == "normbound":
        return ["defence.aggregator=mean", f"defence.norm_bound={args.norm_bound}"]
    if defence.startswith("reputation"):  # reputation[_trusted][_normbound]
        sets = ["defence.aggregator=mean", "defence.reputation=true"]
        if "_trusted" in defence:
            sets.append("defence.reputation_reference=trusted")
        if defence.endswith("_normbound"):
            sets.append(f"defence.norm_bound={args.norm_bound}")
        return sets
    if defence == "trimmed_mean":
        return ["defence.aggregator=trimmed_mean", f"defence.trim={args.trim}"]
    if defence in ("krum", "multikrum"):
        return [f"defence.aggregator={defence}", f"defence.byzantine={args.byzantine}"]
    return [f"defence.aggregator={defence}"]


def method_of(label: str) -> str:
    """A cell label's method: the label less its defence ("my_method_trimmed_mean" -> "my_method")."""
    label = BUCKETED.sub(r"\1", label)
    for defence in sorted(DEFENCES, key=len, reverse=True):  # "trimmed_mean" before "mean"
        if label.endswith("_" + defence):
            return label[:-len(defence) - 1]
    return label


def absent_trace(folder: Path, config_file: str, sets: list[str], fraction: float) -> Path:
    """A trace file with every client online in every round but the run's attackers (never online)."""
    from genefl.config import load_config
    from genefl.protocol.adversary import attackers
    from genefl.protocol.population import TRACE_HEADER

    config = load_config(config_file or None, [s for s in sets if not s.startswith("population.")])
    bad = attackers(config.seed, config.num_clients, fraction)
    path = folder.parent / f"{folder.name}.trace.csv"
    rows = [f"{cid},1,{config.rounds}" for cid in range(config.num_clients + config.num_newcomers) if cid not in bad]
    path.write_text("\n".join([",".join(TRACE_HEADER), *rows]) + "\n")
    return path


def cell(out: Path, attack: str, label: str, fraction: float) -> Path:
    """The folder of one (attack, method_defence label, fraction) cell's seeds; fraction 0 is the clean run."""
    return out / "clean" / label if fraction == 0 else out / attack / label / f"f{fraction:g}"


def claim_file(folder: Path) -> Path:
    return folder.parent / f".{folder.name}.claim"


def claim(folder: Path) -> bool:
    """Take a cell for this worker (False: another worker has it). Workers started on the same --out
    share the grid this way, one cell each at a time; a worker killed mid-cell leaves its claim
    behind (delete OUT/**/.seed*.claim before starting again)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(claim_file(folder), os.O_CREAT | os.O_EXCL))
        return True
    except FileExistsError:
        print(f"taken by another worker: {folder}", flush=True)
        return False


def run_missing(args, sets: list[str]) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    for seed in args.seeds:
        for fraction in args.fractions:
            for attack in (args.attacks if fraction else ["clean"]):
                for method in args.methods:
                    for defence in args.defences:
                        folder = cell(args.out, attack, f"{method}_{defence}", fraction) / f"seed{seed}"
                        if (folder / "results.json").exists() or not claim(folder):
                            continue
                        cell_sets = [*sets, f"method={method}", f"seed={seed}", "checkpoint_every=0",
                                     *defence_sets(defence, args)]
                        if fraction:
                            cell_sets += [f"adversary.kind={attack}", f"adversary.fraction={fraction}"]
                        if defence == "absent":
                            trace = absent_trace(folder, args.config, cell_sets, fraction)
                            cell_sets.append(f"population.trace_file={trace}")
                        cmd = [sys.executable, "-m", "genefl.cli", "run", *(["--config", args.config] if args.config else []),
                               *[a for s in cell_sets for a in ("--set", s)], "--out", str(folder), "--force"]
                        try:
                            proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                        finally:
                            claim_file(folder).unlink()
                        status = "finished" if proc.returncode == 0 else f"failed ({proc.stderr.strip().splitlines()[-1:]})"
                        print(f"{status}: {folder}", flush=True)


def summaries(folder: Path) -> list[dict]:
    """Each seed's results.json summary, plus `backdoor_success_poisoned_cluster`: the backdoor's mean success on
    the newcomers placed in a cluster that holds an attacker (clustered methods' backdoor runs; None otherwise),
    and `acc_clients_late`: training-client accuracy averaged over the last three evaluations (rounds 24, 27
    and 30 of the study's scenario), less sensitive than the last one alone to where a run that swings
    from round to round happens to stop."""
    found = []
    for path in sorted(folder.glob("seed*/results.json")):
        doc = json.loads(path.read_text())
        info = doc.get("method_info", {})
        attackers = set(info.get("adversary", {}).get("attackers", []))
        cluster_of = info.get("cluster_of")
        poisoned = None
        if cluster_of and attackers:
            hit = {cluster_of[str(a)] for a in attackers if str(a) in cluster_of}
            values = [n["backdoor_success"] for n in doc["newcomers"]
                      if n.get("backdoor_success") is not None and n.get("cluster") in hit]
            poisoned = statistics.fmean(values) if values else None
        evaluated = [r["acc_clients"] for r in doc.get("rounds", []) if r.get("acc_clients") is not None]
        late = statistics.fmean(evaluated[-3:]) if evaluated else None
        found.append({**doc["summary"], "backdoor_success_poisoned_cluster": poisoned, "seed": doc["seed"],
                      "acc_clients_late": late, "acc_by_client": doc.get("acc_by_client"), "attackers": attackers})
    return found


def mean_of(found: list[dict], key: str) -> float | None:
    values = [s[key] for s in found if s.get(key) is not None]
    return statistics.fmean(values) if values else None


def labels_in(out: Path, attacks: list[str]) -> list[str]:
    """Every method_defence with a folder under OUT/clean or OUT/<attack> (a defence may be run only under attack)."""
    return sorted({p.name for d in (out / "clean", *(out / a for a in attacks)) if d.is_dir() for p in d.iterdir() if p.is_dir()})


def collect(out: Path, attack: str, fractions: list[float]) -> dict[tuple[str, float], dict]:
    """(method_defence, fraction) -> mean summary fields over the seeds found."""
    rows = {}
    for label in labels_in(out, [attack]):
        for fraction in fractions:
            found = summaries(cell(out, attack, label, fraction))
            if not found:
                continue
            rows[(label, fraction)] = {"seeds": len(found), "found": found, **{k: mean_of(found, k) for k in (
                "acc_clients", "acc_clients_honest", "acc_newcomers_last_epoch", "backdoor_success", "backdoor_success_newcomers",
                "backdoor_success_poisoned_cluster", "bytes_total")}}
    return rows


def clean_by_seed(rows: dict, label: str) -> dict[int, dict]:
    """Seed -> summary of the clean undefended run of the method `label` belongs to: what its cells are set against."""
    return {s["seed"]: s for s in rows.get((method_of(label) + "_mean", 0.0), {}).get("found", [])}


def versus_clean(rows: dict, label: str, r: dict, key: str = "acc_clients") -> float | None:
    """Training-client accuracy (`key`: `acc_clients` after the last round, or `acc_clients_late` over the
    last three evaluations) minus the same of the method's clean undefended run, paired by seed (mean over
    the seeds both have)."""
    clean = {seed: s.get(key) for seed, s in clean_by_seed(rows, label).items()}
    pairs = [s[key] - clean[s["seed"]] for s in r["found"] if s.get(key) is not None and clean.get(s["seed"]) is not None]
    return statistics.fmean(pairs) if pairs else None


def honest_versus_clean(rows: dict, label: str, r: dict) -> float | None:
    """The honest clients' accuracy minus the same clients' in the method's clean undefended run of the same
    seed (from its results.json's `acc_by_client`; mean over the seeds both have). Unlike `versus_clean`,
    the attackers' own accuracy is left out on both sides: a defence that leaves them out is not charged
    for what a model that never learnt their data scores on their tests."""
    clean = {seed: s["acc_by_client"] for seed, s in clean_by_seed(rows, label).items()}
    pairs = []
    for s in r["found"]:
        honest, attackers = s.get("acc_clients_honest"), s["attackers"]
        before = [a for c, a in (clean.get(s["seed"]) or {}).items() if int(c) not in attackers and a is not None]
        if attackers and honest is not None and before:
            pairs.append(honest - statistics.fmean(before))
    return statistics.fmean(pairs) if pairs else None


def fractions_found(out: Path) -> list[float]:
    """Every attacker fraction with a cell in OUT (OUT/<attack>/<label>/f<fraction>), and 0 (the clean runs)."""
    return sorted({0.0} | {float(p.name[1:]) for p in out.glob("*/*/f*") if p.is_dir()})


def pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.1f}"


def table(out: Path, attacks: list[str], fractions: list[float]) -> str:
    lines = []
    for attack in attacks:
        rows = collect(out, attack, fractions)
        if not any(f for _, f in rows):
            continue
        lines += [f"### {attack}", "",
                  "| method_defence | attackers | seeds | training clients | vs clean, no defence | vs clean, last 3 evaluations | "
                  "honest clients | honest vs the same clients clean | newcomers, last epoch | backdoor: clients | "
                  "backdoor: newcomers | backdoor: newcomers of a poisoned cluster | total MB |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for (label, fraction), r in sorted(rows.items()):
            versus, late = (versus_clean(rows, label, r, key) for key in ("acc_clients", "acc_clients_late"))
            honest = honest_versus_clean(rows, label, r)
            versus, late, honest = ("-" if v is None else f"{100 * v:+.1f}" for v in (versus, late, honest))
            lines.append(f"| {label} | {fraction:.0%} | {r['seeds']} | {pct(r['acc_clients'])} | {versus} | {late} | "
                         f"{pct(r['acc_clients_honest'])} | {honest} | "
                         f"{pct(r['acc_newcomers_last_epoch'])} | "
                         f"{pct(r['backdoor_success'])} | {pct(r['backdoor_success_newcomers'])} | "
                         f"{pct(r['backdoor_success_poisoned_cluster'])} | {r['bytes_total'] / 1e6:.2f} |")
        lines.append("")
        plot(out, attack, rows)
    return "\n".join(lines)


def by_seed(out: Path, attacks: list[str], fraction: float, seeds: list[int]) -> str:
    """OUT/summary.md: per method x defence and seed (values joined by "; "), the clean run's accuracy, each
    attack's training-client accuracy at `fraction` minus the same seed's clean undefended run, and the
    backdoor's success on the honest clients and the newcomers."""
    def per_seed(folder: Path) -> list[dict | None]:
        found = {s["seed"]: s for s in summaries(folder)}  # each folder read once, not once per seed
        return [found.get(seed) for seed in seeds]

    def joined(values) -> str:
        return "; ".join("-" if v is None else v for v in values)

    lines = [f"| method_defence | clean (seeds {', '.join(map(str, seeds))}) | "
             + " | ".join(f"{a}, {fraction:.0%}" for a in attacks) + " | backdoor: clients | backdoor: newcomers |",
             "|---" * (len(attacks) + 4) + "|"]
    for label in labels_in(out, attacks):
        clean = per_seed(cell(out, "", label, 0))
        reference = per_seed(cell(out, "", method_of(label) + "_mean", 0))
        cells = [joined(pct(c["acc_clients"]) if c else None for c in clean)]
        for attack in attacks:
            attacked = per_seed(cell(out, attack, label, fraction))
            cells.append(joined(f"{100 * (a['acc_clients'] - r['acc_clients']):+.1f}" if a and r else None
                                for a, r in zip(attacked, reference)))
        backdoor = per_seed(cell(out, "backdoor", label, fraction))
        for key in ("backdoor_success", "backdoor_success_newcomers"):
            cells.append(joined(pct(b[key]) if b else None for b in backdoor))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def line(rows: dict[tuple[str, float], dict], label: str, key: str, skip_clean: bool = False) -> tuple[list[int], list[tuple[float, float]]]:
    """A figure's line for one method_defence: the seeds it has at every one of its fractions, and (fraction, mean
    of `key` over those seeds) per fraction. One line, one set of seeds: a point averaged over three seeds beside
    one of a single seed would draw a slope that is only the seeds' difference. `skip_clean`: leave out fraction 0
    (a backdoor's success in the clean run is 0 by definition, not measured)."""
    cells = {f: r for (lab, f), r in rows.items() if lab == label and not (skip_clean and f == 0)}
    seeds = set.intersection(*({s["seed"] for s in r["found"] if s.get(key) is not None} for r in cells.values())) \
        if cells else set()
    if not seeds:
        return [], []
    return sorted(seeds), sorted((f, statistics.fmean(s[key] for s in r["found"] if s["seed"] in seeds)) for f, r in cells.items())


def plot(out: Path, attack: str, rows: dict[tuple[str, float], dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key, ylabel = (("backdoor_success_newcomers", "backdoor success on newcomers") if attack == "backdoor"
                   else ("acc_clients", "training-client accuracy"))
    fig, ax = plt.subplots(figsize=(9, 4.4))
    for i, label in enumerate(sorted({lab for lab, _ in rows})):
        seeds, points = line(rows, label, key, skip_clean=attack == "backdoor")
        if not points:
            continue
        style = "-" if label.startswith("genefl") else ":" if label.startswith("flearngene") else "--"
        ax.plot([100 * f for f, _ in points], [v for _, v in points], marker="os^D"[i // 10 % 4], ls=style, color=f"C{i % 10}",
                label=f"{label} (seed{'s' if len(seeds) > 1 else ''} {','.join(map(str, sorted(seeds)))})")
    ax.set_xlabel("attackers (% of training clients)")
    ax.set_ylabel(ylabel)
    ax.set_title(f"{out.name}: {attack}", fontsize=9)
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(out / f"{attack}.png", dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="", help="the scenario's config file (default: genefl's embedded digits default)")
    parser.add_argument("--set", action="append", default=[], dest="sets", help="KEY=VALUE for every cell (repeatable)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--attacks", default=",".join(ATTACKS))
    parser.add_argument("--methods", default="fedavg,genefl,flearngene")
    parser.add_argument("--defences", default=",".join(DEFENCES))
    parser.add_argument("--fractions", default="0,0.1,0.2,0.3")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--norm-bound", type=float, default=1.0, help="normbound: the L2 norm each change is clipped to")
    parser.add_argument("--trim", type=float, default=0.25,
                        help="trimmed_mean: the fraction dropped at each end (0.25 covers 5 attackers of 20, one of a cluster of 4)")
    parser.add_argument("--byzantine", type=int, default=1,
                        help="krum, multikrum: f, the attackers tolerated (genefl's default 1; 4 for 20%% of 20 clients)")
    parser.add_argument("--summary-fraction", type=float, default=0.0,
                        help="also write OUT/summary.md: every --seeds seed side by side at this attacker fraction")
    parser.add_argument("--table", action="store_true", help="only write grid.md and the figures from what exists "
                        "(every call writes them over every cell in OUT, whatever its --attacks and --fractions)")
    args = parser.parse_args()
    args.attacks, args.methods, args.defences = args.attacks.split(","), args.methods.split(","), args.defences.split(",")
    args.fractions = [float(f) for f in args.fractions.split(",")]
    args.seeds = [int(s) for s in args.seeds.split(",")]
    for name, unknown in (("attacks", set(args.attacks) - set(ATTACKS)),
                          ("defences", {d for d in args.defences if not known_defence(d)})):
        if unknown:
            parser.error(f"--{name}: unknown {', '.join(sorted(unknown))}")
    if not args.table:
        run_missing(args, args.sets)
    args.out.mkdir(parents=True, exist_ok=True)
    text = table(args.out, list(ATTACKS), fractions_found(args.out))  # the whole folder, whatever this call ran
    (args.out / "grid.md").write_text(text + "\n")
    if args.summary_fraction:
        (args.out / "summary.md").write_text(by_seed(args.out, args.attacks, args.summary_fraction, args.seeds))
    print(text)


if __name__ == "__main__":
    main()
