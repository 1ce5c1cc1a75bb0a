"""The `genefl` command line: `genefl run [--config FILE.toml] [--set key=value ...] [--out DIR]`.

Every problem with the user's input ends as one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from pathlib import Path

from .config import Config, load_config
from .errors import GeneflError
from .paths import RESULT_FILES, checked, output_folder, shown

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


def prepare_out(args: argparse.Namespace, default: Path, resumable: bool = False):
    """--out, checked before any data is loaded or round run: a folder we can write that holds no
    earlier results (unless --force), created now and removed again if the command fails before
    writing into it. Refusing here is what keeps earlier results intact."""
    out = args.out or default
    advice = "choose another folder, or pass --force to overwrite them"
    if resumable:
        advice = f"continue that run with 'genefl run --resume {shown(str(out))}', " + advice
    return output_folder("--out", out, args.force, RESULT_FILES, advice)


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
        out = checked("--resume", args.resume, GeneflError)
        if not (out / "config.toml").is_file():
            raise GeneflError(f"--resume {shown(str(out))}: no config.toml there (not a genefl run folder)")
        if (out / "results.json").is_file() and not (out / checkpoint.FILE).exists():
            raise GeneflError(f"--resume {shown(str(out))}: that run already finished (results.json is complete)")
        config = load_config(out / "config.toml")
        if (out / checkpoint.FILE).exists():  # else killed before its first checkpoint: start over
            resume = checkpoint.load(out / checkpoint.FILE, config)
        folder = contextlib.nullcontext(out)
    else:
        config = load_config(args.config, args.overrides)
        folder = prepare_out(args, default_out(config), resumable=True)
    with contextlib.ExitStack() as stack:
        callbacks = []
        if args.tensorboard is not None:  # checked (and created) before the run, like --out
            from .tensorboard import TensorBoard

            logs = stack.enter_context(output_folder("--tensorboard", args.tensorboard, True, ()))
            callbacks.append(TensorBoard(logs))
        out = stack.enter_context(folder)
        scenario = build_scenario(config)
        callbacks = [ProgressBar(config.rounds, config.method), ResultWriter(out), *callbacks]
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
    from .experiments.comparison import check_seeds

    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise GeneflError(f"--seeds: expected comma-separated integers, got {shown(text)}") from None
    if not seeds:
        raise GeneflError("--seeds: name at least one seed")
    try:
        return check_seeds(seeds)
    except GeneflError as exc:
        raise GeneflError(f"--{exc}") from None


def command_compare(args: argparse.Namespace) -> int:
    from .experiments.comparison import check_jobs, check_variants, parse_variants, run_comparison
    from .experiments.plots import plot_all

    config = load_config(args.config, args.overrides)
    variants, seeds, jobs = parse_variants(args.methods), parse_seeds(args.seeds), check_jobs(args.jobs)
    check_variants(config, variants, seeds)  # an unknown method or model fails before any folder or bar exists
    with prepare_out(args, default_folder("compare", config)) as out:
        docs = run_comparison(config, variants, seeds, out, jobs=jobs)
        plot_all(docs, out)
    print((out / "summary.md").read_text())
    print(f"tables and plots in {out}")
    return 0


def command_newcomers(args: argparse.Namespace) -> int:
    from .experiments.comparison import check_jobs, load_runs, parse_variants
    from .experiments.plots import plot_all
    from .experiments.study import check_study, run_study

    config = load_config(args.config, args.overrides)
    seeds, jobs = parse_seeds(args.seeds), check_jobs(args.jobs)
    if args.replicates < 1:
        raise GeneflError(f"--replicates: must be >= 1, got {args.replicates}")
    extra = parse_variants(args.methods) if args.methods.strip() else []
    check_study(config, seeds, extra)
    with prepare_out(args, default_folder("newcomers", config)) as out:
        run_study(config, seeds, out, extra, jobs=jobs, replicates=args.replicates)
        plot_all(load_runs(out), out)
    print((out / "summary.md").read_text())
    print((out / "newcomers" / "study.md").read_text())
    print(f"tables and plots in {out} and {out / 'newcomers'}")
    return 0


def command_attack(args: argparse.Namespace) -> int:
    from .experiments.comparison import check_variants, parse_variants
    from .experiments.privacy import ATTACKS, CASES, attack_methods

    config = load_config(args.config, args.overrides)
    variants = parse_variants(args.methods)  # e.g. genefl[genefl.gene_include_head=true]
    for value, name in ((args.batch, "--batch"), (args.iterations, "--iterations"), (args.restarts, "--restarts")):
        if value < 1:
            raise GeneflError(f"{name}: must be >= 1, got {value}")
    if args.attack not in ATTACKS:
        raise GeneflError(f"--attack: must be one of {', '.join(ATTACKS)}, got {shown(args.attack)}")
    if args.case not in CASES:
        raise GeneflError(f"--case: must be one of {', '.join(CASES)}, got {shown(args.case)}")
    for v in variants:
        if v.method == "local":
            raise GeneflError("--methods: 'local' sends nothing upward; there is no upload to attack")
    check_variants(config, variants, [config.seed])  # unknown method, option or model: one line before anything runs
    with prepare_out(args, default_folder("attack", config)) as out:
        records = attack_methods(config, variants, args.batch, args.images, args.attack, args.iterations, args.restarts,
                                 out, membership=args.membership, case=args.case)
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
    from .experiments.comparison import load_runs, write_summary
    from .experiments.plots import plot_all

    from .experiments.study import redraw, study_records

    folder = checked("plot", args.dir, GeneflError)
    if folder.exists() and not folder.is_dir():
        raise GeneflError(f"plot {shown(str(folder))}: is not a folder")
    docs = load_runs(folder)
    records = study_records(folder)  # every file read and checked before anything is written
    write_summary(docs, folder)
    for path in plot_all(docs, folder):
        print(path)
    study = redraw(folder, records)
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
    except OSError as exc:  # the machine rather than the input (a full disk, a vanished folder): still one line
        where = f" ({shown(str(exc.filename))})" if exc.filename else ""
        print(f"genefl: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
