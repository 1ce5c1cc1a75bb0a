"""GENE-FL's one-shot clustering at 1,000 and 10,000 clients: `clustering.method` exact vs sampled.

Two populations of signatures (p = 5): Synthetic(1, 1) clients (each client's top-5 left singular
vectors of its 60-feature training data, as GENE-FL's clients send them) and planted ones (near one
of 10 random 5-dimensional subspaces of R^60: about 10 degrees from their own, 60-80 from the
others). For each, at the default threshold (`clustering.beta` = 35 degrees) and at
`clustering.num_clusters` = 10:
- wall and CPU time of the exact clustering at 1,000 clients (batched LAPACK angles) and at 10,000
  (the compiled kernel of genefl/algorithms/angles.py), and of the sampled one at both sizes;
- agreement with the exact clustering (adjusted Rand index): at 1,000 clients the mean over 3 sample
  seeds, at 10,000 sample seed 0 for each --scale-samples size; and for scale the agreement of the
  exact clustering with itself when 1% of the clients are left out (exact on a seeded 990, against the full clustering restricted to them, from the same
  distance matrix): where that is low the population has no stable clusters for any method to find.

`--sweep 300,500,700,900` instead: only the agreement (ARI, mean over the sample seeds) of the sampled
clustering with the exact one at the first size, for each sample size, on the Synthetic(1, 1)
signatures (no timing): how much of the population a sample must hold to agree with the exact clustering.

Usage: PYTHONPATH=src python benchmarks/clustering_scale.py [--out FILE] [--sizes 1000,10000]
       (at every thread torch has; OMP_NUM_THREADS=1 for one)
       OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/clustering_scale.py --sweep 300,500,700,900 \
           --out benchmarks/results/performance/clustering_sweep.txt
Prints a table and a final JSON line, and writes the same text to --out
(default benchmarks/results/performance/clustering_scale.txt).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

import numpy as np
import torch

from genefl.algorithms import clustering
from genefl.config import load_config
from genefl.data import synthetic
from genefl.data.scenario import ScenarioSpec

SETTINGS = {"beta 35": (0, 35.0), "K = 10": (10, 35.0)}


def synthetic_signatures(n: int) -> list[torch.Tensor]:
    spec = ScenarioSpec.of(load_config(None, ["dataset=synthetic", f"num_clients={n}", "num_newcomers=0"]))
    return [clustering.signature(synthetic.client_data(spec, k).x_train, 5) for k in range(n)]


def planted_signatures(n: int, groups: int = 10, d: int = 60, p: int = 5) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    bases = [torch.linalg.qr(torch.randn(d, p, generator=gen, dtype=torch.float64))[0] for _ in range(groups)]
    truth = torch.randint(0, groups, (n,), generator=gen).tolist()
    return [torch.linalg.qr(bases[t] + 0.02 * torch.randn(d, p, generator=gen, dtype=torch.float64))[0].float()
            for t in truth]


def timed(fn):
    """(result, wall seconds, CPU seconds of this process): on a shared machine the CPU time is what
    the wall time would be on an idle core (at one thread)."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def at_thousand(sigs: list[torch.Tensor], sample: int, seeds: int) -> dict:
    from sklearn.metrics import adjusted_rand_score

    distances, prox_s, prox_cpu = timed(lambda: clustering.proximity_matrix(sigs))
    rows = {}
    for name, (k, beta) in SETTINGS.items():
        exact, link_s, link_cpu = timed(lambda: clustering.cluster(distances, k, beta))
        sampled, walls, cpus = [], [], []
        for seed in range(seeds):
            labels, wall, cpu = timed(lambda: clustering.cluster_sampled(sigs, sample, k, beta, np.random.default_rng(seed)))
            sampled.append(adjusted_rand_score(exact, labels))
            walls.append(wall)
            cpus.append(cpu)
        self_ari = []
        for seed in range(seeds):
            kept = np.sort(np.random.default_rng(100 + seed).choice(len(sigs), int(0.99 * len(sigs)), replace=False))
            rows_kept = torch.from_numpy(kept)
            sub = clustering.cluster(distances[rows_kept][:, rows_kept], k, beta)
            self_ari.append(adjusted_rand_score(np.asarray(exact)[kept], sub))
        rows[name] = {"exact_s": round(prox_s + link_s, 2), "exact_cpu_s": round(prox_cpu + link_cpu, 2),
                      "exact_clusters": max(exact) + 1, "sampled_s": round(float(np.median(walls)), 2),
                      "sampled_cpu_s": round(float(np.median(cpus)), 2), "sampled_clusters": max(labels) + 1,
                      "ari_sampled_vs_exact": round(float(np.mean(sampled)), 3),
                      "ari_exact_99pct_vs_exact": round(float(np.mean(self_ari)), 3)}
    return rows


