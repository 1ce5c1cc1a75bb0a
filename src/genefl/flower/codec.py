"""The only module that knows Flower's record key names.

A genefl message travels as its wire bytes (`messages.encode`) in one uint8 `Array` of an
`ArrayRecord`, so the bytes Flower carries are exactly the bytes the ledger counts. A small
`ConfigRecord` carries the round number. A client's persistent store lives in `Context.state` the
same way.
"""

from __future__ import annotations

from typing import Any

import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from ..protocol.messages import Broadcast, ClientUpdate, Message, decode, encode

PAYLOAD, HEADER, STORE = "genefl", "genefl-header", "genefl-store"


def _array(data: bytes) -> Array:
    return Array(dtype="uint8", shape=(len(data),), stype="genefl.wire", data=data)


def to_content(wire: bytes, round: int = 0, resumed_from: int | None = None) -> RecordDict:
    """Content of a Flower message carrying an already encoded genefl message. `resumed_from`: in a
    resumed run, the round of the checkpoint it continues from (a client with a `state-dir` reads
    its state as of that round)."""
    header = {"round": round} if resumed_from is None else {"round": round, "resumed-from": resumed_from}
    return RecordDict({PAYLOAD: ArrayRecord({"payload": _array(wire)}), HEADER: ConfigRecord(header)})


def resumed_from(content: RecordDict) -> int | None:
    try:
        value = content[HEADER]["resumed-from"] if HEADER in content else None
        return None if value is None else int(value)
    except (KeyError, TypeError, ValueError):
        return None


def from_content(content: RecordDict) -> tuple[Message, int]:
    """(decoded genefl message, round); anything malformed raises a one-line GeneflError."""
    from ..errors import GeneflError

    try:
        record = content[PAYLOAD]
        data = record["payload"].data
        round = int(content[HEADER]["round"]) if HEADER in content else 0
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise GeneflError(f"malformed payload: the Flower message has no genefl payload ({exc!r})") from None
    return decode(data), round


def reply_content(update: ClientUpdate) -> RecordDict:
    return to_content(encode(update))


def store_to_state(store: dict[str, Any], state: RecordDict) -> None:
    """Save a client's store (tensors, dicts of tensors, JSON values) into `Context.state`."""
    state[STORE] = ArrayRecord({"store": _array(encode_store(store))})


def store_from_state(state: RecordDict) -> dict[str, Any]:
    return decode_store(state[STORE]["store"].data) if STORE in state else {}


def encode_store(store: dict[str, Any]) -> bytes:
    """A client's store as bytes (genefl's wire format: tensors plus one JSON header)."""
    tensors, meta = {}, {}
    for key, value in store.items():
        if isinstance(value, torch.Tensor):
            tensors[key] = value
        elif isinstance(value, dict) and all(isinstance(v, torch.Tensor) for v in value.values()):
            tensors.update({f"{key}/{k}": v for k, v in value.items()})
            meta.setdefault("__dicts__", []).append(key)
        else:
            meta[key] = value
    return encode(ClientUpdate(tensors=tensors, meta=meta))


def decode_store(data: bytes) -> dict[str, Any]:
    saved = decode(data)
    dict_keys = saved.meta.pop("__dicts__", [])
    store: dict[str, Any] = dict(saved.meta)
    for key in dict_keys:
        store[key] = {}
    for name, tensor in saved.tensors.items():
        head, _, tail = name.partition("/")
        if head in dict_keys:
            store[head][tail] = tensor
        else:
            store[name] = tensor
    return store


__all__ = ["Broadcast", "ClientUpdate", "decode_store", "encode_store", "from_content", "reply_content", "resumed_from", "store_from_state", "store_to_state", "to_content"]
