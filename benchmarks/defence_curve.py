"""The defence curve of BENCHMARKS.md 5.1: clip-and-noise (`dp_clip`, `dp_noise`, `genefl.protocol.defence`)
against the noise level, for GENE-FL and FedAvg: the attack's PSNR on each method's exact (defended)
uploads, and the training clients' and newcomers' accuracy of the same configuration, in one plot.

    GENEFL_DATA=../shared/data OMP_NUM_THREADS=1 python benchmarks/defence_curve.py \\
        --out benchmarks/results/privacy/defence

Scenario: configs/newcomers_mnist_alpha0.1.toml with `--model` (LeNet-5, the privacy table's model,
or the MLP, on which the attack works) and
`--rounds` rounds (default 15, half the study's, to fit the sweep in one sitting; stated in the
output). Attack: the cosine attack (200 iterations, 1 restart) on `--images` images at B = 1, the
best case. Per-upload ε at δ = 1e-5 as results.json reports it.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from genefl.experiments.comparison import Variant


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noise", default="0,0.001,0.003,0.01,0.03,0.1")
    parser.add_argument("--clip", type=float, default=1.0)
    parser.add_argument("--methods", default="genefl,fedavg")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--model", default="lenet5", help="lenet5 (the privacy table's model) or mlp (where the attack works)")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/privacy/defence"))
    args = parser.parse_args()

    import genefl
    from genefl.config import load_config, replace
    from genefl.experiments.privacy import attack_methods

    base = load_config(Path("configs/newcomers_mnist_alpha0.1.toml"),
                       [f'model="{args.model}"', f"rounds={args.rounds}", f"seed={args.seed}"])
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "defence.json"
    records = json.loads(path.read_text()) if path.exists() else []
    done = {(r["method"], r["dp_noise"]) for r in records}
    for noise in [float(v) for v in args.noise.split(",")]:
        for method in args.methods.split(","):
            if (method, noise) in done:
                continue
            config = replace(base, method=method, dp_clip=args.clip if noise > 0 else 0.0, dp_noise=noise)
            summary = genefl.run(config).summary
            (args.out / f"{method}_noise{noise:g}").mkdir(exist_ok=True)
            attacked = attack_methods(config, [Variant(method, method, {})], 1, args.images, "cosine", 200, 1,
                                      args.out / f"{method}_noise{noise:g}")
            records.append({"method": method, "dp_clip": config.dp_clip, "dp_noise": noise,
                            "epsilon_per_upload": summary["dp_epsilon_per_upload"],
                            "acc_clients": summary["acc_clients"], "acc_newcomers_last": summary["acc_newcomers_last_epoch"],
                            "psnr": attacked[0]["psnr"], "ssim": attacked[0]["ssim"], "label_acc": attacked[0]["label_acc"],
                            "rounds": args.rounds, "images": args.images})
            path.write_text(json.dumps(records, indent=1))
            print(f"{method} noise {noise:g}: acc {summary['acc_clients']:.3f}, PSNR {attacked[0]['psnr']:.1f}", flush=True)
    plot(records, args.out / "defence.png", args.model)


def plot(records: list[dict], path: Path, model: str = "lenet5") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    nonzero = [r["dp_noise"] for r in records if r["dp_noise"] > 0]
    zero_at = min(nonzero) / 3 if nonzero else 1e-4  # noise 0 drawn left of the smallest noise on the log axis
    for method, style in (("genefl", "-o"), ("fedavg", "--s")):
        mine = sorted((r for r in records if r["method"] == method), key=lambda r: r["dp_noise"])
        if not mine:
            continue
        x = [r["dp_noise"] or zero_at for r in mine]
        left.plot(x, [r["psnr"] for r in mine], style, label=method)
        right.plot(x, [100 * r["acc_clients"] for r in mine], style, label=f"{method}: training clients")
        right.plot(x, [100 * r["acc_newcomers_last"] for r in mine], style, alpha=0.5, label=f"{method}: newcomers")
    for ax, label in ((left, "attack PSNR (dB), B = 1"), (right, "accuracy (%)")):
        ax.set_xscale("log")
        ax.set_xlabel("dp_noise σ (clip C = 1; leftmost point: no defence)")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    fig.suptitle(f"Clip and noise on every upload: what it costs and what it hides (MNIST, {model})")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
