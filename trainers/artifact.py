"""The squeeze artifact: one compact file that rebuilds a compressed model on its own, without pickle.

Layout (all integers little-endian; see docs/artifact-format.md for the full specification)::

    offset  size  field
    0       4     magic  b"SQZM"
    4       2     format version (uint16): 1, 2 or 3, the oldest that holds what the file uses
    6       1     codec of the payload: 0 none, 1 zlib, 2 lzma (raw LZMA2 stream, preset 9e)
    7       1     reserved (0)
    8       8     payload length in bytes, as stored (uint64)
    16      4     CRC-32 of the stored payload (uint32)
    20      ...   payload

    payload (after decompression) = header length (uint32) | header (UTF-8 JSON) | blob area

The JSON header holds the architecture (``arch``: preprocessing + network spec; a user's model: its import
path ``target`` and constructor ``kwargs``), a user's model's ``uncompressed_modules`` (layers kept fp32),
free-form ``meta``, and one entry per tensor of the model's state dict, in order: its scheme, shape, bits,
number of kept values, sparse layout (``dense``, ``bitmap``, ``indices`` or ``gaps``: Golomb-Rice coded runs;
the smallest per tensor) and the (offset, length) of its blobs (``mask``, ``codes``, ``scale``, ``offset``)
in the blob area. Codes are bit-packed (:mod:`trainers.bitpack`);
an entry's float values - per-channel ``scale`` and ``offset``, and the values of an ``fp32`` tensor (biases,
preprocessing statistics, fp32 weights) - are raw float16 when that is lossless for all of them (every value
finite and unchanged by the float16 round trip; ``compress.side_bits=16`` makes side information and
quantized layers' biases so), else raw float32. The entry then says ``"floats": "f16"`` and the file is
version 2; absent means float32. A table factored by ``compress.lowrank.rank``
(:class:`~trainers.compress.lowrank.Factored`) is one entry of scheme ``lowrank`` holding its two factors as
nested entries (``"factors": {"a": ..., "b": ...}``), decoded as the product of the decoded factors; such a
file is version 2 as well. A file with a mask in the ``gaps`` layout is version 3 (it may use the other
version-2 features too). A file with none of these is written as version 1, as before.

``size_bytes`` of a model is ``len(pack(model))`` = the file's length. ``load`` decodes every tensor with
:meth:`~trainers.compress.quantize.Encoded.decode`, the same function that produced the in-memory
weights, so the loaded model's outputs are bit-exact.

A user's model (``arch.net.type == "custom"``) is rebuilt by importing its class: loading such a file runs
code the file names, so :func:`load` refuses it unless the caller allows that module (``allow=["my_pkg"]``,
or the environment variable ``SQUEEZE_ALLOW=my_pkg,other_pkg``). A process that built the model from its
own config (``model._target_``) has chosen to run that code already and reads its own files back.
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

from trainers.bitpack import decode_mask, encode_mask, pack_bits, unpack_bits
from trainers.compress.lowrank import Factored
from trainers.compress.quantize import Encoded
from trainers.errors import InputError
from trainers.models import Pipeline, build_pipeline
from trainers.models.custom import trusted_modules

__all__ = ["ALLOW_ENV", "FORMAT_VERSION", "READS_VERSIONS", "ArtifactError", "pack", "unpack", "save", "load", "weight_stats", "read_header",
           "uncompressed_modules"]

MAGIC = b"SQZM"
FORMAT_VERSION = 3
#: versions this reader reads: 1 = every float blob float32; 2 = an entry may say ``"floats": "f16"`` or be a
#: factored table (scheme ``lowrank``); 3 = a mask may also be in the ``gaps`` layout. Each file is written
#: as the oldest version that holds what it uses (one without these features byte-identical to before), so
#: older readers read what they can and refuse the rest by version
READS_VERSIONS = (1, 2, 3)
_PREAMBLE = struct.Struct("<4sHBBQI")           # magic, version, codec, reserved, payload length, crc32
_CODECS = {"none": 0, "zlib": 1, "lzma": 2}
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME}]
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
        return lzma.compress(data, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
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
    """The artifact bytes of ``model``: weights from ``model.encodings`` where present, fp32 otherwise."""
    blobs = bytearray()
    tensors = []
    state = model.state_dict()
    # canonical order = the state dict of a freshly built model of this architecture (what ``unpack``
    # builds): compression re-registers weights after biases, which must not change the bytes
    for name in build_pipeline(model.spec()).state_dict():
        tensor = state[name]
        enc = model.encodings.get(name) or _raw(tensor)
        tensors.append({"name": name, **_entry(enc, blobs)})
    head: dict[str, Any] = {"arch": model.spec(), "meta": meta or {}, "tensors": tensors}
    uncompressed = uncompressed_modules(model)
    if uncompressed and model.spec()["net"]["type"] == "custom":   # built-in models' files stay byte-identical
        head["uncompressed_modules"] = uncompressed
    header = json.dumps(head, separators=(",", ":"), sort_keys=True).encode()
    payload = _compress(struct.pack("<I", len(header)) + header + bytes(blobs), codec)
    version = _version(tensors)                        # an older reader refuses what it can't read
    preamble = _PREAMBLE.pack(MAGIC, version, _CODECS[codec], 0, len(payload), zlib.crc32(payload))
    return preamble + payload


def _version(tensors: list[dict[str, Any]]) -> int:
    """The oldest format version that reads every entry: 3 with a ``gaps`` mask, 2 with float16 blobs or a
    factored table, else 1."""
    if any(map(_needs_version_3, tensors)):
        return 3
    return 2 if any(map(_needs_version_2, tensors)) else 1


def _needs_version_2(entry: dict[str, Any]) -> bool:
    """An entry a version-1 reader cannot read: float16 blobs, or a factored table."""
    return "floats" in entry or entry["scheme"] == Factored.scheme


def _needs_version_3(entry: dict[str, Any]) -> bool:
    """An entry a version-2 reader cannot read: a mask (of the entry or of a factor) in the ``gaps`` layout."""
    if entry["scheme"] == Factored.scheme:
        return any(map(_needs_version_3, entry["factors"].values()))
    return entry["layout"] == "gaps"


def _split(data: bytes, where: str) -> tuple[dict[str, Any], memoryview]:
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
    (header_len,) = struct.unpack_from("<I", payload)
    header = json.loads(payload[4:4 + header_len])
    return header, memoryview(payload)[4 + header_len:]


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
