"""Tests of trainers.bitpack: fixed-width code packing and the two sparse-mask layouts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainers.bitpack import decode_mask, encode_mask, index_bits, pack_bits, unpack_bits

# ---------------------------------------------------------------- pack_bits / unpack_bits


@pytest.mark.parametrize("bits", range(1, 17))
@pytest.mark.parametrize("n", [0, 1, 7, 8, 9, 333])
def test_pack_unpack_round_trip_and_exact_byte_length(bits: int, n: int) -> None:
    rng = np.random.default_rng(bits * 1000 + n)
    codes = rng.integers(0, 2**bits, size=n)
    if n >= 2:                                   # the extremes of the range always appear
        codes[0], codes[-1] = 0, 2**bits - 1
    buf = pack_bits(codes, bits)
    assert isinstance(buf, bytes)
    assert len(buf) == math.ceil(n * bits / 8)
    out = unpack_bits(buf, bits, n)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, codes)


def test_empty_codes_pack_to_no_bytes() -> None:
    assert pack_bits(np.array([], dtype=np.int64), 5) == b""
    assert unpack_bits(b"", 5, 0).shape == (0,)


def test_bit_order_is_little_endian_lsb_first() -> None:
    # codes 1, 0, 3, 2 at 2 bits -> bit stream 10 00 11 01 (LSB of each code first) -> byte 0b10110001
    assert pack_bits(np.array([1, 0, 3, 2]), 2) == bytes([0xB1])
    assert pack_bits(np.array([0x1234]), 16) == b"\x34\x12"
    # a 3-bit code straddling a byte boundary: codes 0,0 fill bits 0-5, code 7 uses bits 6, 7 and 8
    assert pack_bits(np.array([0, 0, 7]), 3) == bytes([0b11000000, 0b00000001])


def test_unpack_ignores_padding_bits_and_extra_bytes() -> None:
    buf = pack_bits(np.array([5, 6, 7]), 3) + b"\xff\xff"
    np.testing.assert_array_equal(unpack_bits(buf, 3, 3), [5, 6, 7])


@pytest.mark.parametrize("bits", [1, 2, 7, 8, 16])
def test_code_that_does_not_fit_is_rejected(bits: int) -> None:
    with pytest.raises(ValueError, match="does not fit"):
        pack_bits(np.array([0, 2**bits]), bits)


def test_negative_code_is_rejected() -> None:
    with pytest.raises((ValueError, OverflowError)):
        pack_bits(np.array([3, -1]), 4)


@pytest.mark.parametrize("bits", [0, 33])
def test_bit_width_outside_1_to_32_is_rejected(bits: int) -> None:
    with pytest.raises(ValueError, match="bits must be"):
        pack_bits(np.array([0]), bits)


def test_unpack_from_too_short_buffer_is_rejected() -> None:
    buf = pack_bits(np.arange(10), 4)                          # 5 bytes
    with pytest.raises(ValueError, match="need 6 bytes"):
        unpack_bits(buf, 4, 12)


# ---------------------------------------------------------------- masks


def _sizes(mask: np.ndarray) -> tuple[int, int]:
    """(bitmap bytes, index-list bytes) of a flat mask."""
    return math.ceil(mask.size / 8), math.ceil(int(mask.sum()) * index_bits(mask.size) / 8)


def test_index_bits_is_enough_for_every_position() -> None:
    assert index_bits(1) == 1 and index_bits(2) == 1 and index_bits(3) == 2
    assert index_bits(256) == 8 and index_bits(257) == 9
    for n in (2, 5, 100, 4096, 50_000):
        assert 2 ** index_bits(n) >= n > 2 ** (index_bits(n) - 1)


def test_dense_ish_mask_uses_bitmap() -> None:
    mask = np.random.default_rng(0).random(1000) < 0.5
    layout, buf = encode_mask(mask)
    assert layout == "bitmap"
    assert len(buf) == math.ceil(mask.size / 8)
    np.testing.assert_array_equal(decode_mask(layout, buf, mask.size, int(mask.sum())), mask)


def test_very_sparse_mask_uses_index_list() -> None:
    mask = np.zeros(10_000, dtype=bool)
    mask[[3, 4_000, 9_999]] = True
    layout, buf = encode_mask(mask)
    assert layout == "indices"
    assert len(buf) == math.ceil(3 * index_bits(10_000) / 8)          # 3 positions x 14 bits
    np.testing.assert_array_equal(decode_mask(layout, buf, mask.size, 3), mask)


@pytest.mark.parametrize("density", [0.0, 0.001, 0.01, 0.05, 0.1, 0.2, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("numel", [1, 13, 300, 19_200])
def test_mask_layout_is_the_smaller_one_and_round_trips(density: float, numel: int) -> None:
    mask = np.random.default_rng(numel).random(numel) < density
    bitmap_len, indices_len = _sizes(mask)
    layout, buf = encode_mask(mask)
    assert len(buf) == min(bitmap_len, indices_len)
    assert layout == ("indices" if indices_len < bitmap_len else "bitmap")
    out = decode_mask(layout, buf, numel, int(mask.sum()))
    assert out.dtype == bool
    np.testing.assert_array_equal(out, mask)


def test_mask_accepts_multidimensional_input_as_flat() -> None:
    mask = np.eye(8, dtype=bool)
    layout, buf = encode_mask(mask)
    np.testing.assert_array_equal(decode_mask(layout, buf, 64, 8), mask.ravel())


def test_unknown_mask_layout_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown mask layout"):
        decode_mask("rle", b"", 4, 0)
