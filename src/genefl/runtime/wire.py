"""The server's side of the wire, shared by both runtimes' round loop.

Broadcasts go out through first contact by seed (`runtime.first_contact`) and the broadcast codec
(`codec.down`); uploads and signatures come back decoded before anything reads them. A tensor sent
to many clients in one round is encoded, and decoded for their upload references, once. With
`codec.down_delta` a broadcast to a client that has uploaded before travels as the change from that
upload (`references`, one per client, checkpointed), named by its digest; a client whose own
reference differs asks for the weights, and the server forgets its copy and sends them.
"""

from __future__ import annotations

import torch

from .. import rng
from ..algorithms.base import Strategy
from ..protocol.compression import QUANTIZERS, REFERENCE_FLAG, changed_names, decode_message, encode_message, rebase, \
    upload_reference
from ..config import Config
from ..protocol.messages import Broadcast, ClientUpdate
from .first_contact import SEED_FLAG, asks_for_initial, initial_digest, resolve_seed, send_initial_as_seed


class Wire:
    def __init__(self, config: Config, strategy: Strategy):
        self.config, self.strategy = config, strategy
        self._codec_round, self._encoded, self._decoded = -1, {}, {}  # per-round codec caches
        self.explicit: set[int] = set()  # clients whose seeded initial model differs: always sent tensors
        self.digest = initial_digest(strategy.initial) if config.first_contact == "seed" else ""
        # codec.down_delta: client id -> its last upload's model tensors as decoded (what both sides hold)
        self.references: dict[int, dict[str, torch.Tensor]] = {}

    def caches(self, round: int) -> tuple[dict, dict]:
        """id(tensor) -> packed and id(packed) -> tensor for this round: a tensor broadcast to many
        clients is encoded (and decoded for their upload references) once."""
        if round != self._codec_round:
            self._codec_round, self._encoded, self._decoded = round, {}, {}
        return self._encoded, self._decoded

    def outgoing(self, broadcast: Broadcast, round: int, cid: int | None = None, by_seed: bool = True) -> Broadcast:
        """What goes on the wire for a broadcast to `cid`: tensors equal to the seeded initial model
        dropped (`first_contact = "seed"` and `by_seed`, unless that client asked for tensors; never
        for evaluation, which is measurement), the rest through the broadcast codec (`codec.down`),
        as changes from the client's reference where `codec.down_delta` keeps one."""
        if self.digest and by_seed and cid is not None and cid not in self.explicit:
            broadcast = send_initial_as_seed(broadcast, self.strategy.initial, self.digest)
        opts, seed = self.config.codec, self.config.seed
        stochastic = opts.rounding == "stochastic"

        def generator(section: str, name: str) -> torch.Generator | None:  # the same for every client
            return rng.generator(seed, "codec-down", round, section, name) if stochastic else None

        own = self.references.get(cid) if opts.down_delta and opts.down != "none" else None
        reference = Broadcast(tensors=own) if own else None
        sent = encode_message(broadcast, opts.down, opts, stochastic, generator, reference, cache=self.caches(round)[0])
        changed = changed_names(sent) if own else []
        if not changed:
            return sent
        return Broadcast(sent.tensors, sent.extras, {**sent.meta, REFERENCE_FLAG: initial_digest({n: own[n] for n in changed})})

    def as_received(self, sent: Broadcast, round: int, cid: int | None = None) -> Broadcast:
        """The broadcast as client `cid` works with it (decoded, seed-resolved): what its upload's
        changes are relative to."""
        own = self.references.get(cid) if REFERENCE_FLAG in sent.meta else None
        decoded = decode_message(sent, Broadcast(tensors=own) if own else None, cache=self.caches(round)[1],
                                 device=self.config.device)
        if own:
            decoded = Broadcast(decoded.tensors, decoded.extras, {k: v for k, v in decoded.meta.items() if k != REFERENCE_FLAG})
        return resolve_seed(decoded, self.strategy.initial)

    def decoded_update(self, update: ClientUpdate, sent: tuple[Broadcast, Broadcast] | None,
                       cid: int | None = None) -> ClientUpdate:
        """An upload with its packed tensors decoded (before anything else reads it). `sent`: (what
        the client received, what the server meant to send). When a broadcast codec made those
        differ, the client's change is moved onto the exact tensors, so the server's model never
        takes in the broadcast codec's error (it would otherwise accumulate, round after round).
        With `codec.down_delta`, the upload as decoded becomes client `cid`'s reference."""
        templates = {"tensors": self.strategy.initial, "extras": self.strategy.expected_extras()}
        received, planned = sent if sent is not None else (None, None)
        update = decode_message(update, received, templates)
        if self.config.codec.down_delta and cid is not None:
            self.references[cid] = upload_reference(update)
        return rebase(update, received, planned) if planned is not None and planned is not received else update

    def decoded_signature(self, update: ClientUpdate) -> ClientUpdate:
        return decode_message(update, allowed=QUANTIZERS)

    def answer(self, cid: int, reply: object, sent: Broadcast) -> str | None:
        """When `reply` is a client's request for tensors in answer to `sent`: why, as a note, after
        making sure the next broadcast to it carries them (its reference forgotten when `sent` was a
        change from it, else tensors instead of the seed from now on, once); None for any other reply."""
        if not asks_for_initial(reply):
            return None
        if REFERENCE_FLAG in sent.meta and self.references.pop(cid, None) is not None:
            return "its reference for broadcast changes is not the server's; sending it the weights"
        if SEED_FLAG in sent.meta and self.digest and cid not in self.explicit:
            self.explicit.add(cid)
            return "its seeded initial model differs from the server's; sent it the tensors"
        return None

    def forget(self, cid: int) -> None:
        """A client that left: its reference is no longer needed."""
        self.references.pop(cid, None)
