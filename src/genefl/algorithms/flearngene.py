"""A federated Learngene baseline: one fixed learnGene shared by all clients.

Following the Learngene practice (Wang et al., AAAI 2023: the last layers before the classifier
carry the inheritable knowledge), the learnGene is the contiguous run of body layers that ends just
before the head and fits `flearngene.gene_budget` of the model's bytes (GENE-FL's default budget).
Clients keep personal models, download and upload only those layers, train with plain
cross-entropy; the server averages the layers over everyone (no Fisher, no clustering, no
sensitivity analysis). A newcomer gets the learnGene, every other layer freshly initialised.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..errors import ConfigError
from ..protocol.layers import Layer, layer_tensors, model_nbytes
from ..protocol.messages import Broadcast, ClientUpdate
from ..options import Options, fraction, option
from .base import ClientEnv, PersonalModelClient, Strategy, Updates, sample_weighted_mean


def last_body_layers(layers: list[Layer], budget_bytes: int) -> list[int]:
    """Indices of the run of body layers nearest the head that fits the budget: grown backwards from
    the last body layer, or, when that layer alone is too big, from the latest one that fits."""
    for end in range(len(layers) - 2, -1, -1):
        chosen, used = [], 0
        for i in range(end, -1, -1):
            if used + layers[i].nbytes > budget_bytes:
                break
            chosen.insert(0, i)
            used += layers[i].nbytes
        if chosen:
            return chosen
    smallest = min(layers[:-1] or layers, key=lambda layer: layer.nbytes)
    raise ConfigError(f"flearngene.gene_budget: {budget_bytes} bytes cannot hold any body layer "
                      f"(smallest: {smallest.name!r}, {smallest.nbytes} bytes)")


@dataclass(frozen=True)
class FLearngeneOptions(Options):
    section = "flearngene"

    gene_budget: float = option(0.25, fraction(), "learnGene size as a fraction of the model's bytes (GENE-FL's "
                                "default); the layers are the last body layers before the head")


@dataclass(frozen=True)
class SharedGeneState:
    gene: dict[str, torch.Tensor]  # the learnGene layers' current values
    contacted: frozenset[int]


class FLearngene(Strategy):
    options = FLearngeneOptions
    takes_defence = True

    def __init__(self, config, layers, initial):
        super().__init__(config, layers, initial)
        self.gene_layers()  # fail before any training if the budget cannot hold a body layer

    def gene_layers(self) -> list[int]:
        return last_body_layers(self.layers, int(self.config.flearngene.gene_budget * model_nbytes(self.layers)))

    def init(self) -> SharedGeneState:
        return SharedGeneState(layer_tensors(self.initial, [self.layers[i] for i in self.gene_layers()]), frozenset())

    def configure_train(self, state: SharedGeneState, round: int, cid: int) -> Broadcast:
        meta = {"gene_layers": self.gene_layers()}
        return self.first_contact(state.contacted, cid, meta) or Broadcast(tensors=state.gene, meta=meta)

    def configure_absent(self, state: SharedGeneState, cid: int) -> Broadcast | None:
        return Broadcast() if cid in state.contacted else None  # its own model, as it stands

    def aggregate(self, state: SharedGeneState, round: int, updates: Updates) -> SharedGeneState:
        gene, reported = sample_weighted_mean(state.gene, updates, self.combiner(state, round))
        return replace(state, gene=gene, contacted=state.contacted | reported)

    def weights(self, state: SharedGeneState) -> dict[str, torch.Tensor]:
        return dict(state.gene)

    def welcome(self, state: SharedGeneState, round: int, cid: int, hello):
        state = replace(state, contacted=state.contacted | {cid})
        if self.config.newcomer_init == "random":
            return state, Broadcast(meta={"init": "random"})
        return state, Broadcast(tensors=state.gene, meta={"init": "learngene"})

    def summary(self, state: SharedGeneState) -> dict:
        chosen = self.gene_layers()
        return {"summary": {"gene_bytes": sum(self.layers[i].nbytes for i in chosen)},
                "gene_layers": [[self.layers[i].name for i in chosen]]}


class FLearngeneClient(PersonalModelClient):
    def train(self, env: ClientEnv, broadcast: Broadcast) -> ClientUpdate:
        model = self.train_own_model(env, broadcast)
        chosen = [env.layers[i] for i in broadcast.meta["gene_layers"]]
        return ClientUpdate(tensors=layer_tensors(model, chosen), meta={"num_samples": env.data.num_train})
