"""The squeeze artifact: one compact file that rebuilds a compressed model on its own, without pickle.

Layout (all integers little-endian; see docs/artifact-format.md for the full specification)::

    offset  size  field
    0       4     magic  b"SQZM"
    4       2     format version (uint16): 4 for every file written now; this reader reads 1 to 4
    6       1     codec of the payload: 0 none, 1 zlib, 2 lzma (raw LZMA2 stream, preset 9e)
    7       1     reserved (0)
    8       8     payload length in bytes, as stored (uint64)
    16      4     CRC-32 of the stored payload (uint32)
    20      ...   payload

    payload (after decompression) = header length (uint32) | header (UTF-8 JSON) | blob area

The JSON header holds the architecture (``arch``: preprocessing + network spec; a user's model: its import
path ``target`` and constructor ``kwargs``), a user's model's ``uncompressed_modules`` (layers kept fp32),
free-form ``meta``, and the tensor table ``tensors``: one entry per tensor of the model's state dict, in order,
with its name, scheme, shape, code bits, number of kept values, sparse layout (``dense``, ``bitmap``,
``indices`` or ``gaps``: Golomb-Rice coded runs; the smallest per tensor) and its blobs (``mask``, ``codes``,
``scale``, ``offset``) in the blob area. Codes are bit-packed (:mod:`trainers.bitpack`); an entry's float
values - per-channel ``scale`` and ``offset``, and the values of an ``fp32`` tensor (biases, preprocessing
statistics, fp32 weights) - are raw float16 when that is lossless for all of them (every value finite and
unchanged by the float16 round trip; ``compress.side_bits=16`` makes side information and quantized layers'
biases so), else raw float32. A table factored by ``compress.lowrank.rank``
(:class:`~trainers.compress.lowrank.Factored`) is one entry of scheme ``lowrank`` holding its two factors as
nested entries, decoded as the product of the decoded factors.

Version 4 writes each table entry as one JSON array, ``[name, scheme, shape, <scheme's parameters>,
<layout, n_kept (, mask bytes for gaps)> unless dense]`` (a factored table: ``[name, "lowrank", a, b]``), and
no blob offsets or lengths: the blobs lie back to back in table order and every length follows from the
entry (only a ``gaps`` mask states its own). That takes 150-185 bytes (6-10 %) off a 1.5-3 KB digits model,
whose header was a third of the file. Versions 1-3 wrote each entry as a JSON object
with ``[offset, length]`` per blob (version 2 added float16 blobs and factored tables, version 3 the ``gaps``
layout), each file as the oldest version that held what it used. That rule ends with version 4: the compact
table is used for every file, so every new file is version 4 and a reader of versions 1-3 refuses it by
version. :func:`read_header` returns the same expanded form for every version, the version-1..3 object per
tensor with its ``blobs`` as ``{key: [offset, length]}``, so no consumer of the header sees the difference.

``size_bytes`` of a model is ``len(pack(model))`` = the file's length. ``load`` decodes every tensor with
:meth:`~trainers.compress.quantize.Encoded.decode`, the same function that produced the in-memory
weights, so the loaded model's outputs are bit-exact.

A user's model (``arch.net.type == "custom"``) is rebuilt by importing its class: loading such a file runs
code the file names, so :func:`load` refuses it unless the caller allows that module (``allow=["my_pkg"]``,
or the environment variable ``SQUEEZE_ALLOW=my_pkg,other_pkg``). A process that built the model from its
own config (``model._target_``) has chosen to run that code already and reads its own files back. Reading the
header never builds the model, so it imports nothing (the table names its tensors and their shapes).
"""

from __future__ import annotations

import json
import lzma
import math
import os
import struct
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainers.bitpack import decode_mask, encode_mask, index_bits, pack_bits, unpack_bits
from trainers.compress.lowrank import Factored
from trainers.compress.quantize import Encoded
from trainers.errors import InputError
from trainers.models import Pipeline, build_pipeline
from trainers.models.custom import trusted_modules

__all__ = ["ALLOW_ENV", "FORMAT_VERSION", "READS_VERSIONS", "ArtifactError", "pack", "unpack", "save", "load", "weight_stats", "read_header", "header_length",
           "uncompressed_modules"]

