"""Payload codecs: lossy compression of what crosses the client/server boundary, for every method.

A codec sits between a method and the wire, per direction (`codec.up`, `codec.down`; see
`CodecOptions`). The sender replaces each floating tensor of a message (model tensors and extras such
as SCAFFOLD's control variates; tensors under `codec.min_numel` elements travel as they are) by a
`messages.Packed`: the codec's bytes plus a small JSON description. The ledger counts those bytes as
they are serialized, so simulator and Flower report the same number, and the receiver works with
what it decodes: the server aggregates decoded updates, a client trains from the decoded broadcast.

- Uploads encode the change from what the client received (θ_sent − θ_received; the server knows
  θ_received, since it sent it), which is what top-k, QSGD and 2-bit codes need to be useful. With
  `codec.error_feedback`, what the codec dropped is kept in the client's store (`codec_residual`,
  checkpointed and resumed with the rest of its state) and added to its next upload (Seide et al.
  2014; Stich et al. 2018). Stochastic codecs draw from the client's seeded generator.
- Broadcasts (training, evaluation, a newcomer's welcome) encode the weights themselves by default:
  the server cannot know what an absent client holds. With `codec.down_delta`, a broadcast to a
  client that has uploaded before is the change from that upload as both sides decoded it (the
  client keeps it in its store, `codec_down_reference`; the server one per client, in its
  checkpoint): a change between two nearby models, whose range is a fraction of the weights', so
  the same bits carry far less error. The broadcast names the reference by its digest; a client
  whose own differs (an upload that never arrived, a lost store) asks for the weights instead
  (`runtime.wire`). By default broadcasts round to nearest (`codec.rounding = "auto"`): the
  smallest error in the model a client starts from; uploads round stochastically (unbiased, so
  the average of many clients' codes is unbiased).
- GENE-FL's and PACFL's signatures use `codec.signature` (quantizers only: top-k of an orthonormal
  basis would break the clustering).

Codecs (every code really packed, scales and offsets counted):
- `fp16`, `bf16`: the trivial point, 2 bytes a value.
- `int8`, `int4`, `int3`, `int2`: uniform quantization between the min and max of each tensor (or of
  each output channel, `codec.granularity = "channel"`), float32 offset and scale per group.
- `mixed`: the int codes with bits spent over the tensors of a message to an average of
  `codec.mixed_bits` per value, fewer bits for the largest tensors.
- `qsgd`: QSGD (Alistarh et al., NeurIPS 2017) with `codec.qsgd_levels` levels s per sign, over
  buckets of `codec.qsgd_bucket` values: a float32 norm per bucket, then sign·level in
  ceil(log2(2s+1)) bits (fixed width, not the paper's Elias code).
- `topk` / `randk`: the `codec.topk` fraction of largest-magnitude (or random) entries, float32 values
  and their positions as a bitmap or as delta-varints (LEB128 gaps), whichever is smaller.

Why not a library: the FL frameworks' codecs do not pack (one widely used QSGD stores its codes as
int32 and its top-k sends int64 indices), and no maintained package packs arbitrary bit widths with
this framing; numpy's `packbits` does the bit work here.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from ..errors import GeneflError
from .messages import Broadcast, ClientUpdate, Message, Packed

CODECS = ("none", "fp16", "bf16", "int8", "int4", "int3", "int2", "mixed", "qsgd", "topk", "randk")
QUANTIZERS = ("none", "fp16", "bf16", "int8", "int4", "int3", "int2")  # the codecs a signature may use
MIXED_LEVELS = (8, 4, 3, 2)  # the bit widths `mixed` chooses from
RESIDUAL = "codec_residual"  # the client-store key of error feedback's residuals
DOWN_REFERENCE = "codec_down_reference"  # the client-store key of its last upload as decoded (`codec.down_delta`)
REFERENCE_FLAG = "ref"  # Broadcast.meta key (`codec.down_delta`): its changes are from the tensors of this digest
_FLOATS = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}
_FLOAT_NAMES = {v: k for k, v in _FLOATS.items()}
MAX_NUMEL = 1 << 31  # a packed tensor claiming more values than this is refused before anything is allocated


# ---- bits and indices ------------------------------------------------------------------------------
def pack_bits(codes: np.ndarray, width: int) -> np.ndarray:
    """Unsigned codes < 2**width, `width` bits each, little-endian bit order, into bytes."""
    codes = codes.astype(np.uint8).reshape(-1)
    if 8 % width == 0:  # 1, 2, 4, 8 bits: whole codes per byte, by shifts
        per = 8 // width
        padded = np.zeros(-(-len(codes) // per) * per, dtype=np.uint8)
        padded[: len(codes)] = codes
        padded = padded.reshape(-1, per)
        out = padded[:, 0].copy()
        for j in range(1, per):
            out |= padded[:, j] << np.uint8(width * j)
        return out
    bits = np.unpackbits(codes.astype(np.uint8).reshape(-1, 1), axis=1, bitorder="little")[:, :width]
    return np.packbits(bits.reshape(-1), bitorder="little")


def unpack_bits(data: np.ndarray, width: int, count: int) -> np.ndarray:
    if 8 % width == 0:
        shifts = (np.arange(8 // width, dtype=np.uint8) * width).astype(np.uint8)
        return ((data.reshape(-1, 1) >> shifts) & np.uint8((1 << width) - 1)).reshape(-1)[:count]
    bits = np.unpackbits(data, bitorder="little")[: count * width].reshape(count, width)
    return np.packbits(bits, axis=1, bitorder="little").reshape(-1)


def packed_size(count: int, width: int) -> int:
    return (count * width + 7) // 8


def varint_encode(values: np.ndarray) -> np.ndarray:
    """LEB128: 7 bits a byte, the high bit set on every byte but a value's last."""
    values = values.astype(np.uint64)
    length = np.ones(len(values), dtype=np.int64)
    rest = values >> np.uint64(7)
    while rest.any():
        length += rest > 0
        rest >>= np.uint64(7)
    out = np.empty(int(length.sum()), dtype=np.uint8)
    starts = np.cumsum(length) - length
    for j in range(int(length.max(initial=0))):
        sel = length > j
        low = (values[sel] >> np.uint64(7 * j)) & np.uint64(0x7F)
        out[starts[sel] + j] = low.astype(np.uint8) | ((length[sel] > j + 1).astype(np.uint8) << 7)
    return out


