"""genefl from Python: the same runs as the command line, with the same validation and files.

    import genefl
    result = genefl.run(genefl.Config(method="genefl", rounds=5))
    result.summary["acc_clients"], result.summary["bytes_total"]

    table = genefl.compare(genefl.Config(rounds=5), methods="genefl,fedavg", seeds=[0, 1], out="runs/cmp")

A run takes an optional `dataset` (from `genefl.data.from_arrays`), callbacks (`genefl.Callback`:
`after_round`, `after_newcomer`, ...) and `out` (a folder that gets config.toml, rounds.csv and
results.json, as `genefl run --out` writes them). Errors are `genefl.ConfigError` / `DataError`
with a one-line message.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import Config, load_config
from .data.datasets import Dataset
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
        return Config(**config)
    return load_config(config)


def run(config: Config | str | Path | dict | None = None, dataset: Dataset | None = None,
        callbacks: list[Callback] = (), out: str | Path | None = None) -> Result:
    """One run in the in-process simulator; `config` may be a Config, a dict of keys or a TOML path."""
    from .data.scenario import build_scenario
    from .results import ResultWriter, build_results
    from .runtime.simulator import Simulator

    config = _config(config)
    callbacks = list(callbacks) + ([ResultWriter(Path(out))] if out is not None else [])
    raw = Simulator(config, build_scenario(config, dataset), callbacks).run()
    doc = build_results(raw)
    return Result(doc["summary"], doc["rounds"], doc["newcomers"], doc["method_info"], raw)


def compare(config: Config | str | Path | dict | None = None, methods: str = "genefl,fedavg",
            seeds: list[int] = (0,), out: str | Path = "runs/compare", jobs: int = 1,
            dataset: Dataset | None = None) -> Comparison:
    """`genefl compare` from Python: each of `methods` on the identical scenario per seed; writes the same
    folder (runs, summary.csv/.md, plots) and returns its table. `dataset`: your own, as in `run`."""
    from .comparison import parse_variants, run_comparison, summarize
    from .plots import plot_all

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    docs = run_comparison(_config(config), parse_variants(methods), list(seeds), out, jobs=jobs, dataset=dataset)
    plot_all(docs, out)
    return Comparison(summarize(docs), docs)
