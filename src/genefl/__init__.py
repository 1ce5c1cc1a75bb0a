"""genefl: GENE-FL, gene-driven parameter-efficient federated learning for dynamic agnostic clients.

The Python API (see `genefl.api`): `run`, `compare`, `Config`, `Callback`, `data.from_arrays`.
"""

__version__ = "0.1.0"

from . import algorithms  # noqa: E402  (enters the built-in methods and their options in genefl.registry)
from .api import Comparison, Result, compare, run  # noqa: E402
from .config import Config, load_config  # noqa: E402
from .errors import ConfigError, DataError, GeneflError  # noqa: E402
from .runtime.events import Callback  # noqa: E402

__all__ = ["Callback", "Comparison", "Config", "ConfigError", "DataError", "GeneflError", "Result", "compare",
           "load_config", "run"]