def varint_decode(data: np.ndarray, count: int) -> np.ndarray:
    ends = np.flatnonzero(data < 0x80)
    if len(ends) != count or (count and ends[-1] != len(data) - 1) or (not count and len(data)):
        raise GeneflError("malformed payload: bad varint index list")
    starts = np.concatenate([[0], ends[:-1] + 1]) if count else ends
    group = np.repeat(np.arange(count), ends - starts + 1)
    position = np.arange(len(data)) - starts[group]
    if count and position.max() > 8:
        raise GeneflError("malformed payload: varint longer than 9 bytes")
    values = np.zeros(count, dtype=np.uint64)
    np.add.at(values, group, (data & 0x7F).astype(np.uint64) << (7 * position).astype(np.uint64))
    return values.astype(np.int64)


def encode_indices(index: np.ndarray, n: int) -> tuple[str, np.ndarray]:
    """Sorted distinct positions in [0, n) as ("bitmap", bits) or ("varint", gaps), the smaller."""
    gaps = varint_encode(np.diff(index, prepend=-1) - 1)
    if len(gaps) < packed_size(n, 1):
        return "varint", gaps
    mask = np.zeros(n, dtype=np.uint8)
    mask[index] = 1
    return "bitmap", np.packbits(mask, bitorder="little")


def decode_indices(form: str, data: np.ndarray, k: int, n: int) -> np.ndarray:
    if form == "bitmap":
        if len(data) != packed_size(n, 1):
            raise GeneflError("malformed payload: bitmap of the wrong size")
        index = np.flatnonzero(np.unpackbits(data, bitorder="little")[:n])
    else:
        index = np.cumsum(varint_decode(data, k) + 1) - 1
    if len(index) != k or (k and (index[-1] >= n or index[0] < 0)):
        raise GeneflError("malformed payload: sparse positions out of range")
    return index


# ---- one tensor ------------------------------------------------------------------------------------
def _groups(x: torch.Tensor, channel: bool) -> torch.Tensor:
    """(G, values per group): one group, or one per output channel (dim 0)."""
    return x.reshape(x.shape[0], -1) if channel and x.dim() > 1 and x.shape[0] > 0 else x.reshape(1, -1)


def _uniform(rows: torch.Tensor, bits: int, stochastic: bool, generator) -> tuple[np.ndarray, ...]:
    """(offsets, scales, codes) of uniform `bits`-bit quantization per row."""
    rows64 = rows.double()
    lo = rows64.min(1, keepdim=True).values if rows.shape[1] else torch.zeros(rows.shape[0], 1, dtype=torch.float64)
    hi = rows64.max(1, keepdim=True).values if rows.shape[1] else lo
    levels = (1 << bits) - 1
    scale = ((hi - lo) / levels).float().double()  # as the receiver will read it (float32)
    lo = lo.float().double()
    q = (rows64 - lo) / torch.where(scale > 0, scale, torch.ones_like(scale))
    if stochastic:
        q = torch.floor(q + torch.rand(q.shape, generator=generator, dtype=torch.float64))
    else:
        q = torch.round(q)
    codes = q.clamp_(0, levels).to(torch.uint8).numpy()
    return lo.float().numpy().reshape(-1), scale.float().numpy().reshape(-1), codes


