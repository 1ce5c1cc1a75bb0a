"""`genefl compare`: several methods on the identical scenario, several seeds, one table.

For a given seed every method sees the same partitions, newcomers, arrival rounds and initial
weights (all derive from the seed, never from the method). A method entry may carry overrides in
brackets, which is how variants and ablations are compared side by side:
`genefl,fedavg,genefl[newcomer_init=random],genefl[genefl.lambda_e=0]`.
"""

from __future__ import annotations

import csv
import hashlib
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

from ..config import Config, parse_override, replace, shown
from ..errors import ConfigError
from ..paths import shown as shown_path
from ..paths import writing
from ..results import ResultWriter, read_results, write_json
from ..runtime.progress import ProgressBar
from .starts import STARTS_FILE, StartRecorder

MANIFEST = "comparison.json"  # the runs of the comparison last written to a folder: what `plot` reads
MAX_FOLDER = 200  # bytes of a variant's folder name (a file name may hold 255; grid_<folder>.png must fit)
MAX_JOBS = 1024

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
        """The label made filesystem-safe; a long one is cut and keeps a digest of the whole label."""
        name = re.sub(r"[^A-Za-z0-9_.=+-]+", "_", self.label).strip("_")
        if len(name) > MAX_FOLDER:
            name = name[: MAX_FOLDER - 17] + "-" + hashlib.sha256(self.label.encode()).hexdigest()[:16]
        return name


RESERVED = {"method": "the name before the brackets", "seed": "--seeds"}  # not overridable per variant


def parse_variants(text: str) -> list[Variant]:
    if not isinstance(text, str):
        raise ConfigError(f"--methods: expected comma-separated method names as text, got {shown(text)}")
    if text.count("[") != text.count("]"):
        raise ConfigError(f"--methods: unbalanced brackets in {text!r}")
    variants = []
    for item in re.findall(r"[^,\[]+(?:\[[^\]]*\])?", text):
        item = item.strip()
        match = re.fullmatch(r"([A-Za-z_][\w.:]*)(?:\[(.*)\])?", item)
        if not match:
            raise ConfigError(f"--methods: cannot read {shown(item)} (expected name or name[key=value;...])")
        overrides = {}
        for pair in filter(None, (match.group(2) or "").split(";")):
            keys, value = parse_override(pair)
            key = ".".join(keys)
            if key in RESERVED:
                raise ConfigError(f"--methods: {shown(item)} sets {key!r}; set it with {RESERVED[key]}")
            overrides[key] = value
        variants.append(Variant(item, match.group(1), overrides))
    if not variants:
        raise ConfigError("--methods: name at least one method")
    labels, folders = [v.label for v in variants], [v.folder for v in variants]
    for seen, what in ((labels, "is listed twice"), (folders, "shares its output folder with another entry")):
        dupes = sorted({x for x in seen if seen.count(x) > 1})
        if dupes:
            culprit = dupes[0] if what.startswith("is") else next(v.label for v in variants if v.folder == dupes[0])
            raise ConfigError(f"--methods: {shown(culprit)} {what}")
    return variants


def check_seeds(seeds) -> list[int]:
    """A non-empty list of distinct integer seeds (`--seeds 0,0` would report two seeds for one)."""
    if isinstance(seeds, (str, bytes)) or not hasattr(seeds, "__iter__"):
        raise ConfigError(f"seeds: expected a list of integers, got {shown(seeds)}")
    seeds = list(seeds)
    for seed in seeds:
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ConfigError(f"seeds: expected integers, got {shown(seed)}")
    if not seeds:
        raise ConfigError("seeds: name at least one seed")
    twice = next((s for i, s in enumerate(seeds) if s in seeds[:i]), None)
    if twice is not None:
        raise ConfigError(f"seeds: {twice} is listed twice")
    return seeds


def check_jobs(jobs) -> int:
    if not isinstance(jobs, int) or isinstance(jobs, bool) or not 1 <= jobs <= MAX_JOBS:
        raise ConfigError(f"--jobs: must be an integer in 1..{MAX_JOBS}, got {shown(jobs)}")
    return jobs


def variant_config(base: Config, variant: Variant, seed: int) -> Config:
    return replace(base, method=variant.method, seed=seed, **variant.overrides)


