"""The fine-tune's dense fake quantizers and their helpers compute exactly what the reference computations
do: ``fake(w, mask)`` is bit-for-bit ``decode(encode(w, mask))`` through the straight-through estimator (the
base class's :meth:`Quantizer.fake`), the quantiles are those of torch's sorted rows, the masked
parametrization is ``Q(w * mask) * mask`` in value and gradient, and the pruning masks are those of a stable
sort."""

from __future__ import annotations

import math
import zlib

import pytest
import torch

from trainers.compress import quantize
from trainers.compress._pipeline import _MaskedQuantized
from trainers.compress.prune import _keep_top
from trainers.compress.quantize import Binary, FixedPoint, Quantizer, Ternary, Uniform, _channel_quantiles


def _bits(t: torch.Tensor) -> torch.Tensor:
    """The float32 values as their bit patterns (so -0.0 differs from +0.0)."""
    return t.detach().contiguous().view(torch.int32)


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.equal(_bits(a), _bits(b))


def _weights(shape: tuple[int, ...], seed: int, mask_kind: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Random weights (with a few exact ties and zeros) and a mask: none, all kept, random with one fully
    pruned channel and one channel keeping a single weight."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g)
    w.view(-1)[::7] = torch.round(w.view(-1)[::7] * 4) / 4                       # ties and exact zeros
    if mask_kind == "none":
        return w, None
    if mask_kind == "all":
        return w, torch.ones(shape, dtype=torch.bool)
    mask = torch.rand(shape, generator=g) > 0.4
    mask[0] = False
    if shape[0] > 2:
        mask[1] = False
        mask[1].view(-1)[0] = True
    return w * mask, mask


QUANTIZERS = {
    "uniform4": lambda sb, gran: Uniform(4, side_bits=sb, granularity=gran),
    "uniform3_clip97_scale": lambda sb, gran: Uniform(3, 1.1, 0.97, side_bits=sb, granularity=gran),
    "uniform8_clip60": lambda sb, gran: Uniform(8, clip=0.6, side_bits=sb, granularity=gran),
    "binary": lambda sb, gran: Binary(side_bits=sb, granularity=gran),
    "ternary": lambda sb, gran: Ternary(0.7, side_bits=sb, granularity=gran),
    "ternary_wide": lambda sb, gran: Ternary(1.3, side_bits=sb, granularity=gran),
    "fixed_point_nearest": lambda sb, gran: FixedPoint(6, "nearest", seed=3, side_bits=sb),
    "fixed_point_floor": lambda sb, gran: FixedPoint(4, "floor", seed=3, side_bits=sb),
    "fixed_point_stochastic": lambda sb, gran: FixedPoint(5, "stochastic", seed=3, side_bits=sb),
}


@pytest.mark.parametrize("mask_kind", ["none", "all", "random"])
@pytest.mark.parametrize("shape", [(30, 20), (8, 3, 3, 3), (1, 50), (40, 1)])
@pytest.mark.parametrize("granularity", ["channel", "tensor"])
@pytest.mark.parametrize("side_bits", [16, 32])
@pytest.mark.parametrize("name", list(QUANTIZERS))
def test_dense_fake_is_bit_identical_to_decode_of_encode(name, side_bits, granularity, shape, mask_kind) -> None:
    """Every scheme's dense fake gives the bits of the generic ``decode(encode(w))`` path, for 2-D and conv
    weights, fully pruned and single-weight channels, both granularities and side precisions; stochastic
    rounding draws the same numbers from the same generator, and leaves it in the same state."""
    w, mask = _weights(shape, seed=zlib.crc32(f"{name}{shape}{mask_kind}".encode()), mask_kind=mask_kind)
    fast, reference = QUANTIZERS[name](side_bits, granularity), QUANTIZERS[name](side_bits, granularity)
    for _ in range(2):                                             # the second call: generators moved on alike
        assert _same_bits(fast.fake(w, mask), Quantizer.fake(reference, w, mask))
    if isinstance(fast, FixedPoint):
        assert torch.equal(torch.rand(3, generator=fast.generator), torch.rand(3, generator=reference.generator))


@pytest.mark.parametrize("name", list(QUANTIZERS))
def test_dense_fake_is_zero_at_pruned_positions_and_passes_the_gradient_straight_through(name) -> None:
    w, mask = _weights((12, 9), seed=1, mask_kind="random")
    x = w.clone().requires_grad_()
    out = QUANTIZERS[name](16, "channel").fake(x, mask)
    assert _same_bits(out[~mask], torch.zeros(int((~mask).sum())))                   # +0, not -0
    upstream = torch.randn(12, 9)
    out.backward(upstream)
    assert torch.equal(x.grad, upstream)


@pytest.mark.parametrize("mask_kind", ["none", "random"])
@pytest.mark.parametrize("name", [*QUANTIZERS, "float32", "uniform4_lsq"])
def test_masked_parametrization_equals_q_of_masked_times_mask_in_value_and_gradient(name, mask_kind) -> None:
    """``_MaskedQuantized`` skips the outer ``* mask`` (and, with nothing pruned, both multiplies): the same
    bits as the textbook ``Q(w * mask) * mask`` and the same gradient, also for a learned step."""
    def make():
        if name == "float32":
            return quantize.Float32()
        if name == "uniform4_lsq":
            return Uniform(4, learn_step=True, side_bits=16)
        return QUANTIZERS[name](16, "channel")

    g = torch.Generator().manual_seed(5)
    w0 = torch.randn(10, 8, generator=g)
    mask = torch.ones(10, 8, dtype=torch.bool) if mask_kind == "none" else torch.rand(10, 8, generator=g) > 0.5
    upstream = torch.randn(10, 8, generator=g)
    fast_q, textbook_q = make(), make()
    for q in (fast_q, textbook_q):
        q.prepare(w0 * mask, mask)
    w_fast, w_textbook = w0.clone().requires_grad_(), w0.clone().requires_grad_()
    fast = _MaskedQuantized(mask, fast_q)(w_fast)
    m = mask.float()
    textbook = textbook_q.fake(w_textbook * m, mask) * m
    assert _same_bits(fast, textbook)
    fast.backward(upstream)
    textbook.backward(upstream)
    assert _same_bits(w_fast.grad, w_textbook.grad)
    if name == "uniform4_lsq":
        assert _same_bits(fast_q.step.grad, textbook_q.step.grad)


def test_set_mask_updates_the_mask_and_what_is_derived_from_it() -> None:
    p = _MaskedQuantized(torch.ones(4, 5, dtype=torch.bool), Uniform(4))
    assert p.dense
    new = torch.rand(4, 5, generator=torch.Generator().manual_seed(0)) > 0.5
    p.set_mask(new)
    assert not p.dense and torch.equal(p.keep, new) and torch.equal(p.mask, new.float())
    w = torch.randn(4, 5)
    assert _same_bits(p(w), Uniform(4).fake(w * new, new))
    p.set_mask(torch.ones(4, 5, dtype=torch.bool))
    assert p.dense and "keep" not in p.state_dict()                 # the bool copy is not saved


@pytest.mark.parametrize("quantizer", [Uniform(3, clip=0.9), Uniform(4), Binary(), FixedPoint(5)],
                         ids=["uniform-clip", "uniform", "binary", "fixed_point"])
def test_a_mask_changed_in_place_is_never_served_what_its_old_state_derived(quantizer) -> None:
    """What the fakes derive from a mask (counts, float form, bounds) is reused between steps; each gradual
    pruning step changes the mask in place (``set_mask``), and the next forward pass must see the new mask."""
    g = torch.Generator().manual_seed(5)
    w = torch.randn(6, 40, generator=g)
    p = _MaskedQuantized(torch.rand(6, 40, generator=g) > 0.3, quantizer)
    for _ in range(4):
        p(w)                                                                # derive, then reuse, from this state
        new = p.keep & (torch.rand(6, 40, generator=g) > 0.3)
        p.set_mask(new)
        assert _same_bits(p(w), quantizer.fake(w * new.clone(), new.clone()))   # a new tensor: nothing reused
        assert _same_bits(p(w), Quantizer.fake(quantizer, w * new, new))         # the definition, decode(encode)


def test_compression_leaves_nothing_derived_from_its_masks_behind() -> None:
    """What the fakes cached from the fine-tune's masks is released when compression ends (an embedding
    table's masks would otherwise outlive the trial)."""
    from trainers.compress import compress
    from trainers.models import MLP

    g = torch.Generator().manual_seed(3)
    X, y = torch.randn(64, 8, generator=g), torch.randint(0, 3, (64,), generator=g)
    cfg = {"finetune_epochs": 1, "prune": {"ratio": 0.5, "schedule": "gradual"},
           "quant": {"scheme": "uniform", "bits": 3, "clip": 0.9}}
    train_cfg = {"lr": 0.01, "epochs": 1, "batch_size": 16, "optimizer": "adam", "weight_decay": 0.0}
    quantize.release_mask_cache()
    compress(MLP(8, [16], 3), X, y, cfg, train_cfg, seed=0, device="cpu")
    assert not quantize._MASK_DERIVED


# ---------------------------------------------------------------- quantiles: the values of torch's sorted rows


def _quantiles_by_torch_sort(w: torch.Tensor, mask: torch.Tensor | None, q: float) -> torch.Tensor:
    """Channel by channel: the kept values sorted by torch, interpolated as ``_channel_quantiles`` does."""
    out = []
    for c in range(w.shape[0]):
        kept = w[c].flatten() if mask is None else w[c].flatten()[mask[c].flatten()]
        if not len(kept):
            out.append(torch.tensor(0.0))
            continue
        ordered = torch.sort(kept).values
        pos = q * float(len(kept) - 1)
        lo, hi = math.floor(pos), math.ceil(pos)
        out.append(ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo) if 0.0 < q < 1.0
                   else ordered[0 if q == 0.0 else -1])
    return torch.stack(out)


