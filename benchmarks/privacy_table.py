"""The leakage table of BENCHMARKS.md 5: the exact uploads of FedAvg, FedProx, SCAFFOLD, FedLP, PACFL,
FLearngene and GENE-FL (with and without the head; `--methods`) attacked (iDLG by default,
`--attack`; `genefl.experiments.privacy`) on the same images, per dataset x model family x seed x batch size x
threat case; results and image grids under OUT/<dataset>_<model>/seed<S>_B<B>_<case>/ (one `genefl
attack` folder each: attack.json + grids), then OUT/table.md with mean ± std over seeds. Finished
cells are skipped, so the script can be stopped and rerun; each finished (dataset, model) can be
committed on its own.

    GENEFL_DATA=../shared/data OMP_NUM_THREADS=1 python benchmarks/privacy_table.py --datasets mnist,fashion_mnist \\
        --models lenet5 --attack cosine --iterations 200 --restarts 1 --out benchmarks/results/privacy
    # on a GPU (the attack, the simulated round and the membership runs all use config.device):
    ... --set 'device="cuda"'
    # N processes at one torch thread each, every cell's methods in K chunks (merged per cell):
    ... --jobs N --split K
    python benchmarks/privacy_table.py --out benchmarks/results/privacy --table-only

Attack budget per image batch: `--iterations` optimiser iterations x `--restarts` restarts (Adam
for the cosine attack, L-BFGS for DLG/iDLG); wall seconds per cell are recorded beside the results.
With one local epoch (the configs' default) the realistic case at B = 1 is one step, i.e. the best
case: that cell is not run again (the table says so).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

METHODS = "fedavg,fedprox,scaffold,fedlp,pacfl,flearngene,genefl,genefl[genefl.gene_include_head=true]"


def run_cell(dataset: str, model: str, seed: int, batch: int, case: str, args, folder: Path) -> None:
    from genefl.experiments.comparison import parse_variants
    from genefl.config import load_config
    from genefl.experiments.privacy import attack_methods

    config = load_config(None, [f'dataset="{dataset}"', f'model="{model}"', f"seed={seed}", *args.set])
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "baseline.json").write_text(json.dumps(unrelated_baseline(config, args.images, batch)))
    if config.device != "cpu":  # wall times from another device are not comparable with the CPU cells
        (folder / "device.txt").write_text(f"{config.device}\n")
    start = time.perf_counter()
    attack_methods(config, parse_variants(args.methods), batch, args.images, args.attack, args.iterations,
                   args.restarts, folder, case=case)
    (folder / "wall_s.txt").write_text(f"{time.perf_counter() - start:.1f}\n")  # last: the cell is complete


def cell_devices(folder: Path) -> set[str]:
    """The devices a cell (or chunk) ran on: its device.txt, absent for the CPU."""
    path = folder / "device.txt"
    return set(path.read_text().strip().split(", ")) if path.exists() else {"cpu"}


def unrelated_baseline(config, images: int, batch: int) -> dict:
    """What "recovering nothing" scores: the attacked images against as many other training images,
    matched within each batch the way reconstructions are (so B = 8 gets the best of 8)."""
    import numpy as np
    import torch

    from genefl import rng
    from genefl.data.scenario import load_for
    from genefl.experiments.privacy import attack_images, image_scores

    x, _ = attack_images(config, images)
    data = load_for(config)
    other = data.x_train[torch.from_numpy(rng.numpy_rng(config.seed, "attack-baseline").choice(len(data.y_train), images, replace=False))]
    scores = [s for i in range(0, images, batch) for s in image_scores(x[i:i + batch], other[i:i + batch])]
    return {"method": "unrelated images (baseline)", "psnr": float(np.mean([s[1] for s in scores])),
            "ssim": float(np.mean([s[2] for s in scores])), "label_acc": None, "payload_bytes": [0]}


def duplicate(case: str, batch: int, args) -> bool:
    """The realistic case with a single local step is the best case again: not run twice."""
    from genefl.config import Config
    from genefl.experiments.privacy import local_steps

    return case != "one_step" and "one_step" in args.cases and local_steps(Config(), batch, case)[2] == 1


def fmt(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    values = [v * scale for v in values if v is not None]
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {sd:.{digits}f}"


def table(out: Path) -> str:
    lines = ["# Gradient inversion against each method's exact uploads", "",
             "Mean ± std over seeds of the per-seed means over the attacked images (PSNR in dB, SSIM, label "
             "accuracy in %). Raw: each cell's `attack.json`; grids beside it.", ""]
    for pair in sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith(".")):
        cells = sorted(pair.glob("seed*_B*_*/attack.json"))
        if not cells:
            continue
        by: dict[tuple, list[dict]] = {}
        walls: dict[tuple, list[float]] = {}
        for path in cells:
            _, b, case = path.parent.name.split("_", 2)
            key = (int(b[1:]), case)
            if (path.parent / "wall_s.txt").exists():
                walls.setdefault(key, []).append(float((path.parent / "wall_s.txt").read_text()))
            for r in json.loads(path.read_text()):
                if r.get("case") in ("one_step", "local_epochs"):
                    by.setdefault(key + (r["method"],), []).append(r)
            if (path.parent / "baseline.json").exists():
                base = json.loads((path.parent / "baseline.json").read_text())
                by.setdefault(key + (base["method"],), []).append(base)
        seeds = len({p.parent.name.split("_")[0] for p in cells})
        devices = set().union(*(cell_devices(p.parent) for p in cells))
        ran_on = (f"; devices: {', '.join(sorted(devices))}, per cell in its device.txt (wall times not comparable "
                  "across devices)" if devices != {"cpu"} else "")
        lines += [f"## {pair.name} ({seeds} seeds{ran_on})", "",
                  "| batch | case | method | PSNR | SSIM | labels | upload bytes |", "|---|---|---|---|---|---|---|"]
        for (b, case, method), rs in sorted(by.items(), key=lambda kv: (kv[0][0], kv[0][1])):
            upload = statistics.mean(x for r in rs for x in r["payload_bytes"])
            lines.append(f"| {b} | {case} | {method} | {fmt([r['psnr'] for r in rs])} | "
                         f"{fmt([r['ssim'] for r in rs], digits=3)} | {fmt([r['label_acc'] for r in rs], 100, 0)} | {upload:,.0f} |")
        if not any(c == "local_epochs" for (b2, c, _m) in by if b2 == 1):
            lines.append("| 1 | local_epochs | (every method) | = one_step: one local step | | | |")
        lines += ["", "Wall seconds per cell (all methods, " + ", ".join(f"B={b} {c}: {statistics.median(w):.0f}"
                                                                   for (b, c), w in sorted(walls.items())) + "; median)", ""]
    return "\n".join(lines)


def pending_cells(args):
    """(dataset, model, seed, batch, case, folder) of every cell not yet finished, in run order."""
    for dataset in args.datasets.split(","):
        for model in args.models.split(","):
            for seed in map(int, args.seeds.split(",")):
                for batch in map(int, args.batches.split(",")):
                    for case in args.cases.split(","):
                        folder = args.out / f"{dataset}_{model}" / f"seed{seed}_B{batch}_{case}"
                        if not (folder / "wall_s.txt").exists() and not duplicate(case, batch, args):
                            yield dataset, model, seed, batch, case, folder


def split_methods(methods: str, parts: int) -> list[str]:
    """The method list in `parts` contiguous chunks (commas inside a variant's [...] kept)."""
    names, depth, current = [], 0, ""
    for ch in methods + ",":
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            names.append(current)
            current = ""
        else:
            current += ch
    size = -(-len(names) // parts)
    return [",".join(names[i:i + size]) for i in range(0, len(names), size)]


def merge_parts(parts: list[Path], folder: Path) -> None:
    """One cell from its method chunks: records in method order, the signature record once at the end
    (as a single run writes it), every grid, wall seconds summed (the cell's compute time)."""
    records, signature = [], None  # (chunks are complete: each wrote its wall_s.txt last)
    for part in parts:
        for record in json.loads((part / "attack.json").read_text()):
            if record["method"] == "genefl/pacfl signature":
                signature = signature or record
            else:
                records.append(record)
    folder.mkdir(parents=True, exist_ok=True)
    for part in parts:
        for grid in part.glob("grid_*.png"):
            shutil.copy(grid, folder / grid.name)
    shutil.copy(parts[0] / "baseline.json", folder / "baseline.json")
    devices = set().union(*(cell_devices(p) for p in parts))
    if devices != {"cpu"}:  # chunks of one cell can come from different machines (a resumed run)
        (folder / "device.txt").write_text(", ".join(sorted(devices)) + "\n")
    (folder / "attack.json").write_text(json.dumps(records + ([signature] if signature else []), indent=1))
    (folder / "wall_s.txt").write_text(f"{sum(float((p / 'wall_s.txt').read_text()) for p in parts):.1f}\n")


def run_parallel(args) -> None:
    """--jobs N: every pending cell's methods in --split chunks, each chunk one subprocess of this
    script at one torch thread (N at a time, B = 1 cells first: they take longest); a cell is merged
    into its folder as soon as its chunks are done, so a stopped run keeps every finished cell (and
    finished chunks, under OUT/.parts, which a rerun does not repeat)."""
    chunks = split_methods(args.methods, args.split)
    waiting: dict[Path, list[Path]] = {}  # cell folder -> its chunks' cell folders, until merged
    tasks = []
    for dataset, model, seed, batch, case, folder in pending_cells(args):
        parts = [args.out / ".parts" / f"{dataset}_{model}_{folder.name}_part{i}" for i in range(len(chunks))]
        waiting[folder] = [p / f"{dataset}_{model}" / folder.name for p in parts]
        tasks += [(batch, dataset, model, seed, case, chunk, part, cell)
                  for chunk, part, cell in zip(chunks, parts, waiting[folder])]
    tasks.sort(key=lambda t: -t[0])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    running: dict[Path, subprocess.Popen] = {}  # chunk's cell folder -> its process
    failed = 0
    while tasks or running:
        while tasks and len(running) < args.jobs:
            batch, dataset, model, seed, case, chunk, part, cell = tasks.pop(0)
            if (cell / "wall_s.txt").exists():  # a chunk finished by an earlier, stopped run
                continue
            part.mkdir(parents=True, exist_ok=True)
            command = [sys.executable, __file__, "--datasets", dataset, "--models", model, "--seeds", str(seed),
                       "--batches", str(batch), "--cases", case, "--methods", chunk, "--images", str(args.images),
                       "--attack", args.attack, "--iterations", str(args.iterations), "--restarts", str(args.restarts),
                       "--out", str(part), *[a for kv in args.set for a in ("--set", kv)]]
            with open(part / "log.txt", "w") as log:
                running[cell] = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        time.sleep(0.5)
        for cell, proc in list(running.items()):
            if proc.poll() is None:
                continue
            del running[cell]
            if proc.returncode:
                failed += 1
                part = cell.parents[1]
                print(f"failed ({proc.returncode}): {part}; see {part / 'log.txt'}", flush=True)
        for folder, cells in list(waiting.items()):
            if not any(c in running for c in cells) and all((c / "wall_s.txt").exists() for c in cells):
                merge_parts(cells, folder)
                for c in cells:
                    shutil.rmtree(c.parents[1])
                del waiting[folder]
                print(f"finished {folder}", flush=True)
    if (args.out / ".parts").exists() and not any((args.out / ".parts").iterdir()):
        (args.out / ".parts").rmdir()
    if failed:
        raise SystemExit(f"{failed} chunk(s) failed; finished cells are kept, rerun to retry the rest")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="mnist,fashion_mnist")
    parser.add_argument("--models", default="lenet5,cnn")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--cases", default="one_step,local_epochs")
    parser.add_argument("--methods", default=METHODS)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--attack", default="idlg")
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--restarts", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/privacy"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="config override for every cell, e.g. device=\"cuda\" (repeatable)")
    parser.add_argument("--jobs", type=int, default=1, help="cells (or chunks, --split) run at once, one process each")
    parser.add_argument("--split", type=int, default=1, help="with --jobs: each cell's methods in this many chunks")
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args()
    if args.table_only:
        pass
    elif args.jobs > 1:
        run_parallel(args)
    else:
        for dataset, model, seed, batch, case, folder in pending_cells(args):
            run_cell(dataset, model, seed, batch, case, args, folder)
            print(f"finished {folder}", flush=True)
            (args.out / "table.md").write_text(table(args.out))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(table(args.out))
    print(args.out / "table.md")


if __name__ == "__main__":
    main()
