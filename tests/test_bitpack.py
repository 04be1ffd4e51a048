"""Tests of trainers.bitpack: fixed-width code packing and the three sparse-mask layouts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainers.bitpack import (
    decode_gaps,
    decode_mask,
    encode_gaps,
    encode_mask,
    index_bits,
    pack_bits,
    rice_parameter,
    unpack_bits,
)

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


def _bytes_of(bits: str) -> bytes:
    """A string of stream bits ("0"/"1", stream bit 0 first) as bytes, LSB first, zero-padded."""
    bits += "0" * (-len(bits) % 8)
    return bytes(int(bits[i:i + 8][::-1], 2) for i in range(0, len(bits), 8))


def _reference_gaps(mask: np.ndarray) -> bytes:
    """The ``gaps`` blob written from docs/artifact-format.md section 4.1 with plain Python loops: every k
    from 0 to 40 tried, the shortest blob kept (the smallest k on ties)."""
    gaps, previous = [], -1
    for position, kept in enumerate(mask.ravel().tolist()):
        if kept:
            gaps.append(position - previous - 1)
            previous = position

    def blob(k: int) -> bytes:
        remainders = "".join(format(g % 2**k, f"0{k}b")[::-1] for g in gaps) if k else ""
        unary = "".join("0" * (g // 2**k) + "1" for g in gaps)
        return bytes([k]) + _bytes_of(remainders) + _bytes_of(unary)

    return min((blob(k) for k in range(41)), key=len)          # min keeps the first of equal lengths


def _random_mask(numel: int, density: float, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(numel) < density


def _clustered_mask(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """Whole rows and columns pruned (dead units, dead inputs), 20 % kept inside the rest, a dense block."""
    rng = np.random.default_rng(seed)
    live_rows, live_cols = rng.random(rows) < 0.6, rng.random(cols) < 0.7
    mask = (rng.random((rows, cols)) < 0.2) & live_rows[:, None] & live_cols[None]
    mask[: rows // 10, : cols // 4] = True
    return mask.ravel()


def _entropy_bytes(numel: int, density: float) -> float:
    p = density
    return numel * -(p * math.log2(p) + (1 - p) * math.log2(1 - p)) / 8


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


@pytest.mark.parametrize("density", [0.0, 0.001, 0.01, 0.05, 0.1, 0.2, 0.4, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("numel", [1, 13, 300, 19_200])
def test_mask_layout_is_the_smallest_of_three_and_round_trips(density: float, numel: int) -> None:
    mask = _random_mask(numel, density, seed=numel)
    bitmap_len, indices_len = _sizes(mask)
    gaps_len = len(encode_gaps(mask))
    layout, buf = encode_mask(mask)
    assert len(buf) == min(bitmap_len, indices_len, gaps_len) <= min(bitmap_len, indices_len)
    # on equal lengths the older layout: files stay as they were unless gaps is strictly smaller
    assert layout == ("bitmap" if bitmap_len <= min(indices_len, gaps_len)
                      else "indices" if indices_len <= gaps_len else "gaps")
    out = decode_mask(layout, buf, numel, int(mask.sum()))
    assert out.dtype == bool
    np.testing.assert_array_equal(out, mask)


def test_sparse_masks_of_real_sizes_pick_gaps_and_dense_ones_the_bitmap() -> None:
    for density in (0.05, 0.1, 0.15, 0.3):
        assert encode_mask(_random_mask(120 * 64, density))[0] == "gaps", density
    assert encode_mask(_random_mask(120 * 64, 0.45))[0] == "bitmap"


def test_mask_accepts_multidimensional_input_as_flat() -> None:
    mask = np.eye(8, dtype=bool)
    layout, buf = encode_mask(mask)
    np.testing.assert_array_equal(decode_mask(layout, buf, 64, 8), mask.ravel())


def test_unknown_mask_layout_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown mask layout"):
        decode_mask("rle", b"", 4, 0)


# ---------------------------------------------------------------- the gaps layout (Golomb-Rice coded runs)


def test_gaps_bytes_of_the_documented_example() -> None:
    # docs/artifact-format.md 4.1: kept 5, 12, 17, 25 of 70 -> gaps 5, 6, 4, 7; k = 2 (3 bytes; k = 1 or 3: 4)
    # remainders 1, 2, 0, 3 at 2 bits: 10 01 00 11 -> 0b11001001
    # quotients 1, 1, 1, 1 in unary: 01 01 01 01 -> 0b10101010
    mask = np.zeros(70, dtype=bool)
    mask[[5, 12, 17, 25]] = True
    assert encode_gaps(mask) == bytes([2, 0b11001001, 0b10101010])
    assert encode_mask(mask) == ("gaps", bytes([2, 0xC9, 0xAA]))         # bitmap 9 bytes, indices 4
    np.testing.assert_array_equal(decode_gaps(bytes([2, 0xC9, 0xAA]), 70, 4), mask)


def test_gaps_with_k_0_is_the_bitmap_up_to_the_last_kept_position() -> None:
    # gaps 2, 1, 0, 5: 3 bytes at k = 0, 1 and 2, so k = 0 (smallest on ties); the unary stream of gaps at
    # k = 0 is the mask itself: 0010 1100 | 0001 -> 0x34, 0x08
    mask = np.array([0, 0, 1, 0, 1, 1, 0, 0, 0, 0, 0, 1], dtype=bool)
    assert encode_gaps(mask) == bytes([0, 0x34, 0x08])
    assert encode_mask(mask)[0] == "bitmap"                              # 2 bytes: the k byte does not pay


@pytest.mark.parametrize("seed", range(40))
def test_gaps_bytes_match_a_loop_written_from_the_spec(seed: int) -> None:
    rng = np.random.default_rng(seed)
    numel = int(rng.integers(1, 400))
    mask = rng.random(numel) < rng.choice([0.0, 0.02, 0.1, 0.3, 0.6, 1.0])
    if seed % 4 == 0:                                             # a long pruned run: large quotients
        mask[: numel // 2] = False
    assert encode_gaps(mask) == _reference_gaps(mask)


@pytest.mark.parametrize("density, k", [(0.01, 6), (0.05, 4), (0.1, 3), (0.15, 2), (0.25, 1), (0.5, 0)])
def test_rice_parameter_of_a_random_mask_is_the_geometric_optimum(density: float, k: int) -> None:
    phi = (1 + math.sqrt(5)) / 2
    assert max(0, 1 + math.floor(math.log2(math.log(phi - 1) / math.log(1 - density)))) == k
    mask = _random_mask(200_000, density)
    assert rice_parameter(np.diff(np.flatnonzero(mask), prepend=-1) - 1) == k
    assert encode_gaps(mask)[0] == k


@pytest.mark.parametrize("density", [0.01, 0.05, 0.1, 0.15, 0.3])
def test_gaps_come_within_3_percent_of_the_mask_entropy(density: float) -> None:
    mask = _random_mask(1_300_000, density)
    entropy = _entropy_bytes(mask.size, mask.mean())
    assert entropy <= len(encode_gaps(mask)) <= 1.03 * entropy
    if density == 0.15:                                          # the brief's 35-40 %: 0.61 bits per position
        assert len(encode_gaps(mask)) < 0.62 * mask.size / 8


def test_gaps_of_an_empty_mask_is_the_k_byte_and_the_writer_stores_no_bytes() -> None:
    for numel in (0, 1, 1000):
        mask = np.zeros(numel, dtype=bool)
        assert encode_gaps(mask) == b"\x00"
        np.testing.assert_array_equal(decode_gaps(b"\x00", numel, 0), mask)
    assert encode_mask(np.zeros(1000, dtype=bool)) == ("indices", b"")
    assert encode_mask(np.zeros(0, dtype=bool)) == ("bitmap", b"")


@pytest.mark.parametrize("numel", [1, 7, 8, 9, 1000])
def test_gaps_of_a_full_mask_is_k_0_and_all_ones_and_the_writer_stores_the_bitmap(numel: int) -> None:
    mask = np.ones(numel, dtype=bool)
    blob = encode_gaps(mask)
    assert blob == b"\x00" + np.packbits(mask, bitorder="little").tobytes()
    np.testing.assert_array_equal(decode_gaps(blob, numel, numel), mask)
    layout, buf = encode_mask(mask)
    assert layout == "bitmap" and len(buf) == math.ceil(numel / 8)


@pytest.mark.parametrize("mask", [
    np.array([True]), np.array([False]), np.array([False, True]), np.array([True, False]),
    _random_mask(5000, 0.01), _random_mask(5000, 0.15), _random_mask(5000, 0.5), _random_mask(5000, 0.99),
    _clustered_mask(300, 64), _clustered_mask(40, 120, seed=1),
], ids=["1-kept", "1-pruned", "last-kept", "first-kept", "0.01", "0.15", "0.5", "0.99", "clustered-300x64",
        "clustered-40x120"])
def test_gaps_round_trip_exactly(mask: np.ndarray) -> None:
    n_kept = int(mask.sum())
    np.testing.assert_array_equal(decode_gaps(encode_gaps(mask), mask.size, n_kept), mask)
    layout, buf = encode_mask(mask)
    assert len(buf) <= min(_sizes(mask))
    np.testing.assert_array_equal(decode_mask(layout, buf, mask.size, n_kept), mask)


def test_clustered_mask_uses_gaps_at_about_half_the_bitmap() -> None:
    mask = _clustered_mask(300, 64)                              # 10 % kept, in rows, columns and a block
    layout, buf = encode_mask(mask)
    assert layout == "gaps" and len(buf) < 0.5 * math.ceil(mask.size / 8)
    assert len(buf) < 1.05 * _entropy_bytes(mask.size, mask.mean())   # a run-length code: no worse than 5 %


@pytest.mark.parametrize("density", [0.0, 0.001, 0.1, 0.15, 0.5, 0.99, 1.0])
def test_large_masks_round_trip_through_every_layout(density: float) -> None:
    mask = _random_mask(1_300_000, density)
    n_kept = int(mask.sum())
    np.testing.assert_array_equal(decode_gaps(encode_gaps(mask), mask.size, n_kept), mask)
    layout, buf = encode_mask(mask)
    assert len(buf) <= min(_sizes(mask))
    np.testing.assert_array_equal(decode_mask(layout, buf, mask.size, n_kept), mask)


def test_a_20000_by_64_table_mask_at_10_percent_is_stored_as_gaps() -> None:
    # speed (7 ms encode, 5 ms decode for this mask on one core) is a benchmark figure, not a test
    mask = _random_mask(20_000 * 64, 0.1)                    # ~128k kept
    layout, buf = encode_mask(mask)
    assert layout == "gaps" and len(buf) < 0.5 * mask.size / 8
    np.testing.assert_array_equal(decode_mask(layout, buf, mask.size, int(mask.sum())), mask)


@pytest.mark.parametrize("blob, numel, n_kept, problem", [
    (b"", 10, 0, "at least its 1-byte"),
    (bytes([33]), 10, 0, "out of range"),
    (bytes([0, 0b00000101]), 10, 3, "2 quotients for 3"),            # two one bits for three positions
    (bytes([0, 0b10000001]), 5, 2, "outside 5 positions"),           # second position is 7
    (bytes([9, 0xFF]), 1000, 2, "need 3 bytes"),                     # remainders cut short (k = 9, 2 codes)
])
def test_corrupt_gaps_blob_is_rejected(blob: bytes, numel: int, n_kept: int, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        decode_gaps(blob, numel, n_kept)
