"""Run configuration: typed, frozen dataclasses; a TOML file plus `--set key=value` overrides.

Top-level keys are flat (`rounds = 30`); each table of options has its own TOML table
(`[codec]`, `[genefl]`, ...) and is reached from the command line as `--set genefl.fisher_top=0.3`.
Every field is declared once, with its default and its check (`genefl.options`): the run's general
keys and tables here, each method's own options beside the method (`GeneflOptions` in
`algorithms/genefl/`, `FedProxOptions` in `algorithms/fedprox.py`, `ServerOptOptions` in
`protocol/server_opt.py`), which names them as its server half's `options`.

A `Config` holds the table of every built-in method, whichever is chosen (a config file may set
several methods' tables, and `compare` runs several methods from one), the chosen method's table when
it is your own (`method = "package.module:NAME"` imports it; a `register`ed name), and any other
registered method's table that is given. So a run's table (config.toml, the checkpoint's identity)
does not depend on what else a process imported. Every table is checked against its declaration when
the `Config` is built, and the rules that involve the chosen method (a `[server_opt]` it would ignore,
a model it cannot share) right after: a bad config fails before any data loads, with a one-line
error naming the key. Configs are never mutated.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .protocol import adversary, population, robust
from . import paths, registry
from .protocol import models as _model_names
from .protocol.adversary import KINDS as ATTACKS
from .protocol.compression import CODECS, QUANTIZERS
from .data.datasets import DATASETS
from .data.synthetic import SIZE_CAP
from .errors import ConfigError
from .options import (Options, build, check, checked, choices, fraction, markdown_table, nonneg, option, positive,
                      probability, shown, table, weight)
from .own_code import IMPORT_SPEC
from .protocol.robust import AGGREGATORS
from .protocol.server_opt import ServerOptOptions

PARTITIONS = ("iid", "dirichlet", "inner_dirichlet", "pathological")
MODELS = ("auto",) + _model_names.MODELS
# Below this an lr trains nothing in float32, and the quantities that divide by it overflow float32:
# GENE-FL's coefficient cap 1/lr, SCAFFOLD's control variate, the attack's gradient (update / lr).
MIN_LR = 1e-8


@dataclass(frozen=True)
class ClusteringOptions(Options):
    """Stage 0 (PACFL signatures), shared by genefl and pacfl so both cluster identically."""

    section = "clustering"

    p: int = option(5, check(lambda v: v >= 1, "must be >= 1"))  # rank of each client's signature (top-p left singular vectors)
    num_clusters: int = option(0, nonneg())  # K; 0 = cut the dendrogram at distance `beta` instead
    beta: float = option(35.0, positive())  # distance threshold in degrees (mean principal angle), used when K = 0
    method: str = option("sampled", choices(("exact", "sampled")))  # "exact": all pairwise angles | "sampled": exact up to `sample` clients; above, a seeded sample of them, the rest assigned (clustering.py)
    sample: int = option(10_000, check(lambda v: 2 <= v <= 1_000_000, "must be in 2..1000000"))  # "sampled": clients clustered exactly; every other one joins its nearest cluster


@dataclass(frozen=True)
class CodecOptions(Options):
    """Payload codecs between every method and the wire (`genefl.protocol.compression`)."""

    section = "codec"

    up: str = option("none", choices(CODECS))  # uploads (the change from what was received): one of compression.CODECS
    down: str = option("none", choices(CODECS))  # broadcasts, evaluation and newcomer welcomes (the weights): one of compression.CODECS
    signature: str = option("none", choices(QUANTIZERS))  # GENE-FL's / PACFL's signature uploads: none | fp16 | bf16 | int8 | int4 | int3 | int2
    error_feedback: bool = option(False)  # uploads: keep what the codec dropped and add it to the client's next upload
    down_delta: bool = option(False)  # broadcasts to a client that has uploaded before: the change from its last upload as both sides decoded it (the server keeps one such reference per client)
    topk: float = option(0.01, fraction())  # topk / randk: fraction of each tensor's entries kept
    granularity: str = option("tensor", choices(("tensor", "channel")))  # int codecs: one offset and scale per "tensor" or per output "channel"
    rounding: str = option("auto", choices(("auto", "stochastic", "nearest")))  # int codecs: "stochastic" | "nearest" | "auto" (stochastic up, nearest down)
    mixed_bits: float = option(4.0, check(lambda v: 2 <= v <= 8, "must be in [2, 8]"))  # mixed: average bits per value over a message's tensors
    qsgd_levels: int = option(7, check(lambda v: 1 <= v <= 127, "must be in 1..127"))  # qsgd: levels s per sign (codes take ceil(log2(2s+1)) bits)
    qsgd_bucket: int = option(512, check(lambda v: 1 <= v <= 1 << 24, "must be in 1..16777216"))  # qsgd: values sharing one norm
    min_numel: int = option(256, nonneg())  # tensors with fewer values travel uncompressed (their header costs more than they save)


_BOUNDED = check(lambda v: abs(v) <= 1e6, "must be in [-1e6, 1e6]")


@dataclass(frozen=True)
class AdversaryOptions(Options):
    """Simulated attackers among the training clients (protocol/adversary.py): who they are and what they send."""

    section = "adversary"

    kind: str = option("none", check(lambda v: v in ATTACKS or IMPORT_SPEC.fullmatch(v) is not None,
                                     "must be one of " + ", ".join(ATTACKS) + " or 'package.module:function'"))  # "none" | "signflip" | "scale" | "gaussian" | "alie" | "labelflip" | "backdoor" | "package.module:function"
    fraction: float = option(0.0, probability())  # share of the training clients that attack (a seeded choice, the same in both runtimes)
    scale: float = option(10.0, _BOUNDED)  # scale: the change sent is this multiple of the honest one
    sigma: float = option(1.0, weight())  # gaussian: the change sent is N(0, sigma^2) per value
    alie_z: float = option(0.0, check(lambda v: 0 <= v <= 100, "must be in [0, 100]"))  # alie: mean - z * std; 0 = Baruch et al.'s z_max for num_clients and the attackers' count
    target_label: int = option(0, nonneg())  # backdoor: the label triggered images are given
    trigger_size: int = option(3, positive())  # backdoor: side of the checkerboard trigger stamped in each image's bottom-right corner
    poison_fraction: float = option(0.5, check(lambda v: 0 < v <= 1, "must be in (0, 1]"))  # backdoor: share of the attacker's training samples stamped and relabelled
    boost: float = option(10.0, _BOUNDED)  # backdoor: the change sent is this multiple of the trained one (model replacement)
    signature_classes: tuple[int, ...] = option((), check(lambda v: all(c >= 0 for c in v) and len(set(v)) == len(v),
                                                          "must be distinct class ids >= 0"))  # genefl, pacfl: attackers sign with public images of these classes (a victim's label set) to join its cluster; [] = honest signatures


@dataclass(frozen=True)
class DefenceOptions(Options):
    """Robust aggregation at the server (protocol/robust.py), for every method that averages."""

    section = "defence"

    aggregator: str = option("mean", choices(AGGREGATORS))  # "mean" (the streaming weighted mean) | "median" | "trimmed_mean" | "krum" | "multikrum" | "cosine"
    trim: float = option(0.1, check(lambda v: 0 <= v < 0.5, "must be in [0, 0.5)"))  # trimmed_mean: fraction of the values dropped at each end, per coordinate
    byzantine: int = option(1, nonneg())  # krum, multikrum: f, the attackers tolerated (needs more than 2f + 2 updates)
    multikrum_m: int = option(0, nonneg())  # multikrum: updates averaged; 0 = n - f of the n received
    norm_bound: float = option(0.0, weight())  # clip each update's change from what it was sent to this L2 norm (0 = off)
    bucket: int = option(0, nonneg())  # median, trimmed_mean, krum, multikrum, cosine: s >= 2 aggregates the sample-weighted means of seeded buckets of s updates (Karimireddy et al., ICLR 2022); 0 or 1 = off
    reputation: bool = option(False)  # leave out clients whose mean cosine with the round's median change, over their rounds, is below reputation_threshold (protocol/reputation.py)
    reputation_rounds: int = option(3, positive())  # reputation: scores a client needs before it can be left out
    reputation_threshold: float = option(0.0, check(lambda v: -1 <= v < 1, "must be in [-1, 1)"))  # reputation: the mean score below which a client is left out
    reputation_reference: str = option("all", choices(("all", "trusted")))  # reputation: the median change scores are taken against: of "all" reporters, or of the "trusted" ones (not left out at the round's start)


@dataclass(frozen=True)
class PopulationOptions(Options):
    """Who is in the federation, round by round (`genefl.protocol.population`): arrivals, departures,
    availability, returns with drifted data; all seeded. The defaults are a static population."""

    section = "population"

    arrivals: str = option("schedule", choices(("schedule", "poisson", "trace")))  # newcomers: "schedule" (newcomer_rounds, or spread evenly) | "poisson" | "trace" (first row in trace_file)
    arrival_rate: float = option(0.5, check(lambda v: 0 < v <= 1e6, "must be in (0, 1e6]"))  # poisson: expected newcomer arrivals per round (those drawn after the last round never arrive)
    departures: float = option(0.0, probability())  # share of all clients (training clients and arriving newcomers) that leave for good, at seeded rounds
    availability: str = option("always", choices(("always", "diurnal", "trace")))  # when a client can be reached: "always" | "diurnal" | "trace" (windows in trace_file)
    day_rounds: int = option(24, check(lambda v: 1 <= v <= 1 << 20, "must be in 1..1048576"))  # diurnal: rounds per day
    online_fraction: float = option(0.5, fraction())  # diurnal: share of its local day a client is online (the window from its local midnight)
    trace_file: str = option("")  # trace: CSV `client,online_from,online_until` (rounds, inclusive; a client without rows is never online)
    returns: float = option(0.0, check(lambda v: 0 <= v <= 1, "must be in [0, 1]"))  # share of the training clients that go away for `absence` rounds (from a seeded round) and come back
    absence: int = option(3, positive())  # returns: rounds a returning client is away
    drift: str = option("dirichlet", choices(("dirichlet", "swap", "none")))  # returns: its data when back: "dirichlet" (a new Dir(alpha) class mix) | "swap" (another client's mix) | "none"
    recluster: bool = option(False)  # returns: a client back with drifted data sends a new signature and joins its nearest cluster again
    eval_sample: int = option(0, nonneg())  # evaluate a seeded sample of this many present clients (everyone after the last round); 0 = everyone
    local_baseline: bool = option(False)  # per newcomer, also train a local-only model (an extra fine-tuning each): its rounds to beat it


@dataclass(frozen=True)
class FlowerOptions(Options):
    """Only used by the Flower runtime (`flwr run`)."""

    section = "flower"

    round_timeout: float = option(300.0, positive())  # seconds to wait for replies; later ones are dropped from the round
    node_wait: float = option(120.0, nonneg())  # seconds to wait at the start for the training clients' SuperNodes
    out: str = option("genefl-flower-out")  # folder where the ServerApp writes results.json (and its checkpoint)
    resume: bool = option(False)  # continue the run in `out` from its last checkpoint (a killed ServerApp)


def _method_name(v: str) -> bool:
    return v in registry.REGISTRY or IMPORT_SPEC.fullmatch(v) is not None


def _methods_allowed() -> str:  # read when the message is made: `register` may add names
    return "must be one of " + ", ".join(registry.REGISTRY) + " (registered methods) or 'package.module:NAME'"


_LR = check(lambda v: MIN_LR <= v <= 10, f"must be in [{MIN_LR:g}, 10]")
_MOMENTUM = check(lambda v: 0 <= v < 1, "must be in [0, 1)")


@dataclass(frozen=True)
class Config(Options):
    method: str = option("genefl", check(_method_name, _methods_allowed))  # a name in algorithms.REGISTRY, or "package.module:NAME"
    dataset: str = option("digits", choices(DATASETS))  # one of DATASETS; digits and synthetic need no files
    data_dir: str = option("")  # folder with MNIST/, FashionMNIST/, cifar-*; "" = $GENEFL_DATA
    download: bool = option(False)  # fetch missing dataset files from the official sources
    checksum_file: str = option("")  # md5sum-format file whose entries replace the built-in checksums (stand-in data)
    model: str = option("auto", check(lambda v: v in MODELS or IMPORT_SPEC.fullmatch(v) is not None,
                                      "must be one of " + ", ".join(MODELS) + " or 'package.module:factory'"))  # "auto" (mlp for digits and synthetic, cnn; resnet18 for CIFAR) or one of models.MODELS
    seed: int = option(0)  # every random choice derives from this
    rounds: int = option(20, positive())  # communication rounds
    num_clients: int = option(10, positive())  # training clients, present from round 1
    num_newcomers: int = option(4, nonneg())  # clients arriving later with unseen data
    newcomer_rounds: tuple[int, ...] = option((), check(lambda v: all(r >= 1 for r in v), "rounds must be >= 1"))  # arrival rounds, e.g. [3, 5]; [] = spread evenly
    partition: str = option("dirichlet", choices(PARTITIONS))  # one of PARTITIONS
    alpha: float = option(0.5, positive())  # Dirichlet concentration (smaller = more heterogeneous)
    classes_per_client: int = option(2, positive())  # for the pathological partition
    min_samples: int = option(10, positive())  # smallest training set any client may get (Dirichlet redraws until it holds)
    train_subset: int = option(0, nonneg())  # use a seeded stratified subset of this many training samples; 0 = all
    test_subset: int = option(0, nonneg())  # hand out a seeded stratified subset of this many test samples; 0 = all
    synthetic_alpha: float = option(1.0, check(lambda v: 0 <= v <= 100, "must be in [0, 100]"))  # dataset = synthetic: α, std of u_k, the clients' model means (moves no label: data/synthetic.py)
    synthetic_beta: float = option(1.0, check(lambda v: 0 <= v <= 100, "must be in [0, 100]"))  # dataset = synthetic: β, std of B_k, the clients' input means
    local_epochs: int = option(1, positive())  # local epochs per round
    batch_size: int = option(32, check(lambda v: v >= 2, "must be >= 2 (a 1-sample batch breaks BatchNorm and is skipped)"))
    lr: float = option(0.05, _LR)  # local SGD learning rate
    momentum: float = option(0.0, _MOMENTUM)  # local SGD momentum (buffers start fresh every round)
    weight_decay: float = option(0.0, check(lambda v: 0 <= v <= 1, "must be in [0, 1]"))
    participation: float = option(1.0, fraction())  # fraction of active clients sampled per round
    dropout: float = option(0.0, probability())  # probability a sampled client does not report back
    newcomer_epochs: int = option(5, nonneg())  # fine-tuning epochs of a newcomer after its initialisation
    newcomer_init: str = option("method", choices(("method", "random")))  # "method": its natural start (global/cluster model, learnGene) | "random"
    newcomer_lr: float = option(0.01, check(lambda v: v == 0 or MIN_LR <= v <= 10, f"must be 0 (the training lr) or in [{MIN_LR:g}, 10]"))  # newcomer fine-tuning learning rate; 0 = the training lr (BENCHMARKS 4.1)
    newcomer_momentum: float = option(0.9, _MOMENTUM)  # newcomer fine-tuning SGD momentum
    newcomer_schedule: str = option("cosine", choices(("constant", "cosine")))  # newcomer lr schedule: "constant" | "cosine" (to 0 over its epochs)
    newcomer_val_fraction: float = option(0.2, probability())  # share of a newcomer's training data held out to choose its epoch
    newcomer_freeze_epochs: int = option(0, nonneg())  # inherited layers frozen for the first k epochs (when some layers are fresh)
    newcomer_inherited_lr: float = option(1.0, check(lambda v: 0 <= v <= 1, "must be in [0, 1] (a multiplier that slows inherited layers down)"))  # lr multiplier of inherited layers (when some layers are fresh)
    dp_clip: float = option(0.0, weight())  # defence: clip each upload's change to this L2 norm (0 = off; see protocol/defence.py)
    dp_noise: float = option(0.0, weight())  # defence: Gaussian noise std as a multiple of dp_clip
    first_contact: str = option("seed", choices(("tensors", "seed")))  # a full model equal to the seeded initial one is sent as "seed" (and a digest) | "tensors"
    checkpoint_every: int = option(1, nonneg())  # save a checkpoint (DIR/checkpoint.pt) every N rounds; 0 = never
    eval_every: int = option(1, positive())  # evaluate all clients every N rounds (and always after the last)
    device: str = option("cpu", check(lambda v: v in ("cpu", "cuda", "mps") or (v.startswith("cuda:") and v[5:].isdigit()),
                                      "must be cpu, cuda, cuda:N or mps"))  # "cpu" | "cuda" | "cuda:N" | "mps"
    state_store: str = option("memory", choices(("memory", "disk")))  # per-client state between rounds: "memory" | "disk" (one file per client)
    state_dir: str = option("")  # for state_store = "disk": a subfolder per config, emptied as a fresh run starts; "" = a temporary one
    clustering: ClusteringOptions = field(default_factory=ClusteringOptions)
    server_opt: ServerOptOptions = field(default_factory=ServerOptOptions)
    _methods: tuple[Options, ...] = ()  # the methods' own tables ([genefl], [fedprox], ...), reached as config.genefl
    codec: CodecOptions = field(default_factory=CodecOptions)
    adversary: AdversaryOptions = field(default_factory=AdversaryOptions)
    defence: DefenceOptions = field(default_factory=DefenceOptions)
    population: PopulationOptions = field(default_factory=PopulationOptions)
    flower: FlowerOptions = field(default_factory=FlowerOptions)

    @classmethod
    def keys(cls) -> list[str]:
        return super().keys() + list(registry.known_options())

    @classmethod
    def accepts(cls, key: str, given: dict[str, Any]) -> bool:
        return key == "_methods"  # the methods' tables: gathered below, or passed on by dataclasses.replace

    @classmethod
    def gather(cls, given: dict[str, Any]) -> dict[str, Any]:
        """The methods' tables among the keys given go to `_methods`, built once `method` is checked:
        those of registered methods, and, when `method` names your own, any other (its own, maybe)."""
        own = isinstance(given.get("method"), str) and IMPORT_SPEC.fullmatch(given["method"]) is not None
        fields = {f.name for f in dataclasses.fields(cls)}
        tables = {k: given.pop(k) for k in list(given)
                  if isinstance(k, str) and k not in fields and (own or k in registry.known_options())}
        return {**given, "_methods": tables} if tables else given

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "_methods", _method_tables(self.method, self._methods))
        cross_check(self)

    def __getattr__(self, name: str) -> Any:
        """`config.genefl`: a method's table (a field is found before this is asked)."""
        if not name.startswith("_"):
            for options in self._methods:
                if options.section == name:
                    return options
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def resolved_data_dir(self) -> str:
        return self.data_dir or os.environ.get("GENEFL_DATA", "")


