"""Run configuration: typed, frozen dataclasses; a TOML file plus `--set key=value` overrides.

Top-level keys are flat (`rounds = 30`); each method's options live in their own table
(`[genefl]`, `[fedprox]`, ...) and are reached from the command line as `--set genefl.fisher_top=0.3`.
Every default is visible below. Configs are validated once, at load time, and never mutated.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import re
import reprlib
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import models as _model_names
from .data.datasets import DATASETS
from .compression import CODECS, QUANTIZERS
from .sensitivity import SELECTIONS
from .server_opt import NAMES as SERVER_OPTS
from . import adversary, population, robust
from .robust import AGGREGATORS
from .adversary import KINDS as ATTACKS
from .errors import ConfigError
from . import paths

PARTITIONS = ("iid", "dirichlet", "pathological")
MODELS = ("auto",) + _model_names.MODELS


_REPR = reprlib.Repr()  # Python 3.11's takes no arguments
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 3, 80, 80, 40


def shown(value: Any) -> str:
    """A value in a one-line message: bounded in length and depth (a list nested 10,000 deep, a
    5,000-character string), line breaks escaped."""
    return paths.shown(_REPR.repr(value), 120)


class _KnownKeys(type):
    """`Config(foo=1)` is a `ConfigError` naming the key, as `--set foo=1` is, not a `TypeError`."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        names = [f.name for f in dataclasses.fields(cls)]
        prefix = getattr(cls, "_prefix", "")
        if len(args) > len(names):
            raise ConfigError(f"{cls.__name__}: takes its options by name (key=value), got {len(args)} positional values")
        for key in kwargs:
            if key not in names:
                where = f" in [{prefix[:-1]}]" if prefix else ""
                raise ConfigError(f"unknown config key {shown(prefix + str(key))} (valid keys{where}: {', '.join(sorted(names))})")
        return super().__call__(*args, **kwargs)


class _Validated(metaclass=_KnownKeys):
    """Checks every field on construction, from Python as from TOML: `Config(lr=-1)` raises the same
    one-line `ConfigError` as `--set lr=-1`. Nested option tables may be given as dicts."""

    _prefix: typing.ClassVar[str] = ""

    def __post_init__(self) -> None:
        for name, kind in _hints(type(self)).items():
            value, full = getattr(self, name), self._prefix + name
            if dataclasses.is_dataclass(kind):
                if isinstance(value, dict):
                    value = _build(kind, value, full + ".")
                elif not isinstance(value, kind):
                    raise ConfigError(f"{full}: expected a table of options, got {shown(value)}")
            else:
                value = _coerce(full, value, kind)
                rule = RULES.get(full)
                if rule and not rule[0](value):
                    message = rule[1]() if callable(rule[1]) else rule[1]
                    raise ConfigError(f"{full}: {message}, got {shown(value)}")
            object.__setattr__(self, name, value)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in typing.get_type_hints(cls).items() if k in names}


@dataclass(frozen=True)
class ClusteringOptions(_Validated):
    """Stage 0 (PACFL signatures), shared by genefl and pacfl so both cluster identically."""

    _prefix = "clustering."

    p: int = 5  # rank of each client's signature (top-p left singular vectors)
    num_clusters: int = 0  # K; 0 = cut the dendrogram at distance `beta` instead
    beta: float = 35.0  # distance threshold in degrees (mean principal angle), used when K = 0
    method: str = "sampled"  # "exact": all pairwise angles | "sampled": exact up to `sample` clients; above, a seeded sample of them, the rest assigned (clustering.py)
    sample: int = 1000  # "sampled": clients clustered exactly; every other one joins its nearest cluster


@dataclass(frozen=True)
class ServerOptOptions(_Validated):
    """The server's optimizer step over the averaged update (server_opt.py), for fedavg, fedprox, fedlp,
    scaffold and genefl; fedavgm, fedadam, fedyogi and fedadagrad fix `name`. Defaults are Flower's."""

    _prefix = "server_opt."

    name: str = "none"  # "none" (the plain mean, as before) | "avgm" | "adam" | "yogi" | "adagrad"
    lr: float = 0.0  # server learning rate η; 0 = Flower's for `name`: avgm 1.0, adam 0.1, yogi 0.01, adagrad 0.1
    momentum: float = -1.0  # β1 (FedAvgM's momentum); -1 = Flower's for `name`: avgm 0.0, adam 0.9, yogi 0.9, adagrad 0.0
    beta2: float = 0.99  # β2, second-moment decay of adam and yogi
    tau: float = 1e-3  # τ, adaptivity (the ε under the square root) of adam, yogi and adagrad


