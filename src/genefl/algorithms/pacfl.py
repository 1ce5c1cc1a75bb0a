"""PACFL (Vahidian et al., AAAI 2023): one-shot clustering by the principal angles between the
clients' data subspaces (the same Stage 0 as GENE-FL, same `[clustering]` options), then full-model
FedAvg inside each cluster. A newcomer sends its signature and starts from its nearest cluster's
model."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..protocol.messages import Broadcast, ClientUpdate
from .base import ClientEnv, Strategy, Updates
from .clustered import PacksSignatures, cluster_clients, cluster_report, join_cluster, leave_cluster, rejoin_cluster, signature_update
from .fedavg import FedAvgClient


@dataclass(frozen=True)
class ClusterModels(PacksSignatures):
    cluster_of: dict[int, int]
    signatures: dict[int, torch.Tensor]
    models: list[dict[str, torch.Tensor]]  # per cluster


class PACFL(Strategy):
    needs_signatures = True
    takes_defence = True

    def init(self) -> ClusterModels:
        return ClusterModels({}, {}, [dict(self.initial)])

    def register(self, state: ClusterModels, signatures: dict[int, ClientUpdate]) -> ClusterModels:
        cluster_of, sigs = cluster_clients(self.config, signatures)
        return ClusterModels(cluster_of, sigs, [dict(self.initial) for _ in range(max(cluster_of.values()) + 1)])

    def configure_train(self, state: ClusterModels, round: int, cid: int) -> Broadcast:
        return Broadcast(tensors=state.models[state.cluster_of.get(cid, 0)])

    def configure_absent(self, state: ClusterModels, cid: int) -> Broadcast | None:
        return Broadcast(tensors=state.models[state.cluster_of[cid]]) if cid in state.cluster_of else None  # its cluster's

    def aggregate(self, state: ClusterModels, round: int, updates: Updates) -> ClusterModels:
        means = [self.combiner(state, round, f", cluster {k}") for k in range(len(state.models))]
        for cid, update in updates:
            means[state.cluster_of.get(cid, 0)].add(cid, update.tensors, update.meta["num_samples"])
        return replace(state, models=[m.result(w) if m else w for m, w in zip(means, state.models)])

    def weights(self, state: ClusterModels) -> dict[str, torch.Tensor]:
        return {f"cluster{k}/{key}": v for k, model in enumerate(state.models) for key, v in model.items()}

    def welcome(self, state: ClusterModels, round: int, cid: int, hello):
        k, cluster_of, signatures = join_cluster(self.config, state.cluster_of, state.signatures, cid, hello)
        state = replace(state, cluster_of=cluster_of, signatures=signatures)
        if self.config.newcomer_init == "random":
            return state, Broadcast(meta={"init": "random", "cluster": k})
        return state, Broadcast(tensors=state.models[k], meta={"init": "cluster", "cluster": k})

    def depart(self, state: ClusterModels, round: int, cid: int) -> ClusterModels:
        cluster_of, signatures = leave_cluster(state.cluster_of, state.signatures, cid)
        return replace(state, cluster_of=cluster_of, signatures=signatures)

    def rejoin(self, state: ClusterModels, round: int, cid: int, hello: ClientUpdate) -> ClusterModels:
        _, cluster_of, signatures = rejoin_cluster(self.config, state.cluster_of, state.signatures, cid, hello)
        return replace(state, cluster_of=cluster_of, signatures=signatures)

    def summary(self, state: ClusterModels) -> dict:
        return {"summary": {"num_clusters": len(state.models)}, **cluster_report(state.cluster_of, len(state.models))}


class PACFLClient(FedAvgClient):
    def signature(self, env: ClientEnv) -> ClientUpdate:
        return signature_update(env.data.x_train, env.config.clustering.p, env.generator("signature"))
