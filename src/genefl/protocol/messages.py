"""The two messages server and client halves exchange, and their one serialization.

`Broadcast` goes server -> client, `ClientUpdate` client -> server. Model tensors travel as partial
`state_dict`s keyed by parameter name, so a learnGene is just a dict holding a few layers. Other
payloads are named (`extras["signature"]`, `extras["delta_c"]`), never packed by position.

The wire format (`encode`/`decode`) is the only serialization in genefl: the byte ledger counts
`len(encode(message))` and the Flower runtime ships exactly those bytes, so both runtimes report the
same number for the same payload. Layout:

    b"GFL1" | u32 header length | header (compact JSON) | raw little-endian tensor bytes

The header holds the message kind, the scalar `meta` dict and, per tensor, its section, name,
dtype and shape; tensor bytes follow in header order. A tensor compressed by a payload codec
(`genefl.protocol.compression`) travels as a `Packed`: its entry has dtype "packed", the byte count as its
shape and a fifth element, the codec's small JSON description; its bytes are the codec's bytes.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field

import numpy as np
import torch

from ..errors import GeneflError

Scalar = int | float | str | bool
MAGIC = b"GFL1"
_DTYPES = {
    "float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
    "bfloat16": torch.bfloat16, "int64": torch.int64, "int32": torch.int32, "uint8": torch.uint8,
    "bool": torch.bool,
}
_NAMES = {v: k for k, v in _DTYPES.items()}
PACKED = "packed"  # the dtype name of a `Packed` entry (its bytes are a codec's, see the module doc)


@dataclass(frozen=True)
class Packed:
    """A tensor in a payload codec's bytes: `data` (uint8, 1-D) is exactly what is sent, `spec` what
    the receiver needs to rebuild it (codec name, shape, dtype, ...; see `genefl.protocol.compression`)."""

    data: torch.Tensor
    spec: dict


@dataclass
class Broadcast:
    """Server -> client: model tensors (partial state_dict), named extras, scalar settings."""

    tensors: dict[str, torch.Tensor | Packed] = field(default_factory=dict)
    extras: dict[str, torch.Tensor | Packed] = field(default_factory=dict)
    meta: dict[str, Scalar | list] = field(default_factory=dict)


@dataclass
class ClientUpdate:
    """Client -> server: model tensors (partial state_dict), named extras, scalar metrics."""

    tensors: dict[str, torch.Tensor | Packed] = field(default_factory=dict)
    extras: dict[str, torch.Tensor | Packed] = field(default_factory=dict)
    meta: dict[str, Scalar | list] = field(default_factory=dict)


Message = Broadcast | ClientUpdate


def _header(message: Message) -> tuple[bytes, list[torch.Tensor]]:
    entries, tensors = [], []
    for section in ("tensors", "extras"):
        for name, t in getattr(message, section).items():
            if isinstance(t, Packed):
                entries.append([section, name, PACKED, [t.data.numel()], t.spec])
                tensors.append(t.data)
                continue
            if t.dtype not in _NAMES:
                raise GeneflError(f"cannot send tensor {name!r} of dtype {t.dtype}")
            entries.append([section, name, _NAMES[t.dtype], list(t.shape)])
            tensors.append(t)
    kind = "broadcast" if isinstance(message, Broadcast) else "update"
    header = {"kind": kind, "meta": message.meta, "tensors": entries}
    return json.dumps(header, separators=(",", ":"), sort_keys=True).encode(), tensors


def nbytes(message: Message) -> int:
    """Exactly `len(encode(message))`, without copying any tensor data."""
    header, tensors = _header(message)
    return len(MAGIC) + 4 + len(header) + sum(t.numel() * t.element_size() for t in tensors)


def encode(message: Message) -> bytes:
    header, tensors = _header(message)
    parts = [MAGIC, struct.pack("<I", len(header)), header]
    for t in tensors:
        t = t.detach().to("cpu").contiguous()
        if t.dtype == torch.bfloat16:  # numpy has no bfloat16: ship its raw 16-bit words
            t = t.view(torch.int16)
        parts.append(t.numpy().astype(t.numpy().dtype.newbyteorder("<"), copy=False).tobytes())
    return b"".join(parts)


def decode(data: bytes) -> Message:
    """Parse a wire payload; anything malformed raises a one-line `GeneflError`."""
    if len(data) < 8 or data[:4] != MAGIC:
        raise GeneflError("malformed payload: not a genefl message (bad magic)")
    (hlen,) = struct.unpack("<I", data[4:8])
    try:
        header = json.loads(data[8 : 8 + hlen])
        kind, meta, entries = header["kind"], header["meta"], header["tensors"]
    except (ValueError, KeyError, TypeError) as exc:
        raise GeneflError(f"malformed payload: unreadable header ({exc})") from None
    message: Message = Broadcast(meta=meta) if kind == "broadcast" else ClientUpdate(meta=meta)
    offset = 8 + hlen
    for entry in entries:
        section, name, dtype_name, shape, spec = _entry(entry)
        dtype = torch.uint8 if dtype_name == PACKED else _DTYPES.get(dtype_name)
        if dtype is None or section not in ("tensors", "extras"):
            raise GeneflError(f"malformed payload: tensor {name!r} has unknown dtype or section")
        size = math.prod(shape) * torch.empty((), dtype=dtype).element_size()
        if offset + size > len(data):
            raise GeneflError(f"malformed payload: tensor {name!r} is truncated")
        raw = torch.from_numpy(np.frombuffer(data, dtype=np.uint8, count=size, offset=offset).copy())
        getattr(message, section)[name] = Packed(raw, spec) if dtype_name == PACKED else raw.view(dtype).reshape(shape)
        offset += size
    if offset != len(data):
        raise GeneflError(f"malformed payload: {len(data) - offset} trailing bytes")
    return message


def _entry(entry: object) -> tuple:
    """(section, name, dtype name, shape, codec spec or None) of one header entry, checked."""
    ok = isinstance(entry, list) and len(entry) in (4, 5) and isinstance(entry[1], str) and isinstance(entry[2], str)
    ok = ok and isinstance(entry[3], list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in entry[3])
    packed = ok and entry[2] == PACKED
    if not ok or (len(entry) == 5) != packed or (packed and (len(entry[3]) != 1 or not isinstance(entry[4], dict))):
        raise GeneflError(f"malformed payload: unreadable tensor entry {str(entry)[:60]}")
    return entry[0], entry[1], entry[2], entry[3], entry[4] if packed else None


def check_update(update: ClientUpdate, expected: dict[str, torch.Tensor], required: set[str] = frozenset()) -> None:
    """Reject an update whose tensors are not a subset of `expected` with matching shapes and
    dtypes, miss a required key, or hold NaN/inf. Raises a one-line `GeneflError`."""
    missing = sorted(required - update.tensors.keys())
    if missing:
        raise GeneflError(f"rejected update: missing tensors {missing[:3]}")
    for name, t in update.tensors.items():
        ref = expected.get(name)
        if ref is None:
            raise GeneflError(f"rejected update: unexpected tensor {name!r}")
        if t.shape != ref.shape or t.dtype != ref.dtype:
            raise GeneflError(
                f"rejected update: tensor {name!r} is {t.dtype}{list(t.shape)}, expected {ref.dtype}{list(ref.shape)}"
            )
    bad = first_non_finite(update.tensors)
    if bad is not None:
        raise GeneflError(f"rejected update: tensor {bad!r} holds NaN or inf")


def first_non_finite(tensors: dict[str, torch.Tensor]) -> str | None:
    """The name of the first float tensor holding NaN or inf, or None."""
    floats = [t for t in tensors.values() if t.is_floating_point()]
    if not floats or bool(torch.isfinite(torch.stack(torch._foreach_norm(floats))).all()):
        return None  # one fused pass over all tensors: a finite norm means finite entries
    # An infinite norm does not mean an infinite entry: the squares of large finite entries (a
    # diverging run's weights, |x| > ~1e19 in float32) overflow too. Only the entries decide.
    return next((n for n, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())), None)


# ---- reply fields: every scalar a client sends is checked before anything reads it -------------
MAX_SAMPLES = 10**12  # an aggregation weight beyond this is nonsense (and would overflow a float sum)


def sample_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_SAMPLES


def finite_numbers(length: int | None = None, low: float = -math.inf, high: float = math.inf):
    """A validator for a list of finite ints/floats in [low, high] (of `length` entries if given)."""
    def valid(value: object) -> bool:
        return (isinstance(value, list) and (length is None or len(value) == length)
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and low <= v <= high
                        for v in value))
    return valid


def accuracy_value(value: object) -> bool:
    """An accuracy: a float in [0, 1], or NaN (an empty test split)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and (math.isnan(value) or 0 <= value <= 1)


def accuracy_list(value: object) -> bool:
    return isinstance(value, list) and all(accuracy_value(v) for v in value)


def check_fields(meta: dict, fields: dict) -> None:
    """Reject `meta` unless it holds exactly `fields` (name -> (validator, what it must be))."""
    if not isinstance(meta, dict):
        raise GeneflError("rejected reply: its fields are not a table")
    for name, (valid, what) in fields.items():
        if name not in meta:
            raise GeneflError(f"rejected reply: missing field {name!r}")
        if not valid(meta[name]):
            raise GeneflError(f"rejected reply: field {name!r} must be {what}, got {str(meta[name])[:60]}")
    extra = sorted(set(meta) - set(fields), key=str)
    if extra:
        raise GeneflError(f"rejected reply: unexpected field {str(extra[0])[:60]!r}")
