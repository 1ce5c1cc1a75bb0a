"""GENE-FL (Guo, Lv, Wang, Geng; arXiv 2504.14628, 2025): the Strategy and client half. Its stage math
is beside it (`fisher`, `constraints`, `sensitivity`), the clustering in `algorithms.clustering`;
README "GENE-FL, as implemented" maps stages to modules.

Stage 0 clusters clients by PACFL signatures; Stage 1 trains locally under a Fisher-masked
quadratic constraint and a per-layer smoothing term around the model held at the start of training;
Stage 2 scores layers (stability, or Taylor importance) and uploads only the learnGene layers; Stage 3
averages them per cluster; Stage 4 starts a newcomer from its nearest cluster's learnGene with every
other layer freshly initialised. Every client keeps a personal model: non-learnGene layers never
leave it.

Choices the paper leaves open (all options in `[genefl]`, `GeneflOptions` below, and `[clustering]` in config.py):
- A client's first contact downloads the full shared initial model (as FedAvg's does); afterwards
  it downloads only its cluster's learnGene layers.
- The learnGene layer set S_k is decided per cluster from the sample-weighted mean of the scores its
  clients reported in round 1 (a cluster without reports then uses all clients' scores), and
  re-decided every `gene_reselect_every` rounds. In round 1 each client uploads the layers its own
  scores choose under the same budget.
- ξ (the smoothing weights) always come from stability; `sensitivity = "taylor"` changes only which
  layers form the learnGene (higher importance first).
- Newcomers fine-tune with plain cross-entropy (no constraint: they have no earlier model to keep).
- Stage 3 may end with a server optimizer step (`[server_opt]`, `genefl.protocol.server_opt`; default "none",
  the plain mean): per cluster, with its own moments, over the learnGene tensors its clients sent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from . import fisher, sensitivity
from .constraints import coefficients
from ...errors import ConfigError
from ...protocol.layers import layer_tensors, model_nbytes
from ...protocol.messages import Broadcast, ClientUpdate, finite_numbers
from ...options import Options, choices, fraction, nonneg, option, positive, weight
from ...rng import generator
from .sensitivity import SELECTIONS
from ...protocol.server_opt import Moments
from ...protocol.training import GradientCorrection, snapshot, train
from ..base import ClientEnv, PersonalModelClient, Strategy, Updates
from ..clustered import PacksSignatures, cluster_clients, cluster_report, join_cluster, leave_cluster, rejoin_cluster, signature_update


@dataclass(frozen=True)
class GeneflOptions(Options):
    section = "genefl"

    fisher_samples: int = option(256, positive(), "samples for the diagonal empirical Fisher")
    fisher_estimator: str = option("per_sample", choices(("per_sample", "batch")),
                                   "`per_sample` (the empirical Fisher) or `batch` (squared mini-batch gradients, cheaper)")
    fisher_top: float = option(0.2, fraction(), "fraction of each layer's parameters in the elastic mask")
    lambda_s: float = option(0.01, weight(), "weight of the per-layer smoothing term (0 switches it off)")
    lambda_e: float = option(1.0, weight(), "weight of the Fisher-masked quadratic term (0 switches it off)")
    gene_budget: float = option(0.25, fraction(), "learnGene size as a fraction of the model's bytes, never exceeded")
    gene_include_head: bool = option(False, None, "may the classifier head be part of the learnGene?")
    gene_selection: str = option("window", choices(SELECTIONS),
                                 "`window` (the contiguous run of body layers with the most layers, ties by stability), "
                                 "`greedy`, `random` (ablation), or `input` / `output` (the contiguous run from that end)")
    gene_reselect_every: int = option(0, nonneg(), "re-decide the learnGene layer set every N rounds; 0 = once, after round 1")
    sensitivity: str = option("stability", choices(("stability", "taylor")),
                              "layer score: `stability` (cosine of the layer before and after training) or `taylor` (the magnitude of θ·∂L/∂θ)")
    clustering: bool = option(True, None, "false = one cluster for everybody (ablation)")


@dataclass(frozen=True)
class GeneflState(PacksSignatures):
    cluster_of: dict[int, int]  # client id -> cluster id
    signatures: dict[int, torch.Tensor]  # kept to place newcomers
    genes: list[dict[str, torch.Tensor]]  # per cluster: G_k (full-size; only S_k is ever sent)
    gene_layers: list[list[int] | None]  # per cluster: S_k as layer indices; None until decided
    contacted: frozenset[int]  # clients that already hold a model
    moments: list[Moments]  # per cluster: the server optimizer's state over its learnGene tensors


def choose_gene_layers(config, layers, scores: list[float], gen: torch.Generator) -> list[int]:
    """The learnGene rule both halves apply: the layers `gene_selection` picks by `scores` within
    `gene_budget` of the model's bytes (the server per cluster from its clients' mean scores, a
    client in round 1 from its own)."""
    opts = config.genefl
    budget = int(opts.gene_budget * model_nbytes(layers))
    return sensitivity.select_gene_layers(scores, layers, budget, opts.gene_include_head, opts.gene_selection,
                                          generator=gen)


def check_budget(config, layers) -> None:
    """A model none of whose eligible layers fits `gene_budget` (a user's own small model, say) is
    refused when the run is assembled, with the smallest budget that would hold its smallest layer.
    Not silently given a larger learnGene: the budget is the method's promise about bytes."""
    opts, total = config.genefl, model_nbytes(layers)
    eligible = layers if opts.gene_include_head else layers[:-1]
    if not eligible:
        raise ConfigError("model: a one-layer model has no body layer to be a learnGene; set "
                          "genefl.gene_include_head = true or use a deeper model")
    smallest = min(eligible, key=lambda layer: layer.nbytes)
    if smallest.nbytes > int(opts.gene_budget * total):
        need = math.ceil(100 * smallest.nbytes / total) / 100
        raise ConfigError(f"genefl.gene_budget: {opts.gene_budget} of this model's {total} bytes cannot hold any of its "
                          f"{'layers' if opts.gene_include_head else 'body layers'} (smallest: {smallest.name!r}, "
                          f"{smallest.nbytes} bytes); use genefl.gene_budget >= {need}")


class Genefl(Strategy):
    options = GeneflOptions
    takes_server_opt = True
    takes_defence = True

    def __init__(self, config, layers, initial):
        super().__init__(config, layers, initial)
        check_budget(config, layers)  # fail before any training, naming the smallest layer

    @property
    def needs_signatures(self) -> bool:
        return self.config.genefl.clustering

    def init(self) -> GeneflState:
        return GeneflState({}, {}, [dict(self.initial)], [None], frozenset(), [Moments()])

    def register(self, state: GeneflState, signatures: dict[int, ClientUpdate]) -> GeneflState:
        cluster_of, sigs = cluster_clients(self.config, signatures)
        k = max(cluster_of.values()) + 1
        return replace(state, cluster_of=cluster_of, signatures=sigs,
                       genes=[dict(self.initial) for _ in range(k)], gene_layers=[None] * k,
                       moments=[Moments() for _ in range(k)])

    def reply_fields(self) -> dict[str, tuple]:
        return {**super().reply_fields(),
                "scores": (finite_numbers(len(self.layers)), f"a list of {len(self.layers)} finite layer scores")}

    def gene_of(self, state: GeneflState, k: int) -> dict[str, torch.Tensor]:
        chosen = state.gene_layers[k]
        return layer_tensors(state.genes[k], [self.layers[i] for i in chosen]) if chosen is not None else {}

    def configure_train(self, state: GeneflState, round: int, cid: int) -> Broadcast:
        k = state.cluster_of.get(cid, 0)
        return (self.first_contact(state.contacted, cid, {"cluster": k, "gene_layers": None})
                or Broadcast(tensors=self.gene_of(state, k), meta={"cluster": k, "gene_layers": state.gene_layers[k]}))

    def configure_evaluate(self, state: GeneflState, cid: int) -> Broadcast:
        return self.configure_train(state, 0, cid)

    def configure_absent(self, state: GeneflState, cid: int) -> Broadcast | None:
        return Broadcast() if cid in state.contacted else None  # its own model, as it stands

    def aggregate(self, state: GeneflState, round: int, updates: Updates) -> GeneflState:
        k_total = len(state.genes)
        means = [self.combiner(state, round, f", cluster {k}") for k in range(k_total)]
        scores: list[list[tuple[list[float], int]]] = [[] for _ in range(k_total)]
        reported = set()
        for cid, update in updates:
            k, n = state.cluster_of.get(cid, 0), update.meta["num_samples"]
            means[k].add(cid, update.tensors, n)
            if cid not in self.left_out:  # a client `defence.reputation` leaves out has no say in the layers either
                scores[k].append((update.meta["scores"], n))
            reported.add(cid)
        stepped = [self.optimizer.step(gene, mean.result(gene), moments, round, mean.names()) if mean else (gene, moments)
                   for mean, gene, moments in zip(means, state.genes, state.moments, strict=True)]
        gene_layers = self.decide_layers(state.gene_layers, scores, round)
        return replace(state, genes=[g for g, _ in stepped], moments=[m for _, m in stepped], gene_layers=gene_layers,
                       contacted=state.contacted | reported)

    def decide_layers(self, current: list[list[int] | None], scores, round: int) -> list[list[int] | None]:
        opts = self.config.genefl
        reselect = opts.gene_reselect_every and round % opts.gene_reselect_every == 0
        everyone = [s for cluster in scores for s in cluster]
        decided = []
        for k, chosen in enumerate(current):
            if chosen is not None and not reselect:
                decided.append(chosen)
                continue
            reports = scores[k] or everyone
            if not reports:
                decided.append(chosen)
                continue
            mean = sensitivity.weighted_mean_scores([s for s, _ in reports], [n for _, n in reports])
            decided.append(self.select(mean, generator(self.config.seed, "gene-layers", k, round)))
        return decided

    def select(self, scores: list[float], gen: torch.Generator) -> list[int]:
        return choose_gene_layers(self.config, self.layers, scores, gen)

    def weights(self, state: GeneflState) -> dict[str, torch.Tensor]:
        return {f"cluster{k}/{key}": v for k, gene in enumerate(state.genes) for key, v in gene.items()}

    def welcome(self, state: GeneflState, round: int, cid: int, hello: ClientUpdate | None):
        k, cluster_of, signatures = join_cluster(self.config, state.cluster_of, state.signatures, cid, hello)
        state = replace(state, cluster_of=cluster_of, signatures=signatures, contacted=state.contacted | {cid})
        if self.config.newcomer_init == "random" or state.gene_layers[k] is None:
            return state, Broadcast(meta={"init": "random", "cluster": k})
        return state, Broadcast(tensors=self.gene_of(state, k), meta={"init": "learngene", "cluster": k})

    def depart(self, state: GeneflState, round: int, cid: int) -> GeneflState:
        cluster_of, signatures = leave_cluster(state.cluster_of, state.signatures, cid)
        return replace(state, cluster_of=cluster_of, signatures=signatures, contacted=state.contacted - {cid})

    def rejoin(self, state: GeneflState, round: int, cid: int, hello: ClientUpdate) -> GeneflState:
        # its personal model stays; from now on it is sent (and uploads) its new cluster's learnGene
        _, cluster_of, signatures = rejoin_cluster(self.config, state.cluster_of, state.signatures, cid, hello)
        return replace(state, cluster_of=cluster_of, signatures=signatures)

    def summary(self, state: GeneflState) -> dict:
        names = [[self.layers[i].name for i in chosen] if chosen is not None else None for chosen in state.gene_layers]
        gene_bytes = [sum(self.layers[i].nbytes for i in chosen) for chosen in state.gene_layers if chosen is not None]
        return {"summary": {"gene_bytes": max(gene_bytes) if gene_bytes else 0, "num_clusters": len(state.genes)},
                "gene_layers": names, **cluster_report(state.cluster_of, len(state.genes))}


class GeneflClient(PersonalModelClient):
    def signature(self, env: ClientEnv) -> ClientUpdate:
        return signature_update(env.data.x_train, env.config.clustering.p, env.generator("signature"))

    def train(self, env: ClientEnv, broadcast: Broadcast) -> ClientUpdate:
        opts, data = env.config.genefl, env.data
        self.prepare(env, broadcast)
        layers = env.layers
        before = snapshot(env.model)
        names = [n for n, p in env.model.named_parameters() if p.requires_grad]
        correction = None
        if opts.lambda_s > 0 or opts.lambda_e > 0:
            masked = None
            if opts.lambda_e > 0:
                estimate = fisher.diagonal_fisher if opts.fisher_estimator == "per_sample" else fisher.batch_fisher
                fis = estimate(env.model, data.x_train, data.y_train, opts.fisher_samples, env.generator("fisher"))
                mask = fisher.elastic_mask(fis, layers, opts.fisher_top)
                norm = fisher.normalised_fisher(fis, mask)
                masked = {k: norm[k] * mask[k] for k in names}
            xi = env.store.get("xi") or [1.0 / len(layers)] * len(layers)
            coefs = coefficients(names, layers, xi, masked, opts.lambda_s, opts.lambda_e, max_coef=1.0 / env.config.lr)
            correction = GradientCorrection(anchor=[before[n] for n in names], coef=coefs)
        train(env.model, data.x_train, data.y_train, env.settings(), env.generator("train"), correction)
        after = snapshot(env.model)
        stab = sensitivity.stability(before, after, layers)
        env.store["xi"] = sensitivity.layer_weights(stab, layers)
        env.store["model"] = after
        scores = stab if opts.sensitivity == "stability" else sensitivity.taylor_importance(
            env.model, data.x_train[:256], data.y_train[:256], layers)
        chosen = broadcast.meta.get("gene_layers")
        if chosen is None:  # round 1: the client's own scores choose its upload
            chosen = choose_gene_layers(env.config, layers, scores, env.generator("gene-layers"))
        return ClientUpdate(tensors=layer_tensors(after, [layers[i] for i in chosen]),
                            meta={"num_samples": data.num_train, "scores": [float(s) for s in scores]})