def encode_tensor(x: torch.Tensor, codec: str, opts, stochastic: bool, generator) -> Packed:
    """`x` (a float tensor, any device) in `codec`'s bytes. `opts`: the run's `CodecOptions`."""
    cpu = x.detach().to("cpu", torch.float32)
    spec: dict = {"c": codec, "s": list(x.shape), "d": _FLOAT_NAMES.get(x.dtype, "float32")}
    n = cpu.numel()
    if codec in ("fp16", "bf16"):
        half = cpu.to(torch.float16 if codec == "fp16" else torch.bfloat16)
        parts = [half.view(torch.int16).numpy().astype("<i2").tobytes()]
    elif codec.startswith("int"):
        channel = opts.granularity == "channel" and x.dim() > 1
        rows = _groups(cpu, channel)
        lo, scale, codes = _uniform(rows, int(codec[3:]), stochastic, generator)
        spec["g"] = rows.shape[0]
        parts = [lo.astype("<f4").tobytes(), scale.astype("<f4").tobytes(), pack_bits(codes.reshape(-1), int(codec[3:])).tobytes()]
    elif codec == "qsgd":
        s, bucket = opts.qsgd_levels, opts.qsgd_bucket
        flat = torch.nn.functional.pad(cpu.reshape(-1).double(), (0, (-n) % bucket)).reshape(-1, bucket)
        norms = flat.norm(dim=1, keepdim=True).float().double()
        level = flat.abs() / torch.where(norms > 0, norms, torch.ones_like(norms)) * s
        level = torch.floor(level + torch.rand(level.shape, generator=generator, dtype=torch.float64)) if stochastic else torch.round(level)
        codes = (torch.sign(flat) * level.clamp_(0, s) + s).reshape(-1)[:n].to(torch.uint8).numpy()
        spec.update(l=s, b=bucket)
        parts = [norms.float().numpy().reshape(-1).astype("<f4").tobytes(), pack_bits(codes, _qsgd_width(s)).tobytes()]
    elif codec in ("topk", "randk"):
        flat = cpu.reshape(-1)
        k = min(n, max(1, round(opts.topk * n))) if n else 0
        if codec == "topk":
            index = torch.topk(flat.abs(), k, sorted=False).indices
        else:
            index = torch.randperm(n, generator=generator)[:k]
        index = np.sort(index.numpy())
        form, positions = encode_indices(index, n)
        spec.update(k=k, ix=form)
        parts = [flat.numpy()[index].astype("<f4").tobytes(), positions.tobytes()]
    else:
        raise GeneflError(f"codec {codec!r} cannot encode a tensor")
    data = torch.from_numpy(np.frombuffer(b"".join(parts), dtype=np.uint8).copy())
    return Packed(data, spec)


def _qsgd_width(levels: int) -> int:
    return max(1, math.ceil(math.log2(2 * levels + 1)))


def _spec_int(spec: dict, key: str, low: int, high: int) -> int:
    value = spec.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise GeneflError(f"malformed payload: codec field {key!r} must be an integer in [{low}, {high}]")
    return value


