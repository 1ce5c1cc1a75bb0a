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

from ..messages import Broadcast, ClientUpdate, Message, decode, encode

PAYLOAD, HEADER, STORE = "genefl", "genefl-header", "genefl-store"


def _array(data: bytes) -> Array:
    return Array(dtype="uint8", shape=(len(data),), stype="genefl.wire", data=data)


def to_content(wire: bytes, round: int = 0) -> RecordDict:
    """Content of a Flower message carrying an already encoded genefl message."""
    return RecordDict({PAYLOAD: ArrayRecord({"payload": _array(wire)}), HEADER: ConfigRecord({"round": round})})


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
    tensors, meta = {}, {}
    for key, value in store.items():
        if isinstance(value, torch.Tensor):
            tensors[key] = value
        elif isinstance(value, dict) and all(isinstance(v, torch.Tensor) for v in value.values()):
            tensors.update({f"{key}/{k}": v for k, v in value.items()})
            meta.setdefault("__dicts__", []).append(key)
        else:
            meta[key] = value
    state[STORE] = ArrayRecord({"store": _array(encode(ClientUpdate(tensors=tensors, meta=meta)))})


def store_from_state(state: RecordDict) -> dict[str, Any]:
    if STORE not in state:
        return {}
    saved = decode(state[STORE]["store"].data)
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


__all__ = ["Broadcast", "ClientUpdate", "from_content", "reply_content", "store_from_state", "store_to_state", "to_content"]