MAGIC = b"SQZM"
#: the version of every file :func:`pack` writes (the compact tensor table is used for all files)
FORMAT_VERSION = 4
#: versions this reader reads: 1 = every float blob float32; 2 = an entry may say ``"floats": "f16"`` or be a
#: factored table (scheme ``lowrank``); 3 = a mask may also be in the ``gaps`` layout (1-3: one JSON object
#: per tensor, blob offsets listed; each file was the oldest of these that held what it used); 4 = the compact
#: tensor table (one JSON array per tensor, offsets implied), written for every file
READS_VERSIONS = (1, 2, 3, 4)
_PREAMBLE = struct.Struct("<4sHBBQI")           # magic, version, codec, reserved, payload length, crc32
_CODECS = {"none": 0, "zlib": 1, "lzma": 2}
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]


def _lzma_filters(size: int) -> list[dict[str, Any]]:
    """The writer's filter: preset 9e with a dictionary no larger than the payload needs (the next power of two,
    at least 4 KiB). Matches can reach back at most the payload's length anyway, so the stream is the same in
    practice while the encoder no longer sets up preset 9's 64 MiB dictionary for a 3 KB file (~44 ms a file). A
    raw LZMA2 stream does not record its dictionary size; the reader's 64 MiB dictionary reads every stream
    written with a smaller one."""
    return [{**_LZMA_FILTERS[0], "dict_size": max(4096, 1 << max(0, size - 1).bit_length())}]
#: comma-separated modules whose user models :func:`load` may import, besides its ``allow`` argument
ALLOW_ENV = "SQUEEZE_ALLOW"


class ArtifactError(InputError):
    """The file is not a readable squeeze artifact (wrong magic, newer version, truncated, corrupt)."""


def _compress(data: bytes, codec: str) -> bytes:
    if codec == "none":
        return data
    if codec == "zlib":
        return zlib.compress(data, 9)
    if codec == "lzma":
        return lzma.compress(data, format=lzma.FORMAT_RAW, filters=_lzma_filters(len(data)))
    raise InputError("compress.codec", f"must be none, zlib or lzma, got {codec!r}")


