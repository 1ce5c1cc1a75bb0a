"""genefl from Python: the same runs as the command line, with the same validation and files.

    import genefl
    result = genefl.run(genefl.Config(method="genefl", rounds=5))
    result.summary["acc_clients"], result.summary["bytes_total"]

    table = genefl.compare(genefl.Config(rounds=5), methods="genefl,fedavg", seeds=[0, 1], out="runs/cmp")

A run takes an optional `dataset` (from `genefl.data.from_arrays`), callbacks (`genefl.Callback`:
`after_round`, `after_newcomer`, ...) and `out` (a folder that gets config.toml, rounds.csv and
results.json, as `genefl run --out` writes them; one that holds results already is refused unless
`force=True`, as `--force` does). Errors are `genefl.ConfigError` / `DataError` / `GeneflError`
with a one-line message.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import Config, load_config
from .options import build, shown
from .data.datasets import Dataset, check_dataset
from .errors import ConfigError
from .paths import RESULT_FILES, output_folder
from .runtime.events import Callback


@dataclass
class Result:
    """A finished run: the results.json document's parts, and the raw `RunResult`."""

    summary: dict[str, Any]  # the keys of results.json's summary
    rounds: list[dict[str, Any]]
    newcomers: list[dict[str, Any]]
    method_info: dict[str, Any]
    raw: Any  # runtime.loop.RunResult: reports, ledger, final server weights

    @property
    def weights(self):
        return self.raw.final_weights


@dataclass
class Comparison:
    rows: list[dict[str, Any]]  # per method label: means and stds over seeds (summary.csv's columns)
    runs: list[dict[str, Any]]  # every run's results.json document, with its "label"


def _config(config: Config | str | Path | dict | None) -> Config:
    if config is None:
        return Config()
    if isinstance(config, Config):
        return config
    if isinstance(config, dict):
        return build(Config, config)
    if isinstance(config, (str, os.PathLike)):
        return load_config(config)
    raise ConfigError(f"config: expected a genefl.Config, a dict of keys or a TOML file's path, got {shown(config)}")


def _dataset(dataset: Any) -> Dataset | None:
    if dataset is None:
        return None
    if not isinstance(dataset, Dataset):
        raise ConfigError(f"dataset: expected a Dataset from genefl.data.from_arrays (or None), got {shown(dataset)}; "
                          "a built-in dataset is named in the config: Config(dataset='mnist')")
    check_dataset(dataset)
    return dataset


def _out(out: str | Path | None, force: bool):
    """The output folder, checked and created now (removed again if the run fails before writing)."""
    if out is None:
        return contextlib.nullcontext(None)
    return output_folder("out", out, force, RESULT_FILES)


def run(config: Config | str | Path | dict | None = None, dataset: Dataset | None = None,
        callbacks: list[Callback] = (), out: str | Path | None = None, force: bool = False) -> Result:
    """One run in the in-process simulator; `config` may be a Config, a dict of keys or a TOML path."""
    from .data.scenario import build_scenario
    from .results import ResultWriter, build_results
    from .runtime.simulator import Simulator

    config, dataset = _config(config), _dataset(dataset)
    with _out(out, force) as folder:
        callbacks = list(callbacks) + ([ResultWriter(folder)] if folder is not None else [])
        raw = Simulator(config, build_scenario(config, dataset), callbacks).run()
    doc = build_results(raw)
    return Result(doc["summary"], doc["rounds"], doc["newcomers"], doc["method_info"], raw)


def compare(config: Config | str | Path | dict | None = None, methods: str = "genefl,fedavg",
            seeds: list[int] = (0,), out: str | Path = "runs/compare", jobs: int = 1,
            dataset: Dataset | None = None, force: bool = False) -> Comparison:
    """`genefl compare` from Python: each of `methods` on the identical scenario per seed; writes the same
    folder (runs, summary.csv/.md, plots) and returns its table. `dataset`: your own, as in `run`;
    `out` holding results already is refused unless `force=True`."""
    from .experiments.comparison import check_jobs, check_seeds, check_variants, parse_variants, run_comparison, summarize
    from .experiments.plots import plot_all

    base, dataset = _config(config), _dataset(dataset)
    variants, seeds, jobs = parse_variants(methods), check_seeds(seeds), check_jobs(jobs)
    check_variants(base, variants, seeds, dataset)
    with _out(out, force) as folder:
        docs = run_comparison(base, variants, seeds, folder, jobs=jobs, dataset=dataset)
        plot_all(docs, folder)
    return Comparison(summarize(docs), docs)