@dataclass(frozen=True)
class GeneflOptions(_Validated):
    _prefix = "genefl."

    fisher_samples: int = 256  # samples for the diagonal empirical Fisher
    fisher_estimator: str = "per_sample"  # "per_sample" (the empirical Fisher) | "batch" (squared mini-batch gradients, cheaper)
    fisher_top: float = 0.2  # fraction of each layer's parameters in the elastic mask
    lambda_s: float = 0.01  # weight of the per-layer smoothing term (0 switches it off)
    lambda_e: float = 1.0  # weight of the Fisher-masked quadratic term (0 switches it off)
    gene_budget: float = 0.25  # learnGene size as a fraction of the model's bytes
    gene_include_head: bool = False  # may the classifier head be part of the learnGene?
    gene_selection: str = "window"  # "window" (contiguous layers) | "greedy" | "random" (ablation) | "input" / "output" (the contiguous run at that end)
    gene_reselect_every: int = 0  # re-decide the learnGene layer set every N rounds; 0 = never
    sensitivity: str = "stability"  # layer score: "stability" (cosine) | "taylor" (|θ·∂L/∂θ|)
    clustering: bool = True  # False = one cluster for everybody (ablation)


@dataclass(frozen=True)
class FedProxOptions(_Validated):
    _prefix = "fedprox."

    mu: float = 0.01  # proximal term weight


@dataclass(frozen=True)
class ScaffoldOptions(_Validated):
    _prefix = "scaffold."

    server_lr: float = 1.0  # global step size on the averaged model delta


@dataclass(frozen=True)
class FedLPOptions(_Validated):
    _prefix = "fedlp."

    p: float = 0.5  # probability that a client uploads a given layer


@dataclass(frozen=True)
class FLearngeneOptions(_Validated):
    _prefix = "flearngene."

    gene_budget: float = 0.25  # same byte budget as GENE-FL; the layers are the last body layers


@dataclass(frozen=True)
class CodecOptions(_Validated):
    """Payload codecs between every method and the wire (`genefl.compression`)."""

    _prefix = "codec."

    up: str = "none"  # uploads (the change from what was received): one of compression.CODECS
    down: str = "none"  # broadcasts, evaluation and newcomer welcomes (the weights): one of compression.CODECS
    signature: str = "none"  # GENE-FL's / PACFL's signature uploads: none | fp16 | bf16 | int8 | int4 | int3 | int2
    error_feedback: bool = False  # uploads: keep what the codec dropped and add it to the client's next upload
    topk: float = 0.01  # topk / randk: fraction of each tensor's entries kept
    granularity: str = "tensor"  # int codecs: one offset and scale per "tensor" or per output "channel"
    rounding: str = "auto"  # int codecs: "stochastic" | "nearest" | "auto" (stochastic up, nearest down)
    mixed_bits: float = 4.0  # mixed: average bits per value over a message's tensors
    qsgd_levels: int = 7  # qsgd: levels s per sign (codes take ceil(log2(2s+1)) bits)
    qsgd_bucket: int = 512  # qsgd: values sharing one norm
    min_numel: int = 256  # tensors with fewer values travel uncompressed (their header costs more than they save)


@dataclass(frozen=True)
class AdversaryOptions(_Validated):
    """Simulated attackers among the training clients (adversary.py): who they are and what they send."""

    _prefix = "adversary."

    kind: str = "none"  # "none" | "signflip" | "scale" | "gaussian" | "alie" | "labelflip" | "backdoor" | "package.module:function"
    fraction: float = 0.0  # share of the training clients that attack (a seeded choice, the same in both runtimes)
    scale: float = 10.0  # scale: the change sent is this multiple of the honest one
    sigma: float = 1.0  # gaussian: the change sent is N(0, sigma^2) per value
    alie_z: float = 0.0  # alie: mean - z * std; 0 = Baruch et al.'s z_max for num_clients and the attackers' count
    target_label: int = 0  # backdoor: the label triggered images are given
    trigger_size: int = 3  # backdoor: side of the checkerboard trigger stamped in each image's bottom-right corner
    poison_fraction: float = 0.5  # backdoor: share of the attacker's training samples stamped and relabelled
    boost: float = 10.0  # backdoor: the change sent is this multiple of the trained one (model replacement)
    signature_classes: tuple[int, ...] = ()  # genefl, pacfl: attackers sign with public images of these classes (a victim's label set) to join its cluster; [] = honest signatures