def at_scale(sigs: list[torch.Tensor], samples: list[int]) -> dict:
    """The exact clustering at this size (its angles from the compiled kernel above
    clustering.COMPILED_ABOVE clients), timed, and each sampled one timed and compared with it."""
    from sklearn.metrics import adjusted_rand_score

    distances, prox_s, prox_cpu = timed(lambda: clustering.proximity_matrix(sigs))
    rows = {}
    for name, (k, beta) in SETTINGS.items():
        exact, link_s, link_cpu = timed(lambda: clustering.cluster(distances, k, beta))
        row = {"exact_s": round(prox_s + link_s, 2), "exact_cpu_s": round(prox_cpu + link_cpu, 2),
               "angles_s": round(prox_s, 2), "exact_clusters": max(exact) + 1, "sampled": {}}
        for sample in samples:
            labels, wall, cpu = timed(lambda: clustering.cluster_sampled(sigs, sample, k, beta, np.random.default_rng(0)))
            row["sampled"][sample] = {"s": round(wall, 2), "cpu_s": round(cpu, 2), "clusters": max(labels) + 1,
                                      "ari_vs_exact": round(float(adjusted_rand_score(exact, labels)), 3)}
        rows[name] = row
    return rows


def sweep(sigs: list[torch.Tensor], samples: list[int], seeds: int) -> dict:
    """Per setting and sample size: the sampled clustering's ARI with the exact one, one value per sample seed."""
    from sklearn.metrics import adjusted_rand_score

    distances = clustering.proximity_matrix(sigs)
    rows = {}
    for name, (k, beta) in SETTINGS.items():
        exact = clustering.cluster(distances, k, beta)
        rows[name] = {s: [round(float(adjusted_rand_score(exact, clustering.cluster_sampled(
            sigs, s, k, beta, np.random.default_rng(seed)))), 3) for seed in range(seeds)] for s in samples}
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000", help="the first: exact (LAPACK) against --sample, and against itself without 1%% of the clients; the others: exact against --scale-samples")
    parser.add_argument("--sample", type=int, default=300, help="clients sampled at the first size")
    parser.add_argument("--scale-samples", default="1000,3000", help="clients sampled at the larger sizes")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--sweep", default="", help="comma-separated sample sizes: only their ARI with the exact clustering at the first size")
    parser.add_argument("--out", default="benchmarks/results/performance/clustering_scale.txt")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    lines, doc = [], {"threads": torch.get_num_threads()}

    def say(text: str) -> None:
        print(text, flush=True)
        lines.append(text)

    if args.sweep:
        rows = sweep(synthetic_signatures(sizes[0]), [int(s) for s in args.sweep.split(",")], args.seeds)
        say(f"synthetic(1,1), {sizes[0]} clients: ARI of the sampled clustering with the exact one, sample seeds 0-{args.seeds - 1}")
        for name, by_sample in rows.items():
            for sample, aris in by_sample.items():
                say(f"  {name:8} sample {sample:>5}: {', '.join(f'{a:.3f}' for a in aris)} (mean {np.mean(aris):.3f})")
        say(json.dumps(rows))
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(lines) + "\n")
        return

    say(f"clustering at scale, {torch.get_num_threads()} torch thread(s), p = 5; load average {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} cores (CPU s: this process's own time, what an idle core would take)")
    for population, make in (("synthetic(1,1)", synthetic_signatures), ("planted 10", planted_signatures)):
        sigs, made_s, _ = timed(lambda: make(max(sizes)))
        say(f"\n{population}: {max(sizes)} signatures made in {made_s:.1f} s (client side, not timed below)")
        first = at_thousand(sigs[: sizes[0]], args.sample, args.seeds)
        doc[population] = {str(sizes[0]): first}
        for name, r in first.items():
            say(f"  {sizes[0]:>6} clients, {name:8}: exact {r['exact_s']:6.2f} s, CPU {r['exact_cpu_s']:6.2f} s "
                f"({r['exact_clusters']} clusters) | sampled {args.sample}: {r['sampled_s']:5.2f} s, CPU "
                f"{r['sampled_cpu_s']:5.2f} s ({r['sampled_clusters']} clusters), ARI vs exact "
                f"{r['ari_sampled_vs_exact']:.3f} | exact without 1%: ARI {r['ari_exact_99pct_vs_exact']:.3f}")
        for n in sizes[1:]:
            scale = at_scale(sigs[:n], [int(s) for s in args.scale_samples.split(",")])
            doc[population][str(n)] = scale
            for name, r in scale.items():
                timings = ", ".join(f"sample {s}: {t['s']:.2f} s, CPU {t['cpu_s']:.2f} s ({t['clusters']} clusters, "
                                    f"ARI vs exact {t['ari_vs_exact']:.3f})" for s, t in r["sampled"].items())
                say(f"  {n:>6} clients, {name:8}: exact {r['exact_s']:6.2f} s (angles {r['angles_s']:.2f} s), CPU "
                    f"{r['exact_cpu_s']:6.2f} s ({r['exact_clusters']} clusters) | {timings}")
    doc["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    say(f"\npeak RSS {doc['peak_rss_mb']} MB")
    say(json.dumps(doc))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
