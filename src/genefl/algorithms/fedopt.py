"""FedAvgM (Hsu et al., 2019) and FedAdam, FedYogi, FedAdagrad (Reddi et al., "Adaptive Federated
Optimization", ICLR 2021), under Flower's names: FedAvg with one server optimizer fixed. Each is the
same run as `method = "fedavg"` with `server_opt.name` set (avgm, adam, yogi, adagrad); the equations,
their Flower sources and the defaults (Flower's: FedAvgM's momentum 0 makes it FedAvg until
`server_opt.momentum` is set) are in `genefl.protocol.server_opt`. Clients are FedAvg's."""

from __future__ import annotations

from .fedavg import FedAvg


class FedAvgM(FedAvg):
    fixed_server_opt = "avgm"


class FedAdam(FedAvg):
    fixed_server_opt = "adam"


class FedYogi(FedAvg):
    fixed_server_opt = "yogi"


class FedAdagrad(FedAvg):
    fixed_server_opt = "adagrad"