@dataclass(frozen=True)
class DefenceOptions(_Validated):
    """Robust aggregation at the server (robust.py), for every method that averages."""

    _prefix = "defence."

    aggregator: str = "mean"  # "mean" (the streaming weighted mean) | "median" | "trimmed_mean" | "krum" | "multikrum"
    trim: float = 0.1  # trimmed_mean: fraction of the values dropped at each end, per coordinate
    byzantine: int = 1  # krum, multikrum: f, the attackers tolerated (needs more than 2f + 2 updates)
    multikrum_m: int = 0  # multikrum: updates averaged; 0 = n - f of the n received
    norm_bound: float = 0.0  # clip each update's change from what it was sent to this L2 norm (0 = off)


@dataclass(frozen=True)
class PopulationOptions(_Validated):
    """Who is in the federation, round by round (`genefl.population`): arrivals, departures,
    availability, returns with drifted data; all seeded. The defaults are a static population."""

    _prefix = "population."

    arrivals: str = "schedule"  # newcomers: "schedule" (newcomer_rounds, or spread evenly) | "poisson" | "trace" (first row in trace_file)
    arrival_rate: float = 0.5  # poisson: expected newcomer arrivals per round (those drawn after the last round never arrive)
    departures: float = 0.0  # share of all clients (training clients and arriving newcomers) that leave for good, at seeded rounds
    availability: str = "always"  # when a client can be reached: "always" | "diurnal" | "trace" (windows in trace_file)
    day_rounds: int = 24  # diurnal: rounds per day
    online_fraction: float = 0.5  # diurnal: share of its local day a client is online (the window from its local midnight)
    trace_file: str = ""  # trace: CSV `client,online_from,online_until` (rounds, inclusive; a client without rows is never online)
    returns: float = 0.0  # share of the training clients that go away for `absence` rounds (from a seeded round) and come back
    absence: int = 3  # returns: rounds a returning client is away
    drift: str = "dirichlet"  # returns: its data when back: "dirichlet" (a new Dir(alpha) class mix) | "swap" (another client's mix) | "none"
    recluster: bool = False  # returns: a client back with drifted data sends a new signature and joins its nearest cluster again
    eval_sample: int = 0  # evaluate a seeded sample of this many present clients (everyone after the last round); 0 = everyone
    local_baseline: bool = False  # per newcomer, also train a local-only model (an extra fine-tuning each): its rounds to beat it


@dataclass(frozen=True)
class FlowerOptions(_Validated):
    """Only used by the Flower runtime (`flwr run`)."""

    _prefix = "flower."

    round_timeout: float = 300.0  # seconds to wait for replies; later ones are dropped from the round
    node_wait: float = 120.0  # seconds to wait at the start for the training clients' SuperNodes
    out: str = "genefl-flower-out"  # folder where the ServerApp writes results.json (and its checkpoint)
    resume: bool = False  # continue the run in `out` from its last checkpoint (a killed ServerApp)


