"""`genefl compare --jobs 2` against `--jobs 1` (BENCHMARKS.md 4.6): the same four runs (fedavg and
genefl, seeds 0 and 1; the CNN on Fashion-MNIST, configs/fashion_alpha0.1.toml cut to a few rounds)
one after another with all cores, then two at a time with the cores split, alternating.

    GENEFL_DATA=../shared/data python benchmarks/jobs_speedup.py [--rounds 4] [--repeats 2]

Prints the wall time of each whole comparison, the median per setting and their ratio, and checks
that both settings wrote identical results. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "fashion_alpha0.1.toml"


def compare(jobs: int, rounds: int, out: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "genefl.cli", "compare", "--config", str(CONFIG), "--set", f"rounds={rounds}",
                    "--methods", "fedavg,genefl", "--seeds", "0,1", "--jobs", str(jobs), "--out", str(out)],
                   check=True, capture_output=True)
    return time.perf_counter() - start


def accuracies(out: Path) -> list:
    return [json.loads(p.read_text())["summary"]["acc_clients"] for p in sorted(out.glob("*/seed*/results.json"))]


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    times: dict[int, list[float]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.repeats):
            for jobs in (1, 2):
                out = Path(tmp) / f"j{jobs}-{rep}"
                times[jobs].append(compare(jobs, args.rounds, out))
                print(f"repeat {rep}, --jobs {jobs}: {times[jobs][-1]:.1f} s", flush=True)
        same = accuracies(Path(tmp) / "j1-0") == accuracies(Path(tmp) / "j2-0")
    one, two = statistics.median(times[1]), statistics.median(times[2])
    print(f"median --jobs 1: {one:.1f} s, --jobs 2: {two:.1f} s, speed-up {one / two:.2f}x; identical results: {same}")
    print(json.dumps({"jobs1_s": times[1], "jobs2_s": times[2], "speedup": one / two, "identical": same}))


if __name__ == "__main__":
    main(sys.argv[1:])
