"""Simulated attackers (`[adversary]`): a seeded share of the training clients sends something other
than its honest update, for any method, in both runtimes.

Who: `attackers(seed, num_clients, fraction)`, the first round(fraction · num_clients) (at most
num_clients − 1) of a permutation drawn from the run's seed: a pure function of the three, so the
simulator and every Flower SuperNode name the same clients. Newcomers never attack.

What, as a change Δ = θ_trained − θ_received of every floating-point tensor the client was sent (extras
such as SCAFFOLD's Δc and the metadata, sample count included, are sent as trained):
- `signflip`: −Δ.  `scale`: `scale` · Δ.  `gaussian`: N(0, `sigma`²) per value in place of Δ.
- `alie` (Baruch et al., NeurIPS 2019, "A little is enough"): every attacker sends μ − z·σ, μ and σ the
  per-coordinate mean and (Bessel-corrected) standard deviation of the changes. The paper takes them
  from the benign updates; a client knows only its own data, so, as is standard when simulating it,
  the colluding attackers estimate them from their own honest changes this round (σ = 0 when one
  attacker took part). z = `alie_z`, or 0 for the paper's z_max = Φ⁻¹((n − s)/n), s = ⌊n/2 + 1⌋ − m
  (at least 1), n = num_clients, m the attackers' count.
- `labelflip`: trains on its data with every label y replaced by C − 1 − y (C classes).
- `backdoor` (Bagdasaryan et al., AISTATS 2020, pixel pattern and model replacement): trains on its
  data with a `poison_fraction` share of the samples (a seeded choice per client) stamped with the
  trigger and relabelled `target_label`, then sends `boost` · Δ. The trigger: a `trigger_size` square
  checkerboard in the bottom-right corner of every channel, alternating the image's own largest and
  smallest value (so it is visible whatever the data's normalisation).
- `"package.module:function"`: your own attack, `function(update, received, env) -> ClientUpdate`, with
  the attacker's honest `ClientUpdate`, the `Broadcast` it received (decoded) and its `ClientEnv`.

Signature manipulation (`signature_classes`, with any kind or none; GENE-FL and PACFL, which cluster
clients by their one-shot signature): the attackers want to join the cluster of a chosen victim, and
then poison it with their `kind` (or, with `kind = "none"`, only sit there). Threat model: an attacker
knows the victim's label set (which classes it holds, not its images) and has public images of the
same domain; it computes its signature, with its method's own signature function, from the public
images of those classes (the dataset's test split, every image of each listed class, loaded from
`data_dir` or $GENEFL_DATA) in place of its own data. PACFL's signature is the principal subspace of a
client's images, which its classes largely decide, so the crafted one lands near the victim's. The
rest of its conduct, its training data included, is unchanged.

Where: the client half (`train_and_send`; the signature in `send_signature`), before the clip-and-noise defence and the upload codec, so
both runtimes run it; poisoned data replace the attacker's own for that call only. ALIE alone cannot
be computed by one client: the colluders' honest updates meet in the round loop (shared by both
runtimes), after they were received and checked and before the server half aggregates them
(`collude`); the server half never learns who attacked.

`backdoor_success`: of a client's test images of other classes than the target that its model
classifies correctly, the share it classifies as the target once the trigger is stamped (results.json
`backdoor_success`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import statistics
from collections.abc import Callable, Iterator

import torch

from .. import rng
from ..errors import ConfigError
from ..data.scenario import load_for
from ..own_code import import_named
from .messages import ClientUpdate
from .training import predictions

KINDS = ("none", "signflip", "scale", "gaussian", "alie", "labelflip", "backdoor")
USES = {"none": (), "signflip": (), "scale": ("scale",), "gaussian": ("sigma",), "alie": ("alie_z",), "labelflip": (),
        "backdoor": ("target_label", "trigger_size", "poison_fraction", "boost")}  # the `adversary` keys each kind reads


def attacker_count(num_clients: int, fraction: float) -> int:
    return min(int(math.floor(fraction * num_clients + 0.5)), num_clients - 1)


@functools.lru_cache(maxsize=16)
def attackers(seed: int, num_clients: int, fraction: float) -> frozenset[int]:
    """The attacking training clients: a pure function of the run's seed, num_clients and fraction."""
    order = torch.randperm(num_clients, generator=rng.generator(seed, "adversary"))
    return frozenset(order[:attacker_count(num_clients, fraction)].tolist())


