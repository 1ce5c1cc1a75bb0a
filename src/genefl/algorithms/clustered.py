"""Stage 0 on the server, shared by GENE-FL and PACFL: cluster the training clients by their
signatures (`clustering.method`: every pairwise angle, or above `clustering.sample` clients a seeded
sample of them with the rest assigned), and place a newcomer in the cluster whose members are on
average nearest.

Membership changes (`genefl.protocol.population`): a client that leaves for good is forgotten, so a cluster
may shrink or empty; an empty cluster keeps its model but is never chosen again, since a newcomer is
compared with the members there are (cluster 0 when there are none). A client back with changed
data joins its nearest cluster again, compared with the others only."""

from __future__ import annotations

import torch

from . import clustering
from .. import rng
from ..config import Config
from ..protocol.messages import ClientUpdate


class PacksSignatures:
    """For a frozen state dataclass with a `signatures` field (client id -> tensor): pickles them as
    one stacked tensor per shape. torch.save's cost is per tensor, and a state is saved in every
    checkpoint: 10,000 clients' signatures took about 1.1 s of CPU a round as separate tensors,
    some milliseconds stacked. Read back, each is a view of its stack with the same values, in the
    same order."""

    def __getstate__(self) -> dict:
        groups: dict[tuple, list[int]] = {}
        for cid, sig in self.signatures.items():
            groups.setdefault((tuple(sig.shape), sig.dtype), []).append(cid)
        packed = [(ids, torch.stack([self.signatures[c] for c in ids])) for ids in groups.values()]
        return {**self.__dict__, "signatures": (list(self.signatures), packed)}

    def __setstate__(self, state: dict) -> None:
        order, packed = state["signatures"]
        unpacked = {cid: sig for ids, stack in packed for cid, sig in zip(ids, stack.unbind(0))}
        for name, value in {**state, "signatures": {cid: unpacked[cid] for cid in order}}.items():
            object.__setattr__(self, name, value)  # the dataclass is frozen


def cluster_clients(config: Config, signatures: dict[int, ClientUpdate]) -> tuple[dict[int, int], dict[int, torch.Tensor]]:
    """(client id -> cluster id, client id -> signature)."""
    ids = sorted(signatures)
    sigs = [signatures[c].extras["signature"].float() for c in ids]
    opts = config.clustering
    if len(ids) > 1:  # "exact", or "sampled" with at most `sample` clients: every pairwise angle
        sample = len(ids) if opts.method == "exact" else opts.sample
        clustering.check_exact_memory(min(sample, len(ids)))
        labels = clustering.cluster_sampled(sigs, sample, opts.num_clusters, opts.beta,
                                            rng.numpy_rng(config.seed, "clustering-sample"))
    else:
        labels = [0] * len(ids)
    return dict(zip(ids, labels)), dict(zip(ids, sigs))


def place_newcomer(config: Config, cluster_of: dict[int, int], signatures: dict[int, torch.Tensor], cid: int,
                   hello: ClientUpdate | None) -> int:
    """The nearest cluster for a newcomer's signature (cluster 0 when there is nothing to compare): by
    the mean angle to every member, or, with clustering.method = sampled and more members than
    clustering.sample, as a client the sample left out is assigned (`clustering.assign`: 1.7 s of CPU
    among 10,000 members became milliseconds)."""
    if hello is None or not signatures:
        return 0
    members = sorted(signatures)
    sig, sigs, labels = hello.extras["signature"].float(), [signatures[m] for m in members], [cluster_of[m] for m in members]
    if config.clustering.method == "sampled" and len(members) > config.clustering.sample:
        return clustering.assign([sig], sigs, labels, rng.numpy_rng(config.seed, "newcomer-cluster", cid))[0]
    return clustering.nearest_cluster(sig, sigs, labels)


def join_cluster(config: Config, cluster_of: dict[int, int], signatures: dict[int, torch.Tensor], cid: int,
                 hello: ClientUpdate | None) -> tuple[int, dict[int, int], dict[int, torch.Tensor]]:
    """A newcomer joins its nearest cluster: (its cluster, the new cluster map, the new signatures,
    which hold its own so that later newcomers are compared with it too)."""
    k = place_newcomer(config, cluster_of, signatures, cid, hello)
    if hello is not None:
        signatures = {**signatures, cid: hello.extras["signature"].float()}
    return k, {**cluster_of, cid: k}, signatures


def leave_cluster(cluster_of: dict[int, int], signatures: dict[int, torch.Tensor],
                  cid: int) -> tuple[dict[int, int], dict[int, torch.Tensor]]:
    """The cluster map and signatures without `cid`."""
    return ({c: k for c, k in cluster_of.items() if c != cid}, {c: s for c, s in signatures.items() if c != cid})


def rejoin_cluster(config: Config, cluster_of: dict[int, int], signatures: dict[int, torch.Tensor], cid: int,
                   hello: ClientUpdate) -> tuple[int, dict[int, int], dict[int, torch.Tensor]]:
    """A client back with changed data joins its nearest cluster again (its old signature left out);
    with nobody else to compare with it stays where it was."""
    others_of, others = leave_cluster(cluster_of, signatures, cid)
    if not others:
        return cluster_of.get(cid, 0), cluster_of, {**signatures, cid: hello.extras["signature"].float()}
    return join_cluster(config, others_of, others, cid, hello)


def cluster_report(cluster_of: dict[int, int], num_clusters: int) -> dict:
    """What results.json's method_info says about the clusters."""
    return {"cluster_sizes": [sum(1 for k in cluster_of.values() if k == c) for c in range(num_clusters)],
            "cluster_of": {str(c): k for c, k in sorted(cluster_of.items())}}


def signature_update(x: torch.Tensor, p: int, gen: torch.Generator) -> ClientUpdate:
    return ClientUpdate(extras={"signature": clustering.signature(x, p, gen).float()})
