"""The built-in methods, entered in the method registry (`genefl.registry`): `method` name ->
(server half, client half).

Your own method: subclass a server half (`Strategy`, or a method's, e.g. `FedAvg`) and a client half,
then either `register("name", MyStrategy, MyClient)` before the run, or name it in a config as
`method = "package.module:NAME"` where NAME is the (strategy class, client class) pair: that form
also works in worker processes (`--jobs`) and on Flower SuperNodes, which import it themselves. Its
options, if any, are an `Options` subclass named as the server half's `options` (see `genefl.options`):
the config then takes and checks its table as it does a built-in method's."""

from __future__ import annotations


from ..errors import ConfigError
from ..own_code import import_named
from ..registry import BUILT_IN, REGISTRY
from .base import ClientAlgorithm, Strategy
from .fedavg import FedAvg, FedAvgClient
from .fedlp import FedLP, FedLPClient
from .fedopt import FedAdagrad, FedAdam, FedAvgM, FedYogi
from .fedper import FedPer, FedPerClient
from .fedprox import FedProx, FedProxClient
from .flearngene import FLearngene, FLearngeneClient
from .genefl import Genefl, GeneflClient
from .local import Local, LocalClient
from .pacfl import PACFL, PACFLClient
from .scaffold import Scaffold, ScaffoldClient

REGISTRY.update({
    "genefl": (Genefl, GeneflClient),
    "fedavg": (FedAvg, FedAvgClient),
    "fedprox": (FedProx, FedProxClient),
    "scaffold": (Scaffold, ScaffoldClient),
    "fedlp": (FedLP, FedLPClient),
    "flearngene": (FLearngene, FLearngeneClient),
    "pacfl": (PACFL, PACFLClient),
    "local": (Local, LocalClient),
    "fedper": (FedPer, FedPerClient),
    "fedavgm": (FedAvgM, FedAvgClient),
    "fedadam": (FedAdam, FedAvgClient),
    "fedyogi": (FedYogi, FedAvgClient),
    "fedadagrad": (FedAdagrad, FedAvgClient),
})
BUILT_IN[:] = list(REGISTRY)


def register(name: str, strategy: type[Strategy], client: type[ClientAlgorithm]) -> None:
    """Make `method = name` run this pair of halves (in this process); the config then also takes the
    table of the server half's `options`, if it declares any."""
    if not (isinstance(strategy, type) and issubclass(strategy, Strategy)
            and isinstance(client, type) and issubclass(client, ClientAlgorithm)):
        raise ConfigError(f"method {name!r}: expected a Strategy subclass and a ClientAlgorithm subclass")
    REGISTRY[name] = (strategy, client)


def get(method: str) -> tuple[type[Strategy], type[ClientAlgorithm]]:
    if ":" in method:
        pair = import_named(method, "method")
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], type) and issubclass(pair[0], Strategy)
                and isinstance(pair[1], type) and issubclass(pair[1], ClientAlgorithm)):
            raise ConfigError(f"method: {method!r} is not a (Strategy subclass, ClientAlgorithm subclass) pair")
        return pair
    if method not in REGISTRY:
        raise ConfigError(f"method: {method!r} is not one of {', '.join(REGISTRY)} (or 'package.module:NAME')")
    return REGISTRY[method]
