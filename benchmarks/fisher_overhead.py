"""The Fisher computation as a fraction of one local epoch (goal <= 15%; BENCHMARKS.md 3.6).

For one client of BENCHMARKS.md section 1's scenario (Fashion-MNIST, CNN, 20 clients at Dirichlet
0.1, the median client by size), times `fisher.diagonal_fisher` on `fisher_samples` (256) samples
and one local epoch of GENE-FL's training (batch 32, with the gradient correction), alternating the
two, and reports medians and their ratio. Also the elastic mask + normalisation, and the sensitivity scores.

Usage: GENEFL_DATA=../shared/data python benchmarks/fisher_overhead.py [--repeats 7]
Prints a table and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from genefl.algorithms.genefl import fisher, sensitivity
from genefl.config import load_config
from genefl.algorithms.genefl.constraints import coefficients
from genefl.data.scenario import build_scenario
from genefl.protocol.layers import model_layers
from genefl.runtime.assembly import model_spec
from genefl.protocol.training import GradientCorrection, TrainSettings, snapshot, train


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="fashion_mnist" if os.environ.get("GENEFL_DATA") else "digits")
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--fisher-samples", type=int, default=0, help="override genefl.fisher_samples (0 = default 256)")
    args = parser.parse_args()
    overrides = [f"dataset={args.dataset}", f"model={args.model}", "num_clients=20", "num_newcomers=0", "alpha=0.1"]
    if args.dataset != "digits":
        overrides.append("train_subset=12000")
    if args.fisher_samples:
        overrides.append(f"genefl.fisher_samples={args.fisher_samples}")
    config = load_config(None, overrides)
    scenario = build_scenario(config)
    sizes = sorted(range(len(scenario.clients)), key=lambda i: scenario.clients[i].num_train)
    data = scenario.clients[sizes[len(sizes) // 2]]
    model = model_spec(config, scenario.input_shape, scenario.num_classes).build(config.seed, "global")
    layers = model_layers(model)
    opts = config.genefl
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed(0)

    fis = fisher.diagonal_fisher(model, data.x_train, data.y_train, opts.fisher_samples, gen)  # warm-up
    prepared = {}

    def compute_fisher():
        prepared["fisher"] = fisher.diagonal_fisher(model, data.x_train, data.y_train, opts.fisher_samples, gen)

    def mask_and_coefficients():
        mask = fisher.elastic_mask(fis, layers, opts.fisher_top)
        norm = fisher.normalised_fisher(fis, mask)
        masked = {k: norm[k] * mask[k] for k in names}
        prepared["coefs"] = coefficients(names, layers, [1 / len(layers)] * len(layers), masked, opts.lambda_s,
                                         opts.lambda_e, max_coef=1 / config.lr)

    mask_and_coefficients()
    before = snapshot(model)
    settings = TrainSettings(1, config.batch_size, config.lr)

    def epoch():
        correction = GradientCorrection(anchor=[before[n] for n in names], coef=prepared["coefs"])
        train(model, data.x_train, data.y_train, settings, gen, correction)

    def scores():
        sensitivity.stability(before, snapshot(model), layers)

    rows = {"fisher": [], "mask+coefficients": [], "local epoch": [], "stability scores": []}
    for _ in range(args.repeats):
        rows["fisher"].append(timed(compute_fisher))
        rows["mask+coefficients"].append(timed(mask_and_coefficients))
        rows["local epoch"].append(timed(epoch))
        rows["stability scores"].append(timed(scores))
    med = {k: statistics.median(v) for k, v in rows.items()}
    ratio = med["fisher"] / med["local epoch"]
    print(f"{args.dataset}, {args.model}, client with {data.num_train} samples, Fisher on "
          f"{min(opts.fisher_samples, data.num_train)}; {torch.get_num_threads()} threads")
    for k, v in med.items():
        print(f"{k:20} {1000 * v:9.1f} ms   {100 * v / med['local epoch']:6.1f}% of a local epoch")
    print(json.dumps({"dataset": args.dataset, "model": args.model, "client_samples": data.num_train,
                      "fisher_samples": min(opts.fisher_samples, data.num_train),
                      "median_ms": {k: round(1000 * v, 2) for k, v in med.items()}, "fisher_over_epoch": round(ratio, 4)}))


if __name__ == "__main__":
    main()
