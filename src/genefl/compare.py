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
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from .config import Config, load_config, parse_override, replace
from .errors import ConfigError
from .results import ResultWriter
from .runtime.progress import ProgressBar

# summary.csv columns: (column, results.json summary key, scale)
COLUMNS = [
    ("acc_clients", "acc_clients", 1.0),
    ("acc_newcomers_first_epoch", "acc_newcomers_first_epoch", 1.0),
    ("acc_newcomers_last_epoch", "acc_newcomers_last_epoch", 1.0),
    ("mb_per_round", "bytes_per_round", 1e-6),
    ("mb_total", "bytes_total", 1e-6),
    ("mb_newcomer_init", "bytes_newcomer_init_mean", 1e-6),
    ("wall_s", "wall_s", 1.0),
]
HEADERS = ["method", "acc. training clients", "newcomer acc. 1st epoch", "newcomer acc. last epoch",
           "MB per round", "total MB", "MB to initialize a newcomer", "wall s"]


@dataclass(frozen=True)
class Variant:
    label: str  # as written by the user, also the output folder name (made filesystem-safe)
    method: str
    overrides: dict[str, Any]

    @property
    def folder(self) -> str:
        return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", self.label).strip("_")


def parse_variants(text: str) -> list[Variant]:
    variants = []
    for item in re.findall(r"[^,\[]+(?:\[[^\]]*\])?", text):
        item = item.strip()
        match = re.fullmatch(r"([A-Za-z_]+)(?:\[(.*)\])?", item)
        if not match:
            raise ConfigError(f"--methods: cannot read {item!r} (expected name or name[key=value;...])")
        overrides = {}
        for pair in filter(None, (match.group(2) or "").split(";")):
            keys, value = parse_override(pair)
            overrides[".".join(keys)] = value
        variants.append(Variant(item, match.group(1), overrides))
    if not variants:
        raise ConfigError("--methods: name at least one method")
    return variants


def variant_config(base: Config, variant: Variant, seed: int) -> Config:
    return replace(base, method=variant.method, seed=seed, **variant.overrides)


def run_comparison(base: Config, variants: list[Variant], seeds: list[int], out: Path) -> list[dict]:
    from .data.scenario import build_scenario, load_for
    from .runtime.simulator import Simulator

    configs = {(v.label, s): variant_config(base, v, s) for v in variants for s in seeds}  # validate all first
    dataset = load_for(base)
    docs = []
    jobs = tqdm(total=len(configs), desc="compare", unit="run", position=0, dynamic_ncols=True)
    for seed in seeds:
        scenarios: dict[tuple, Any] = {}
        for variant in variants:
            config = configs[(variant.label, seed)]
            key = scenario_key(config)
            if key not in scenarios:
                scenarios[key] = build_scenario(config, dataset)
            jobs.set_postfix_str(f"{variant.label} seed {seed}")
            folder = out / variant.folder / f"seed{seed}"
            bar = ProgressBar(config.rounds, f"{variant.label} s{seed}", position=1, leave=False)
            Simulator(config, scenarios[key], [bar, ResultWriter(folder)]).run()
            doc = json.loads((folder / "results.json").read_text())
            doc["label"] = variant.label
            docs.append(doc)
            jobs.update(1)
    jobs.close()
    write_summary(docs, out)
    return docs


def scenario_key(config: Config) -> tuple:
    """Scenario-defining fields: runs that agree on these share one scenario object."""
    return (config.dataset, config.seed, config.num_clients, config.num_newcomers, config.partition, config.alpha,
            config.classes_per_client, config.min_samples, config.train_subset, config.device, tuple(config.newcomer_rounds),
            config.rounds)


def load_runs(out: Path) -> list[dict]:
    docs = []
    for path in sorted(Path(out).glob("*/seed*/results.json")):
        doc = json.loads(path.read_text())
        doc.setdefault("label", path.parent.parent.name)
        docs.append(doc)
    if not docs:
        raise ConfigError(f"no results found under {out} (expected {out}/<method>/seed<k>/results.json)")
    return docs


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
