"""First contact by seed (`first_contact = "seed"`), both sides of it.

A full-model broadcast whose tensors are still the run's seeded initial model travels as a flag
holding their digest; the client rebuilds them from the seed and checks the digest. A client whose
rebuild differs (another torch, another platform) answers `NEED_INITIAL` instead of going on from a
different model; the round loop then sends it the tensors, and tensors from then on.
"""

from __future__ import annotations

import functools
import hashlib

import torch

from ..errors import GeneflError
from ..protocol.messages import Broadcast, ClientUpdate
from ..protocol.models import ModelSpec

SEED_FLAG = "from_seed"  # Broadcast.meta key: the missing tensors are the run's seeded initial model; its value, their digest
NEED_INITIAL = "need_initial"  # a client's whole reply's meta key: "my seeded initial model differs: send the tensors"


class InitialMismatch(GeneflError):
    """The client's seeded initial model is not the server's (another torch, another platform)."""


def initial_digest(tensors: dict[str, torch.Tensor]) -> str:
    """16 hex digits naming the exact tensors (names, dtypes, shapes and bytes)."""
    h = hashlib.blake2b(digest_size=8)
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{list(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def send_initial_as_seed(broadcast: Broadcast, initial: dict[str, torch.Tensor], digest: str) -> Broadcast:
    """`first_contact = "seed"`: a full-model broadcast drops every tensor that still is the shared
    seeded initialisation (the very tensor object, so certainly equal) and says so in one flag whose
    value is the initial tensors' `digest`; the client rebuilds those tensors from the run's seed and
    checks them against it. Partial broadcasts (learnGenes) are sent as they are: their missing
    layers mean "keep your own", not "take the initial ones"."""
    if set(broadcast.tensors) != set(initial):
        return broadcast
    kept = {k: v for k, v in broadcast.tensors.items() if v is not initial[k]}
    if len(kept) == len(initial):
        return broadcast
    return Broadcast(tensors=kept, extras=broadcast.extras, meta={**broadcast.meta, SEED_FLAG: digest})


@functools.lru_cache(maxsize=2)
def seeded_initial(spec: ModelSpec, seed: int, device: str) -> tuple[dict[str, torch.Tensor], str]:
    """The seeded initial model as this process builds it, and its digest."""
    tensors = {k: v.to(device) for k, v in spec.build(seed, "global").state_dict().items()}
    return tensors, initial_digest(tensors)


def resolve_seed(broadcast: Broadcast, initial: dict[str, torch.Tensor]) -> Broadcast:
    """A broadcast sent with `SEED_FLAG`, its missing tensors taken from the seeded initial model."""
    if not broadcast.meta.get(SEED_FLAG):
        return broadcast
    meta = {k: v for k, v in broadcast.meta.items() if k != SEED_FLAG}
    return Broadcast(tensors={**initial, **broadcast.tensors}, extras=broadcast.extras, meta=meta)


def asks_for_initial(reply: object) -> bool:
    """A client's reply that says its seeded initial model differs (see `received`)."""
    return isinstance(reply, ClientUpdate) and reply.meta == {NEED_INITIAL: True} and not reply.tensors and not reply.extras
