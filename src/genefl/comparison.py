"""`genefl compare`: several methods on the identical scenario, several seeds, one table.

For a given seed every method sees the same partitions, newcomers, arrival rounds and initial
weights (all derive from the seed, never from the method). A method entry may carry overrides in
brackets, which is how variants and ablations are compared side by side:
`genefl,fedavg,genefl[newcomer_init=random],genefl[genefl.lambda_e=0]`.
"""

from __future__ import annotations

import csv
import json
import math
import multiprocessing
import os
import re
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .config import Config, parse_override, replace
from .errors import ConfigError
from .results import ResultWriter
from .runtime.progress import ProgressBar

STARTS_FILE = "newcomer_starts.pt"  # what each newcomer was sent, kept for the newcomer study

# summary.csv columns: (column, results.json summary key, scale)
COLUMNS = [
    ("acc_clients", "acc_clients", 1.0),
    ("acc_newcomers_first_epoch", "acc_newcomers_first_epoch", 1.0),
    ("acc_newcomers_last_epoch", "acc_newcomers_last_epoch", 1.0),
    ("acc_newcomers_val_chosen", "acc_newcomers_val_chosen", 1.0),
    ("mb_per_round", "bytes_per_round", 1e-6),
    ("mb_total", "bytes_total", 1e-6),
    ("mb_newcomer_init", "bytes_newcomer_init_mean", 1e-6),
    ("wall_s", "wall_s", 1.0),
]
HEADERS = ["method", "acc. training clients", "newcomer acc. 1st epoch", "newcomer acc. last epoch",
           "newcomer acc. val.-chosen epoch",
           "MB per round", "total MB", "MB to initialize a newcomer", "wall s"]