def check_variants(base: Config, variants: list[Variant], seeds: list[int], dataset=None) -> dict:
    """Every (variant, seed) config, validated, and each variant's method and model imported and its
    model checked (`models.check_model`) on the dataset's shape: a mistake in any entry is one line
    before an output folder or progress bar exists. Returns the configs by (label, seed)."""
    from ..data.datasets import SHAPES
    from ..runtime.assembly import assemble

    configs = {(v.label, s): variant_config(base, v, s) for v in variants for s in seeds}
    checked = set()
    for v in variants:
        config = configs[(v.label, seeds[0])]
        shape, classes = (dataset.input_shape, dataset.num_classes) if dataset is not None else SHAPES[config.dataset]
        key = (config.method, config.model, config.dataset, config.device)
        if key not in checked:
            assemble(config, shape, classes)
            checked.add(key)
    return configs


def run_comparison(base: Config, variants: list[Variant], seeds: list[int], out: Path, jobs: int = 1,
                   record_starts: bool = False, dataset=None) -> list[dict]:
    """Run every (variant, seed); with `jobs` > 1, that many runs side by side in worker processes,
    the machine's cores split evenly between them (torch in each process would otherwise take every
    core, and runs that oversubscribe the cores slow each other down more than tenfold). `dataset`:
    your own (`genefl.data.from_arrays`) instead of the config's."""
    seeds = check_seeds(seeds)
    configs = check_variants(base, variants, seeds, dataset)  # every entry checked before anything runs
    tasks = [(v, s, configs[(v.label, s)], out / v.folder / f"seed{s}") for s in seeds for v in variants]
    Path(out).mkdir(parents=True, exist_ok=True)
    write_json({"runs": [{"label": v.label, "folder": v.folder, "seed": s} for v, s, _, _ in tasks]}, out / MANIFEST)
    bar = tqdm(total=len(tasks), desc="compare", unit="run", position=0, dynamic_ncols=True)
    try:
        if min(jobs, len(tasks)) > 1:
            docs = _run_parallel(tasks, min(jobs, len(tasks)), record_starts, bar, dataset)
        else:
            docs = _run_here(tasks, record_starts, bar, dataset)
    finally:
        bar.close()
    write_summary(docs, out)
    return docs


def _run_here(tasks: list, record_starts: bool, bar, dataset=None) -> list[dict]:
    from ..data.scenario import ScenarioSpec, build_scenario

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
    from ..data.scenario import build_scenario
    from ..runtime.simulator import Simulator

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
    """The runs of the comparison last written to `out`: those its `comparison.json` lists (a
    comparison rerun with --force into an older folder leaves the older runs' folders there, and
    they are not part of it), or, in a folder from before that file, every `*/seed*/results.json`."""
    out = Path(out)
    listed = read_manifest(out / MANIFEST) if (out / MANIFEST).exists() else None
    if listed is not None:
        found = [(out / folder / f"seed{seed}" / "results.json", label) for label, folder, seed in listed]
        found = [(path, label) for path, label in found if path.exists()]
    else:
        found = [(path, path.parent.parent.name) for path in sorted(out.glob("*/seed*/results.json"))]
    docs = []
    for path, label in found:
        doc = read_results(path)
        doc.setdefault("label", label)
        docs.append(doc)
    if not docs:
        raise ConfigError(f"no results found under {shown_path(str(out))} (expected <method>/seed<k>/results.json there)")
    return docs


def read_manifest(path: Path) -> list[tuple[str, str, int]]:
    try:
        doc = json.loads(path.read_bytes().decode("utf-8"))
        runs = [(r["label"], r["folder"], r["seed"]) for r in doc["runs"]]
    except (OSError, UnicodeDecodeError, ValueError, RecursionError, KeyError, TypeError) as exc:
        raise ConfigError(f"{shown_path(str(path))}: not a readable list of runs ({type(exc).__name__})") from None
    for label, folder, seed in runs:
        if not (isinstance(label, str) and isinstance(folder, str) and isinstance(seed, int) and not isinstance(seed, bool)
                and folder and "/" not in folder and folder not in (".", "..")):
            raise ConfigError(f"{shown_path(str(path))}: not a genefl list of runs (a label, folder or seed mistyped)")
    return runs


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) * (v - mean) for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0  # inf, not OverflowError
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
    with writing(out / "summary.csv") as path, open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fields)
        writer.writeheader()
        writer.writerows(rows)
    lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
    for row in rows:
        cells = [row["method"]] + [_cell(row[c], row[c + "_std"], c.startswith("acc")) for c, _, _ in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    seeds = sorted({d["seed"] for d in docs})
    note = f"\nMean ± std over seeds {seeds}; accuracies in %; MB = 10^6 bytes of serialized messages.\n"
    with writing(out / "summary.md") as path:
        path.write_text("\n".join(lines) + "\n" + note)
