"""The method registry: `method` name -> (server half, client half)."""

from __future__ import annotations

from .base import ClientAlgorithm, Strategy
from .fedavg import FedAvg, FedAvgClient
from .local import Local, LocalClient

REGISTRY: dict[str, tuple[type[Strategy], type[ClientAlgorithm]]] = {
    "fedavg": (FedAvg, FedAvgClient),
    "local": (Local, LocalClient),
}


def get(method: str) -> tuple[type[Strategy], type[ClientAlgorithm]]:
    from ..errors import ConfigError

    if method not in REGISTRY:
        raise ConfigError(f"method: {method!r} is not implemented yet (available: {', '.join(REGISTRY)})")
    return REGISTRY[method]