def run_attackers(config) -> frozenset[int]:
    if config.adversary.kind == "none" and not config.adversary.signature_classes:
        return frozenset()
    return attackers(config.seed, config.num_clients, config.adversary.fraction)


def stamp(x: torch.Tensor, size: int) -> torch.Tensor:
    """(n, C, H, W) images with the checkerboard trigger in their bottom-right size x size corner."""
    out = x.clone()
    s = min(size, x.shape[-2], x.shape[-1])
    high, low = x.amax(dim=(1, 2, 3), keepdim=True), x.amin(dim=(1, 2, 3), keepdim=True)  # (n, 1, 1, 1)
    ij = torch.arange(s, device=x.device)
    white = (ij[:, None] + ij[None, :]) % 2 == 0  # (s, s), the corner pixel itself is the high value
    out[..., -s:, -s:] = torch.where(white, high, low).expand(x.shape[0], x.shape[1], s, s)
    return out


def poisoned(env):
    """The attacker's environment for this call: its data with flipped labels (`labelflip`) or a share
    stamped and relabelled (`backdoor`); its store stays the same object."""
    opts, data = env.config.adversary, env.data
    if opts.kind == "labelflip":
        return dataclasses.replace(env, data=dataclasses.replace(data, y_train=env.spec.num_classes - 1 - data.y_train))
    if opts.kind != "backdoor":
        return env
    n = data.num_train
    order = torch.randperm(n, generator=rng.generator(env.config.seed, "backdoor", env.cid))  # the same share every round
    chosen = order[:math.ceil(opts.poison_fraction * n)].to(data.y_train.device)
    x, y = data.x_train.clone(), data.y_train.clone()
    x[chosen] = stamp(x[chosen], opts.trigger_size)
    y[chosen] = opts.target_label
    return dataclasses.replace(env, data=dataclasses.replace(data, x_train=x, y_train=y))


def disguised(env):
    """The attacker's environment for its signature: public images of `signature_classes` (see the
    module doc) as its training data; its store stays the same object."""
    public = load_for(env.config)
    chosen = torch.isin(public.y_test, torch.tensor(env.config.adversary.signature_classes))
    x, y = public.x_test[chosen].to(env.config.device), public.y_test[chosen].to(env.config.device)
    return dataclasses.replace(env, data=dataclasses.replace(env.data, x_train=x, y_train=y))


def tamper(update: ClientUpdate, received, env) -> ClientUpdate:
    """What an attacker sends in place of its (already trained) `update`."""
    opts = env.config.adversary
    if not isinstance(update, ClientUpdate) or opts.kind in ("none", "labelflip", "alie"):
        return update  # none: only its signature lies; labelflip acted on the data; ALIE acts where the colluders meet (`collude`)
    if ":" in opts.kind:
        return hook(opts.kind)(update, received, env)
    keys = [k for k, v in update.tensors.items() if v.is_floating_point() and k in received.tensors]
    tensors = dict(update.tensors)
    gen = env.generator("adversary")
    for k in keys:
        sent = received.tensors[k].to(update.tensors[k])
        if opts.kind == "gaussian":
            change = torch.randn(sent.shape, generator=gen).to(sent) * opts.sigma
        else:
            factor = {"signflip": -1.0, "scale": opts.scale, "backdoor": opts.boost}[opts.kind]
            change = (update.tensors[k] - sent) * factor
        tensors[k] = sent + change
    return ClientUpdate(tensors=tensors, extras=update.extras, meta=update.meta)


@functools.lru_cache(maxsize=4)
def hook(spec: str) -> Callable:
    """Your own attack, named "package.module:function"."""
    fn = import_named(spec, "adversary.kind")
    if not callable(fn):
        raise ConfigError(f"adversary.kind: {spec!r} is not a function (update, received, env) -> update")
    return fn