@dataclass(frozen=True)
class Variant:
    label: str  # as written by the user, also the output folder name (made filesystem-safe)
    method: str
    overrides: dict[str, Any]

    @property
    def folder(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", self.label).strip("_")


RESERVED = {"method": "the name before the brackets", "seed": "--seeds"}  # not overridable per variant


def parse_variants(text: str) -> list[Variant]:
    if text.count("[") != text.count("]"):
        raise ConfigError(f"--methods: unbalanced brackets in {text!r}")
    variants = []
    for item in re.findall(r"[^,\[]+(?:\[[^\]]*\])?", text):
        item = item.strip()
        match = re.fullmatch(r"([A-Za-z_][\w.:]*)(?:\[(.*)\])?", item)
        if not match:
            raise ConfigError(f"--methods: cannot read {item!r} (expected name or name[key=value;...])")
        overrides = {}
        for pair in filter(None, (match.group(2) or "").split(";")):
            keys, value = parse_override(pair)
            key = ".".join(keys)
            if key in RESERVED:
                raise ConfigError(f"--methods: {item!r} sets {key!r}; set it with {RESERVED[key]}")
            overrides[key] = value
        variants.append(Variant(item, match.group(1), overrides))
    if not variants:
        raise ConfigError("--methods: name at least one method")
    labels, folders = [v.label for v in variants], [v.folder for v in variants]
    for seen, what in ((labels, "is listed twice"), (folders, "shares its output folder with another entry")):
        dupes = sorted({x for x in seen if seen.count(x) > 1})
        if dupes:
            culprit = dupes[0] if what.startswith("is") else next(v.label for v in variants if v.folder == dupes[0])
            raise ConfigError(f"--methods: {culprit!r} {what}")
    return variants


def variant_config(base: Config, variant: Variant, seed: int) -> Config:
    return replace(base, method=variant.method, seed=seed, **variant.overrides)


def run_comparison(base: Config, variants: list[Variant], seeds: list[int], out: Path, jobs: int = 1,
                   record_starts: bool = False, dataset=None) -> list[dict]:
    """Run every (variant, seed); with `jobs` > 1, that many runs side by side in worker processes,
    the machine's cores split evenly between them (torch in each process would otherwise take every
    core, and runs that oversubscribe the cores slow each other down more than tenfold). `dataset`:
    your own (`genefl.data.from_arrays`) instead of the config's."""
    configs = {(v.label, s): variant_config(base, v, s) for v in variants for s in seeds}  # validate all first
    tasks = [(v, s, configs[(v.label, s)], out / v.folder / f"seed{s}") for s in seeds for v in variants]
    bar = tqdm(total=len(tasks), desc="compare", unit="run", position=0, dynamic_ncols=True)
    if jobs > 1:
        docs = _run_parallel(tasks, jobs, record_starts, bar, dataset)
    else:
        docs = _run_here(tasks, record_starts, bar, dataset)
    bar.close()
    write_summary(docs, out)
    return docs


def _run_here(tasks: list, record_starts: bool, bar, dataset=None) -> list[dict]:
    from .data.scenario import ScenarioSpec, build_scenario

    scenarios, docs = {}, []
    for variant, seed, config, folder in tasks:
        key = ScenarioSpec.of(config)  # every field the scenario is built from, the variant's own dataset too
        if key not in scenarios:
            scenarios[key] = build_scenario(key, dataset)
        bar.set_postfix_str(f"{variant.label} seed {seed}")
        progress = ProgressBar(config.rounds, f"{variant.label} s{seed}", position=1, leave=False)
        docs.append(run_one(config, folder, variant.label, record_starts, scenarios[key], progress))
        bar.update(1)
    return docs


def run_one(config: Config, folder: Path, label: str, record_starts: bool, scenario=None, progress=None,
            dataset=None) -> dict:
    """One simulator run writing its result files into `folder`; returns its results.json document."""
    from .data.scenario import build_scenario
    from .runtime.simulator import Simulator
    from .study import StartRecorder

    callbacks = [c for c in (progress, ResultWriter(folder)) if c is not None]
    if record_starts:
        callbacks.append(StartRecorder(folder / STARTS_FILE))
    Simulator(config, scenario if scenario is not None else build_scenario(config, dataset), callbacks).run()
    doc = json.loads((folder / "results.json").read_text())
    doc["label"] = label
    return doc


def threads_per_job(jobs: int) -> int:
    """This process's cores (as `taskset` or a container grants them) split between the jobs."""
    return max(1, len(os.sched_getaffinity(0)) // jobs)


def _limit_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _run_parallel(tasks: list, jobs: int, record_starts: bool, bar, dataset=None) -> list[dict]:
    args = [(config, folder, v.label, record_starts, None, None, dataset) for v, seed, config, folder in tasks]
    return parallel_map(run_one, args, jobs, on_done=lambda: bar.update(1))


def parallel_map(fn, args: list[tuple], jobs: int, on_done=None) -> list:
    """[fn(*a) for a in args] in `jobs` spawned worker processes, each limited to its share of the
    cores; results in the order of `args`. `fn` must be importable (a module-level function)."""
    threads = threads_per_job(jobs)
    saved = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(threads)  # inherited by the spawned workers before torch loads
    try:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(jobs, mp_context=context, initializer=_limit_threads, initargs=(threads,)) as pool:
            futures = {pool.submit(fn, *a): i for i, a in enumerate(args)}
            results: list = [None] * len(args)
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                if on_done:
                    on_done()
    finally:
        if saved is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = saved
    return results


def load_runs(out: Path) -> list[dict]:
    docs = []
    for path in sorted(Path(out).glob("*/seed*/results.json")):
        doc = read_results(path)
        doc.setdefault("label", path.parent.parent.name)
        docs.append(doc)
    if not docs:
        raise ConfigError(f"no results found under {out} (expected {out}/<method>/seed<k>/results.json)")
    return docs


def read_results(path: Path) -> dict:
    """A results.json document, checked for the parts that tables and plots read."""
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ConfigError(f"{path}: not a readable results.json ({type(exc).__name__})") from None
    numbers = (int, float, type(None))
    ok = (isinstance(doc, dict) and isinstance(doc.get("summary"), dict) and isinstance(doc.get("seed"), int)
          and all(isinstance(v, numbers) for v in doc["summary"].values())
          and isinstance(doc.get("rounds"), list) and isinstance(doc.get("newcomers"), list)
          and all(isinstance(r, dict) and isinstance(r.get("round"), int) and isinstance(r.get("bytes_up"), int)
                  and isinstance(r.get("bytes_down"), int) and isinstance(r.get("acc_clients"), numbers) for r in doc["rounds"])
          and all(isinstance(n, dict) and isinstance(n.get("acc_by_epoch"), list)
                  and all(isinstance(a, numbers) for a in n["acc_by_epoch"]) for n in doc["newcomers"]))
    if not ok:
        raise ConfigError(f"{path}: not a genefl results.json (missing or mistyped summary, seed, rounds or newcomers)")
    return doc


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def summarize(docs: list[dict]) -> list[dict]:
    labels = list(dict.fromkeys(d["label"] for d in docs))
    rows = []
    for label in labels:
        runs = [d for d in docs if d["label"] == label]
        row: dict[str, Any] = {"method": label, "seeds": len(runs)}
        for column, key, scale in COLUMNS:
            mean, std = _mean_std([d["summary"].get(key) * scale if d["summary"].get(key) is not None else None for d in runs])
            row[column], row[column + "_std"] = mean, std
        rows.append(row)
    return rows


def _cell(mean, std, percent: bool) -> str:
    if mean is None:
        return "-"
    if percent:
        return f"{100 * mean:.1f} ± {100 * std:.1f}"
    return f"{mean:.3f} ± {std:.3f}" if mean < 100 else f"{mean:.1f} ± {std:.1f}"


def write_summary(docs: list[dict], out: Path) -> None:
    rows = summarize(docs)
    fields = ["method", "seeds"] + [c for col, _, _ in COLUMNS for c in (col, col + "_std")]
    with open(out / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for row in rows:
        cells = [row["method"]] + [_cell(row[c], row[c + "_std"], c.startswith("acc")) for c, _, _ in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    seeds = sorted({d["seed"] for d in docs})
    note = f"\nMean ± std over seeds {seeds}; accuracies in %; MB = 10^6 bytes of serialized messages.\n"
    (out / "summary.md").write_text("\n".join(lines) + "\n" + note)
