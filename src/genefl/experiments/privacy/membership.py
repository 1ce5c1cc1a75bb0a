"""What a newcomer is handed, attacked: loss-threshold membership inference on its start."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ... import rng
from ...config import Config, replace
from ...errors import ConfigError
from .metrics import loss_threshold_auc


def membership_auc(config: Config, methods: tuple[str, ...] = ("fedavg", "genefl"), limit: int = 2000) -> list[dict[str, Any]]:
    """The newcomer side (Yeom et al. 2018, loss threshold): is a sample in some training client's
    data? Scored on the model a newcomer is handed (the last newcomer's start, other layers fresh as
    it gets them): members are training clients' training samples, non-members the held-out test
    splits, equal counts (at most `limit` each, seeded); AUC of −loss (0.5 = no leak)."""
    from ...data.scenario import build_scenario
    from ...runtime.simulator import Simulator
    from ..starts import StartRecorder
    from ...protocol.training import load_into

    scenario = build_scenario(config)
    train = [scenario.clients[c] for c in range(scenario.num_clients)]
    members_x, members_y = torch.cat([c.x_train for c in train]), torch.cat([c.y_train for c in train])
    held_x = torch.cat([c.x_test for c in scenario.clients])
    held_y = torch.cat([c.y_test for c in scenario.clients])
    n = min(limit, len(members_y), len(held_y))
    gen = rng.numpy_rng(config.seed, "membership")
    pick_m, pick_h = gen.choice(len(members_y), n, replace=False), gen.choice(len(held_y), n, replace=False)
    x = torch.cat([members_x[pick_m], held_x[pick_h]])
    y = torch.cat([members_y[pick_m], held_y[pick_h]])
    is_member = np.r_[np.ones(n), np.zeros(n)]
    records = []
    for method in methods:
        run_config = replace(config, method=method)
        recorder = StartRecorder(None)
        sim = Simulator(run_config, scenario, [recorder])
        sim.run()
        if not recorder.starts:
            raise ConfigError("membership: the run had no newcomer (set num_newcomers >= 1)")
        cid = max(recorder.starts, key=lambda c: recorder.starts[c]["round"])
        model = sim.spec.build(config.seed, "newcomer", cid).to(config.device)
        load_into(model, recorder.starts[cid]["tensors"])
        records.append({"case": "membership", "method": method, "start": recorder.starts[cid]["meta"].get("init", "method"),
                        "arrival_round": recorder.starts[cid]["round"], "samples_each": n,
                        "auc": loss_threshold_auc(model, x, y, is_member)})
    return records
