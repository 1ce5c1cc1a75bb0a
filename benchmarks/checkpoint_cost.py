"""What a checkpoint costs against a round (BENCHMARKS.md 4.6): the default CNN on Fashion-MNIST
(configs/fashion_alpha0.1.toml: 20 clients, 10 newcomers), GENE-FL (every client keeps a personal
model, so its checkpoints are the largest of the methods) and FedAvg, one checkpoint after every
round as `genefl run` writes them.

    GENEFL_DATA=../shared/data python benchmarks/checkpoint_cost.py [--rounds 6]

Prints per method the median round time, the median checkpoint time (save: serialise, fsync,
rename), their ratio and the checkpoint size, then a JSON line. Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from genefl.config import load_config
from genefl.data.scenario import build_scenario
from genefl.runtime import checkpoint
from genefl.runtime.events import Callback
from genefl.runtime.simulator import Simulator

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "fashion_alpha0.1.toml"


class RoundTimes(Callback):
    def __init__(self):
        self.times: list[float] = []

    def after_round(self, report) -> None:
        self.times.append(report.wall_s)


def measure(method: str, rounds: int) -> dict:
    config = load_config(CONFIG, [f'method="{method}"', f"rounds={rounds}", "eval_every=1"])
    timer = RoundTimes()
    with tempfile.TemporaryDirectory() as folder:
        sim = Simulator(config, build_scenario(config), [timer], checkpoint_dir=folder)
        saves, sizes = [], []
        original = checkpoint.save

        def timed(path, payload):
            start = time.perf_counter()
            original(path, payload)
            saves.append(time.perf_counter() - start)
            sizes.append(path.stat().st_size)

        checkpoint.save = timed
        try:
            sim.run()
        finally:
            checkpoint.save = original
    # the simulator's checkpoint closure is not part of a round's wall time: it runs after after_round
    round_s, save_s = statistics.median(timer.times), statistics.median(saves)
    return {"method": method, "round_s": round_s, "checkpoint_s": save_s, "ratio": save_s / round_s,
            "checkpoint_mb": max(sizes) / 1e6, "rounds": rounds}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args(argv)
    rows = [measure(m, args.rounds) for m in ("genefl", "fedavg")]
    print("| method | median round s | median checkpoint s | checkpoint / round | checkpoint MB |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['round_s']:.3f} | {r['checkpoint_s']:.4f} | {100 * r['ratio']:.1f}% | {r['checkpoint_mb']:.2f} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main(sys.argv[1:])
