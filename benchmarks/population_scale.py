"""Issue 20 §2, scale on one machine: 1,000 vs 10,000 Synthetic(1, 1) clients at 100 participants a round.

Each run is `genefl run` (the same Simulator, ResultWriter and per-round checkpoint into its --out
folder as the CLI) with `dataset = "synthetic"`, `model = "mlp"`, `num_clients` = N, `participation`
= 100 / N, `population.eval_sample = 100` (so evaluation in rounds 1..R-1 does not grow with N; the
loop evaluates every client after the last round) and no newcomers. Each runs in its own subprocess,
so its peak RSS (`ru_maxrss`) is its own, and reports:
- peak RSS, total wall and process CPU seconds (the machine may be shared: CPU beside wall);
- the median of rounds 2..R-1 (round 1 warms up; round R evaluates everyone): the loop's own
  `wall_s`, and wall and CPU between consecutive rounds' ends, which also hold what happens between
  rounds (rounds.csv, the checkpoint);
- Stage 0 (signatures of every client, then clustering) for methods that cluster: from the run's
  start to round 1's start;
- the last round's wall, which holds the final evaluation of every client;
- the checkpoint's size on disk after round R-1 (checkpoint.pt and its client-state files), the
  median of what one checkpoint wrote (rounds 2..R-1: checkpoint.pt and the states of the clients
  that trained since the previous one), and the bytes of client state held in memory at the end.
The x1k columns are a run's median round (wall, then CPU, between rounds' ends) over the first
size's run of the same method and store; the issue's target for 10,000 over 1,000 clients is at
most 1.1. On a shared machine the CPU ratio is the one to trust.

Usage:
  OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/population_scale.py [--sizes 1000,10000]
      [--methods fedavg,genefl,scaffold] [--stores memory,disk] [--rounds 5] [--out FILE] [--append]
Prints a table and a final JSON line, and writes the same text to --out
(default benchmarks/results/performance/population_scale.txt).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from genefl.runtime.events import Callback

PARTICIPANTS = 100


class Clock(Callback):
    """Wall and process-CPU time at the run's start and at every round's end."""

    def __init__(self):
        self.marks: list[tuple[float, float]] = []
        self.walls: list[float] = []

    def on_start(self, info):
        self.marks.append((time.perf_counter(), time.process_time()))

    def after_round(self, report):
        self.marks.append((time.perf_counter(), time.process_time()))
        self.walls.append(report.wall_s)


def child(method: str, clients: int, rounds: int, store: str, out: Path) -> dict:
    """One run as `genefl run --set ... --out out` does it, timed (see the module doc)."""
    from genefl.config import load_config
    from genefl.data.scenario import build_scenario
    from genefl.results import ResultWriter
    from genefl.runtime import checkpoint
    from genefl.runtime.simulator import Simulator

    overrides = [f"method={method}", "dataset=synthetic", "model=mlp", f"num_clients={clients}",
                 f"participation={PARTICIPANTS / clients}", f"rounds={rounds}", "num_newcomers=0",
                 f"population.eval_sample={PARTICIPANTS}", f"state_store={store}"]
    config = load_config(None, overrides)
    clock, sizes = Clock(), []
    real_save = checkpoint.save

    def save(path, payload):  # the checkpoint as written, measured after the write
        real_save(path, payload)
        states = {p.name: p.stat().st_size for p in (path.parent / checkpoint.CLIENTS).glob("client*.pt")}
        written = sum(n for name, n in states.items() if name.endswith(f"-r{payload['round']}.pt"))  # this save's
        main = path.stat().st_size
        sizes.append((main + sum(states.values()), main + written))

    checkpoint.save = save
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    sim = Simulator(config, build_scenario(config), [ResultWriter(out), clock], checkpoint_dir=out)
    result = sim.run()
    wall, cpu = time.perf_counter() - start_wall, time.process_time() - start_cpu
    marks = clock.marks  # [start, end of round 1, ..., end of round R]
    between = [(marks[i + 1][0] - marks[i][0], marks[i + 1][1] - marks[i][1]) for i in range(1, len(marks) - 1)]
    middle = between[:-1]  # rounds 2..R-1
    stage0 = (marks[1][0] - marks[0][0]) - clock.walls[0] if sim.strategy.needs_signatures else 0.0
    return {"method": method, "clients": clients, "store": store, "rounds": rounds,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "round_loop_s": round(statistics.median(clock.walls[1:-1]), 3),
            "round_wall_s": round(statistics.median(w for w, _ in middle), 3),
            "round_cpu_s": round(statistics.median(c for _, c in middle), 3),
            "stage0_s": round(stage0, 2), "last_round_s": round(clock.walls[-1], 2),
            "checkpoint_mb": round(sizes[-1][0] / 1e6, 2) if sizes else 0.0,
            "checkpoint_written_mb": round(statistics.median(w for _, w in sizes[1:]) / 1e6, 2) if sizes[1:] else 0.0,
            "state_mb": round(sim.states.nbytes_in_memory() / 1e6, 2),
            "acc": round(result.rounds[-1].mean_acc(), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--methods", default="fedavg,genefl")
    parser.add_argument("--stores", default="memory", help="state_store values to run: memory,disk")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "performance" / "population_scale.txt"))
    parser.add_argument("--append", action="store_true", help="add the table to --out instead of replacing it")
    parser.add_argument("--one", nargs=3, metavar=("METHOD", "CLIENTS", "STORE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rounds < 4:
        parser.error("--rounds: at least 4 (round 1 warms up, the last evaluates everyone, the median needs two more)")
    if args.one:
        with tempfile.TemporaryDirectory(prefix="population-scale-") as out:
            print(json.dumps(child(args.one[0], int(args.one[1]), args.rounds, args.one[2], Path(out))))
        return
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    lines = [f"population_scale: Synthetic(1, 1), mlp, {PARTICIPANTS} participants a round, {args.rounds} rounds, "
             f"eval_sample {PARTICIPANTS}, checkpoint every round; {platform.machine()}, {os.cpu_count()} cpus, "
             f"OMP_NUM_THREADS={env['OMP_NUM_THREADS']}",
             "round = median of rounds 2..R-1; stage0 = signatures + clustering; last = the final round (evaluates all)",
             f"{'method':9}{'store':7}{'clients':>8}{'rss MB':>8}{'round s':>9}{'cpu s':>7}{'loop s':>8}{'x1k':>6}{'cpu':>6}"
             f"{'stage0 s':>9}{'last s':>8}{'total s':>8}{'cpu s':>8}{'ckpt MB':>8}{'written':>8}{'state MB':>9}"]
    print("\n".join(lines), flush=True)
    rows = []
    for method in args.methods.split(","):
        for store in args.stores.split(","):
            base = None
            for n in [int(s) for s in args.sizes.split(",")]:
                proc = subprocess.run([sys.executable, __file__, "--one", method, str(n), store, "--rounds", str(args.rounds)],
                                      capture_output=True, text=True, env=env)
                if proc.returncode:
                    sys.exit(f"{method} {n} {store} failed:\n{proc.stderr[-3000:]}")
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                base = base or (r["round_wall_s"], r["round_cpu_s"])
                r["ratio"], r["ratio_cpu"] = round(r["round_wall_s"] / base[0], 2), round(r["round_cpu_s"] / base[1], 2)
                rows.append(r)
                lines.append(f"{method:9}{store:7}{n:8d}{r['peak_rss_mb']:8.0f}{r['round_wall_s']:9.2f}{r['round_cpu_s']:7.2f}"
                             f"{r['round_loop_s']:8.2f}{r['ratio']:6.2f}{r['ratio_cpu']:6.2f}{r['stage0_s']:9.1f}{r['last_round_s']:8.1f}"
                             f"{r['wall_s']:8.1f}{r['cpu_s']:8.1f}{r['checkpoint_mb']:8.1f}{r['checkpoint_written_mb']:8.1f}{r['state_mb']:9.1f}")
                print(lines[-1], flush=True)
    summary = json.dumps({"participants": PARTICIPANTS, "rounds": args.rounds, "rows": rows})
    print(summary)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a" if args.append else "w") as f:
        f.write("\n".join(lines) + "\n" + summary + "\n")


if __name__ == "__main__":
    main()
