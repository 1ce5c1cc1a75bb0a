"""What every client does around its method's half, the same in both runtimes: the broadcast
decoded and its seeded tensors rebuilt (`received`), then the method's training, evaluation or
newcomer fine-tuning wrapped in what a run adds to it: an attacker's tampering
(`genefl.protocol.adversary`), the clip-and-noise defence (`genefl.protocol.defence`) and the upload codec
(`genefl.protocol.compression`). The simulator's transport and the Flower ClientApp call these, never a
client half's methods directly.
"""

from __future__ import annotations

from ..protocol import adversary
from .. import rng
from ..algorithms.base import ClientAlgorithm, ClientEnv
from ..protocol.compression import DOWN_REFERENCE, REFERENCE_FLAG, RESIDUAL, changed_names, decode_message, encode_message, \
    upload_reference
from ..protocol.defence import protect
from ..protocol.messages import Broadcast, ClientUpdate
from ..protocol.newcomer import FinetuneSettings, NewcomerCurve, finetune, newcomer_split_generator
from ..protocol.training import load_into
from .first_contact import SEED_FLAG, InitialMismatch, initial_digest, resolve_seed, seeded_initial

def train_and_send(client: ClientAlgorithm, env: ClientEnv, broadcast: Broadcast) -> ClientUpdate:
    """What a client sends after training: its method's update (an attacker's: trained on its poisoned
    data and tampered with, `genefl.protocol.adversary`), through the optional clip-and-noise defence (`dp_clip`,
    `dp_noise`), then the upload codec (`codec.up`). Both runtimes call this, never `client.train` directly."""
    if env.cid in adversary.run_attackers(env.config):
        update = adversary.tamper(client.train(adversary.poisoned(env), broadcast), broadcast, env)
    else:
        update = client.train(env, broadcast)
    update = protect(update, broadcast, env.config.dp_clip, env.config.dp_noise, env.generator("dp-noise"))
    opts = env.config.codec
    if not isinstance(update, ClientUpdate):
        return update
    if opts.up != "none":
        residual = env.store.setdefault(RESIDUAL, {}) if opts.error_feedback else None
        gen = env.generator("codec")
        update = encode_message(update, opts.up, opts, opts.rounding != "nearest", lambda section, name: gen,
                                reference=broadcast, residual=residual)
    if opts.down_delta and opts.down != "none":  # the server decodes the same bytes to the same reference
        env.store[DOWN_REFERENCE] = upload_reference(decode_message(update, broadcast, device=env.config.device))
    return update


def evaluate_and_send(client: ClientAlgorithm, env: ClientEnv, broadcast: Broadcast) -> dict[str, float]:
    """A client's evaluation reply (both runtimes): its test accuracy, and in a backdoor-attacked run the
    backdoor's success on the same model (`adversary.measured`)."""
    return {"acc": client.evaluate(env, broadcast), **adversary.measured(env)}


def welcome_and_send(client: ClientAlgorithm, env: ClientEnv, broadcast: Broadcast) -> NewcomerCurve:
    """A newcomer's fine-tuning curve (both runtimes), with the backdoor's success on the model it ends with."""
    curve = client.welcome(env, broadcast)
    curve.backdoor = adversary.measured(env).get("backdoor")
    return curve


def local_baseline(env: ClientEnv) -> float:
    """A newcomer's local-only model (`population.local_baseline`): what it would have from its own data
    alone with the budget of its fine-tuning. A fresh model, seeded by (seed, "local-baseline", its id),
    trained under the newcomer protocol (`genefl.protocol.newcomer`: `newcomer_epochs` epochs at the newcomer's
    optimiser settings, on the same training part of its data, its validation split left out), nothing
    inherited, batches from the stream (seed, "local-baseline", its id); returns its test accuracy at
    the last epoch (as a newcomer's fine-tuning ends with its last). The client's stored state and
    every other stream are untouched; it runs on the shared model object after the welcome."""
    c = env.config
    load_into(env.model, env.spec.build(c.seed, "local-baseline", env.cid).state_dict())
    curve = finetune(env.model, env.data, set(), FinetuneSettings.from_config(c), rng.generator(c.seed, "local-baseline", env.cid),
                     newcomer_split_generator(c.seed, env.cid))
    return curve.test[-1]


def send_signature(client: ClientAlgorithm, env: ClientEnv) -> ClientUpdate:
    """A client's Stage-0 signature (an attacker's, with `adversary.signature_classes`, computed from public
    images of those classes: `adversary.disguised`), through `codec.signature` (both runtimes call this)."""
    if env.config.adversary.signature_classes and env.cid in adversary.run_attackers(env.config):
        env = adversary.disguised(env)
    update = client.signature(env)
    opts = env.config.codec
    gen = env.generator("codec-signature")
    return encode_message(update, opts.signature, opts, opts.rounding != "nearest", lambda section, name: gen)


def received(env: ClientEnv, broadcast: Broadcast, cache: dict | None = None) -> Broadcast:
    """What the client half works with: the broadcast decoded (`codec.down`; its changes added to the
    client's reference, `codec.down_delta`), and, when it was sent with `SEED_FLAG`, its missing
    tensors rebuilt from the run's seed (both runtimes call this on every broadcast). `cache`:
    decoded tensors by packed object, shared by clients of one round. Raises `InitialMismatch` when
    the rebuilt tensors, or the reference, are not the ones the server's digest names: the runtime
    then answers `NEED_INITIAL` instead of going on from a different model."""
    reference = None
    if REFERENCE_FLAG in broadcast.meta:
        own = env.store.get(DOWN_REFERENCE) or {}
        names = changed_names(broadcast)
        if not all(n in own for n in names) or initial_digest({n: own[n] for n in names}) != broadcast.meta[REFERENCE_FLAG]:
            raise InitialMismatch(f"client {env.cid}: its reference for broadcast changes is not the server's")
        reference = Broadcast(tensors=own)
        broadcast = Broadcast(broadcast.tensors, broadcast.extras, {k: v for k, v in broadcast.meta.items() if k != REFERENCE_FLAG})
    broadcast = decode_message(broadcast, reference, cache=cache, device=env.config.device)
    flag = broadcast.meta.get(SEED_FLAG)
    if not flag:
        return broadcast
    initial, digest = seeded_initial(env.spec, env.config.seed, env.config.device)
    if flag != digest:
        raise InitialMismatch(f"client {env.cid}: its seeded initial model (digest {digest}) is not the server's ({str(flag)[:16]})")
    return resolve_seed(broadcast, initial)