@dataclass(frozen=True)
class Config(_Validated):
    method: str = "genefl"  # a name in algorithms.REGISTRY, or "package.module:NAME"
    dataset: str = "digits"  # one of DATASETS; digits and synthetic need no files
    data_dir: str = ""  # folder with MNIST/, FashionMNIST/, cifar-*; "" = $GENEFL_DATA
    download: bool = False  # fetch missing dataset files from the official sources
    checksum_file: str = ""  # md5sum-format file whose entries replace the built-in checksums (stand-in data)
    model: str = "auto"  # "auto" (mlp for digits and synthetic, cnn; resnet18 for CIFAR) or one of models.MODELS
    seed: int = 0  # every random choice derives from this
    rounds: int = 20  # communication rounds
    num_clients: int = 10  # training clients, present from round 1
    num_newcomers: int = 4  # clients arriving later with unseen data
    newcomer_rounds: tuple[int, ...] = ()  # arrival rounds, e.g. [3, 5]; [] = spread evenly
    partition: str = "dirichlet"  # one of PARTITIONS
    alpha: float = 0.5  # Dirichlet concentration (smaller = more heterogeneous)
    classes_per_client: int = 2  # for the pathological partition
    min_samples: int = 10  # smallest training set any client may get (Dirichlet redraws until it holds)
    train_subset: int = 0  # use a seeded stratified subset of this many training samples; 0 = all
    synthetic_alpha: float = 1.0  # dataset = synthetic: α, std of u_k, the clients' model means (moves no label: data/synthetic.py)
    synthetic_beta: float = 1.0  # dataset = synthetic: β, std of B_k, the clients' input means
    local_epochs: int = 1  # local epochs per round
    batch_size: int = 32
    lr: float = 0.05  # local SGD learning rate
    momentum: float = 0.0  # local SGD momentum (buffers start fresh every round)
    weight_decay: float = 0.0
    participation: float = 1.0  # fraction of active clients sampled per round
    dropout: float = 0.0  # probability a sampled client does not report back
    newcomer_epochs: int = 5  # fine-tuning epochs of a newcomer after its initialisation
    newcomer_init: str = "method"  # "method": its natural start (global/cluster model, learnGene) | "random"
    newcomer_lr: float = 0.01  # newcomer fine-tuning learning rate; 0 = the training lr (BENCHMARKS 4.1)
    newcomer_momentum: float = 0.9  # newcomer fine-tuning SGD momentum
    newcomer_schedule: str = "cosine"  # newcomer lr schedule: "constant" | "cosine" (to 0 over its epochs)
    newcomer_val_fraction: float = 0.2  # share of a newcomer's training data held out to choose its epoch
    newcomer_freeze_epochs: int = 0  # inherited layers frozen for the first k epochs (when some layers are fresh)
    newcomer_inherited_lr: float = 1.0  # lr multiplier of inherited layers (when some layers are fresh)
    dp_clip: float = 0.0  # defence: clip each upload's change to this L2 norm (0 = off; see defence.py)
    dp_noise: float = 0.0  # defence: Gaussian noise std as a multiple of dp_clip
    first_contact: str = "seed"  # a full model equal to the seeded initial one is sent as "seed" (and a digest) | "tensors"
    checkpoint_every: int = 1  # save a checkpoint (DIR/checkpoint.pt) every N rounds; 0 = never
    eval_every: int = 1  # evaluate all clients every N rounds (and always after the last)
    device: str = "cpu"  # "cpu" | "cuda" | "cuda:N" | "mps"
    state_store: str = "memory"  # per-client state between rounds: "memory" | "disk" (one file per client)
    state_dir: str = ""  # for state_store = "disk": a subfolder per config, emptied as a fresh run starts; "" = a temporary one
    clustering: ClusteringOptions = field(default_factory=ClusteringOptions)
    server_opt: ServerOptOptions = field(default_factory=ServerOptOptions)
    genefl: GeneflOptions = field(default_factory=GeneflOptions)
    fedprox: FedProxOptions = field(default_factory=FedProxOptions)
    scaffold: ScaffoldOptions = field(default_factory=ScaffoldOptions)
    fedlp: FedLPOptions = field(default_factory=FedLPOptions)
    flearngene: FLearngeneOptions = field(default_factory=FLearngeneOptions)
    codec: CodecOptions = field(default_factory=CodecOptions)
    adversary: AdversaryOptions = field(default_factory=AdversaryOptions)
    defence: DefenceOptions = field(default_factory=DefenceOptions)
    population: PopulationOptions = field(default_factory=PopulationOptions)
    flower: FlowerOptions = field(default_factory=FlowerOptions)

    def __post_init__(self) -> None:
        super().__post_init__()
        cross_check(self)

    def resolved_data_dir(self) -> str:
        return self.data_dir or os.environ.get("GENEFL_DATA", "")


