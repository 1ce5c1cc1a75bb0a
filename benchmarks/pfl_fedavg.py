"""BENCHMARKS.md 3.3: genefl's FedAvg vs pfl-research's FedAvg, same data, model and clients.

Both train genefl's CNN from the same initial weights on the same 20 IID client partitions (built
by genefl for the given seed), 1 local epoch of batch-32 SGD per round, every client every round,
no evaluation in the timed rounds. pfl runs its `FederatedAveraging` on a `SimulatedBackend` in
this process (its single-process mode; pfl's multi-process/GPU parallelism does not apply to one
2-core CPU machine). Whole runs alternate genefl, pfl, genefl, pfl, and the medians of their rounds are compared.

pfl does not install beside genefl's dev environment without extra packages, so it lives in its own
venv:
  python3 -m venv .venv-pfl && .venv-pfl/bin/pip install torch==2.13.0 pfl==0.6.0 -e .
  GENEFL_DATA=../shared/data .venv-pfl/bin/python benchmarks/pfl_fedavg.py
Prints a table and a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch
from torch import nn

from genefl.config import load_config
from genefl.data.scenario import build_scenario
from genefl.runtime.assembly import model_spec
from genefl.runtime.simulator import Simulator

from common import RoundWalls, add_workload_arguments


class PflCNN(nn.Module):
    """genefl's CNN with the `loss` / `metrics` methods pfl's PyTorchModel requires."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x)

    def loss(self, x, y, eval=False):
        self.eval() if eval else self.train()
        return nn.functional.cross_entropy(self(x), y)

    @torch.no_grad()
    def metrics(self, x, y, eval=False):
        from pfl.metrics import Weighted

        self.eval() if eval else self.train()
        correct = (self(x).argmax(1) == y).sum().item()
        return {"accuracy": Weighted(correct, len(y))}


def run_pfl(config, scenario, initial: nn.Module, rounds: int, timings: list[float]) -> None:
    from pfl.aggregate.simulate import SimulatedBackend
    from pfl.algorithm import FederatedAveraging, NNAlgorithmParams
    from pfl.callback.base import TrainingProcessCallback
    from pfl.data.dataset import Dataset
    from pfl.data.federated_dataset import FederatedDataset
    from pfl.data.sampling import get_user_sampler
    from pfl.hyperparam import NNEvalHyperParams, NNTrainHyperParams
    from pfl.metrics import Metrics
    from pfl.model.pytorch import PyTorchModel

    users = {str(i): (c.x_train, c.y_train) for i, c in enumerate(scenario.clients)}
    data = FederatedDataset(lambda uid: Dataset(raw_data=list(users[uid]), user_id=uid),
                            get_user_sampler("minimize_reuse", sorted(users, key=int)))
    module = PflCNN(initial)
    model = PyTorchModel(module, local_optimizer_create=torch.optim.SGD,
                         central_optimizer=torch.optim.SGD(module.parameters(), lr=1.0))

    class Timer(TrainingProcessCallback):
        def on_train_begin(self, *, model):
            self.last = time.perf_counter()
            return Metrics()

        def after_central_iteration(self, aggregate_metrics, model, *, central_iteration):
            now = time.perf_counter()
            timings.append(now - self.last)
            self.last = now
            return False, Metrics()

    backend = SimulatedBackend(training_data=data, val_data=data, postprocessors=[])
    # iteration 0 also evaluates on the training users (pfl evaluates when iteration % frequency == 0);
    # the caller leaves it out of the medians
    params = NNAlgorithmParams(central_num_iterations=rounds, evaluation_frequency=10**6,
                               train_cohort_size=len(users), val_cohort_size=None)
    train = NNTrainHyperParams(local_num_epochs=config.local_epochs, local_learning_rate=config.lr,
                               local_batch_size=config.batch_size)
    evaluation = NNEvalHyperParams(local_batch_size=1024)
    FederatedAveraging().run(algorithm_params=params, backend=backend, model=model, model_train_params=train,
                             model_eval_params=evaluation, callbacks=[Timer()], send_metrics_to_platform=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_workload_arguments(parser, rounds=5)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    overrides = ["method=fedavg", f"dataset={args.dataset}", "model=cnn", f"num_clients={args.clients}", "num_newcomers=0",
                 "partition=iid", "local_epochs=1", "batch_size=32", f"rounds={args.rounds + 2}", f"eval_every={args.rounds + 2}"]
    if args.dataset != "digits":
        overrides.append(f"train_subset={args.train_subset}")
    config = load_config(None, overrides)
    scenario = build_scenario(config)
    genefl_walls: list[float] = []
    pfl_walls: list[float] = []
    for _ in range(args.repeats):  # alternate whole runs: genefl, pfl, genefl, pfl, ...
        timer = RoundWalls()
        Simulator(config, scenario, [timer]).run()
        genefl_walls += timer.walls[1:-1]  # genefl's first round warms up, its last one evaluates
        walls = []
        run_pfl(config, scenario, config_model(config, scenario), args.rounds + 1, walls)
        pfl_walls += walls[1:]  # pfl's first iteration evaluates
    n = sum(c.num_train for c in scenario.clients)
    g, p = statistics.median(genefl_walls), statistics.median(pfl_walls)
    import pfl

    print(f"FedAvg, {args.dataset}, cnn, {args.clients} clients, {n} samples per round; pfl {pfl.__version__}")
    print(f"{'simulator':10} {'median round s':>15} {'samples/s':>10}")
    print(f"{'genefl':10} {g:15.3f} {n / g:10.0f}")
    print(f"{'pfl':10} {p:15.3f} {n / p:10.0f}")
    print(f"genefl / pfl speed: {p / g:.2f}x")
    print(json.dumps({"dataset": args.dataset, "clients": args.clients, "samples_per_round": n, "pfl_version": pfl.__version__,
                      "genefl_round_s": round(g, 4), "pfl_round_s": round(p, 4), "genefl_speedup_over_pfl": round(p / g, 3),
                      "genefl_rounds": [round(w, 4) for w in genefl_walls], "pfl_rounds": [round(w, 4) for w in pfl_walls]}))


def config_model(config, scenario) -> nn.Module:
    return model_spec(config, scenario.input_shape, scenario.num_classes).build(config.seed, "global")


if __name__ == "__main__":
    np.random.seed(0)
    main()
