"""genefl: GENE-FL, gene-driven parameter-efficient federated learning for dynamic agnostic clients."""

__version__ = "0.1.0"