# ---- validation: (predicate, message) per field; choices are listed in the message -------------
def _choices(options: tuple[str, ...]):
    return (lambda v: v in options, "must be one of " + ", ".join(options))


_IMPORT_SPEC = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")  # "package.module:name"


def _known_method(name: str) -> bool:
    from .algorithms import REGISTRY  # imported when first needed: algorithms import this module

    return name in REGISTRY


def _methods_message() -> str:
    from .algorithms import REGISTRY

    return "must be one of " + ", ".join(REGISTRY) + " (registered methods) or 'package.module:NAME'"


_POSITIVE = (lambda v: v > 0, "must be > 0")
_NONNEG = (lambda v: v >= 0, "must be >= 0")
_FRACTION = (lambda v: 0 < v <= 1, "must be in (0, 1]")
_PROB = (lambda v: 0 <= v < 1, "must be in [0, 1)")
_WEIGHT = (lambda v: 0 <= v <= 1e6, "must be in [0, 1e6]")  # a loss-term weight
# Below this an lr trains nothing in float32, and the quantities that divide by it overflow float32:
# GENE-FL's coefficient cap 1/lr, SCAFFOLD's control variate, the attack's gradient (update / lr).
MIN_LR = 1e-8
RULES: dict[str, tuple] = {
    "method": (lambda v: _known_method(v) or _IMPORT_SPEC.fullmatch(v) is not None, _methods_message),
    "dataset": _choices(DATASETS),
    "model": (lambda v: v in MODELS or _IMPORT_SPEC.fullmatch(v) is not None,
              "must be one of " + ", ".join(MODELS) + " or 'package.module:factory'"),
    "partition": _choices(PARTITIONS), "rounds": _POSITIVE, "num_clients": _POSITIVE,
    "num_newcomers": _NONNEG, "alpha": _POSITIVE, "classes_per_client": _POSITIVE,
    "min_samples": _POSITIVE, "train_subset": _NONNEG,
    "synthetic_alpha": (lambda v: 0 <= v <= 100, "must be in [0, 100]"),
    "synthetic_beta": (lambda v: 0 <= v <= 100, "must be in [0, 100]"), "local_epochs": _POSITIVE,
    "batch_size": (lambda v: v >= 2, "must be >= 2 (a 1-sample batch breaks BatchNorm and is skipped)"),
    "lr": (lambda v: MIN_LR <= v <= 10, f"must be in [{MIN_LR:g}, 10]"), "momentum": (lambda v: 0 <= v < 1, "must be in [0, 1)"),
    "weight_decay": (lambda v: 0 <= v <= 1, "must be in [0, 1]"), "participation": _FRACTION, "dropout": _PROB,
    "newcomer_epochs": _NONNEG, "eval_every": _POSITIVE, "checkpoint_every": _NONNEG, "newcomer_lr": (lambda v: v == 0 or MIN_LR <= v <= 10, f"must be 0 (the training lr) or in [{MIN_LR:g}, 10]"),
    "newcomer_momentum": (lambda v: 0 <= v < 1, "must be in [0, 1)"),
    "newcomer_schedule": _choices(("constant", "cosine")), "newcomer_val_fraction": _PROB,
    "newcomer_freeze_epochs": _NONNEG, "newcomer_inherited_lr": (lambda v: 0 <= v <= 1, "must be in [0, 1] (a multiplier that slows "
                                                                          "inherited layers down)"),
    "device": (lambda v: v in ("cpu", "cuda", "mps") or (v.startswith("cuda:") and v[5:].isdigit()),
               "must be cpu, cuda, cuda:N or mps"),
    "state_store": _choices(("memory", "disk")), "first_contact": _choices(("tensors", "seed")),
    "dp_clip": _WEIGHT, "dp_noise": _WEIGHT,
    "newcomer_rounds": (lambda v: all(r >= 1 for r in v), "rounds must be >= 1"),
    "clustering.p": (lambda v: v >= 1, "must be >= 1"), "clustering.num_clusters": _NONNEG,
    "clustering.beta": _POSITIVE, "clustering.method": _choices(("exact", "sampled")),
    "clustering.sample": (lambda v: 2 <= v <= 1_000_000, "must be in 2..1000000"), "genefl.fisher_samples": _POSITIVE, "genefl.fisher_top": _FRACTION,
    "genefl.fisher_estimator": _choices(("per_sample", "batch")),
    "genefl.lambda_s": _WEIGHT, "genefl.lambda_e": _WEIGHT, "genefl.gene_budget": _FRACTION,
    "genefl.gene_selection": _choices(SELECTIONS),
    "genefl.gene_reselect_every": _NONNEG, "genefl.sensitivity": _choices(("stability", "taylor")),
    "newcomer_init": _choices(("method", "random")), "fedprox.mu": _WEIGHT,
    "codec.up": _choices(CODECS), "codec.down": _choices(CODECS), "codec.signature": _choices(QUANTIZERS),
    "codec.topk": _FRACTION, "codec.granularity": _choices(("tensor", "channel")),
    "codec.rounding": _choices(("auto", "stochastic", "nearest")),
    "codec.mixed_bits": (lambda v: 2 <= v <= 8, "must be in [2, 8]"),
    "codec.qsgd_levels": (lambda v: 1 <= v <= 127, "must be in 1..127"),
    "codec.qsgd_bucket": (lambda v: 1 <= v <= 1 << 24, "must be in 1..16777216"), "codec.min_numel": _NONNEG,
    "server_opt.name": _choices(SERVER_OPTS), "server_opt.lr": (lambda v: 0 <= v <= 10, "must be in [0, 10] (0 = the optimizer's default)"),
    "server_opt.momentum": (lambda v: v == -1 or 0 <= v < 1, "must be in [0, 1), or -1 (the optimizer's default)"),
    "server_opt.beta2": (lambda v: 0 <= v < 1, "must be in [0, 1)"), "server_opt.tau": (lambda v: 0 < v <= 1, "must be in (0, 1]"),
    "adversary.kind": (lambda v: v in ATTACKS or _IMPORT_SPEC.fullmatch(v) is not None,
                       "must be one of " + ", ".join(ATTACKS) + " or 'package.module:function'"),
    "adversary.fraction": _PROB, "adversary.scale": (lambda v: abs(v) <= 1e6, "must be in [-1e6, 1e6]"),
    "adversary.sigma": _WEIGHT, "adversary.alie_z": (lambda v: 0 <= v <= 100, "must be in [0, 100]"),
    "adversary.target_label": _NONNEG, "adversary.trigger_size": _POSITIVE, "adversary.poison_fraction": _FRACTION,
    "adversary.boost": (lambda v: abs(v) <= 1e6, "must be in [-1e6, 1e6]"),
    "adversary.signature_classes": (lambda v: all(c >= 0 for c in v) and len(set(v)) == len(v), "must be distinct class ids >= 0"),
    "defence.aggregator": _choices(AGGREGATORS), "defence.trim": (lambda v: 0 <= v < 0.5, "must be in [0, 0.5)"),
    "defence.byzantine": _NONNEG, "defence.multikrum_m": _NONNEG, "defence.norm_bound": _WEIGHT,
    "population.arrivals": _choices(("schedule", "poisson", "trace")),
    "population.arrival_rate": (lambda v: 0 < v <= 1e6, "must be in (0, 1e6]"), "population.departures": _PROB,
    "population.availability": _choices(("always", "diurnal", "trace")),
    "population.day_rounds": (lambda v: 1 <= v <= 1 << 20, "must be in 1..1048576"), "population.online_fraction": _FRACTION,
    "population.returns": (lambda v: 0 <= v <= 1, "must be in [0, 1]"), "population.absence": _POSITIVE,
    "population.drift": _choices(("dirichlet", "swap", "none")), "population.eval_sample": _NONNEG,
    "scaffold.server_lr": (lambda v: 0 < v <= 10, "must be in (0, 10]"), "flower.round_timeout": _POSITIVE, "flower.node_wait": _NONNEG, "fedlp.p": _FRACTION, "flearngene.gene_budget": _FRACTION,
}