@pytest.mark.parametrize("qs", [(0.01, 0.99), (0.03, 0.97), (0.2, 0.8), (0.4, 0.6), (0.0, 0.5, 0.9), (0.1, 1.0)])
@pytest.mark.parametrize("masked", [False, True])
def test_quantiles_are_those_of_torchs_sorted_rows_bit_for_bit(qs, masked) -> None:
    """The vectorized quantiles (numpy's row sort) read exactly the values torch's sort gives each channel, at
    both ends, with ties, exact zeros of either sign, channels keeping 0, 1 or 2 weights."""
    g = torch.Generator().manual_seed(11)
    w = torch.round(torch.randn(40, 64, generator=g) * 3) / 3                          # many ties
    w[5] = -0.0
    w[6, ::2] = 0.0
    w[7, ::2] = -0.0
    mask = torch.rand(40, 64, generator=g) > 0.3 if masked else None
    if masked:
        mask[0], mask[1], mask[2] = False, False, False
        mask[1, 7] = True
        mask[2, 3:5] = True
    got = _channel_quantiles(w, mask, qs)
    for q, values in zip(qs, got):
        assert _same_bits(values, _quantiles_by_torch_sort(w, mask, q))
    kept = torch.ones_like(w, dtype=torch.bool) if mask is None else mask
    for q, values in zip(qs, got):                                  # and they are torch.quantile's values
        for c in range(3, 40, 9):
            expected = torch.quantile(w[c][kept[c]], q)
            assert values[c].item() == pytest.approx(expected.item(), abs=1e-5)
    if masked:
        assert all(t[0].item() == 0.0 for t in got)                 # a fully pruned channel


