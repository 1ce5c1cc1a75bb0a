"""Pieces the benchmark scripts share: the workload arguments and a round-timing callback."""

from __future__ import annotations

import argparse
import os

from genefl.runtime.events import Callback


def add_workload_arguments(parser: argparse.ArgumentParser, rounds: int, rounds_help: str | None = None) -> None:
    """--dataset (Fashion-MNIST when GENEFL_DATA is set, else digits), --clients, --rounds, --train-subset."""
    parser.add_argument("--dataset", default="fashion_mnist" if os.environ.get("GENEFL_DATA") else "digits")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=rounds, help=rounds_help)
    parser.add_argument("--train-subset", type=int, default=12000)


class RoundWalls(Callback):
    """Collects every round's wall time (as the round loop measures it), then runs `between`, if
    given, outside the timed round."""

    def __init__(self, between=None):
        self.walls: list[float] = []
        self.between = between

    def after_round(self, report):
        self.walls.append(report.wall_s)
        if self.between is not None:
            self.between()
