"""Stage 0 on the server, shared by GENE-FL and PACFL: cluster the training clients by their
signatures, and place a newcomer in the cluster whose members are on average nearest."""

from __future__ import annotations

import torch

from .. import clustering
from ..config import Config
from ..messages import ClientUpdate


def cluster_clients(config: Config, signatures: dict[int, ClientUpdate]) -> tuple[dict[int, int], dict[int, torch.Tensor]]:
    """(client id -> cluster id, client id -> signature)."""
    ids = sorted(signatures)
    sigs = [signatures[c].extras["signature"].float() for c in ids]
    opts = config.clustering
    if len(ids) > 1:
        labels = clustering.cluster(clustering.proximity_matrix(sigs), opts.num_clusters, opts.beta)
    else:
        labels = [0] * len(ids)
    return dict(zip(ids, labels)), dict(zip(ids, sigs))


def place_newcomer(cluster_of: dict[int, int], signatures: dict[int, torch.Tensor], hello: ClientUpdate | None) -> int:
    """The nearest cluster for a newcomer's signature (cluster 0 when there is nothing to compare)."""
    if hello is None or not signatures:
        return 0
    members = sorted(signatures)
    return clustering.nearest_cluster(hello.extras["signature"].float(), [signatures[m] for m in members],
                                      [cluster_of[m] for m in members])


def signature_update(x: torch.Tensor, p: int, gen: torch.Generator) -> ClientUpdate:
    return ClientUpdate(extras={"signature": clustering.signature(x, p, gen).float()})