def check_rules(rules: dict[str, tuple]) -> None:
    """Every rule must name a config key: a misspelled one would silently never apply, so it fails
    at import instead."""
    def keys(cls: type, prefix: str) -> set[str]:
        found = set()
        for name, kind in _hints(cls).items():
            found |= keys(kind, f"{prefix}{name}.") if dataclasses.is_dataclass(kind) else {prefix + name}
        return found

    unknown = sorted(set(rules) - keys(Config, ""))
    if unknown:
        raise ConfigError(f"validation rules for keys that do not exist: {', '.join(unknown)}")


check_rules(RULES)


def _coerce(key: str, value: Any, kind: Any) -> Any:
    """Check `value` against the field's type; ints are accepted for floats."""
    if kind is bool and isinstance(value, bool):
        return value
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            value = float(value)
        except OverflowError:
            value = math.inf
        if not math.isfinite(value):
            raise ConfigError(f"{key}: must be a finite number, got {shown(value)}")
        return value
    if kind is str and isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ConfigError(f"{key}: is not valid UTF-8 text ({value.encode('utf-8', 'replace')[:60]!r})") from None
        return value
    if typing.get_origin(kind) is tuple and isinstance(value, (list, tuple)):
        inner = typing.get_args(kind)[0]
        return tuple(_coerce(key, v, inner) for v in value)
    name = getattr(kind, "__name__", str(kind))
    if typing.get_origin(kind) is tuple:
        name = f"a list of {typing.get_args(kind)[0].__name__}"
    raise ConfigError(f"{key}: expected {name}, got {shown(value)}")


