"""`genefl newcomers`: the newcomer study. Every start is tried on the identical newcomers.

For each seed it runs GENE-FL, FedAvg, the federated Learngene and PACFL on one scenario (plus any
other methods asked for, for the method table), records what each newcomer was sent on arrival
(`StartRecorder`), and then re-starts every newcomer from each of these starts:

    learngene       GENE-FL's learnGene for the newcomer's cluster (other layers fresh)
    global          FedAvg's global model at the newcomer's arrival
    random          nothing sent: every layer fresh
    fedavg_layers   the control: the learnGene's layers, taken from FedAvg's global model at arrival
                    (other layers fresh) - separates "which layers" from "what GENE-FL trained into them"
    flearngene      the federated Learngene's gene (the last body layers, other layers fresh)
    pacfl           PACFL's model of the newcomer's cluster
    global_int8/4/3/2  FedAvg's global model at arrival through the int8 / int4 / int3 / int2 codec (nearest
                    rounding, the study config's `codec.granularity` and `codec.min_numel`)
    learngene_int8/4  the learnGene likewise (plus its signature upload)

Init bytes are what the newcomer exchanged before it trained, as the run's ledger counted them (its
signature upload included); for the control and the quantized starts, the bytes of the message that
would carry them (plus the learnGene's signature upload where the start needs the cluster).

Fresh layers are the same seeded tensors for every start, and every start of a newcomer is
fine-tuned with the same protocol, batches and validation split (`genefl.protocol.newcomer`),
through the functions every client half's `welcome` uses (`ClientAlgorithm.start_newcomer`,
`genefl.algorithms.base.finetune_newcomer`), so the starts are paired: for each start the study
reports the mean paired difference to the learnGene start with a 95% t-interval over (seeds x
newcomers). Replicate 0 uses the very generator the run used, so on CPU the `learngene` and `global`
rows equal GENE-FL's and FedAvg's own newcomer numbers (tests/test_study.py); on CUDA the re-run
fine-tuning is not bit-identical, so they can differ slightly (up to 0.5 points for one newcomer at
one epoch in BENCHMARKS.md 4.2's CUDA studies). Replicates 1.. re-run the `learngene`, `global` and
`random` starts with other fine-tuning seeds: the noise floor.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .comparison import Variant, run_comparison, variant_config
from .starts import STARTS_FILE
from ..config import Config
from ..errors import ConfigError, GeneflError
from ..paths import shown, writing
from ..results import accuracy_in, integer_in, number_in, read_results
from ..protocol.compression import decode_message, encode_message
from ..protocol.messages import Broadcast, nbytes

STUDY_METHODS = ("genefl", "fedavg", "flearngene", "pacfl")
QUANTIZED = {"global": (8, 4, 3, 2), "learngene": (8, 4)}  # starts also tried through an int codec
STARTS = ("learngene", "global", "random", "fedavg_layers", "flearngene", "pacfl",
          *(f"{start}_int{bits}" for start, widths in QUANTIZED.items() for bits in widths))
REPLICATED = ("learngene", "global", "random")
METRICS = ("first", "last", "chosen")  # after epoch 1, after the last epoch, at the validation-chosen epoch


@dataclass(frozen=True)
class Start:
    tensors: dict[str, torch.Tensor]
    init_bytes: int


def starts_for(cid: int, recorded: dict[str, dict], ledger: dict[str, dict], codec, extra: tuple[str, ...] = ()) -> dict[str, Start]:
    """Newcomer `cid`'s starts, from the runs' recorded welcome messages (`recorded`) and their
    ledger rows (`ledger`: label -> newcomer id -> results.json newcomer row), plus one per extra
    variant (named by its label, e.g. `genefl[genefl.gene_budget=0.4]`). `codec`: the study config's
    codec options (for the quantized starts)."""
    def sent(method: str) -> Start:
        s = recorded[method][cid]
        row = ledger.get(method, {}).get(cid)
        return Start(s["tensors"], row["init_bytes"] if row else nbytes(Broadcast(tensors=s["tensors"], meta=s["meta"])))

    def quantized(start: Start, meta: dict, bits: int, signature: int) -> Start:
        packed = encode_message(Broadcast(tensors=start.tensors, meta=meta), f"int{bits}", codec, False, lambda s, n: None)
        return Start(decode_message(packed).tensors, signature + nbytes(packed))

    gene, fedavg = sent("genefl"), sent("fedavg")
    meta = recorded["genefl"][cid]["meta"]
    signature = ledger.get("genefl", {}).get(cid, {}).get("signature_bytes", 0)
    control = {k: fedavg.tensors[k] for k in gene.tensors}
    starts = {"learngene": gene, "global": fedavg, "random": Start({}, nbytes(Broadcast(meta={"init": "random"}))),
              "fedavg_layers": Start(control, signature + nbytes(Broadcast(tensors=control, meta=meta))),
              **{label: sent(label) for label in ("flearngene", "pacfl", *extra) if label in recorded}}
    for name, widths in QUANTIZED.items():
        source_meta = recorded["genefl" if name == "learngene" else "fedavg"][cid]["meta"]
        for bits in widths:
            starts[f"{name}_int{bits}"] = quantized(starts[name], source_meta, bits, signature if name == "learngene" else 0)
    return starts


def study_seed(config: Config, out: Path, replicates: int, extra: tuple[Variant, ...] = ()) -> list[dict]:
    """Fine-tune every newcomer of one seed from every start; one record per (newcomer, start, replicate)."""
    from ..algorithms.base import ClientAlgorithm, ClientEnv, finetune_newcomer
    from ..data.scenario import build_scenario
    from ..runtime.assembly import assemble

    scenario = build_scenario(config)
    parts = assemble(config, scenario.input_shape, scenario.num_classes)
    half = ClientAlgorithm()  # the start every client half makes: fresh seeded weights, what was sent on top
    folders = {m: m for m in STUDY_METHODS} | {v.label: v.folder for v in extra}
    recorded = {label: torch.load(out / folder / f"seed{config.seed}" / STARTS_FILE, weights_only=True)
                for label, folder in folders.items() if (out / folder / f"seed{config.seed}" / STARTS_FILE).exists()}
    ledger = {label: {row["id"]: row for row in json.loads((out / folders[label] / f"seed{config.seed}" / "results.json").read_text())["newcomers"]}
              for label in recorded if (out / folders[label] / f"seed{config.seed}" / "results.json").exists()}
    labels = tuple(v.label for v in extra if v.label in recorded)
    records = []
    for cid in sorted(recorded["genefl"]):
        arrival = recorded["genefl"][cid]["round"]
        env = ClientEnv(cid, arrival, parts.model, scenario.data(cid, arrival), {}, config, parts.spec, parts.layers)
        for name, start in starts_for(cid, recorded, ledger, config.codec, labels).items():
            for rep in range(replicates if name in REPLICATED else 1):
                half.start_newcomer(env, Broadcast(tensors=start.tensors))
                # replicate 0 is the run's own fine-tuning stream: the `learngene` row equals the run
                curve = finetune_newcomer(env, set(start.tensors), *(("replicate", rep) if rep else ()))
                records.append({"seed": config.seed, "newcomer": cid, "arrival_round": arrival, "start": name,
                                "replicate": rep, "init_bytes": start.init_bytes, "acc_init": curve.test[0],
                                "acc_by_epoch": curve.test[1:], "val_by_epoch": curve.val,
                                "chosen_epoch": curve.chosen_epoch})
    return records


def metric(record: dict, which: str) -> float:
    """After epoch 1, after the last epoch, at the validation-chosen epoch (0: as received). A study
    fine-tunes at least one epoch (`check_study`; `read_records` for edited files), so every record
    has them."""
    accs = record["acc_by_epoch"]
    return {"first": accs[0], "last": accs[-1], "chosen": metric_at(record, record["chosen_epoch"])}[which]


def t_interval(diffs: list[float]) -> tuple[float, float]:
    """(mean, half-width of the 95% t-interval)."""
    from scipy.stats import t

    n = len(diffs)
    mean = sum(diffs) / n
    if n < 2:
        return mean, math.inf
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    return mean, t.ppf(0.975, n - 1) * sd / math.sqrt(n)


def analyse(records: list[dict]) -> dict[str, Any]:
    """Per start: mean accuracies, init bytes, paired differences to `learngene`; the noise floor."""
    key = {(r["seed"], r["newcomer"], r["start"], r["replicate"]): r for r in records}
    pairs = sorted({(r["seed"], r["newcomer"]) for r in records})
    rows = {}
    for start in dict.fromkeys([*STARTS, *(r["start"] for r in records)]):
        mine = [key[(s, c, start, 0)] for s, c in pairs if (s, c, start, 0) in key]
        if not mine:
            continue
        row: dict[str, Any] = {"start": start, "n": len(mine),
                               "init_bytes": sum(r["init_bytes"] for r in mine) / len(mine),
                               "curve": [sum(metric_at(r, e) for r in mine) / len(mine) for e in range(_epochs(mine) + 1)]}
        for m in METRICS:
            row[m] = sum(metric(r, m) for r in mine) / len(mine)
            diffs = [metric(key[(s, c, start, 0)], m) - metric(key[(s, c, "learngene", 0)], m)
                     for s, c in pairs if (s, c, start, 0) in key and (s, c, "learngene", 0) in key]
            if start != "learngene" and diffs:  # none when the records hold no learngene start (an edited file)
                row[f"diff_{m}"], row[f"ci_{m}"] = t_interval(diffs)
        rows[start] = row
    return {"rows": list(rows.values()), "noise_floor": noise_floor(key, pairs)}


def metric_at(record: dict, epoch: int) -> float:
    return record["acc_init"] if epoch == 0 else record["acc_by_epoch"][epoch - 1]


def _epochs(records: list[dict]) -> int:
    return min(len(r["acc_by_epoch"]) for r in records)


def noise_floor(key: dict, pairs: list) -> dict[str, Any]:
    """The same start fine-tuned with another seed: the differences (replicate r - replicate 0) per
    metric, pooled over the replicated starts. `sd` is their spread; `ci_pure_noise` is the
    half-width a paired start comparison over these many newcomers would have from fine-tuning noise
    alone (sd / sqrt(n) * t): differences between starts smaller than it cannot be told from noise."""
    floor = {}
    for m in METRICS:
        diffs = [metric(key[(s, c, st, r)], m) - metric(key[(s, c, st, 0)], m)
                 for s, c in pairs for st in REPLICATED for r in range(1, 100) if (s, c, st, r) in key]
        if len(diffs) < 2:
            continue
        mean, _ = t_interval(diffs)
        sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1))
        from scipy.stats import t

        floor[m] = {"n": len(diffs), "sd": sd, "ci_pure_noise": t.ppf(0.975, max(len(pairs) - 1, 1)) * sd / math.sqrt(len(pairs))}
    return floor


RUN_OF = {"learngene": "genefl", "global": "fedavg", "flearngene": "flearngene", "pacfl": "pacfl"}  # start -> its run


def add_run_bytes(analysis: dict, out: Path, extra: list[str], seeds: list[int]) -> None:
    """Each start that comes from a method's run gets that run's total traffic (mean over seeds): the
    x axis of the communication/accuracy frontier. `extra`: labels of extra variants, each its own run."""
    folders = {**RUN_OF, **{label: Variant(label, label, {}).folder for label in extra}}
    for row in analysis["rows"]:
        folder = folders.get(row["start"])
        paths = [out / folder / f"seed{s}" / "results.json" for s in seeds] if folder else []
        totals = [read_results(p)["summary"].get("bytes_total") for p in paths if p.exists()]
        if paths and len(totals) == len(paths) and None not in totals:
            row["run_bytes"] = sum(totals) / len(totals)


def record_problem(r: Any) -> str | None:
    """What in one study.json record the analysis cannot use, or None."""
    if not isinstance(r, dict):
        return "a record is not a JSON object"
    if not (integer_in(r.get("seed"), -math.inf, math.inf) and integer_in(r.get("newcomer")) and isinstance(r.get("start"), str)
            and integer_in(r.get("replicate")) and number_in(r.get("init_bytes")) and r.get("init_bytes") is not None):
        return "a record without an integer seed, newcomer and replicate, a start name and init_bytes"
    accs = r.get("acc_by_epoch")
    if not (isinstance(accs, list) and accs and "acc_init" in r and all(accuracy_in(a) for a in [r["acc_init"], *accs])):
        return "a record without acc_init and at least one epoch in acc_by_epoch, accuracies in [0, 1] or NaN"
    if not integer_in(r.get("chosen_epoch"), 1, len(accs)):
        return "a record whose chosen_epoch is not one of its epochs"
    return None


def read_records(path: Path) -> list[dict]:
    try:
        records = json.loads(path.read_bytes().decode("utf-8"))["records"]
    except (OSError, UnicodeDecodeError, ValueError, RecursionError, KeyError, TypeError) as exc:
        raise GeneflError(f"{shown(str(path))}: not a readable newcomer study ({type(exc).__name__})") from None
    if not isinstance(records, list) or not records:
        found = "records is not a list" if not isinstance(records, list) else "it holds no records"
    else:
        found = next(filter(None, map(record_problem, records)), None)
    if found:
        raise GeneflError(f"{shown(str(path))}: not a genefl newcomer study ({found})")
    nan = lambda a: math.nan if a is None else a  # noqa: E731 (a null accuracy: an empty test split)
    return [{**r, "acc_init": nan(r["acc_init"]), "acc_by_epoch": [nan(a) for a in r["acc_by_epoch"]]} for r in records]


def study_records(out: Path) -> list[dict] | None:
    """The records of the study in `out`, checked (`read_records`), or None if it holds none."""
    path = out / "newcomers" / "study.json"
    return read_records(path) if path.exists() else None


def redraw(out: Path, records: list[dict] | None = None) -> Path | None:
    """`genefl plot DIR` for a study folder: the analysis, tables and plots again from the records."""
    records = records if records is not None else study_records(out)
    if records is None:
        return None
    analysis = analyse(records)
    seeds = sorted({r["seed"] for r in records})
    starts = {r["start"] for r in records} - set(STARTS)
    add_run_bytes(analysis, out, sorted(starts), seeds)
    write_report(analysis, records, out, seeds)
    return out / "newcomers" / "study.md"


def write_report(analysis: dict, records: list[dict], out: Path, seeds: list[int]) -> None:
    folder = out / "newcomers"
    with writing(folder):
        folder.mkdir(parents=True, exist_ok=True)
    with writing(folder / "study.json") as path:
        path.write_text(json.dumps({"analysis": analysis, "records": records}, indent=1))
    with writing(folder / "study.md") as path:
        path.write_text(table(analysis, seeds))
    plot_study(analysis, folder)


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def _diff(row: dict, m: str, floor: dict) -> str:
    if f"diff_{m}" not in row:
        return "-"
    mean, ci = row[f"diff_{m}"], row[f"ci_{m}"]
    noise = floor.get(m, {}).get("ci_pure_noise", 0.0)
    mark = "*" if abs(mean) > ci and abs(mean) > noise else ""
    return f"{100 * mean:+.1f} ± {100 * ci:.1f}{mark}"


def table(analysis: dict, seeds: list[int]) -> str:
    floor = analysis["noise_floor"]
    lines = ["| start | init MB | run total MB | acc. epoch 1 | acc. last epoch | acc. val.-chosen epoch | "
             "vs learnGene: epoch 1 | vs learnGene: last | vs learnGene: val.-chosen |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in analysis["rows"]:
        run_mb = f"{row['run_bytes'] / 1e6:.1f}" if row.get("run_bytes") else "-"
        lines.append(f"| {row['start']} | {row['init_bytes'] / 1e6:.4f} | {run_mb} | {_pct(row['first'])} | {_pct(row['last'])} | "
                     f"{_pct(row['chosen'])} | {_diff(row, 'first', floor)} | {_diff(row, 'last', floor)} | "
                     f"{_diff(row, 'chosen', floor)} |")
    n = analysis["rows"][0]["n"] if analysis["rows"] else 0
    noise = ", ".join(f"{m}: sd {100 * f['sd']:.1f}, ±{100 * f['ci_pure_noise']:.1f} on a mean of {n}"
                      for m, f in floor.items())
    return ("\n".join(lines) + f"\n\nSeeds {seeds}, {n} (seed, newcomer) pairs per start; accuracies in %. "
            "'vs learnGene' = mean paired difference (start - learnGene) with its 95% t-interval; * = the interval "
            "excludes 0 and the difference exceeds the noise floor.\nNoise floor (the same start fine-tuned under "
            f"another seed): {noise or 'not measured (replicates = 1)'}.\n")


def plot_study(analysis: dict, folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right, frontier) = plt.subplots(1, 3, figsize=(16, 4.2))
    for i, row in enumerate(analysis["rows"]):
        row_color = f"C{i % 10}"  # one colour per start in every panel
        curve = [100 * a for a in row["curve"]]
        left.plot(range(len(curve)), curve, marker="o", label=row["start"], color=row_color)
        right.errorbar(max(row["init_bytes"], 1) / 1e6, 100 * row["last"], yerr=100 * row.get("ci_last", 0) if row["start"] != "learngene" else 0,
                       fmt="o", capsize=3, label=row["start"], color=row_color)
    left.set(xlabel="fine-tuning epoch (0 = as received)", ylabel="newcomer test accuracy (%)", title="Newcomer accuracy by epoch")
    right.set(xscale="log", xlabel="MB sent to initialize the newcomer", ylabel="accuracy after the last epoch (%)",
              title="Final accuracy vs init bytes")
    for i, row in enumerate(analysis["rows"]):
        if row.get("run_bytes"):
            frontier.scatter(row["run_bytes"] / 1e6, 100 * row["last"], label=row["start"], color=f"C{i % 10}")
    frontier.set(xscale="log", xlabel="total MB of the run that produced the start",
                 ylabel="newcomer accuracy after the last epoch (%)", title="Communication / newcomer accuracy")
    for ax in (left, right, frontier):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    try:
        with writing(folder / "newcomer_study.png") as path:
            fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)


def study_variants(extra: list[Variant]) -> list[Variant]:
    return [Variant(m, m, {}) for m in STUDY_METHODS] + [v for v in extra if v.label not in STUDY_METHODS]


def check_study(base: Config, seeds: list[int], extra: list[Variant] = ()) -> None:
    """What the study needs beyond a comparison's checks, before anything runs: newcomers, and at
    least one fine-tuning epoch (its table reports accuracy after epoch 1 and after the last)."""
    from .comparison import check_variants

    if base.num_newcomers < 1:
        raise ConfigError("num_newcomers: the newcomer study needs at least one newcomer")
    if base.newcomer_epochs < 1:
        raise ConfigError("newcomer_epochs: the newcomer study compares starts after fine-tuning; needs >= 1")
    check_variants(base, study_variants(list(extra)), seeds)


def run_study(base: Config, seeds: list[int], out: Path, extra: list[Variant] = (), jobs: int = 1,
              replicates: int = 3) -> dict[str, Any]:
    check_study(base, seeds, extra)
    extra = [v for v in extra if v.label not in STUDY_METHODS]
    variants = study_variants(extra)
    # an extra variant of a method that sends newcomers something becomes one more start
    starts = tuple(v for v in extra if v.method != "local")
    run_comparison(base, variants, seeds, out, jobs=jobs, record_starts=True)
    configs = [variant_config(base, variants[0], s) for s in seeds]
    if jobs > 1:
        from .comparison import parallel_map

        per_seed = parallel_map(study_seed, [(c, out, replicates, starts) for c in configs], jobs)
    else:
        per_seed = [study_seed(c, out, replicates, starts) for c in configs]
    records = [r for seed_records in per_seed for r in seed_records]
    analysis = analyse(records)
    add_run_bytes(analysis, out, [v.label for v in starts], seeds)
    write_report(analysis, records, out, seeds)
    return analysis