def _method_tables(method: str, given: dict[str, Any] | tuple[Options, ...]) -> tuple[Options, ...]:
    """The methods' tables a config holds: every built-in method's, the chosen method's, and any
    other given, each from its `given` table (a dict, or the built table again) or its defaults."""
    if isinstance(given, tuple):  # dataclasses.replace passes the tables on as built
        given = {options.section: options for options in given}
    elif not isinstance(given, dict):
        raise ConfigError(f"_methods: not a config key, got {shown(given)}")
    own = registry.options_of(method)
    declared = registry.known_options()
    if own is not None:
        if declared.get(own.section, own) is not own or own.section in {f.name for f in dataclasses.fields(Config)}:
            raise ConfigError(f"method: the options of {method} are named [{own.section}], as another table already is")
        declared[own.section] = own
    for key in given:
        if key not in declared:
            valid = sorted({*Config.keys(), *declared})
            raise ConfigError(f"unknown config key {shown(key)} (valid keys: {', '.join(valid)})")
    chosen = registry.built_in_options() + [own] + [declared[k] for k in given]
    tables: list[Options] = []
    for cls in dict.fromkeys(c for c in chosen if c is not None):
        tables.append(checked(cls.section, given.get(cls.section, {}), cls, None))
    return tuple(tables)


def method_options_table() -> str:
    """The README's table of the methods' own options, from their declarations."""
    return markdown_table([ServerOptOptions, *registry.built_in_options()])


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
    return build(Config, table)


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
    if config.method in registry.REGISTRY:  # a [server_opt] the method would ignore fails here, before any data loads
        strategy = registry.REGISTRY[config.method][0]
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
    if config.train_subset:
        raise ConfigError(f"train_subset: dataset = synthetic is generated per client and has no subset, got {config.train_subset}")
    if config.test_subset:
        raise ConfigError(f"test_subset: dataset = synthetic is generated per client and has no subset, got {config.test_subset}")
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
    """The config as one TOML table: the methods' tables sit among the others, as `[genefl]`."""
    found: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        if f.name == "_methods":
            found.update({options.section: table(options) for options in config._methods})
        else:
            value = getattr(config, f.name)
            found[f.name] = table(value) if isinstance(value, Options) else value
    return found


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
    return build(Config, table)