def _decompress(data: bytes, codec_id: int, where: str) -> bytes:
    try:
        if codec_id == 0:
            return data
        if codec_id == 1:
            return zlib.decompress(data)
        if codec_id == 2:
            return lzma.decompress(data, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
    except (zlib.error, lzma.LZMAError) as err:
        raise ArtifactError(where, f"payload does not decompress ({err}): the file is corrupt") from err
    raise ArtifactError(where, f"unknown codec id {codec_id}: written by a newer squeeze?")


#: an entry's ``floats`` (absent = ``f32``) -> the numpy dtype of its float blobs (``codes`` of an fp32
#: tensor, ``scale``, ``offset``)
_FLOATS = {"f32": "<f4", "f16": "<f2"}


def _fits_float16(values: torch.Tensor) -> bool:
    """Every value finite and exactly representable in float16 (so storing it as float16 is lossless)."""
    a = values.numpy().astype(np.float32)
    with np.errstate(over="ignore"):                   # beyond float16's range: inf, so not lossless
        half = a.astype(np.float16)
    return bool(np.isfinite(a).all()) and np.array_equal(half.astype(np.float32), a)


def _entry(enc: Encoded | Factored, blobs: bytearray) -> dict[str, Any]:
    """The header entry of one tensor (without its ``name``), its blobs appended to ``blobs``."""
    if isinstance(enc, Factored):                      # two ordinary entries, blobs in the order a, b
        return {"scheme": Factored.scheme, "shape": list(enc.shape), "rank": enc.rank,
                "factors": {"a": _entry(enc.a, blobs), "b": _entry(enc.b, blobs)}}

    def put(key: str, data: bytes) -> None:
        entry["blobs"][key] = [len(blobs), len(data)]
        blobs.extend(data)

    floats = {k: v for k, v in (("codes", enc.codes if enc.scheme == "fp32" else None), ("scale", enc.scale),
                                ("offset", enc.offset)) if v is not None}
    half = any(v.numel() for v in floats.values()) and all(_fits_float16(v) for v in floats.values())
    entry: dict[str, Any] = {"scheme": enc.scheme, "shape": list(enc.shape), "bits": enc.bits,
                             "n_kept": enc.n_kept, "layout": "dense", "blobs": {}}
    if enc.frac_bits:
        entry["frac_bits"] = enc.frac_bits
    if half:
        entry["floats"] = "f16"
    if enc.mask is not None:
        entry["layout"], mask_bytes = encode_mask(enc.mask.numpy())
        put("mask", mask_bytes)
    if enc.scheme != "fp32":
        put("codes", pack_bits(enc.codes.numpy(), enc.bits))
    for key, values in floats.items():                 # codes (fp32), scale, offset: in this order
        put(key, values.numpy().astype(_FLOATS["f16" if half else "f32"]).tobytes())
    return entry


def _raw(t: torch.Tensor) -> Encoded:
    t = t.detach().cpu()
    if not (t.is_floating_point() or t.is_complex()):      # counters such as BatchNorm's num_batches_tracked
        as_float = t.to(torch.float32)
        if torch.equal(as_float.to(t.dtype), t):            # exact in float32: load_state_dict casts it back
            t = as_float
    if t.dtype != torch.float32:
        raise TypeError(f"only float32 tensors (and integers exact in float32) can be packed, got {t.dtype}")
    return Encoded("fp32", tuple(t.shape) or (1,), 32, None, t.flatten().clone())


def pack(model: Pipeline, codec: str = "lzma", meta: dict[str, Any] | None = None) -> bytes:
    """The artifact bytes of ``model`` (format version 4): weights from ``model.encodings`` where present, fp32
    otherwise."""
    blobs = bytearray()
    tensors = []
    state = model.state_dict()
    # canonical order = the state dict of a freshly built model of this architecture (what ``unpack``
    # builds): compression re-registers weights after biases, which must not change the bytes
    for name in build_pipeline(model.spec()).state_dict():
        tensor = state[name]
        enc = model.encodings.get(name) or _raw(tensor)
        tensors.append({"name": name, **_entry(enc, blobs)})
    # the reader derives offsets and lengths from the table (tests/test_artifact.py checks it gives back exactly
    # these entries)
    table = [[entry["name"], *_compact(entry)] for entry in tensors]
    head: dict[str, Any] = {"arch": model.spec(), "meta": meta or {}, "tensors": table}
    uncompressed = uncompressed_modules(model)
    if uncompressed and model.spec()["net"]["type"] == "custom":   # only a user's model has such layers
        head["uncompressed_modules"] = uncompressed
    header = json.dumps(head, separators=(",", ":"), sort_keys=True).encode()
    payload = _compress(struct.pack("<I", len(header)) + header + bytes(blobs), codec)
    preamble = _PREAMBLE.pack(MAGIC, FORMAT_VERSION, _CODECS[codec], 0, len(payload), zlib.crc32(payload))
    return preamble + payload


# ---------------------------------------------------------------- the compact tensor table (version 4)
# docs/artifact-format.md section 2.4.1. An expanded entry (what versions 1-3 stored and what read_header returns)
# is {"scheme", "shape", "bits", "n_kept", "layout", "blobs": {key: [offset, length]}, ("frac_bits"),
# ("floats")}, or for a factored table {"scheme": "lowrank", "shape", "rank", "factors": {"a", "b"}}.

#: a stored entry's parameters after ``[scheme, shape]``, per scheme; ``floats`` = the width of its float
#: blobs in bits (16 or 32)
_PARAMS = {"fp32": ("floats",), "fixed_point": ("bits", "frac_bits"), "uniform": ("bits", "floats"),
           "binary": ("floats",), "ternary": ("floats",)}
#: ``bits`` of the schemes that do not store it
_IMPLIED_BITS = {"fp32": 32, "binary": 1, "ternary": 1}
#: the per-channel float blobs of each scheme (one float per index of ``shape[0]``), after ``codes``
_PER_CHANNEL = {"fp32": (), "fixed_point": (), "uniform": ("scale", "offset"), "binary": ("scale",),
                "ternary": ("scale",)}
#: layout -> number of sparsity fields a stored entry ends with (``dense``: none)
_SPARSITY = {"bitmap": 2, "indices": 2, "gaps": 3}
_FLOAT_BITS = {"f32": 32, "f16": 16}


def _compact(entry: dict[str, Any]) -> list[Any]:
    """The version-4 stored form of an expanded entry (its name aside): ``[scheme, shape, *params,
    *sparsity]``, with sparsity ``[]`` (dense), ``[layout, n_kept]`` or ``["gaps", n_kept, mask bytes]``; a
    factored table: ``["lowrank", a, b]``."""
    if entry["scheme"] == Factored.scheme:
        return [Factored.scheme, _compact(entry["factors"]["a"]), _compact(entry["factors"]["b"])]
    values = {"bits": entry["bits"], "frac_bits": entry.get("frac_bits", 0),
              "floats": _FLOAT_BITS[entry.get("floats", "f32")]}
    out = [entry["scheme"], entry["shape"], *(values[p] for p in _PARAMS[entry["scheme"]])]
    if entry["layout"] != "dense":
        out += [entry["layout"], entry["n_kept"]]
        if entry["layout"] == "gaps":                  # the one length the entry does not imply
            out.append(entry["blobs"]["mask"][1])
    return out


class _Corrupt(Exception):
    """A version-4 tensor table that is malformed or does not match its blob area (the message says where)."""


def _int(value: Any, what: str, low: int | None = 0, high: int | None = None) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or (low is not None and value < low) \
            or (high is not None and value > high):
        bounds = f"{'' if low is None else low}..{'' if high is None else high}"
        raise _Corrupt(f"{what} must be an integer in {bounds}, got {value!r}")
    return value


def _expand_table(table: Any, area: int) -> list[dict[str, Any]]:
    """The expanded entries of a version-4 tensor table whose blobs fill a blob area of ``area`` bytes."""
    if not isinstance(table, list):
        raise _Corrupt(f"'tensors' must be a list, got {type(table).__name__}")
    out, offset = [], 0
    for i, item in enumerate(table):
        if not (isinstance(item, list) and len(item) >= 2 and isinstance(item[0], str)):
            raise _Corrupt(f"tensor {i} must be [name, scheme, ...], got {json.dumps(item)[:80]}")
        try:
            entry, offset = _expand(item[1:], offset)
        except _Corrupt as err:
            raise _Corrupt(f"tensor {i} ({item[0]}): {err}") from None
        out.append({"name": item[0], **entry})
    if offset != area:
        raise _Corrupt(f"its blobs take {offset} bytes, the blob area has {area}")
    return out


def _expand(stored: list[Any], offset: int) -> tuple[dict[str, Any], int]:
    """The expanded entry of a stored one (its name aside) whose blobs start at ``offset``; and where they
    end."""
    scheme = stored[0]
    if scheme == Factored.scheme:
        if len(stored) != 3 or not all(isinstance(f, list) and f and f[0] != scheme for f in stored[1:]):
            raise _Corrupt("a lowrank entry must be [name, 'lowrank', a, b] with two stored factors")
        a, offset = _expand(stored[1], offset)
        b, offset = _expand(stored[2], offset)
        if len(a["shape"]) != 2 or len(b["shape"]) != 2 or a["shape"][1] != b["shape"][0]:
            raise _Corrupt(f"factor shapes {a['shape']} and {b['shape']} do not multiply")
        return {"scheme": scheme, "shape": [a["shape"][0], b["shape"][1]], "rank": a["shape"][1],
                "factors": {"a": a, "b": b}}, offset
    if not isinstance(scheme, str) or scheme not in _PARAMS:
        raise _Corrupt(f"unknown scheme {scheme!r}")
    params = _PARAMS[scheme]
    head = 2 + len(params)
    layout = stored[head] if len(stored) > head else "dense"
    if len(stored) > head and (not isinstance(layout, str) or layout not in _SPARSITY):
        raise _Corrupt(f"unknown layout {layout!r} (bitmap, indices or gaps; dense is written as nothing)")
    if len(stored) != head + _SPARSITY.get(layout, 0):
        raise _Corrupt(f"after its name, a {scheme} entry is [{scheme!r}, shape, {', '.join(params)}] then nothing "
                       f"(dense), layout and n_kept, or 'gaps', n_kept and mask bytes; got {len(stored)} fields")
    shape = stored[1]
    if not (isinstance(shape, list) and shape):
        raise _Corrupt(f"shape must be a non-empty list, got {shape!r}")
    shape = [_int(n, "a dimension") for n in shape]
    numel = math.prod(shape)
    values = dict(zip(params, stored[2:head]))
    bits = _int(values["bits"], "bits", 1, 32) if "bits" in values else _IMPLIED_BITS[scheme]
    float_bytes = 0
    if "floats" in values:
        if _int(values["floats"], "the float width", 16, 32) not in (16, 32):
            raise _Corrupt(f"the float width must be 16 or 32, got {values['floats']!r}")
        float_bytes = values["floats"] // 8
    n_kept = numel if layout == "dense" else _int(stored[head + 1], "n_kept", 0, numel)
    entry: dict[str, Any] = {"scheme": scheme, "shape": shape, "bits": bits, "n_kept": n_kept, "layout": layout,
                             "blobs": {}}
    if frac_bits := _int(values.get("frac_bits", 0), "frac_bits", None):
        entry["frac_bits"] = frac_bits
    if float_bytes == 2:
        entry["floats"] = "f16"
    lengths = {}
    if layout == "bitmap":
        lengths["mask"] = math.ceil(numel / 8)
    elif layout == "indices":
        lengths["mask"] = math.ceil(n_kept * index_bits(numel) / 8)
    elif layout == "gaps":
        lengths["mask"] = _int(stored[head + 2], "the gaps mask's bytes", 1)
    lengths["codes"] = n_kept * float_bytes if scheme == "fp32" else math.ceil(n_kept * bits / 8)
    for key in _PER_CHANNEL[scheme]:
        lengths[key] = shape[0] * float_bytes
    for key, length in lengths.items():                # blobs back to back, in this order
        entry["blobs"][key] = [offset, length]
        offset += length
    return entry, offset


def _split(data: bytes, where: str) -> tuple[dict[str, Any], memoryview]:
    """The header (its tensor table expanded, whatever the version) and the blob area of artifact bytes."""
    version, payload = _payload(data, where)
    return _parse(version, payload, where)


def _payload(data: bytes, where: str) -> tuple[int, bytes]:
    """The format version and the checked, decompressed payload (header length | header | blob area)."""
    if len(data) < _PREAMBLE.size:
        raise ArtifactError(where, f"truncated: {len(data)} bytes is shorter than the {_PREAMBLE.size}-byte preamble")
    magic, version, codec_id, _, length, crc = _PREAMBLE.unpack_from(data)
    if magic != MAGIC:
        raise ArtifactError(where, f"not a squeeze artifact (magic {magic!r}, expected {MAGIC!r})")
    if version not in READS_VERSIONS:
        raise ArtifactError(where, f"format version {version} is not supported by this squeeze (reads versions "
                                   f"{', '.join(map(str, READS_VERSIONS))}); upgrade squeeze or re-export the model")
    stored = data[_PREAMBLE.size:]
    if len(stored) != length:
        raise ArtifactError(where, f"truncated or padded: payload has {len(stored)} bytes, header says {length}")
    if zlib.crc32(stored) != crc:
        raise ArtifactError(where, "checksum mismatch: the file is corrupt")
    payload = _decompress(stored, codec_id, where)
    if len(payload) < 4:
        raise ArtifactError(where, f"payload of {len(payload)} bytes has no header length: the file is corrupt")
    return version, payload


def _parse(version: int, payload: bytes, where: str) -> tuple[dict[str, Any], memoryview]:
    (header_len,) = struct.unpack_from("<I", payload)
    if 4 + header_len > len(payload):
        raise ArtifactError(where, f"header length {header_len} does not fit the {len(payload)}-byte payload: "
                                   f"the file is corrupt")
    try:
        header = json.loads(bytes(payload[4:4 + header_len]))
    except ValueError as err:                          # JSON or UTF-8 error
        raise ArtifactError(where, f"header is not JSON ({err}): the file is corrupt") from None
    if not isinstance(header, dict) or not {"arch", "tensors"} <= header.keys():
        raise ArtifactError(where, "header is not an object with 'arch' and 'tensors': the file is corrupt")
    blob = memoryview(payload)[4 + header_len:]
    if version >= 4:
        try:
            header["tensors"] = _expand_table(header["tensors"], len(blob))
        except _Corrupt as err:
            raise ArtifactError(where, f"tensor table is corrupt ({err}): the file is corrupt") from None
    return header, blob


def _decode_entry(entry: dict[str, Any], blob: memoryview) -> Encoded | Factored:
    if entry["scheme"] == Factored.scheme:
        return Factored(_decode_entry(entry["factors"]["a"], blob), _decode_entry(entry["factors"]["b"], blob))

    def get(key: str) -> bytes | None:
        if key not in entry["blobs"]:
            return None
        start, length = entry["blobs"][key]
        return bytes(blob[start:start + length])

    shape, n_kept, bits = tuple(entry["shape"]), entry["n_kept"], entry["bits"]
    numel = math.prod(shape)
    mask = None
    if entry["layout"] != "dense":
        mask = torch.from_numpy(decode_mask(entry["layout"], get("mask"), numel, n_kept))
    dtype = _FLOATS[entry.get("floats", "f32")]       # absent (files written before float16): float32

    def floats(data: bytes) -> torch.Tensor:
        return torch.from_numpy(np.frombuffer(data, dtype=dtype).astype(np.float32))

    if entry["scheme"] == "fp32":
        codes = floats(get("codes"))
    else:
        codes = torch.from_numpy(unpack_bits(get("codes"), bits, n_kept))
    per_channel = {k: floats(v) for k in ("scale", "offset") if (v := get(k)) is not None}
    return Encoded(entry["scheme"], shape, bits, mask, codes, frac_bits=entry.get("frac_bits", 0), **per_channel)


def _check_matches(entries: list[dict[str, Any]], state: dict[str, torch.Tensor], where: str) -> None:
    """The tensor table names every tensor of the model built from ``arch`` once, each with its number of
    values (a 0-d tensor is stored as shape ``[1]``)."""
    stored = {e["name"]: math.prod(e["shape"]) for e in entries}
    problems = [f"{name} is missing" for name in state if name not in stored]
    problems += [f"{name} is not in the model" for name in stored if name not in state]
    problems += [f"{name} has {stored[name]} values, the model {t.numel()}" for name, t in state.items()
                 if name in stored and stored[name] != t.numel()]
    if len(stored) != len(entries):
        problems.append("a name is listed twice")
    if problems:
        listed = "; ".join(problems[:3]) + (f" and {len(problems) - 3} more" if len(problems) > 3 else "")
        raise ArtifactError(where, f"tensor table does not match the architecture ({listed}): the file is corrupt")


def uncompressed_modules(model: Pipeline) -> list[str]:
    """Layers of ``model.net`` with weights of their own that are stored as plain fp32, because squeeze does
    not compress their type (LayerNorm, GRU, Conv3d, ...) or ``compress.include`` / ``compress.exclude`` left
    them out (names as those patterns see them). Their tensors are in the file all the same. Empty for a
    model that was never compressed (no ``encodings``): nothing was asked of it."""
    root = getattr(model.net, "pattern_root", "")
    out: list[str] = []
    if not model.encodings:
        return out
    for name, module in model.net.named_modules():
        own = [pn for pn, p in module.named_parameters(recurse=False) if p.dim() > 1 or pn == "weight"]
        if own and any(f"net.{name}.{pn}" not in model.encodings for pn in own):
            out.append(name.removeprefix(root))
    return out


def _check_allowed(arch: dict[str, Any], allow: Iterable[str] | None, where: str) -> None:
    """A user's model imports code: its module must be allowed (see the module docstring)."""
    net = arch.get("net", {})
    if net.get("type") != "custom":
        return
    module = str(net.get("target", "")).rpartition(".")[0]
    allowed = [*(allow or ()), *filter(None, os.environ.get(ALLOW_ENV, "").split(",")), *trusted_modules()]
    if any(module == a.strip() or module.startswith(a.strip() + ".") for a in allowed):
        return
    top = module.split(".")[0]
    raise ArtifactError(where, f"holds a user model, {net.get('target')}; loading it imports and runs module "
                               f"{module!r}. If you trust that code, allow it: trainers.artifact.load(path, "
                               f"allow=[{top!r}]), search.predict ... allow={top}, or {ALLOW_ENV}={top}")


def unpack(data: bytes, where: str = "<bytes>", allow: Iterable[str] | None = None) -> Pipeline:
    """Rebuild the model from artifact bytes (eval mode, weights decoded, ``encodings`` restored); a user's
    model only when its module is in ``allow`` (see :func:`load`)."""
    header, blob = _split(data, where)
    _check_allowed(header["arch"], allow, where)
    model = build_pipeline(header["arch"])
    _check_matches(header["tensors"], model.state_dict(), where)
    state, encodings = {}, {}
    for entry in header["tensors"]:
        enc = _decode_entry(entry, blob)
        state[entry["name"]] = enc.decode().reshape(model.state_dict()[entry["name"]].shape)
        if entry["scheme"] != "fp32" or entry["layout"] != "dense" or entry["name"].endswith("weight"):
            encodings[entry["name"]] = enc
    model.load_state_dict(state, strict=True)
    model.encodings = {k: v for k, v in encodings.items() if k.startswith("net.") and k.endswith("weight")}
    model.meta = header["meta"]
    return model.eval()


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON header of an artifact file (architecture, meta, tensor table) without building the model."""
    return _split(Path(path).read_bytes(), str(path))[0]


def header_length(path: str | os.PathLike) -> int:
    """Bytes of the header as stored in the (decompressed) payload: what :func:`read_header` expands."""
    return struct.unpack_from("<I", _payload(Path(path).read_bytes(), str(path))[1])[0]


def save(model: Pipeline, path: str | os.PathLike, codec: str = "lzma", meta: dict[str, Any] | None = None) -> int:
    """Write the artifact atomically (temp file + rename); returns its size in bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = pack(model, codec, meta)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return os.path.getsize(path)


def load(path: str | os.PathLike, allow: Iterable[str] | None = None) -> Pipeline:
    """Rebuild a model from an artifact file alone: no pickle, no config.

    A file holding a user's model names the class to import; it loads only when that class's module is
    ``allow``-ed (a module or package name: ``"my_pkg"`` allows ``my_pkg.nets``), listed in
    ``$SQUEEZE_ALLOW``, or already run by this process from its own config. Otherwise: :class:`ArtifactError`
    naming the module, before anything is imported.

    Example:
        >>> model = load("model.sqz")                 # doctest: +SKIP
        >>> model(torch.from_numpy(X)).argmax(1)      # doctest: +SKIP
        >>> load("resmlp.sqz", allow=["my_pkg"])      # a user's model (my_pkg.nets.ResMLP)  # doctest: +SKIP
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(str(path), "file not found")
    return unpack(path.read_bytes(), str(path), allow)


def weight_stats(model: Pipeline) -> dict[str, float]:
    """``sparsity`` (zeros / weights) and ``avg_bits`` (stored code + mask + per-channel bits per kept weight)
    over the network's Linear/Conv weights and embedding tables, counted from what :func:`pack` writes (before
    entropy coding); a factored table counts as its two stored factors."""
    total = kept = stored_bits = 0
    for name, tensor in model.state_dict().items():
        if not (name.startswith("net.") and name.endswith("weight")):
            continue
        enc = model.encodings.get(name) or _raw(tensor)
        entry_blobs = bytearray()
        _entry(enc, entry_blobs)
        for part in enc.parts if isinstance(enc, Factored) else (enc,):    # a factored table: its two factors
            total += part.numel
            kept += part.n_kept
        stored_bits += 8 * len(entry_blobs)
    return {"sparsity": 1.0 - kept / max(total, 1), "avg_bits": stored_bits / max(kept, 1)}
