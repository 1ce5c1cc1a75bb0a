"""The server's optimizer step (Reddi et al., "Adaptive Federated Optimization", ICLR 2021; FedJAX's
`server_optimizer`): a round's aggregated mean gives the pseudo-gradient Δ = mean − x, and the server
moves x ← x + step(Δ). One seam for every averaging server: FedAvg (and FedProx, FedLP, the FedOpt
methods), SCAFFOLD, and GENE-FL per cluster over the learnGene layers it received.

The update equations are Flower's (flwr 1.41, `serverapp/strategy/fedavgm.py`, `fedopt.py`,
`fedadam.py`, `fedyogi.py`, `fedadagrad.py`), element-wise, t the 1-based round:

    none     x ← mean                                               (FedAvg, bit for bit)
    sgd      x ← x + η Δ                                            (SCAFFOLD's η_g; not a config name)
    avgm     m ← μ m + Δ (m = Δ at its first step);  x ← x + η m      (μ = 0: x ← x + η Δ; μ = 0 and η = 1: x ← mean)
    adam     m ← β1 m + (1 − β1) Δ;  v ← β2 v + (1 − β2) Δ²;  x ← x + η_t m / (√v + τ),
             η_t = η √(1 − β2^(t+1)) / (1 − β1^(t+1))
    yogi     m as adam;  v ← v − (1 − β2) Δ² sign(v − Δ²);  x ← x + η m / (√v + τ)
    adagrad  m as adam;  v ← v + Δ²;  x ← x + η m / (√v + τ)

m and v start at zero, as in Flower. Where Flower's form differs, the numbers do not: its FedAvgM keeps
the momentum of −Δ and subtracts it, and skips the step when μ = 0 and η = 1 (so do we). Bias
correction follows Flower's FedAdam: it scales η (Kingma & Ba's α_t) rather than m and v, with exponent
t + 1 for round t, one ahead of Kingma & Ba's step count (round 1 is corrected as step 2). Yogi and
Adagrad have no bias correction (nor in Flower or Reddi et al.'s Algorithm 2). Flower's FedAdagrad fixes
β1 = 0; here `momentum` may set it, default 0. Defaults are Flower's (`DEFAULTS`; β2 = 0.99, τ = 1e-3).

Choices: only floating-point tensors take the step (integer buffers such as BatchNorm's batch count take
the mean); the moments are kept per tensor name and created at its first step, so a server that steps
over some tensors only (GENE-FL's learnGene layers) keeps moments for those alone; a round in which
nobody reported takes no step (Flower aggregates nothing then).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch

from ..errors import ConfigError
from ..options import Options, check, choices, option

NAMES = ("none", "avgm", "adam", "yogi", "adagrad")  # `server_opt.name`
DEFAULTS = {"none": (1.0, 0.0), "sgd": (1.0, 0.0), "avgm": (1.0, 0.0),  # name -> Flower's (η, β1 / μ)
            "adam": (0.1, 0.9), "yogi": (0.01, 0.9), "adagrad": (0.1, 0.0)}
USES = {"none": (), "avgm": ("lr", "momentum"), "adagrad": ("lr", "momentum", "tau"),  # the `server_opt` keys each reads
        "adam": ("lr", "momentum", "beta2", "tau"), "yogi": ("lr", "momentum", "beta2", "tau")}


@dataclass(frozen=True)
class ServerOptOptions(Options):
    """The `[server_opt]` table, for fedavg, fedprox, fedlp, scaffold and genefl; fedavgm, fedadam,
    fedyogi and fedadagrad fix `name`. Defaults are Flower's."""

    section = "server_opt"

    name: str = option("none", choices(NAMES), "the server's step on the averaged update Δ = mean − x: `none` (the "
                       "mean), or Flower's `avgm`, `adam`, `yogi`, `adagrad` (equations in `protocol/server_opt.py`)")
    lr: float = option(0.0, check(lambda v: 0 <= v <= 10, "must be in [0, 10] (0 = the optimizer's default)"),
                       "server learning rate η; 0 = Flower's for `name`: avgm 1.0, adam 0.1, yogi 0.01, adagrad 0.1")
    momentum: float = option(-1.0, check(lambda v: v == -1 or 0 <= v < 1, "must be in [0, 1), or -1 (the optimizer's default)"),
                             "β1 (FedAvgM's momentum); -1 = Flower's for `name`: avgm 0.0, adam 0.9, yogi 0.9, adagrad 0.0")
    beta2: float = option(0.99, check(lambda v: 0 <= v < 1, "must be in [0, 1)"), "β2, second-moment decay of adam and yogi")
    tau: float = option(1e-3, check(lambda v: 0 < v <= 1, "must be in (0, 1]"),
                        "τ, adaptivity (the ε under the square root) of adam, yogi and adagrad")