def test_unpruned_quantiles_with_python_ranks_equal_the_masked_per_channel_ranks() -> None:
    """``mask=None`` computes the ranks as Python numbers, the masked path as per-channel tensors: the same
    values (here the masked path sees the same rows padded with a pruned column)."""
    w = torch.randn(30, 17, generator=torch.Generator().manual_seed(2))
    padded = torch.cat([w, torch.full((30, 1), 9.0)], dim=1)
    keep = torch.cat([torch.ones(30, 17, dtype=torch.bool), torch.zeros(30, 1, dtype=torch.bool)], dim=1)
    for qs in [(0.01, 0.99), (0.3, 0.7), (0.0, 1.0)]:
        assert all(_same_bits(a, b) for a, b in
                   zip(_channel_quantiles(w, None, qs), _channel_quantiles(padded, keep, qs)))


# ---------------------------------------------------------------- pruning masks without a sort


def _keep_top_by_sort(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The definition: the first ``k`` positions of a stable descending sort."""
    keep = torch.zeros(scores.numel(), dtype=torch.bool)
    keep[torch.sort(scores.flatten(), descending=True, stable=True).indices[:max(k, 0)]] = True
    return keep.reshape(scores.shape)


@pytest.mark.parametrize("seed", range(5))
def test_keep_top_equals_the_stable_sort_with_ties_broken_by_position(seed) -> None:
    g = torch.Generator().manual_seed(seed)
    scores = torch.round(torch.rand(23, 11, generator=g) * 6) / 6                      # many ties
    scores[3] = -1.0                                                                   # already pruned
    scores[4, :5] = 0.0
    scores[4, 5:] = -0.0
    n = scores.numel()
    for k in [0, 1, 2, n // 3, n // 2, n - 12, n - 1, n, n + 3]:
        got = _keep_top(scores, k)
        assert torch.equal(got, _keep_top_by_sort(scores, k)) and int(got.sum()) == min(max(k, 0), n)
