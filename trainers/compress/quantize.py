"""Weight quantizers: fixed-point (Qm.n), per-channel uniform (step + lower/upper bounds), binary, ternary.

A quantizer turns a weight tensor (and its pruning mask) into an :class:`Encoded` tensor: integer codes
for the kept weights plus per-channel float32 parameters. ``Encoded.decode()`` is the *only* way weights
are rebuilt, both in memory after compression and when an artifact is loaded, so the loaded model is
bit-exact with the model that was scored.

Side information (uniform offset and step, binary/ternary alpha) is computed in float32 and then, with
``side_bits=16`` (``compress.side_bits``), rounded to float16 by :func:`to_side_precision` when every value
of the tensor survives that, both in :meth:`Quantizer.fake` and in :meth:`Quantizer.encode`: the codes are
chosen against the rounded values, so the fine-tune sees, and the file stores, exactly the same grid (the
artifact then writes those tensors as float16, halving them). For a small model this side information, not
the codes, dominates the file.

During fine-tune a quantizer is in the loop through :meth:`Quantizer.fake`: the forward pass sees the
decoded weights, the backward pass the straight-through estimator (STE) ``d w_q / d w = 1``. Its definition is
``decode(encode(w))`` (the base class computes exactly that); every scheme overrides it with a dense computation
of the same float32 values per weight, without building an :class:`Encoded` (the fine-tune runs it on every
weight in every step, an embedding table included), and shares its side information maths with ``encode``.

Maths (per output channel ``c`` = dim 0, over the kept weights only):

* fixed_point, ``b`` bits: ``m = ceil(log2(max|w|))`` integer bits and ``n = b - 1 - m`` fractional bits
  (one sign bit), ``q = clamp(R(w * 2^n), -2^(b-1), 2^(b-1) - 1) * 2^-n`` for the whole tensor, with
  rounding ``R`` nearest, floor or stochastic (``floor(x + u)``, ``u ~ U[0, 1)``, unbiased).
* uniform, ``b`` bits: bounds ``lo, hi`` = quantiles ``(1 - clip, clip)`` of the channel,
  ``step = (hi - lo) / (2^b - 1) * step_scale``, a grid of ``2^b`` levels centred on ``(lo + hi) / 2``:
  ``q = offset + clamp(round((w - offset) / step), 0, 2^b - 1) * step``. With ``learn_step`` the step is a
  learned parameter during fine-tune (LSQ: the gradient reaches the step through the STE rounding).
  ``step >= 1e-8``; with ``side_bits=16``, ``>= 2^-14`` in a channel whose kept weights are all equal.
* binary: ``q = alpha_c * sign(w)``, ``alpha_c = mean |w|`` (1 bit per weight).
* ternary: ``delta_c = threshold * mean |w|``; ``|w| < delta_c`` becomes 0 (joins the sparsity mask),
  the rest ``alpha_c * sign(w)`` with ``alpha_c = mean of |w| >= delta_c`` (1 bit per kept weight).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from trainers.errors import InputError
from trainers.options import (
    BITS_OFF,
    CLIP_RANGE,
    GRANULARITIES,
    QUANT_SCHEMES,
    ROUNDINGS,
    SIDE_BITS,
    THRESHOLD_MAX,
)

__all__ = [
    "Encoded", "Quantizer", "Float32", "FixedPoint", "Uniform", "Binary", "Ternary", "make_quantizer",
    "QUANTIZERS", "SCHEMES", "release_mask_cache", "to_side_precision",
]

#: the largest finite float16 and its smallest normal (below it float16 loses precision, then underflows to 0)
FP16_MAX = 65504.0
FP16_MIN_NORMAL = 2.0**-14


def _check_side_bits(side_bits: int) -> None:
    if side_bits not in SIDE_BITS:
        raise InputError("compress.side_bits", f"must be one of {'|'.join(map(str, SIDE_BITS))}, got {side_bits!r}")


def to_side_precision(t: torch.Tensor, bits: int) -> torch.Tensor:
    """``t`` (float32) at the precision side information is kept in: ``bits=32`` returns ``t``; ``bits=16``
    returns ``t`` rounded to float16 (as float32 values) if **every** value survives that - finite, and every
    nonzero ``|x|`` in float16's normal range ``[2^-14, 65504]`` (relative error <= 2^-11, sign kept, no
    underflow to 0) - else ``t`` unchanged. One decision per tensor, so the artifact can store the tensor as
    float16 losslessly or not at all.

    Example:
        >>> to_side_precision(torch.tensor([0.1, 0.0, -3.0]), 16).tolist()
        [0.0999755859375, 0.0, -3.0]
        >>> to_side_precision(torch.tensor([0.1, 1e5]), 16).tolist()   # 1e5 > 65504: all stay float32
        [0.10000000149011612, 100000.0]
    """
    _check_side_bits(bits)
    if bits == 32:
        return t
    return t.to(torch.float16).to(torch.float32) if _fits_float16(t.detach().cpu().numpy()) else t


def _fits_float16(values: np.ndarray) -> bool:
    """Whether every value of the float32 ``values`` survives float16 (:func:`to_side_precision`'s test).
    Elementwise (no gather of the nonzero values: this runs in every fine-tune step), in numpy: a handful of
    operations on a few hundred values, which cost a third of torch's per-operation overhead (comparisons are
    exact: both bounds are float32 numbers); NaN fails every test."""
    size = np.abs(values)
    return bool(((size == 0) | ((size >= FP16_MIN_NORMAL) & (size <= FP16_MAX))).all())


@dataclass
class Encoded:
    """A compressed weight tensor: what the artifact stores, and the one decoder of it.

    Attributes:
        scheme: fp32 | fixed_point | uniform | binary | ternary.
        shape: dense shape of the weight.
        bits: bits per stored code (32 for fp32 values).
        mask: flat bool tensor of kept positions, or None when every position is kept.
        codes: int64 codes (float32 values for fp32) of the kept positions, row-major order.
        scale: float32 per channel (uniform step, binary/ternary alpha), or None; float16 values with
            ``side_bits=16`` when they fit (:func:`to_side_precision`).
        offset: float32 per channel (uniform grid start), or None; likewise.
        frac_bits: fixed_point fractional bits ``n``.
    """

    scheme: str
    shape: tuple[int, ...]
    bits: int
    mask: torch.Tensor | None
    codes: torch.Tensor
    scale: torch.Tensor | None = None
    offset: torch.Tensor | None = None
    frac_bits: int = 0

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def n_kept(self) -> int:
        return int(self.codes.numel())

    def channels_of_kept(self) -> torch.Tensor:
        """Output-channel index of every kept position."""
        per_channel = self.numel // self.shape[0]
        if self.mask is None:
            return torch.arange(self.numel) // per_channel
        return torch.nonzero(self.mask).flatten() // per_channel

    def values(self) -> torch.Tensor:
        """float32 values of the kept positions."""
        c = self.codes
        if self.scheme == "fp32":
            return c.to(torch.float32)
        if self.scheme == "fixed_point":
            return (c - 2 ** (self.bits - 1)).to(torch.float32) * (2.0 ** -self.frac_bits)
        ch = self.channels_of_kept()
        if self.scheme == "uniform":
            return self.offset[ch] + c.to(torch.float32) * self.scale[ch]
        if self.scheme in ("binary", "ternary"):
            return self.scale[ch] * (2 * c - 1).to(torch.float32)
        raise ValueError(f"unknown scheme {self.scheme!r}")

    def decode(self) -> torch.Tensor:
        """The dense float32 weight tensor (zeros where pruned)."""
        vals = self.values()
        if self.mask is None:
            return vals.reshape(self.shape)
        dense = torch.zeros(self.numel, dtype=torch.float32)
        dense[self.mask] = vals
        return dense.reshape(self.shape)


def _flat_mask(w: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    return torch.ones(w.numel(), dtype=torch.bool) if mask is None else mask.detach().flatten().bool().cpu()


def _dense_mask(w: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor | None:
    """``mask`` as a CPU bool tensor of ``w``'s shape, for the dense fakes; None (every position kept) stays
    None. An all-true mask is not turned into None: that would cost a pass over it in every step, and the
    masked computations give the same values."""
    return None if mask is None else mask.detach().reshape(w.shape).bool().cpu()


def _channel_shape(w: torch.Tensor) -> tuple[int, ...]:
    """The view of a (channels,) tensor that broadcasts it over ``w``'s output channels (dim 0)."""
    return (-1,) + (1,) * (w.dim() - 1)


