"""The server's side of the wire, shared by both runtimes' round loop.

Broadcasts go out through first contact by seed (`runtime.first_contact`) and the broadcast codec
(`codec.down`); uploads and signatures come back decoded before anything reads them. A tensor sent
to many clients in one round is encoded, and decoded for their upload references, once.
"""

from __future__ import annotations

import torch

from .. import rng
from ..algorithms.base import Strategy
from ..protocol.compression import QUANTIZERS, decode_message, encode_message, rebase
from ..config import Config
from ..protocol.messages import Broadcast, ClientUpdate
from .first_contact import asks_for_initial, initial_digest, resolve_seed, send_initial_as_seed


class Wire:
    def __init__(self, config: Config, strategy: Strategy):
        self.config, self.strategy = config, strategy
        self._codec_round, self._encoded, self._decoded = -1, {}, {}  # per-round codec caches
        self.explicit: set[int] = set()  # clients whose seeded initial model differs: always sent tensors
        self.digest = initial_digest(strategy.initial) if config.first_contact == "seed" else ""

    def caches(self, round: int) -> tuple[dict, dict]:
        """id(tensor) -> packed and id(packed) -> tensor for this round: a tensor broadcast to many
        clients is encoded (and decoded for their upload references) once."""
        if round != self._codec_round:
            self._codec_round, self._encoded, self._decoded = round, {}, {}
        return self._encoded, self._decoded

    def outgoing(self, broadcast: Broadcast, round: int, cid: int | None = None) -> Broadcast:
        """What goes on the wire for a broadcast to `cid`: tensors equal to the seeded initial model
        dropped (`first_contact = "seed"`, unless that client asked for tensors; None = never, for
        evaluation, which is measurement), the rest through the broadcast codec (`codec.down`)."""
        if self.digest and cid is not None and cid not in self.explicit:
            broadcast = send_initial_as_seed(broadcast, self.strategy.initial, self.digest)
        opts, seed = self.config.codec, self.config.seed
        stochastic = opts.rounding == "stochastic"

        def generator(section: str, name: str) -> torch.Generator | None:  # the same for every client
            return rng.generator(seed, "codec-down", round, section, name) if stochastic else None

        return encode_message(broadcast, opts.down, opts, stochastic, generator, cache=self.caches(round)[0])

    def as_received(self, sent: Broadcast, round: int) -> Broadcast:
        """The broadcast as the client works with it (decoded, seed-resolved): what its upload's
        changes are relative to."""
        decoded = decode_message(sent, cache=self.caches(round)[1], device=self.config.device)
        return resolve_seed(decoded, self.strategy.initial)

    def decoded_update(self, update: ClientUpdate, sent: tuple[Broadcast, Broadcast] | None) -> ClientUpdate:
        """An upload with its packed tensors decoded (before anything else reads it). `sent`: (what
        the client received, what the server meant to send). When a broadcast codec made those
        differ, the client's change is moved onto the exact tensors, so the server's model never
        takes in the broadcast codec's error (it would otherwise accumulate, round after round)."""
        templates = {"tensors": self.strategy.initial, "extras": self.strategy.expected_extras()}
        received, planned = sent if sent is not None else (None, None)
        update = decode_message(update, received, templates)
        return rebase(update, received, planned) if planned is not None and planned is not received else update

    def decoded_signature(self, update: ClientUpdate) -> ClientUpdate:
        return decode_message(update, allowed=QUANTIZERS)

    def may_ask(self, cid: int, reply: object) -> bool:
        """Is `reply` a client's first request for the initial tensors (see `first_contact`)?"""
        return bool(self.digest) and cid not in self.explicit and asks_for_initial(reply)
