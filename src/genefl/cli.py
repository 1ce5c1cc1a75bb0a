"""The `genefl` command line: `genefl run [--config FILE.toml] [--set key=value ...] [--out DIR]`.

Every problem with the user's input ends as one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from .config import Config, load_config, replace
from .errors import GeneflError

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + message
        raise GeneflError(f"{message} (see '{self.prog} --help')")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="genefl", description="GENE-FL and baselines for federated learning with dynamic clients.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log newcomers and details")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="run one federated experiment")
    add_config_arguments(run)
    add_output_arguments(run, "<method>")
    run.add_argument("--resume", type=Path, default=None, metavar="DIR",
                     help="continue the run in DIR from its last checkpoint (a killed or interrupted run)")
    run.add_argument("--tensorboard", type=Path, default=None, metavar="DIR",
                     help="also log accuracy, bytes and newcomer curves for TensorBoard to DIR (extra: genefl[tensorboard])")
    compare = sub.add_parser("compare", help="run several methods on the identical scenario and tabulate them")
    add_config_arguments(compare)
    compare.add_argument("--methods", default="genefl,fedavg,fedprox,scaffold,fedlp,flearngene,pacfl,local",
                         help="comma-separated methods, each optionally with overrides: genefl[newcomer_init=random]")
    add_output_arguments(compare, "compare", seeds_and_jobs=True)
    study = sub.add_parser("newcomers", help="the newcomer study: every newcomer start on the identical newcomers")
    add_config_arguments(study)
    study.add_argument("--methods", default="", help="more methods to run for the method table (genefl, fedavg, "
                       "flearngene and pacfl always run), e.g. fedprox,scaffold,fedlp,local")
    study.add_argument("--replicates", type=int, default=3,
                       help="fine-tuning seeds for the learngene/global/random starts (the noise floor); >= 1")
    add_output_arguments(study, "newcomers", seeds_and_jobs=True)
    attack = sub.add_parser("attack", help="gradient inversion against each method's exact uploads")
    add_config_arguments(attack)
    attack.add_argument("--methods", default="fedavg,genefl", help="comma-separated methods whose uploads are attacked")
    attack.add_argument("--batch", type=int, default=1, help="images per attacked client (one local step on them)")
    attack.add_argument("--images", type=int, default=4, help="images attacked per method (a multiple of --batch)")
    attack.add_argument("--attack", default="idlg", help="dlg, idlg or cosine")
    attack.add_argument("--iterations", type=int, default=100, help="optimiser iterations per restart")
    attack.add_argument("--restarts", type=int, default=2)
    attack.add_argument("--case", default="one_step", help="one_step (best case) or local_epochs (realistic)")
    attack.add_argument("--membership", action="store_true",
                        help="also: membership inference (loss threshold) on the model each method hands a newcomer")
    add_output_arguments(attack, "attack")
    plot = sub.add_parser("plot", help="redraw the plots of a comparison folder")
    plot.add_argument("dir", type=Path)
    return parser


def add_output_arguments(parser: argparse.ArgumentParser, what: str, seeds_and_jobs: bool = False) -> None:
    """--out and --force for every command that writes results; --seeds and --jobs for those that run many."""
    if seeds_and_jobs:
        parser.add_argument("--seeds", default="0", help="comma-separated seeds, e.g. 0,1,2")
        parser.add_argument("--jobs", type=int, default=1,
                            help="runs side by side, the CPU cores split evenly between them (default 1)")
    parser.add_argument("--out", type=Path, default=None, help=f"output folder (default: runs/{what}-<dataset>-<time>)")
    parser.add_argument("--force", action="store_true", help="write into an --out folder that already holds results")


def default_folder(what: str, config: Config) -> Path:
    return Path("runs") / f"{what}-{config.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"


RESULT_FILES = ("results.json", "rounds.csv", "config.toml", "summary.csv", "attack.json")


def prepare_out(out: Path, force: bool) -> Path:
    """Check --out before any data is loaded or round run: a folder we can write that holds no earlier
    results (unless --force), created now. Refusing here is what keeps earlier results intact."""
    for parent in [out, *out.parents]:
        if parent.exists() and not parent.is_dir():
            raise GeneflError(f"--out {out}: {parent} is a file, not a folder")
    if out.is_dir() and not force and (any((out / name).exists() for name in RESULT_FILES)
                                       or any(out.glob("*/seed*/results.json"))):
        raise GeneflError(f"--out {out} already holds results; continue that run with 'genefl run --resume {out}', "
                          "choose another folder, or pass --force to overwrite them")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".genefl-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise GeneflError(f"--out {out}: cannot write there ({exc.strerror})") from None
    return out


def check_jobs(jobs: int) -> int:
    if jobs < 1:
        raise GeneflError(f"--jobs: must be >= 1, got {jobs}")
    return jobs


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, default=None, help="TOML config file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set rounds=5 --set genefl.fisher_top=0.3")


def default_out(config: Config) -> Path:
    return default_folder(config.method, config)


def command_run(args: argparse.Namespace) -> int:
    from .data.scenario import build_scenario
    from .results import ResultWriter, build_results
    from .runtime.progress import ProgressBar
    from .runtime.simulator import Simulator

    from .runtime import checkpoint

    resume = None
    if args.resume is not None:
        if args.config or args.overrides or args.out or args.force:
            raise GeneflError("--resume DIR takes no --config, --set, --out or --force: the run continues as configured in DIR")
        out = args.resume
        if not (out / "config.toml").is_file():
            raise GeneflError(f"--resume {out}: no config.toml there (not a genefl run folder)")
        if (out / "results.json").is_file() and not (out / checkpoint.FILE).exists():
            raise GeneflError(f"--resume {out}: that run already finished (results.json is complete)")
        config = load_config(out / "config.toml")
        if (out / checkpoint.FILE).exists():  # else killed before its first checkpoint: start over
            resume = checkpoint.load(out / checkpoint.FILE, config)
    else:
        config = load_config(args.config, args.overrides)
        out = prepare_out(args.out or default_out(config), args.force)
    scenario = build_scenario(config)
    callbacks = [ProgressBar(config.rounds, config.method), ResultWriter(out)]
    if args.tensorboard is not None:
        from .tensorboard import TensorBoard

        callbacks.append(TensorBoard(args.tensorboard))
    sim = Simulator(config, scenario, callbacks, checkpoint_dir=out)
    result = sim.run(resume)
    print_summary(build_results(result), out)
    return 0


def print_summary(doc: dict, out: Path) -> None:
    s = doc["summary"]

    def pct(v):
        return "-" if v is None else f"{100 * v:.1f}%"

    init = "-" if s["bytes_newcomer_init_mean"] is None else f"{s['bytes_newcomer_init_mean'] / 1e6:.3f} MB"
    lines = [
        f"{doc['method']} on {doc['dataset']} (seed {doc['seed']}), {len(doc['rounds'])} rounds, {s['wall_s']:.1f} s",
        f"  training-client accuracy      {pct(s['acc_clients'])}",
        f"  newcomer accuracy (1st/last)  {pct(s['acc_newcomers_first_epoch'])} / {pct(s['acc_newcomers_last_epoch'])}",
        f"  communication                 {s['bytes_total'] / 1e6:.3f} MB total ({s['bytes_up'] / 1e6:.3f} up, "
        f"{s['bytes_down'] / 1e6:.3f} down), {s['bytes_per_round'] / 1e6:.3f} MB/round",
        f"  newcomer init exchange        {init} (model: {s['model_bytes'] / 1e6:.3f} MB)",
        f"  results                       {out}/results.json",
    ]
    print("\n".join(lines))


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise GeneflError(f"--seeds: expected comma-separated integers, got {text!r}") from None
    if not seeds:
        raise GeneflError("--seeds: name at least one seed")
    return seeds


def command_compare(args: argparse.Namespace) -> int:
    from .comparison import parse_variants, run_comparison
    from .plots import plot_all

    config = load_config(args.config, args.overrides)
    variants, seeds = parse_variants(args.methods), parse_seeds(args.seeds)
    out = prepare_out(args.out or default_folder("compare", config), args.force)
    docs = run_comparison(config, variants, seeds, out, jobs=check_jobs(args.jobs))
    plot_all(docs, out)
    print((out / "summary.md").read_text())
    print(f"tables and plots in {out}")
    return 0


def command_newcomers(args: argparse.Namespace) -> int:
    from .comparison import parse_variants
    from .plots import plot_all
    from .study import run_study

    config = load_config(args.config, args.overrides)
    seeds, jobs = parse_seeds(args.seeds), check_jobs(args.jobs)
    if args.replicates < 1:
        raise GeneflError(f"--replicates: must be >= 1, got {args.replicates}")
    if config.num_newcomers < 1:
        raise GeneflError("num_newcomers: the newcomer study needs at least one newcomer")
    extra = parse_variants(args.methods) if args.methods.strip() else []
    out = prepare_out(args.out or default_folder("newcomers", config), args.force)
    run_study(config, seeds, out, extra, jobs=jobs, replicates=args.replicates)
    from .comparison import load_runs

    plot_all(load_runs(out), out)
    print((out / "summary.md").read_text())
    print((out / "newcomers" / "study.md").read_text())
    print(f"tables and plots in {out} and {out / 'newcomers'}")
    return 0


def command_attack(args: argparse.Namespace) -> int:
    from .comparison import parse_variants
    from .privacy import ATTACKS, CASES, attack_methods

    config = load_config(args.config, args.overrides)
    variants = parse_variants(args.methods)  # e.g. genefl[genefl.gene_include_head=true]
    for value, name in ((args.batch, "--batch"), (args.iterations, "--iterations"), (args.restarts, "--restarts")):
        if value < 1:
            raise GeneflError(f"{name}: must be >= 1, got {value}")
    if args.attack not in ATTACKS:
        raise GeneflError(f"--attack: must be one of {', '.join(ATTACKS)}, got {args.attack!r}")
    for v in variants:
        replace(config, method=v.method, **v.overrides)  # unknown method or option: one line before anything runs
        if v.method == "local":
            raise GeneflError("--methods: 'local' sends nothing upward; there is no upload to attack")
    out = prepare_out(args.out or default_folder("attack", config), args.force)
    if args.case not in CASES:
        raise GeneflError(f"--case: must be one of {', '.join(CASES)}, got {args.case!r}")
    records = attack_methods(config, variants, args.batch, args.images, args.attack, args.iterations, args.restarts, out,
                             membership=args.membership, case=args.case)
    for r in records:
        if r.get("case") == "membership":
            print(f"{r['method']:>12}  membership AUC on the newcomer's start ({r['start']}): {r['auc']:.3f}")
            continue
        if r.get("case") == "signature":
            print(f"   signature  projection onto U: PSNR {r['projection']['psnr']:.1f} dB, best single vector: "
                  f"{r['single_vector']['psnr']:.1f} dB")
            continue
        psnr = "-" if r["psnr"] is None else f"{r['psnr']:.1f} dB"
        print(f"{r['method']:>12}  PSNR {psnr}  SSIM {r['ssim'] if r['ssim'] is None else round(r['ssim'], 3)}  labels {r['label_acc']}")
    print(f"results in {out / 'attack.json'}")
    return 0


def command_plot(args: argparse.Namespace) -> int:
    from .comparison import load_runs, write_summary
    from .plots import plot_all

    from .study import redraw

    docs = load_runs(args.dir)
    write_summary(docs, args.dir)
    for path in plot_all(docs, args.dir):
        print(path)
    study = redraw(args.dir)
    if study is not None:
        print(study)
    return 0


COMMANDS = {"run": command_run, "compare": command_compare, "newcomers": command_newcomers, "attack": command_attack,
            "plot": command_plot}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        args, unknown = build_parser().parse_known_args(argv)
        if unknown:  # reported here so that the message names the subcommand's help
            raise GeneflError(f"unrecognized arguments: {' '.join(unknown)} (see 'genefl {args.command} --help')")
        if args.verbose:
            logging.getLogger("genefl").setLevel(logging.INFO)
        return COMMANDS[args.command](args)
    except GeneflError as exc:
        print(f"genefl: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("\ngenefl: interrupted; finished rounds are in rounds.csv", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
