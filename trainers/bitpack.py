"""Bit packing of unsigned integer codes and of sparsity masks: pure numpy functions.

``pack_bits(codes, b)`` stores each code in exactly ``b`` bits, little-endian within the stream, so ``n``
codes take ``ceil(n * b / 8)`` bytes. A sparsity mask is stored either as a bitmap (1 bit per position)
or as the list of kept positions (``ceil(log2(n))`` bits each), whichever is smaller.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["pack_bits", "unpack_bits", "index_bits", "encode_mask", "decode_mask"]


def pack_bits(codes: np.ndarray, bits: int) -> bytes:
    """Pack non-negative integers ``< 2**bits`` into ``ceil(len(codes) * bits / 8)`` bytes.

    Example:
        >>> pack_bits(np.array([1, 0, 3, 2]), 2).hex()
        'b1'
    """
    codes = np.asarray(codes, dtype=np.uint64).ravel()
    if not 1 <= bits <= 32:
        raise ValueError(f"bits must be in 1..32, got {bits}")
    if codes.size and int(codes.max()) >= 2 ** bits:
        raise ValueError(f"a code ({int(codes.max())}) does not fit in {bits} bits")
    planes = ((codes[:, None] >> np.arange(bits, dtype=np.uint64)) & np.uint64(1)).astype(np.uint8)
    return np.packbits(planes.ravel(), bitorder="little").tobytes()


def unpack_bits(buf: bytes, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: ``count`` int64 codes of ``bits`` bits each."""
    needed = math.ceil(count * bits / 8)
    if len(buf) < needed:
        raise ValueError(f"need {needed} bytes for {count} codes of {bits} bits, got {len(buf)}")
    flat = np.unpackbits(np.frombuffer(buf, dtype=np.uint8, count=needed), bitorder="little")
    planes = flat[: count * bits].reshape(count, bits).astype(np.int64)
    return planes @ (np.int64(1) << np.arange(bits, dtype=np.int64))


def index_bits(numel: int) -> int:
    """Bits needed to store a position in ``range(numel)``."""
    return max(1, math.ceil(math.log2(max(numel, 2))))


def encode_mask(mask: np.ndarray) -> tuple[str, bytes]:
    """``("bitmap", bytes)`` or ``("indices", bytes)``, whichever is smaller, for a flat bool mask."""
    mask = np.asarray(mask, dtype=bool).ravel()
    bitmap = np.packbits(mask, bitorder="little").tobytes()
    positions = np.flatnonzero(mask)
    if math.ceil(positions.size * index_bits(mask.size) / 8) < len(bitmap):
        return "indices", pack_bits(positions, index_bits(mask.size))
    return "bitmap", bitmap


def decode_mask(layout: str, buf: bytes, numel: int, n_kept: int) -> np.ndarray:
    """Inverse of :func:`encode_mask`."""
    if layout == "bitmap":
        return np.unpackbits(np.frombuffer(buf, dtype=np.uint8), bitorder="little")[:numel].astype(bool)
    if layout == "indices":
        mask = np.zeros(numel, dtype=bool)
        mask[unpack_bits(buf, index_bits(numel), n_kept)] = True
        return mask
    raise ValueError(f"unknown mask layout {layout!r}")