def _straight_through(w: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """``w + (q - w).detach()`` (the value of ``q`` up to float rounding, the gradient of ``w``), with ``q - w``
    computed in place in ``q`` (a temporary of the caller's). The same float operations as the textbook form,
    so the same bits: where ``q`` is a zero of either sign the result is +0 for every finite ``w``."""
    return w + q.sub_(w.detach())


def _as_float(keep: torch.Tensor) -> torch.Tensor:
    """A bool mask as float32 1.0 / 0.0, read through its bytes (a bool tensor holds 0 / 1 bytes): on CPU the
    bool -> float conversion, also implicit in ``x * keep``, is ~10x slower than uint8 -> float, and the fakes
    multiply by the mask in every fine-tune step. ``x * _as_float(keep)`` has the bits of ``x * keep``."""
    return keep.view(torch.uint8).to(torch.float32)


#: what the fakes derive from a pruning mask alone (its float form, kept counts, the +-inf bounds), by the mask's
#: storage, layout and in-place version: the fine-tune's masks change only through ``set_mask`` (a ``copy_``,
#: which bumps the version), so every step between two mask updates reuses what the first one derived (~50 us of
#: the ~190 us a masked 100x300 layer's uniform fake took). Each entry holds its mask, so no other tensor can
#: take that storage while the entry lives. The values are shared: callers never modify them.
_MASK_DERIVED: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
_MASK_DERIVED_MAX = 32


def _from_mask(keep: torch.Tensor, kind: str, derive) -> torch.Tensor:
    """``derive(keep)``, computed once per state of the bool mask ``keep`` (see :data:`_MASK_DERIVED`)."""
    key = (keep.data_ptr(), keep._version, tuple(keep.shape), keep.stride(), keep.device, kind)
    hit = _MASK_DERIVED.pop(key, None)
    if hit is not None:
        _MASK_DERIVED[key] = hit              # most recently used last: one-off masks (ternary's) leave first
        return hit[1]
    value = derive(keep)
    if len(_MASK_DERIVED) >= _MASK_DERIVED_MAX:
        _MASK_DERIVED.pop(next(iter(_MASK_DERIVED)))
    _MASK_DERIVED[key] = (keep, value)
    return value


def release_mask_cache() -> None:
    """Drop what :data:`_MASK_DERIVED` holds (the compression pipeline calls it when a fine-tune ends, so an
    embedding table's masks do not outlive their trial)."""
    _MASK_DERIVED.clear()


def _mask_float(keep: torch.Tensor) -> torch.Tensor:
    """:func:`_as_float` of a pruning mask, shared between steps (read-only: multiply by it, never into it)."""
    return _from_mask(keep, "float", _as_float)


def _rows(w: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | int]:
    """(values, keep-mask, kept count) per output channel, as (channels, per-channel) tensors; ``mask=None``
    (every position kept) gives keep None and the count as the int every channel has."""
    rows = w.reshape(w.shape[0], -1).to(torch.float32)
    if mask is None:
        return rows, None, rows.shape[1]
    keep = mask.reshape(w.shape[0], -1).bool()
    return rows, keep, _from_mask(keep, "count", lambda k: k.sum(1))


def _channel_mean_abs(w: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean |w| of the kept weights of each output channel (0 for a fully pruned channel). ``mask=None``: the
    values of an all-true mask (the sum of ``|w| * 1`` is the sum of ``|w|``; dividing by the int count divides
    by the same float32)."""
    rows, keep, count = _rows(w, mask)
    if keep is None:
        return rows.abs().sum(1) / max(count, 1)
    return torch.where(count > 0, (rows.abs() * _mask_float(keep)).sum(1) / count.clamp(min=1), 0.0)


def _per_granularity(stat, w: torch.Tensor, mask: torch.Tensor | None, granularity: str):
    """``stat(w, mask)`` per output channel, or (``granularity="tensor"``) the whole tensor's value of it
    repeated for every channel: ``stat`` returns one (channels,) tensor or a list of them."""
    if granularity == "channel":
        return stat(w, mask)
    out = stat(w.reshape(1, -1), None if mask is None else mask.reshape(1, -1))
    expand = lambda t: t.expand(w.shape[0]).contiguous()  # noqa: E731
    return [expand(t) for t in out] if isinstance(out, list) else expand(out)


def _kept_or_inf(rows: torch.Tensor, keep: torch.Tensor, sign: float) -> torch.Tensor:
    """``torch.where(keep, rows, sign * inf)`` (for rows that hold no NaN where pruned), computed as
    ``maximum(rows, bound)`` (``sign = 1``) or ``minimum(rows, bound)`` (``sign = -1``) with ``bound`` =
    ``-sign * inf`` where kept and ``sign * inf`` where pruned: the same values, but vectorized (``where`` with an
    irregular pruning mask is a branchy kernel, ~20x the cost of an add, and this runs on the whole table of an
    embedding in every fine-tune step)."""
    bound = _from_mask(keep, f"bound{sign:+g}",                           # -sign*inf kept, sign*inf pruned
                       lambda k: _as_float(k).mul_(-2).add_(1).mul_(sign * math.inf))
    return torch.maximum(rows, bound) if sign > 0 else torch.minimum(rows, bound)


def _channel_quantiles(w: torch.Tensor, mask: torch.Tensor | None, qs: tuple[float, ...]) -> list[torch.Tensor]:
    """The ``q`` quantiles (linear interpolation, as ``torch.quantile``) of each channel's kept weights, for
    every ``q`` in ``qs`` (``mask=None``: all kept, the values of an all-true mask); ``q = 0`` / ``1`` give min /
    max. Vectorized (embedding tables have thousands of rows). This runs in every forward pass of the
    fine-tune, so it is the hot path of compression:

    * min and max need no sort at all, and with nothing pruned no masking pass either;
    * a quantile at ascending position ``pos = q * (count - 1)`` interpolates the kept values of ranks
      ``floor(pos)`` and ``ceil(pos)`` of the rows sorted once for all ``qs``, pruned positions at +inf after
      the kept values. The sort is numpy's: on this CPU build torch's row sort, ``topk`` and ``kthvalue`` cost
      3-25x more (measured: a 100x300 layer's quantiles at clip 0.99 took 191 us, 84 us this way). Only values
      are read, never positions, so the order of equal values does not matter, and neither does the sign of a
      zero: ``low + (high - low) * frac`` is +0 wherever the two kept values are zeros.

    With nothing pruned every channel has the same ranks: Python numbers, computed with the same float64
    operations as the per-channel ranks of the masked path (and ``frac`` is cast to float32 by the multiply
    as by ``astype(float32)``), so the values are the same.
    """
    rows, keep, count = _rows(w, mask)
    full = keep is None
    ordered: list[np.ndarray] = []              # the sorted rows, once a quantile needs them

    def sorted_rows() -> np.ndarray:
        if not ordered:
            values = rows.detach().numpy()
            ordered.append(np.sort(values if full else np.where(keep.numpy(), values, np.float32(np.inf)), axis=1))
        return ordered[0]

    out: list[torch.Tensor] = []
    for q in qs:
        if q == 0.0:
            out.append(rows.amin(1) if full else torch.where(count > 0, _kept_or_inf(rows, keep, 1.0).amin(1), 0.0))
        elif q == 1.0:
            out.append(rows.amax(1) if full else torch.where(count > 0, _kept_or_inf(rows, keep, -1.0).amax(1), 0.0))
        elif full:
            pos = q * float(max(count - 1, 0))
            lo, hi = math.floor(pos), math.ceil(pos)
            low, high = (torch.from_numpy(sorted_rows()[:, r].copy()) for r in (lo, hi))
            out.append(low + (high - low) * (pos - lo))
        else:
            n = count.numpy()
            pos = q * np.maximum(n - 1, 0).astype(np.float64)
            lo, hi = np.floor(pos).astype(np.int64), np.ceil(pos).astype(np.int64)
            low, high = (np.take_along_axis(sorted_rows(), r[:, None], 1)[:, 0] for r in (lo, hi))
            with np.errstate(invalid="ignore"):       # inf - inf in a fully pruned channel, replaced by 0 below
                value = low + (high - low) * (pos - lo).astype(np.float32)
            out.append(torch.from_numpy(np.where(n > 0, value, np.float32(0.0)).astype(np.float32)))
    return out


def _finish(scheme: str, w: torch.Tensor, bits: int, mask: torch.Tensor, codes: torch.Tensor, **kw) -> Encoded:
    dense = bool(mask.all())
    return Encoded(scheme, tuple(w.shape), bits, None if dense else mask, codes, **kw)


class Quantizer(nn.Module):
    """Base class: subclasses implement :meth:`encode`; :meth:`fake` is the STE view for training.

    ``side_bits`` (``compress.side_bits``, 16 or 32): the precision of the per-channel side information the
    quantizer produces (:func:`to_side_precision`); 32, the default, keeps float32. ``granularity``
    (``compress.quant.granularity``): ``channel`` derives the side information of each output channel from its
    own weights, ``tensor`` one value from the whole tensor (stored per channel all the same).
    """

    scheme: str = ""
    bits: int = 32

    def __init__(self, side_bits: int = 32, granularity: str = "channel") -> None:
        super().__init__()
        _check_side_bits(side_bits)
        if granularity not in GRANULARITIES:
            raise InputError("compress.quant.granularity",
                             f"must be one of {'|'.join(GRANULARITIES)}, got {granularity!r}")
        self.side_bits, self.granularity = side_bits, granularity

    @classmethod
    def from_config(cls, quant_cfg: Mapping[str, Any], seed: int = 0, side_bits: int = 32) -> Quantizer:
        """The quantizer for the ``compress.quant.*`` keys it reads (``granularity`` by default)."""
        return cls(side_bits=side_bits, granularity=quant_cfg.get("granularity", "channel"))

    def encode(self, w: torch.Tensor, mask: torch.Tensor | None = None) -> Encoded:  # pragma: no cover
        raise NotImplementedError

    def prepare(self, w: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Create learned state (if any) before the fine-tune's optimizer is built."""

    def fake(self, w: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Decoded weights in the forward pass, identity gradient in the backward pass (STE). ``mask``: the
        kept positions (None: all); ``w`` is 0 at the pruned ones (the fine-tune passes ``w * mask``), and so is
        the result (+0 or -0: a zero either way), so no second multiply by the mask is needed.

        This is the definition, ``decode(encode(w))``; subclasses compute the same values densely (the tests
        pin each one to this)."""
        with torch.no_grad():
            q = self.encode(w.detach().cpu(), mask).decode().to(w.device)
        return _straight_through(w, q)


class Float32(Quantizer):
    """No quantization: kept weights stored as float32 (the reference and pruning-only models)."""

    scheme, bits = "fp32", 32

    def encode(self, w, mask=None):
        m = _flat_mask(w, mask)
        return _finish("fp32", w, 32, m, w.detach().flatten()[m].to(torch.float32).clone())

    def fake(self, w, mask=None):
        return w


def _check_bits(scheme: str, bits: int) -> None:
    low, high = QUANT_SCHEMES[scheme].bits
    if not low <= bits <= high:
        raise InputError("compress.quant.bits", f"{scheme} needs {low}..{high} bits, got {bits}")


class FixedPoint(Quantizer):
    """Signed Qm.n fixed point with a power-of-two step ``2^-n`` shared by the whole tensor."""

    scheme = "fixed_point"

    def __init__(self, bits: int, rounding: str = "nearest", seed: int = 0, side_bits: int = 32) -> None:
        super().__init__(side_bits)                        # no side information: the step is 2^-n
        _check_bits(self.scheme, bits)
        if rounding not in ROUNDINGS:
            raise InputError("compress.quant.rounding", f"must be one of {'|'.join(ROUNDINGS)}, got {rounding!r}")
        self.bits, self.rounding = bits, rounding
        self.generator = torch.Generator().manual_seed(seed)

    @classmethod
    def from_config(cls, quant_cfg, seed=0, side_bits=32):
        return cls(int(quant_cfg["bits"]), quant_cfg.get("rounding", "nearest"), seed, side_bits)

    def frac_bits(self, w: torch.Tensor, keep: torch.Tensor | None = None) -> int:
        """``n = b - 1 - ceil(log2(max |w|))`` over the kept positions (``keep`` None: all of ``w``)."""
        size = w.abs() if keep is None else w.abs() * _mask_float(keep)
        peak = float(size.max()) if size.numel() else 0.0
        int_bits = math.ceil(math.log2(peak)) if peak > 0 else 0
        return self.bits - 1 - int_bits

    def signed_codes(self, x: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """``clamp(R(x), -2^(b-1), 2^(b-1) - 1)`` as float32 (integers, exact in float32 at <= 16 bits) for
        ``x = w * 2^n``. Stochastic rounding draws one number per kept position (``keep`` None: every one) in
        row-major order, so a dense ``x`` with pruned positions consumes the generator exactly as its kept
        values alone do (``encode``); the pruned positions get no noise (``fake`` zeroes them)."""
        half = 2 ** (self.bits - 1)
        if self.rounding == "nearest":
            r = torch.round(x)
        elif self.rounding == "floor":
            r = torch.floor(x)
        elif keep is None:
            r = torch.floor(x + torch.rand(x.shape, generator=self.generator))
        else:
            noise = torch.rand(int(keep.sum()), generator=self.generator)
            r = torch.floor(x + torch.zeros_like(x).masked_scatter_(keep, noise))
        return torch.clamp(r, -half, half - 1)

    def encode(self, w, mask=None):
        m = _flat_mask(w, mask)
        kept = w.detach().flatten()[m].to(torch.float32)
        n = self.frac_bits(kept)
        signed = self.signed_codes(kept * 2.0 ** n)
        return _finish("fixed_point", w, self.bits, m, (signed + 2 ** (self.bits - 1)).to(torch.int64), frac_bits=n)

    def fake(self, w, mask=None):
        # decode(encode(w)) densely: decode's ``(code - 2^(b-1)) * 2^-n`` is ``signed * 2^-n``
        with torch.no_grad():
            keep = _dense_mask(w, mask)
            wd = w.detach().cpu().to(torch.float32)
            n = self.frac_bits(wd, keep)
            q = self.signed_codes(wd * 2.0 ** n, keep).mul_(2.0 ** -n)
            if keep is not None:
                q.mul_(_mask_float(keep))                    # pruned to (signed) 0: q is finite
        return _straight_through(w, q.to(w.device))


class Uniform(Quantizer):
    """Per-channel uniform quantization with a step size and lower/upper (clip) bounds."""

    scheme = "uniform"

    def __init__(self, bits: int, step_scale: float = 1.0, clip: float = 1.0, learn_step: bool = False,
                 side_bits: int = 32, granularity: str = "channel") -> None:
        super().__init__(side_bits, granularity)
        _check_bits(self.scheme, bits)
        if not CLIP_RANGE[0] < clip <= CLIP_RANGE[1]:
            raise InputError("compress.quant.clip", f"must be in ({CLIP_RANGE[0]:g}, {CLIP_RANGE[1]:g}], got {clip}")
        if step_scale <= 0:
            raise InputError("compress.quant.step_scale", f"must be > 0, got {step_scale}")
        self.bits, self.step_scale, self.clip, self.learn_step = bits, step_scale, clip, learn_step
        self.step: nn.Parameter | None = None      # LSQ: created on the first fake() call

    @classmethod
    def from_config(cls, quant_cfg, seed=0, side_bits=32):
        return cls(int(quant_cfg["bits"]), float(quant_cfg.get("step_scale", 1.0)),
                   float(quant_cfg.get("clip", 1.0)), bool(quant_cfg.get("learn_step", False)), side_bits,
                   quant_cfg.get("granularity", "channel"))

    def grid(self, w: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel (offset, step) of the 2^b-level grid, at ``side_bits`` precision: offset and step are
        rounded together (both float16 or both float32), so the grid never moves by one and not the other.
        ``mask`` None: every position kept."""
        levels = 2 ** self.bits - 1
        qs = (1 - self.clip, self.clip) if self.clip < 1.0 else (0.0, 1.0)
        lo, hi = (t.numpy() for t in
                  _per_granularity(lambda v, m: _channel_quantiles(v, m, qs), w, mask, self.granularity))
        # per-channel vectors of a few hundred values: numpy's float32 arithmetic (the same IEEE operations,
        # every Python number as the float32 torch would make of it) at a third of torch's per-call cost
        if self.step is not None:                          # the learned step replaces the derived one
            learned = np.abs(self.step.detach().cpu().to(torch.float32).numpy())
            step = np.broadcast_to(np.maximum(learned, np.float32(1e-8)), lo.shape).copy()
        else:
            step = (hi - lo) / np.float32(levels)
            if self.step_scale != 1.0:
                step = step * np.float32(self.step_scale)
            step = np.maximum(step, np.float32(1e-8))
        if self.side_bits < 32:
            # a channel with one distinct kept value (or none) takes any step (error <= step / 2): use one that
            # float16 holds, so a single such channel does not keep the whole layer's grid in float32
            step = np.where(hi > lo, step, np.maximum(step, np.float32(FP16_MIN_NORMAL)))
        offset = (lo + hi) / np.float32(2) - step * np.float32(levels / 2)
        if self.side_bits < 32 and _fits_float16(np.stack([offset, step])):   # rounded together, or neither
            offset, step = offset.astype(np.float16).astype(np.float32), step.astype(np.float16).astype(np.float32)
        return torch.from_numpy(np.ascontiguousarray(offset)), torch.from_numpy(np.ascontiguousarray(step))

    def encode(self, w, mask=None):
        m = _flat_mask(w, mask)
        wd = w.detach().cpu().to(torch.float32)
        offset, step = self.grid(wd, m.reshape(w.shape))
        enc = _finish("uniform", w, self.bits, m, torch.zeros(0, dtype=torch.int64), scale=step, offset=offset)
        ch = enc.channels_of_kept()
        codes = torch.round((wd.flatten()[m] - offset[ch]) / step[ch])
        enc.codes = torch.clamp(codes, 0, 2 ** self.bits - 1).to(torch.int64)
        return enc

    def prepare(self, w, mask=None):
        if self.learn_step and self.step is None:
            _, step0 = self.grid(w.detach().cpu().float(), _flat_mask(w, mask).reshape(w.shape))
            # one learned step per channel, or one for the tensor (its grid then stays shared)
            self.step = nn.Parameter((step0 if self.granularity == "channel" else step0[:1]).to(w.device))

    def fake(self, w, mask=None):
        keep = _dense_mask(w, mask)
        if not self.learn_step:
            # decode(encode(w)) computed densely: the same float32 operations per weight, so the values are
            # identical (+, -, *, / and round are exact-rounded per element, so a per-channel value broadcast over
            # its channel gives the bits that decode's per-weight gather gives), computed in place (one
            # table-sized result instead of a temporary per operation)
            with torch.no_grad():
                wd = w.detach().cpu().to(torch.float32)
                offset, step = (t.view(_channel_shape(w)) for t in self.grid(wd, keep))
                q = (wd - offset).div_(step).round_().clamp_(0, 2 ** self.bits - 1)     # codes
                q = q.mul_(step).add_(offset)                                         # offset + codes * step
                if keep is not None:
                    # pruned positions to zero: a multiply rather than a (slow, branchy) masked fill; q is finite,
                    # so this gives 0 (-0 for a negative q, which the straight-through sum turns into +0)
                    q.mul_(_mask_float(keep))
            return _straight_through(w, q.to(w.device))
        self.prepare(w, mask)
        offset, grid_step = self.grid(w.detach().cpu(), keep)
        shape = _channel_shape(w)
        step = self.step.abs().clamp(min=1e-8)
        step = step + (grid_step.to(w.device) - step).detach()   # the grid's (rounded) value, the step's gradient
        step, offset = step.view(shape), offset.to(w.device).view(shape)
        x = torch.clamp((w - offset) / step, 0, 2 ** self.bits - 1)
        x = x + (torch.round(x) - x).detach()              # STE rounding; the step still gets a gradient
        q = offset + x * step
        # pruned positions to 0, and no gradient from them to the step or to w
        return q if keep is None else q * _mask_float(keep).to(w.device)


def _signed_alpha(w: torch.Tensor, alpha: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    """Binary/ternary ``decode`` densely: ``+alpha_c`` where ``w >= 0`` (code 1), ``-alpha_c`` below (code 0),
    0 where ``keep`` is False. Decode multiplies alpha by ``+-1.0``, which is exact: the same bits as ``+-alpha``
    (-0 where alpha is 0 and w < 0, and a zero's sign never survives the straight-through sum)."""
    # 2 * [w >= 0] - 1 is exactly +-1.0: the bits of where(w >= 0, alpha, -alpha) at a fifth of its cost
    q = _as_float(w >= 0).mul_(2).sub_(1).mul_(alpha.view(_channel_shape(w)))
    return q if keep is None else q.mul_(_as_float(keep))       # ternary's keep is new every step


class Binary(Quantizer):
    """``alpha_c * sign(w)``: one bit per weight plus one float per output channel."""

    scheme, bits = "binary", 1

    def alpha(self, w: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
        """Per-channel ``alpha`` (mean |w| of the kept weights) at ``side_bits`` precision; ``keep`` None: all."""
        return to_side_precision(_per_granularity(_channel_mean_abs, w, keep, self.granularity), self.side_bits)

    def encode(self, w, mask=None):
        m = _flat_mask(w, mask)
        wd = w.detach().cpu().to(torch.float32)
        alpha = self.alpha(wd, m.reshape(w.shape))
        return _finish("binary", w, 1, m, (wd.flatten()[m] >= 0).to(torch.int64), scale=alpha)

    def fake(self, w, mask=None):
        with torch.no_grad():
            keep = _dense_mask(w, mask)
            wd = w.detach().cpu().to(torch.float32)
            q = _signed_alpha(wd, self.alpha(wd, keep), keep)
        return _straight_through(w, q.to(w.device))


class Ternary(Quantizer):
    """``{-alpha_c, 0, +alpha_c}`` with ``|w| < threshold * mean|w|`` set to zero (stored in the mask)."""

    scheme, bits = "ternary", 1

    def __init__(self, threshold: float = 0.7, side_bits: int = 32, granularity: str = "channel") -> None:
        super().__init__(side_bits, granularity)
        if not 0 < threshold <= THRESHOLD_MAX:
            raise InputError("compress.quant.threshold", f"must be in (0, {THRESHOLD_MAX:g}], got {threshold}")
        self.threshold = threshold

    @classmethod
    def from_config(cls, quant_cfg, seed=0, side_bits=32):
        return cls(float(quant_cfg.get("threshold", 0.7)), side_bits, quant_cfg.get("granularity", "channel"))

    def support(self, w: torch.Tensor, keep: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(the nonzero positions: kept and ``|w| >= delta_c``, per-channel ``alpha`` at ``side_bits``
        precision) of a float32 ``w`` with ``keep`` (None: all kept) of its shape. ``delta`` is not stored."""
        delta = self.threshold * _per_granularity(_channel_mean_abs, w, keep, self.granularity)
        big = w.abs() >= delta.view(_channel_shape(w))     # a comparison: exact however delta is broadcast
        nonzero = big if keep is None else keep & big
        return nonzero, to_side_precision(_per_granularity(_channel_mean_abs, w, nonzero, self.granularity),
                                          self.side_bits)

    def encode(self, w, mask=None):
        wd = w.detach().cpu().to(torch.float32)
        m, alpha = self.support(wd, _flat_mask(w, mask).reshape(w.shape))
        m = m.flatten()
        return _finish("ternary", w, 1, m, (wd.flatten()[m] >= 0).to(torch.int64), scale=alpha)

    def fake(self, w, mask=None):
        with torch.no_grad():
            wd = w.detach().cpu().to(torch.float32)
            nonzero, alpha = self.support(wd, _dense_mask(w, mask))
            q = _signed_alpha(wd, alpha, nonzero)
        return _straight_through(w, q.to(w.device))


#: ``compress.quant.scheme`` -> its quantizer class (``none`` is :class:`Float32`); the names, bit ranges and
#: limits are declared in :mod:`trainers.options`
QUANTIZERS: dict[str, type[Quantizer]] = {
    "none": Float32, "fixed_point": FixedPoint, "uniform": Uniform, "binary": Binary, "ternary": Ternary,
}
assert set(QUANTIZERS) == set(QUANT_SCHEMES), "trainers/options.py and QUANTIZERS list other schemes"
SCHEMES = tuple(QUANT_SCHEMES)


def make_quantizer(quant_cfg: Mapping[str, Any], seed: int = 0, side_bits: int = 32) -> Quantizer:
    """The quantizer for ``compress.quant.*`` (``scheme=none`` or ``bits=32`` gives :class:`Float32`), with its
    side information at ``side_bits`` (``compress.side_bits``)."""
    scheme = quant_cfg.get("scheme", "none")
    if scheme not in QUANTIZERS:
        raise InputError("compress.quant.scheme", f"must be one of {'|'.join(SCHEMES)}, got {scheme!r}")
    bits = int(quant_cfg.get("bits", BITS_OFF))
    if QUANT_SCHEMES[scheme].bits is not None and bits == BITS_OFF:
        return Float32(side_bits)
    return QUANTIZERS[scheme].from_config({**quant_cfg, "bits": bits}, seed, side_bits)