def decode_tensor(packed: Packed) -> torch.Tensor:
    """The float tensor a `Packed` stands for (on the CPU); a malformed one raises a one-line
    GeneflError, checked before anything of the claimed size is allocated."""
    spec = packed.spec
    codec, shape, dtype = spec.get("c"), spec.get("s"), _FLOATS.get(spec.get("d"))
    if codec not in CODECS[1:] or codec == "mixed" or dtype is None or not isinstance(shape, list) or \
            not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise GeneflError(f"malformed payload: unknown codec description {str(spec)[:80]}")
    n = math.prod(shape)
    if n > MAX_NUMEL:
        raise GeneflError(f"malformed payload: a packed tensor of {n} values")
    data = packed.data.numpy()
    if codec in ("fp16", "bf16"):
        _expect(data, 2 * n)
        half = torch.from_numpy(data.view("<i2").astype(np.int16)).view(torch.float16 if codec == "fp16" else torch.bfloat16)
        values = half.float()
    elif codec.startswith("int"):
        bits, groups = int(codec[3:]), _spec_int(spec, "g", 1, max(1, n))
        if n % groups or (groups > 1 and (len(shape) < 2 or shape[0] != groups)):
            raise GeneflError("malformed payload: quantization groups do not divide the tensor")
        _expect(data, 8 * groups + packed_size(n, bits))
        lo = data[: 4 * groups].view("<f4").astype(np.float32).reshape(groups, 1)
        scale = data[4 * groups: 8 * groups].view("<f4").astype(np.float32).reshape(groups, 1)
        codes = unpack_bits(data[8 * groups:], bits, n).reshape(groups, -1)
        values = torch.from_numpy(lo + codes.astype(np.float32) * scale)
    elif codec == "qsgd":
        s, bucket = _spec_int(spec, "l", 1, 127), _spec_int(spec, "b", 1, MAX_NUMEL)
        buckets = -(-n // bucket)
        _expect(data, 4 * buckets + packed_size(n, _qsgd_width(s)))
        norms = data[: 4 * buckets].view("<f4").astype(np.float32)
        codes = unpack_bits(data[4 * buckets:], _qsgd_width(s), n).astype(np.float32) - s
        if n and codes.max(initial=0) > s:
            raise GeneflError("malformed payload: a QSGD level out of range")
        values = torch.from_numpy(np.repeat(norms, bucket)[:n] * codes / s)
    else:
        k = _spec_int(spec, "k", 0, n)
        form = spec.get("ix")
        if form not in ("bitmap", "varint") or len(data) < 4 * k:
            raise GeneflError("malformed payload: unreadable sparse tensor")
        index = decode_indices(form, data[4 * k:], k, n)
        flat = np.zeros(n, dtype=np.float32)
        flat[index] = data[: 4 * k].view("<f4")
        values = torch.from_numpy(flat)
    return values.reshape(shape).to(dtype)


def _expect(data: np.ndarray, size: int) -> None:
    if len(data) != size:
        raise GeneflError(f"malformed payload: a packed tensor of {len(data)} bytes where its codec needs {size}")


def mixed_bits(sizes: dict[str, int], budget: float) -> dict[str, int]:
    """Bits per tensor from MIXED_LEVELS so that the average over all values is at most `budget` (or
    as close as the narrowest level allows). The tensor that costs the most bytes is narrowed by one
    level at a time, so the largest layers lose bits first and small ones keep their precision."""
    bits = {name: MIXED_LEVELS[0] for name in sizes}
    total = sum(sizes.values())
    while sum(bits[k] * sizes[k] for k in sizes) > budget * total:
        narrowable = sorted(k for k in sizes if bits[k] > MIXED_LEVELS[-1])
        if not narrowable:
            break
        name = max(narrowable, key=lambda k: bits[k] * sizes[k])  # ties: the first name
        bits[name] = MIXED_LEVELS[MIXED_LEVELS.index(bits[name]) + 1]
    return bits


# ---- whole messages --------------------------------------------------------------------------------
def _eligible(message: Message, min_numel: int) -> list[tuple[str, str]]:
    return [(section, name) for section in ("tensors", "extras") for name, t in getattr(message, section).items()
            if isinstance(t, torch.Tensor) and t.is_floating_point() and t.numel() >= max(min_numel, 1)]


def encode_message(message: Message, codec: str, opts, stochastic: bool, generator_of: Callable[[str, str], torch.Generator | None],
                   reference: Message | None = None, residual: dict[str, torch.Tensor] | None = None,
                   cache: dict | None = None) -> Message:
    """`message` with its eligible tensors packed. `reference`: what the receiver holds (tensors of
    the same name and shape are sent as the change from it); `residual`: error feedback's store
    (read and updated); `cache`: id(tensor) -> Packed, so a tensor sent to many clients is encoded
    once (broadcasts only, no residual; a tensor sent as a change is never cached)."""
    if codec == "none":
        return message
    names = _eligible(message, opts.min_numel)
    if not names:
        return message
    widths = mixed_bits({f"{s}/{n}": getattr(message, s)[n].numel() for s, n in names}, opts.mixed_bits) if codec == "mixed" else {}
    sections = {"tensors": dict(message.tensors), "extras": dict(message.extras)}
    for section, name in names:
        key, x = f"{section}/{name}", getattr(message, section)[name]
        ref = getattr(reference, section).get(name) if reference is not None else None
        delta = ref is not None and isinstance(ref, torch.Tensor) and ref.shape == x.shape
        hit = cache.get(id(x)) if cache is not None and not delta else None  # a change is one receiver's own
        if hit is not None and hit[0] is x:
            sections[section][name] = hit[1]
            continue
        value = x - ref.to(x.device, x.dtype) if delta else x
        if residual is not None and key in residual and residual[key].shape == x.shape:
            value = value + residual[key].to(value.device, value.dtype)
        chosen = f"int{widths[key]}" if codec == "mixed" else codec
        packed = encode_tensor(value, chosen, opts, stochastic, generator_of(section, name))
        if delta:
            packed = Packed(packed.data, {**packed.spec, "dl": 1})
        if residual is not None:
            residual[key] = (value.detach().float().cpu() - decode_tensor(packed).float()).to(x.dtype)
        if cache is not None and not delta:
            cache[id(x)] = (x, packed)
        sections[section][name] = packed
    return type(message)(tensors=sections["tensors"], extras=sections["extras"], meta=message.meta)


def upload_reference(decoded: Message) -> dict[str, torch.Tensor]:
    """What `codec.down_delta` sends a client's next broadcast as a change from: the model tensors of
    its last upload as decoded. Client and server compute it from the same bytes, so they agree."""
    return {name: t.detach().clone() for name, t in decoded.tensors.items()
            if isinstance(t, torch.Tensor) and t.is_floating_point()}


def changed_names(message: Message) -> list[str]:
    """The model tensors of an encoded message that travel as a change from a reference."""
    return sorted(name for name, t in message.tensors.items() if isinstance(t, Packed) and t.spec.get("dl"))


def is_packed(message: Message) -> bool:
    return any(isinstance(t, Packed) for section in (message.tensors, message.extras) for t in section.values())


def decode_message(message: Message, reference: Message | None = None, templates: dict[str, dict] | None = None,
                   cache: dict | None = None, allowed: tuple[str, ...] = CODECS, device: str | None = None) -> Message:
    """`message` with every `Packed` tensor decoded (a change is added to `reference`'s tensor of the
    same name). `templates` ({"tensors": ..., "extras": ...} of expected tensors): a packed tensor
    whose name, shape or dtype is not expected is refused before it is decoded; `allowed`: the codecs
    accepted (the dense ones, whose bytes bound the size, where no template does); `device`: where
    decoded tensors go (a change goes to its reference's device). Malformed input raises a one-line
    GeneflError."""
    if not isinstance(message, (Broadcast, ClientUpdate)) or not is_packed(message):
        return message
    sections = {"tensors": dict(message.tensors), "extras": dict(message.extras)}
    for section, values in sections.items():
        for name, packed in values.items():
            if not isinstance(packed, Packed):
                continue
            if not isinstance(packed.spec, dict):
                raise GeneflError(f"malformed payload: tensor {name!r} has no codec description")
            if packed.spec.get("c") not in allowed:
                raise GeneflError(f"malformed payload: tensor {name!r} uses codec {str(packed.spec.get('c'))[:20]!r} here")
            if templates is not None:
                _check_against(name, packed.spec, templates.get(section, {}).get(name))
            hit = cache.get(id(packed)) if cache is not None else None
            value = hit[1] if hit is not None and hit[0] is packed else decode_tensor(packed).to(device or "cpu")
            if cache is not None:
                cache[id(packed)] = (packed, value)
            if packed.spec.get("dl"):
                ref = getattr(reference, section).get(name) if reference is not None else None
                if not isinstance(ref, torch.Tensor) or list(ref.shape) != list(value.shape):
                    raise GeneflError(f"malformed payload: tensor {name!r} is a change from a tensor it was never sent")
                value = ref + value.to(ref.device, ref.dtype)
            values[name] = value
    return type(message)(tensors=sections["tensors"], extras=sections["extras"], meta=message.meta)


def rebase(update: Message, received: Message, planned: Message) -> Message:
    """`update` with each model tensor moved from what the client `received` to what the server
    `planned` to send: θ + (planned − received), for tensors of the same name and shape in both."""
    tensors = dict(update.tensors)
    for name, value in update.tensors.items():
        got, meant = received.tensors.get(name), planned.tensors.get(name)
        if isinstance(got, torch.Tensor) and isinstance(meant, torch.Tensor) and got is not meant and \
                value.is_floating_point() and got.shape == meant.shape == value.shape:
            tensors[name] = value + (meant.to(value) - got.to(value))
    return type(update)(tensors=tensors, extras=update.extras, meta=update.meta)


def _check_against(name: str, spec: dict, template: torch.Tensor | None) -> None:
    if template is None:
        raise GeneflError(f"rejected update: unexpected tensor {name!r}")
    if spec.get("s") != list(template.shape) or _FLOATS.get(spec.get("d")) != template.dtype:
        raise GeneflError(f"rejected update: tensor {name!r} is {spec.get('d')}{spec.get('s')}, "
                          f"expected {template.dtype}{list(template.shape)}")
