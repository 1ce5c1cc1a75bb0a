"""Re-run only the study phase (the re-started newcomers) of a `genefl newcomers` folder whose runs
finished with their recorded starts kept, e.g. after the phase itself was interrupted:

    GENEFL_DATA=../shared/data python benchmarks/newcomer_study_phase.py DIR 0,1,2 [EXTRA_METHODS]
"""
import argparse
from pathlib import Path

from genefl.experiments.comparison import Variant, parse_variants, variant_config
from genefl.config import load_config
from genefl.experiments.study import add_run_bytes, analyse, study_seed, write_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", type=Path, help="a folder written by `genefl newcomers`")
    parser.add_argument("seeds", help="comma-separated seeds, e.g. 0,1,2")
    parser.add_argument("extra", nargs="?", default="", help="the --methods the study ran beside genefl, if any")
    args = parser.parse_args()
    out, seeds, extra = args.dir, [int(s) for s in args.seeds.split(",")], args.extra
    base = load_config(out / "genefl" / f"seed{seeds[0]}" / "config.toml")
    starts = tuple(v for v in (parse_variants(extra) if extra else []) if v.method != "local")
    records = [r for s in seeds for r in study_seed(variant_config(base, Variant("genefl", "genefl", {}), s), out, 3, starts)]
    analysis = analyse(records)
    add_run_bytes(analysis, out, [v.label for v in starts], seeds)
    write_report(analysis, records, out, seeds)
    print((out / "newcomers" / "study.md").read_text())


if __name__ == "__main__":
    main()
