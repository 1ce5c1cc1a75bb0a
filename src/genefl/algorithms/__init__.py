"""The method registry: `method` name -> (server half, client half)."""

from __future__ import annotations

from ..errors import ConfigError
from .base import ClientAlgorithm, Strategy
from .fedavg import FedAvg, FedAvgClient
from .fedlp import FedLP, FedLPClient
from .fedprox import FedProx, FedProxClient
from .flearngene import FLearngene, FLearngeneClient
from .genefl import Genefl, GeneflClient
from .local import Local, LocalClient
from .pacfl import PACFL, PACFLClient
from .scaffold import Scaffold, ScaffoldClient

REGISTRY: dict[str, tuple[type[Strategy], type[ClientAlgorithm]]] = {
    "genefl": (Genefl, GeneflClient),
    "fedavg": (FedAvg, FedAvgClient),
    "fedprox": (FedProx, FedProxClient),
    "scaffold": (Scaffold, ScaffoldClient),
    "fedlp": (FedLP, FedLPClient),
    "flearngene": (FLearngene, FLearngeneClient),
    "pacfl": (PACFL, PACFLClient),
    "local": (Local, LocalClient),
}


def get(method: str) -> tuple[type[Strategy], type[ClientAlgorithm]]:
    if method not in REGISTRY:
        raise ConfigError(f"method: {method!r} is not one of {', '.join(REGISTRY)}")
    return REGISTRY[method]