@dataclass(frozen=True)
class Moments:
    """One optimizer's state, part of the server state: moments per tensor name ({} before a first step)."""

    m: dict[str, torch.Tensor] = field(default_factory=dict)  # first moment (FedAvgM's momentum buffer)
    v: dict[str, torch.Tensor] = field(default_factory=dict)  # second moment (adam, yogi, adagrad)


@dataclass(frozen=True)
class ServerOptimizer:
    name: str = "none"  # one of NAMES, or "sgd"
    lr: float = 1.0  # η
    momentum: float = 0.0  # β1 (FedAvgM's μ)
    beta2: float = 0.99  # β2 (adam, yogi)
    tau: float = 1e-3  # τ, the adaptivity ε (adam, yogi, adagrad)

    def step(self, x: dict[str, torch.Tensor], mean: dict[str, torch.Tensor], moments: Moments, round: int,
             names: Iterable[str] | None = None) -> tuple[dict[str, torch.Tensor], Moments]:
        """The new weights and moments: `mean`, with every floating-point tensor in `names` (default:
        all of them) replaced by x + step(mean − x)."""
        if self.name == "none" or (self.name == "avgm" and self.momentum == 0 and self.lr == 1):
            return mean, moments
        out, m, v = dict(mean), dict(moments.m), dict(moments.v)
        chosen = set(mean if names is None else names)
        for k in mean:  # in the state dict's order, whatever order `names` has
            if k in chosen and mean[k].is_floating_point():
                out[k] = self._tensor(k, x[k], mean[k] - x[k], m, v, round)
        return out, Moments(m, v)

    def _tensor(self, k: str, x: torch.Tensor, delta: torch.Tensor, m: dict, v: dict, round: int) -> torch.Tensor:
        if self.name == "sgd" or (self.name == "avgm" and self.momentum == 0):
            return x + self.lr * delta
        if self.name == "avgm":
            m[k] = self.momentum * m[k] + delta if k in m else delta
            return x + self.lr * m[k]
        zero = torch.zeros_like(delta)
        m[k] = self.momentum * m.get(k, zero) + (1 - self.momentum) * delta
        v0, square = v.get(k, zero), delta ** 2
        if self.name == "adam":
            v[k] = self.beta2 * v0 + (1 - self.beta2) * square
        elif self.name == "yogi":
            v[k] = v0 - (1.0 - self.beta2) * square * torch.sign(v0 - square)
        else:
            v[k] = v0 + square
        lr = self.lr
        if self.name == "adam":
            lr = self.lr * math.sqrt(1 - self.beta2 ** (round + 1.0)) / (1 - self.momentum ** (round + 1.0))
        return x + lr * m[k] / (torch.sqrt(v[k]) + self.tau)


def for_method(config, takes_step: bool, fixed: str | None) -> ServerOptimizer:
    """The optimizer a method's server steps with: `fixed` (fedadam's "adam") or `server_opt.name`, with
    Flower's η and β1 for it where `server_opt.lr` / `.momentum` keep their "default" values. Refuses a
    `[server_opt]` the method would ignore, or a key the optimizer does not use, with a one-line error."""
    opts = config.server_opt
    if fixed and opts.name not in ("none", fixed):
        raise ConfigError(f"server_opt.name: method {config.method} always uses {fixed!r}, got {opts.name!r}")
    name = fixed or opts.name
    if name != "none" and not takes_step:
        raise ConfigError(f"server_opt.name: method {config.method} has no server step to optimise "
                          f"(fedavg, fedprox, fedlp, scaffold and genefl have), got {opts.name!r}")
    unused = [k for k in ("lr", "momentum", "beta2", "tau") if k not in USES[name] and getattr(opts, k) != getattr(type(opts)(), k)]
    if unused:
        raise ConfigError(f"server_opt.{unused[0]}: not used by server optimizer {name!r}"
                          + (" (set server_opt.name)" if name == "none" else ""))
    lr, momentum = DEFAULTS[name]
    return ServerOptimizer(name, opts.lr or lr, momentum if opts.momentum < 0 else opts.momentum, opts.beta2, opts.tau)
