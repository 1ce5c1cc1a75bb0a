"""Newcomer accuracy per fine-tuning epoch, mean over newcomers, for every run in a comparison folder.

Usage: python benchmarks/newcomer_curves.py DIR   (DIR as written by `genefl compare`)
Prints a Markdown table (one row per variant and seed) and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def curves(out: Path) -> dict[str, list[float]]:
    rows = {}
    for path in sorted(out.glob("*/seed*/results.json")):
        doc = json.loads(path.read_text())
        newcomers = doc["newcomers"]
        if not newcomers:
            continue
        epochs = min(len(n["acc_by_epoch"]) for n in newcomers)
        def mean_of(values):  # null = a newcomer with an empty test split
            values = [v for v in values if v is not None]
            return sum(values) / len(values) if values else float("nan")

        init = mean_of(n["acc_init"] for n in newcomers)
        mean = [mean_of(n["acc_by_epoch"][e] for n in newcomers) for e in range(epochs)]
        kinds = sorted({n["init"] for n in newcomers})
        init_mb = sum(n["init_bytes"] for n in newcomers) / len(newcomers) / 1e6
        rows[f"{path.parent.parent.name} {path.parent.name} ({'/'.join(kinds)}, {init_mb:.3f} MB)"] = [init] + mean
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path, help="a folder written by `genefl compare`")
    out = parser.parse_args().dir
    rows = curves(out)
    if not rows:
        sys.exit(f"no */seed*/results.json with newcomers under {out}")
    epochs = max(len(v) for v in rows.values()) - 1
    print("| run (init, MB per newcomer init) | before | " + " | ".join(f"epoch {e + 1}" for e in range(epochs)) + " |")
    print("|---|" + "---|" * (epochs + 1))
    for name, values in rows.items():
        print(f"| {name} | " + " | ".join(f"{100 * v:.1f}" for v in values) + " |")
    print(json.dumps({"newcomer_acc_by_epoch": rows}))


if __name__ == "__main__":
    main()