def alie_z(num_clients: int, num_attackers: int) -> float:
    """Baruch et al.'s z_max: Φ⁻¹((n − s)/n), s = ⌊n/2 + 1⌋ − m, s at least 1."""
    s = max(num_clients // 2 + 1 - num_attackers, 1)
    return statistics.NormalDist().inv_cdf((num_clients - s) / num_clients)


def alie(changes: list[dict[str, torch.Tensor]], z: float) -> dict[str, torch.Tensor]:
    """μ − z·σ per tensor name over the changes that hold it (σ Bessel-corrected; 0 for a single one)."""
    out = {}
    for name in {k for change in changes for k in change}:
        values = torch.stack([c[name] for c in changes if name in c])  # (m, ...)
        spread = values.std(dim=0) if len(values) > 1 else torch.zeros_like(values[0])
        out[name] = values.mean(dim=0) - z * spread
    return out


def collude(updates: Iterator, config, sent: Callable[[int], dict[str, torch.Tensor]]) -> Iterator:
    """The round's checked updates, the ALIE attackers' replaced by their crafted one. Only the
    attackers' updates are held (they need each other's); the others pass straight through.
    `sent(cid)`: the tensors the server sent `cid`, from which its change is measured."""
    if config.adversary.kind != "alie":
        yield from updates
        return
    bad, held = run_attackers(config), []
    for cid, update in updates:
        if cid in bad:
            held.append((cid, update))
        else:
            yield cid, update
    if not held:
        return
    changes = []
    for cid, update in held:
        ref = sent(cid)
        changes.append({k: v - ref[k].to(v) for k, v in update.tensors.items() if v.is_floating_point() and k in ref})
    z = config.adversary.alie_z or alie_z(config.num_clients, len(bad))
    crafted = alie(changes, z)
    for (cid, update), change in zip(held, changes):
        ref = sent(cid)
        tensors = {**update.tensors, **{k: ref[k].to(crafted[k]) + crafted[k] for k in change}}
        yield cid, ClientUpdate(tensors=tensors, extras=update.extras, meta=update.meta)


def backdoor_success(model: torch.nn.Module, data, opts) -> float:
    """The attack's success rate: of the test images of other classes than the target that the model
    classifies correctly, the share it classifies as the target once the trigger is stamped. Counting
    only the images it gets right unstamped keeps the model's ordinary confusions out (a newcomer that
    holds shirts and T-shirts, target T-shirt, mistakes some shirts for T-shirts with or without a
    trigger: 28% of them in one Fashion-MNIST run, which the share over all its images would have
    scored as backdoor success). 0 when it gets none right; NaN when it holds no other class."""
    other = data.y_test != opts.target_label
    x, y = data.x_test[other], data.y_test[other]
    if len(y) == 0:
        return float("nan")
    right = predictions(model, x) == y
    if not bool(right.any()):
        return 0.0
    return float((predictions(model, stamp(x[right], opts.trigger_size)) == opts.target_label).float().mean())


def measured(env) -> dict[str, float]:
    """What a client reports beside its accuracy about the model it just evaluated (its `env.model`)."""
    if env.config.adversary.kind != "backdoor":
        return {}
    return {"backdoor": backdoor_success(env.model, env.data, env.config.adversary)}


def check(config) -> None:
    """One-line errors for `[adversary]` settings that cannot work or would be ignored."""
    opts, defaults = config.adversary, type(config.adversary)()
    kind = opts.kind if opts.kind in USES else "hook"
    attacking = opts.kind != "none" or bool(opts.signature_classes)
    if not attacking and opts.fraction > 0:
        raise ConfigError("adversary.fraction: no attack chosen (set adversary.kind or adversary.signature_classes)")
    if attacking and attacker_count(config.num_clients, opts.fraction) == 0:
        raise ConfigError(f"adversary.fraction: {opts.fraction:g} of num_clients = {config.num_clients} makes no attacker")
    unused = [k for k in ("scale", "sigma", "alie_z", "target_label", "trigger_size", "poison_fraction", "boost")
              if k not in USES.get(kind, ()) and getattr(opts, k) != getattr(defaults, k)]
    if unused:
        raise ConfigError(f"adversary.{unused[0]}: not used by attack {opts.kind!r}")
    from ..data.datasets import SHAPES

    classes = SHAPES.get(config.dataset, (None, None))[1]
    if opts.kind == "backdoor" and classes is not None and opts.target_label >= classes:
        raise ConfigError(f"adversary.target_label: {config.dataset} has classes 0..{classes - 1}, got {opts.target_label}")
    if classes is not None and any(c >= classes for c in opts.signature_classes):
        raise ConfigError(f"adversary.signature_classes: {config.dataset} has classes 0..{classes - 1}, "
                          f"got {list(opts.signature_classes)}")


def check_method(strategy_cls, config) -> None:
    """`signature_classes` set for a method that asks for no signature is an error (it would be ignored)."""
    if config.adversary.signature_classes and not strategy_cls.needs_signatures:
        raise ConfigError(f"adversary.signature_classes: method {config.method} sends no signature "
                          "(Strategy.needs_signatures; genefl and pacfl do)")
