"""What the payload codecs cost: encode + decode time as a share of a round (`genefl.protocol.compression`).

The workload is the default CNN on Fashion-MNIST (20 clients, FedAvg, one local epoch). For each
codec, one run is timed round by round (median of the timed rounds; the first warms up and the last
evaluates, neither is timed), and, separately, the codec work of one round is timed alone on the
run's own final weights: for every client, the upload encoded as a change with error feedback, the
broadcast encoded (once, as the loop does) and decoded, and the upload decoded and rebased - all
that the codec adds to a round; with `--down-delta` (`codec.down_delta`) the broadcast is encoded per
client as the change from its last upload, the reference's digest is taken on both sides, and the
upload is decoded on both sides to be kept. Its share is that time over the uncompressed run's
median round.

Usage:
  GENEFL_DATA=../shared/data python benchmarks/codec_overhead.py [--rounds 5] [--codecs int8,int4,...]
Prints a table and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from genefl.protocol import compression
from genefl.config import load_config
from genefl.data.scenario import build_scenario
from genefl.protocol.messages import Broadcast, ClientUpdate
from genefl.runtime.first_contact import initial_digest
from genefl.runtime.simulator import Simulator

from common import RoundWalls, add_workload_arguments

CODECS = "fp16,int8,int4,int2,mixed,qsgd,topk,randk"


def codec_seconds(weights: dict[str, torch.Tensor], config, clients: int, repeats: int = 5) -> float:
    """Median seconds of one round's codec work for `clients` clients (see the module doc)."""
    opts = config.codec
    received = {k: v for k, v in weights.items()}
    trained = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v for k, v in weights.items()}
    last_upload = Broadcast(tensors=compression.upload_reference(ClientUpdate(tensors=trained)))  # stands for each client's
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sent = compression.encode_message(Broadcast(tensors=received), opts.down, opts, False, lambda s, n: None, cache={})
        for cid in range(clients):
            if opts.down_delta:  # per client: the change from its reference, named by its digest (both sides)
                sent = compression.encode_message(Broadcast(tensors=received), opts.down, opts, False, lambda s, n: None,
                                                  last_upload)
                names = compression.changed_names(sent)
                initial_digest({n: last_upload.tensors[n] for n in names})
                initial_digest({n: last_upload.tensors[n] for n in names})
                got = compression.decode_message(sent, last_upload)
            else:
                got = compression.decode_message(sent)
            residual: dict = {}
            gen = torch.Generator().manual_seed(cid)
            up = compression.encode_message(ClientUpdate(tensors=trained, meta={"num_samples": 1}), opts.up, opts, True,
                                            lambda s, n: gen, reference=got, residual=residual)
            back = compression.decode_message(up, got, {"tensors": weights, "extras": {}})
            if opts.down_delta:  # both sides keep the upload as decoded
                compression.upload_reference(back)
                compression.upload_reference(compression.decode_message(up, got))
            compression.rebase(back, got, Broadcast(tensors=received))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_workload_arguments(parser, rounds=5, rounds_help="timed rounds per codec (medians over these)")
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--codecs", default=CODECS, help=f"codecs to time, both directions (default {CODECS})")
    parser.add_argument("--down-delta", action="store_true", help="broadcasts as changes from each client's last upload "
                        "(codec.down_delta): encoded per client instead of once")
    args = parser.parse_args()

    base = [f"dataset={args.dataset}", f"model={args.model}", f"num_clients={args.clients}", "num_newcomers=0",
            "partition=iid", "method=fedavg", f"rounds={args.rounds + 2}", f"eval_every={args.rounds + 2}", "checkpoint_every=0"]
    if args.dataset != "digits":
        base.append(f"train_subset={args.train_subset}")
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, {torch.get_num_threads()} threads"
    rows, plain_round = [], None
    for codec in ["none"] + args.codecs.split(","):
        down = codec if codec in compression.QUANTIZERS else "int8"  # sparsifiers and QSGD are upload codecs
        extra = [f"codec.up={codec}", f"codec.down={'none' if codec == 'none' else down}", "codec.topk=0.01",
                 f"codec.error_feedback={'true' if codec in ('topk', 'randk') else 'false'}",
                 f"codec.down_delta={'true' if args.down_delta and codec != 'none' else 'false'}"]
        config = load_config(None, base + extra)
        scenario = build_scenario(config)
        timer = RoundWalls()
        result = Simulator(config, scenario, [timer]).run()
        round_s = statistics.median(timer.walls[1:-1])
        plain_round = plain_round or round_s
        work = codec_seconds(result.final_weights, config, args.clients) if codec != "none" else 0.0
        rows.append({"codec_up": codec, "codec_down": config.codec.down, "down_delta": config.codec.down_delta,
                     "round_s_median": round(round_s, 3),
                     "codec_s_per_round": round(work, 4), "share_of_round": round(work / plain_round, 4),
                     "bytes_up_per_round": result.ledger.total("up") // (args.rounds + 2)})
    print(f"{args.dataset}, {args.model}, {args.clients} clients; {machine}")
    print(f"{'up':6} {'down':5} {'round s':>8} {'codec s':>8} {'share':>6} {'up B/round':>11}")
    for r in rows:
        print(f"{r['codec_up']:6} {r['codec_down']:5} {r['round_s_median']:8.3f} {r['codec_s_per_round']:8.4f} "
              f"{r['share_of_round']:6.1%} {r['bytes_up_per_round']:11d}")
    print(json.dumps({"machine": machine, "dataset": args.dataset, "model": args.model, "clients": args.clients, "rows": rows}))


if __name__ == "__main__":
    main()
