"""The communication/accuracy frontier (BENCHMARKS.md 4.9): newcomers' accuracy after fine-tuning
against the run's total bytes, for the learnGenes of BENCHMARKS.md 4.9 (GENE-FL at its defaults,
greedy selection, other budgets, FLearngene) beside FedAvg and `local`, from the committed results
(Fashion-MNIST α = 0.1, seeds 0-2).

    python benchmarks/frontier_plot.py   # -> benchmarks/results/newcomers/frontier_fashion_alpha0.1.png
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

ROOT = Path("benchmarks/results/newcomers")
RUNS = {  # model -> (label, folder)
    "CNN": [("GENE-FL {conv1, conv2}", "fashion_alpha0.1_cnn/genefl"),
            ("GENE-FL budget 0.1 {conv1}", "fashion_alpha0.1_cnn_budgets/genefl_genefl.gene_budget=0.1"),
            ("GENE-FL greedy 0.4 {conv1, conv2, fc1}",
             "fashion_alpha0.1_cnn_budgets/genefl_genefl.gene_selection=greedy_genefl.gene_budget=0.4"),
            ("FLearngene {fc1}", "fashion_alpha0.1_cnn/flearngene"), ("FedAvg (global model)", "fashion_alpha0.1_cnn/fedavg"),
            ("local (random start)", "fashion_alpha0.1_cnn/local")],
    "LeNet-5": [("GENE-FL {conv1, conv2}", "fashion_alpha0.1_lenet5/genefl"),
                ("GENE-FL greedy {conv1, conv2, fc2}", "fashion_alpha0.1_lenet5_variants/genefl_genefl.gene_selection=greedy"),
                ("FLearngene {fc2}", "fashion_alpha0.1_lenet5/flearngene"), ("FedAvg (global model)", "fashion_alpha0.1_lenet5/fedavg"),
                ("local (random start)", "fashion_alpha0.1_lenet5_variants/local")],
}


def point(folder: str) -> tuple[float, float, float]:
    docs = [json.loads((ROOT / folder / f"seed{s}" / "results.json").read_text()) for s in (0, 1, 2)]
    accs = [100 * d["summary"]["acc_newcomers_last_epoch"] for d in docs]
    return statistics.mean(d["summary"]["bytes_total"] for d in docs) / 1e6, statistics.mean(accs), statistics.stdev(accs)


def main() -> None:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()  # no options; --help says what it draws
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, (model, runs) in zip(axes, RUNS.items()):
        for label, folder in runs:
            mb, acc, sd = point(folder)
            ax.errorbar(mb, acc, yerr=sd, fmt="o", capsize=3, label=f"{label}: {mb:.1f} MB, {acc:.1f}%")
        ax.set_xscale("log")
        ax.set_xlabel("total MB sent in the run (log)")
        ax.set_ylabel("newcomer accuracy after 5 epochs (%)")
        ax.set_title(f"{model}, Fashion-MNIST α = 0.1, seeds 0-2 (mean ± sd)")
        ax.legend(fontsize=6.5, loc="upper left")
    fig.tight_layout()
    out = ROOT / "frontier_fashion_alpha0.1.png"
    fig.savefig(out, dpi=120)
    print(out)


if __name__ == "__main__":
    main()