def _build(cls: type, table: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    values = {}
    for key, value in table.items():
        full = prefix + str(key)
        if key not in fields:
            valid = ", ".join(sorted(fields))
            raise ConfigError(f"unknown config key {shown(full)} (valid keys{' in [' + prefix[:-1] + ']' if prefix else ''}: {valid})")
        kind = hints[key]
        if dataclasses.is_dataclass(kind):
            if not isinstance(value, dict):
                raise ConfigError(f"{full}: expected a table of options, got {shown(value)}")
            values[key] = _build(kind, value, full + ".")
            continue
        values[key] = value  # coerced and checked by the dataclass itself (`_Validated.__post_init__`)
    return cls(**values)


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b=value` -> (["a", "b"], value); the value is read as TOML, else taken as a bare string."""
    if "\n" in item or "\r" in item:  # TOML would read a second line as another key and drop it
        raise ConfigError(f"--set {shown(item)}: holds a line break; give one key=value per --set")
    if "=" not in item:
        raise ConfigError(f"--set {shown(item)}: expected key=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    return key.split("."), toml_value(f"--set {shown(key)}", raw)


def toml_value(what: str, raw: str) -> Any:
    """`raw` read as one TOML value, else taken as a bare string; `what` names it in errors."""
    if "\n" in raw or "\r" in raw:  # TOML would read a second line as another key and drop it
        raise ConfigError(f"{what}: the value holds a line break")
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw.strip()
    except RecursionError:
        raise ConfigError(f"{what}: value nested too deeply") from None


def load_config(path: str | os.PathLike | None = None, overrides: list[str] = ()) -> Config:
    table: dict[str, Any] = {}
    if path is not None:
        table = _read_toml(Path(path))
    for item in overrides:
        keys, value = parse_override(item)
        node = table
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {shown(item)}: {k!r} is not a table")
        node[keys[-1]] = value
    return _build(Config, table, "")


MAX_CONFIG_BYTES = 1 << 20  # a config is a few hundred bytes; this refuses /dev/zero and the like


def _read_toml(path: Path) -> dict[str, Any]:
    if str(path) in ("", "."):
        raise ConfigError("--config: empty path")
    path = paths.checked("--config", path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    text = paths.read_small_text("config file", path, MAX_CONFIG_BYTES, ConfigError)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {str(exc).splitlines()[0]}") from None
    except RecursionError:
        raise ConfigError(f"config file {path}: values nested too deeply") from None


PATH_KEYS = ("data_dir", "checksum_file", "state_dir", "population.trace_file", "flower.out")  # paths: "" = the default


def cross_check(config: Config) -> None:
    """Rules that involve more than one field, or the machine."""
    for key in PATH_KEYS:
        table, _, leaf = key.rpartition(".")
        value = getattr(getattr(config, table) if table else config, leaf)
        found = paths.problem(value) if value else None
        if found:
            raise ConfigError(f"{key}: {found}")
    if config.dp_noise > 0 and config.dp_clip <= 0:
        raise ConfigError("dp_noise: needs dp_clip > 0 (the noise is a multiple of the clipping norm)")
    check_synthetic(config)
    opts = config.clustering
    if opts.method == "sampled" and opts.num_clusters > opts.sample:
        raise ConfigError(f"clustering.sample: {opts.sample} sampled clients cannot form clustering.num_clusters = "
                          f"{opts.num_clusters} clusters; sample at least that many (or clustering.method = exact)")
    if config.model == "logreg" and config.method in ONE_LAYER_REFUSED:
        raise ConfigError(f"model: 'logreg' is a single layer (the head), and {config.method} shares body layers only; "
                          "use model = mlp")
    if config.method in ("genefl", "pacfl") and config.min_samples < config.clustering.p:
        raise ConfigError(f"min_samples: must be >= clustering.p = {config.clustering.p} for {config.method}, "
                          f"whose client signatures have p columns (got {config.min_samples})")
    if _known_method(config.method):  # a [server_opt] the method would ignore fails here, before any data loads
        from .algorithms import get

        strategy = get(config.method)[0]
        strategy.server_optimizer(config)
        robust.check_method(strategy, config)
        adversary.check_method(strategy, config)
    robust.check(config)
    adversary.check(config)
    population.check(config)
    check_device(config.device)


ONE_LAYER_REFUSED = ("genefl", "flearngene", "fedper")  # their shared part is body layers, which logreg lacks


def check_synthetic(config: Config) -> None:
    """dataset = synthetic is generated per client: partition, alpha and classes_per_client are
    ignored (data/synthetic.py), a training subset means nothing, and min_samples is bounded by
    the per-client cap (a client never holds more)."""
    if config.dataset != "synthetic":
        return
    from .data.synthetic import SIZE_CAP

    if config.train_subset:
        raise ConfigError(f"train_subset: dataset = synthetic is generated per client and has no subset, got {config.train_subset}")
    if config.min_samples > SIZE_CAP:
        raise ConfigError(f"min_samples: dataset = synthetic caps a client at {SIZE_CAP} samples, got {config.min_samples}")


def check_device(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device: {device!r} asked for, but this torch ({torch.__version__}) sees no CUDA device")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device: {device!r} asked for, but there are {torch.cuda.device_count()} CUDA devices")
    if device == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("device: 'mps' asked for, but this torch sees no MPS device")


def config_to_dict(config: Config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def run_table(config: Config) -> dict[str, Any]:
    """What makes two runs the same run: the config without its `flower` table (timeouts, output
    folder, the resume flag). A resumed ServerApp and a SuperNode's saved state are matched by it."""
    table = config_to_dict(config)
    table.pop("flower", None)
    return table


def run_key(config: Config) -> str:
    """A short name for `run_table(config)`: the folder a run's client states are kept in, under
    `state_dir` (the simulator) or a SuperNode's `state-dir` (Flower)."""
    return hashlib.sha256(json.dumps(run_table(config), sort_keys=True, default=str).encode()).hexdigest()[:16]


def table_differences(saved: dict[str, Any], current: dict[str, Any], prefix: str = "") -> list[str]:
    """'key saved vs current' for each key whose value differs, option tables by dotted key:
    what a refused resume names (e.g. ['seed 0 vs 1', 'genefl.fisher_top 0.2 vs 0.3'])."""
    found = []
    for key in sorted(set(saved) | set(current), key=str):
        old, new = saved.get(key, "(absent)"), current.get(key, "(absent)")
        if isinstance(old, dict) and isinstance(new, dict):
            found += table_differences(old, new, f"{prefix}{key}.")
        elif old != new:
            found.append(f"{prefix}{key} {old!r} vs {new!r}")
    return found


def replace(config: Config, **changes: Any) -> Config:
    """A copy of `config` with validated top-level or dotted (`genefl.fisher_top`) changes."""
    table = config_to_dict(config)
    for key, value in changes.items():
        *parents, leaf = key.split(".")
        node = table
        for k in parents:
            node = node.get(k) if isinstance(node, dict) else None
            if not isinstance(node, dict):
                raise ConfigError(f"unknown config key {key!r} ({k!r} is not a table of options)")
        node[leaf] = value
    return _build(Config, table, "")
