"""Behavioural unit tests of the compression techniques: schedule, rounding, quantizer maths, neuron
pruning, and what each scheme does to the file size."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from trainers import artifact
from trainers.compress import (
    Binary,
    FixedPoint,
    Ternary,
    Uniform,
    compress,
    make_quantizer,
    prune_neurons,
    unit_importance,
    zhu_gupta_sparsity,
)
from trainers.data import Preprocessor, load_dataset
from trainers.errors import InputError
from trainers.fit import seed_everything, train
from trainers.models import CNN, MLP, Pipeline, Preprocess

TRAIN_CFG = {"optimizer": "adam", "lr": 0.003, "weight_decay": 0.0, "epochs": 3, "batch_size": 64, "threads": 1}


def _randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- Zhu & Gupta schedule


def test_zhu_gupta_starts_at_initial_and_ends_at_final() -> None:
    assert zhu_gupta_sparsity(0, 100, 0.9) == 0.0
    assert zhu_gupta_sparsity(10, 100, 0.9, initial=0.2, begin=10, end=90) == pytest.approx(0.2)
    assert zhu_gupta_sparsity(5, 100, 0.9, initial=0.2, begin=10, end=90) == pytest.approx(0.2)   # before t0
    assert zhu_gupta_sparsity(90, 100, 0.9, initial=0.2, begin=10, end=90) == pytest.approx(0.9)
    assert zhu_gupta_sparsity(100, 100, 0.9, initial=0.2, begin=10, end=90) == pytest.approx(0.9)  # after end
    assert zhu_gupta_sparsity(100, 100, 0.9) == pytest.approx(0.9)


def test_zhu_gupta_midpoint_is_final_plus_an_eighth_of_the_gap() -> None:
    initial, final = 0.1, 0.8
    assert zhu_gupta_sparsity(50, 100, final, initial) == pytest.approx(final + (initial - final) * 0.5**3)
    assert zhu_gupta_sparsity(30, 100, final, initial, begin=10, end=50) == pytest.approx(
        final + (initial - final) * 0.5**3)


def test_zhu_gupta_is_monotone_and_front_loaded() -> None:
    values = [zhu_gupta_sparsity(t, 200, 0.95, end=150) for t in range(201)]
    assert all(b >= a for a, b in zip(values, values[1:]))
    steps = np.diff(values[:151])
    assert steps[0] > steps[75] > steps[-1] >= 0                   # prunes fast first, slowly near the end


@pytest.mark.parametrize("scope", ["per_layer", "global"])
def test_gradual_pruning_reaches_the_exact_ratio_even_when_the_finetune_is_shorter_than_the_schedule(
        scope: str) -> None:
    torch.manual_seed(0)
    net, X, y = MLP(10, [12], 3), torch.randn(40, 10), torch.randint(0, 3, (40,))
    one_step = {**TRAIN_CFG, "batch_size": 64}                        # 40 rows, 1 epoch -> a single step
    cfg = {"finetune_epochs": 1, "prune": {"ratio": 0.75, "schedule": "gradual", "scope": scope}}
    report = compress(net, X, y, cfg, one_step, seed=0, device="cpu")
    numels = [120, 36]
    kept = [report.encodings[f"layers.{i}.weight"].n_kept for i in range(2)]
    if scope == "per_layer":
        assert kept == [n - math.floor(0.75 * n) for n in numels]
    else:
        assert sum(kept) == sum(numels) - math.floor(0.75 * sum(numels))
    assert report.sparsity == 1 - sum(kept) / sum(numels)


# ---------------------------------------------------------------- fixed-point rounding


def _fixed_point_values(value: float, rounding: str, n: int = 100_001, seed: int = 0) -> torch.Tensor:
    """Decoded values of ``n - 1`` copies of ``value`` quantized to 8-bit fixed point with 7 fractional bits
    (a 1.0 in the tensor fixes ``m = 0`` integer bits)."""
    w = torch.full((n,), value)
    w[0] = 1.0
    enc = FixedPoint(8, rounding, seed=seed).encode(w)
    assert enc.frac_bits == 7
    return enc.decode()[1:]


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_stochastic_rounding_is_unbiased(sign: float) -> None:
    lsb = 2.0**-7
    value = sign * 0.3 * lsb
    decoded = _fixed_point_values(value, "stochastic")
    assert set(torch.unique(decoded).tolist()) <= {math.floor(value / lsb) * lsb, math.ceil(value / lsb) * lsb}
    sigma = math.sqrt(0.3 * 0.7 / len(decoded)) * lsb              # std of the mean of Bernoulli(0.3) * lsb
    assert abs(float(decoded.double().mean()) - value) < 5 * sigma


def test_nearest_rounding_is_biased_on_a_constant_below_half_a_step() -> None:
    lsb = 2.0**-7
    decoded = _fixed_point_values(0.3 * lsb, "nearest")
    assert torch.all(decoded == 0)                                 # mean 0, not 0.3 * lsb
    assert torch.all(_fixed_point_values(0.7 * lsb, "nearest") == lsb)


def test_floor_rounding_rounds_down() -> None:
    lsb = 2.0**-7
    assert torch.all(_fixed_point_values(0.7 * lsb, "floor") == 0)
    assert torch.all(_fixed_point_values(-0.3 * lsb, "floor") == -lsb)
    assert torch.all(_fixed_point_values(2.99 * lsb, "floor") == 2 * lsb)


def test_fixed_point_step_is_a_power_of_two_from_the_peak_and_saturates() -> None:
    w = torch.tensor([3.0, -3.0, 0.126, 0.5])                    # peak 3 -> m = 2 integer bits, n = 8-1-2 = 5
    enc = FixedPoint(8, "nearest").encode(w)
    assert enc.frac_bits == 5
    decoded = enc.decode()
    assert torch.equal(decoded, torch.tensor([3.0, -3.0, 4 / 32, 0.5]))
    big = FixedPoint(4, "nearest").encode(torch.tensor([1.0, -1.0, 0.5]))   # +1.0 needs 2^(b-1) codes: clamps
    assert enc.bits == 8 and big.frac_bits == 3
    assert big.decode().tolist() == [7 / 8, -1.0, 0.5]


# ---------------------------------------------------------------- binary / ternary / uniform maths


def test_binary_is_sign_times_mean_abs_per_channel() -> None:
    w = _randn(6, 20)
    decoded = Binary().encode(w).decode()
    expected = torch.sign(w) * w.abs().mean(dim=1, keepdim=True)
    torch.testing.assert_close(decoded, expected, rtol=1e-6, atol=0)
    for c in range(6):
        assert len(torch.unique(decoded[c])) == 2


def test_ternary_threshold_rule_by_hand() -> None:
    w = torch.tensor([[0.1, -0.5, 1.0, -2.0],                     # mean|w| 0.9 -> delta 0.63 -> alpha 1.5
                      [0.3, 0.3, -0.3, 0.01]])                    # mean|w| 0.2275 -> delta 0.159 -> alpha 0.3
    decoded = Ternary(threshold=0.7).encode(w).decode()
    torch.testing.assert_close(decoded, torch.tensor([[0.0, 0.0, 1.5, -1.5], [0.3, 0.3, -0.3, 0.0]]))


@pytest.mark.parametrize("threshold", [0.3, 0.7, 1.2])
def test_ternary_zeroes_small_weights_and_uses_mean_of_kept_magnitudes(threshold: float) -> None:
    w = _randn(8, 50, seed=1)
    prune = torch.rand(8, 50, generator=torch.Generator().manual_seed(2)) > 0.2   # also honours a prune mask
    enc = Ternary(threshold).encode(w * prune, prune)
    decoded = enc.decode()
    for c in range(8):
        kept = w[c][prune[c]]
        delta = threshold * kept.abs().mean()
        big = prune[c] & (w[c].abs() >= delta)
        alpha = w[c][big].abs().mean()
        assert torch.all(decoded[c][~big] == 0)                    # exactly zero, stored in the mask
        torch.testing.assert_close(decoded[c][big], alpha * torch.sign(w[c][big]))
    assert enc.n_kept < int(prune.sum())


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_uniform_with_clip_1_covers_min_to_max_with_2_pow_bits_levels(bits: int) -> None:
    levels = 2**bits
    lo = torch.tensor([-1.0, -0.2, 0.5])
    hi = torch.tensor([2.0, 0.1, 0.75])
    grid = lo[:, None] + (hi - lo)[:, None] * torch.linspace(0, 1, levels)[None, :]
    w = torch.cat([grid, lo[:, None] + (hi - lo)[:, None] * torch.rand(3, 40)], dim=1)
    enc = Uniform(bits).encode(w)
    decoded = enc.decode()
    torch.testing.assert_close(enc.scale, (hi - lo) / (levels - 1))
    torch.testing.assert_close(decoded.min(dim=1).values, lo)
    torch.testing.assert_close(decoded.max(dim=1).values, hi)
    for c in range(3):
        assert len(torch.unique(decoded[c])) == levels
        assert torch.all((decoded[c] - w[c]).abs() <= enc.scale[c] / 2 + 1e-6)   # nearest level


def test_uniform_clip_below_1_clamps_outliers_to_the_quantile_bounds() -> None:
    w = _randn(4, 200, seed=3)
    clip = 0.9
    decoded = Uniform(4, clip=clip).encode(w).decode()
    for c in range(4):
        lo, hi = torch.quantile(w[c], 1 - clip), torch.quantile(w[c], clip)
        assert decoded[c].min() >= lo - 1e-5 and decoded[c].max() <= hi + 1e-5
        assert decoded[c].max() - decoded[c].min() < w[c].max() - w[c].min()


def test_uniform_step_scale_multiplies_the_derived_step() -> None:
    w = _randn(5, 30, seed=4)
    plain, scaled = Uniform(3).encode(w), Uniform(3, step_scale=1.5).encode(w)
    torch.testing.assert_close(scaled.scale, plain.scale * 1.5)


def test_learn_step_creates_a_parameter_that_receives_a_gradient() -> None:
    w = _randn(6, 10, seed=5).requires_grad_()
    assert list(Uniform(4).parameters()) == []
    q = Uniform(4, learn_step=True)
    q.prepare(w)
    assert isinstance(q.step, nn.Parameter) and q.step.shape == (6,)
    assert any(p is q.step for p in q.parameters())
    loss = (q.fake(w) * _randn(6, 10, seed=6)).sum()
    loss.backward()
    assert q.step.grad is not None and torch.isfinite(q.step.grad).all() and q.step.grad.abs().sum() > 0
    assert w.grad is not None and w.grad.abs().sum() > 0           # STE passes the gradient to the weights


@pytest.fixture(scope="module")
def digits_small() -> tuple[torch.Tensor, torch.Tensor, Preprocess]:
    ds = load_dataset({"name": "digits"})
    X, y = ds.X[:400], ds.y[:400]
    pre = Preprocess.from_state([1, 8, 8], Preprocessor().fit(X).state_dict())
    with torch.no_grad():
        return pre(torch.from_numpy(X)), torch.from_numpy(y), pre


def test_learned_step_is_trained_during_finetune_and_stored(digits_small) -> None:
    Xt, yt, _ = digits_small

    def stored_vs_derived(learn: bool) -> float:
        seed_everything(0)
        net = MLP(64, [16], 10)
        cfg = {"finetune_epochs": 2, "quant": {"scheme": "uniform", "bits": 3, "learn_step": learn}}
        report = compress(net, Xt, yt, cfg, TRAIN_CFG, seed=0, device="cpu")
        enc = report.encodings["layers.0.weight"]
        raw = enc.decode()                                          # grid spans the channel's decoded range
        derived = (raw.max(dim=1).values - raw.min(dim=1).values) / 7
        return float((enc.scale - derived).abs().max() / enc.scale.abs().max())

    assert stored_vs_derived(False) < 1e-5
    assert stored_vs_derived(True) > 1e-3


# ---------------------------------------------------------------- neuron pruning


def test_neuron_pruning_shrinks_mlp_hidden_layers_to_ceil_of_kept_share() -> None:
    torch.manual_seed(0)
    net, X = MLP(12, [30, 10], 4), torch.randn(64, 12)
    kept = prune_neurons(net, X, 0.25)
    assert kept == [math.ceil(0.75 * 30), math.ceil(0.75 * 10)] == [23, 8]
    assert net.spec()["hidden"] == [23, 8]
    assert [layer.weight.shape for layer in net.layers] == [(23, 12), (8, 23), (4, 8)]
    assert net(X).shape == (64, 4)


def test_neuron_pruning_shrinks_cnn_channels_and_first_fc_follows() -> None:
    torch.manual_seed(0)
    net, X = CNN([1, 8, 8], [6, 10], [12], 10), torch.randn(32, 1, 8, 8)
    kept = prune_neurons(net, X, 0.25, "apoz")
    assert kept == [5, 8, 9]
    assert [c.out_channels for c in net.convs] == [5, 8] and net.convs[1].in_channels == 5
    assert net.fcs[0].in_features == 8 * net.map_size == 8 * 16
    assert net.fcs[0].out_features == 9 and net.fcs[1].in_features == 9
    out = net(X)
    assert out.shape == (32, 10) and torch.isfinite(out).all()


def test_neuron_pruning_never_removes_inputs_or_classes_and_keeps_one_unit() -> None:
    torch.manual_seed(0)
    net = MLP(5, [3], 2)
    assert prune_neurons(net, torch.randn(8, 5), 0.9) == [1]
    assert net.layers[0].in_features == 5 and net.layers[-1].out_features == 2


def test_neuron_ratio_out_of_range_is_an_input_error() -> None:
    with pytest.raises(InputError, match=r"^compress\.neurons\.ratio: "):
        prune_neurons(MLP(4, [4], 2), torch.randn(4, 4), 0.95)


@pytest.mark.parametrize("criterion", ["mean_abs", "apoz"])
def test_neuron_pruning_removes_a_dead_unit_first_and_outputs_do_not_change(criterion: str) -> None:
    torch.manual_seed(0)
    net, X = MLP(8, [4], 3), torch.randn(200, 8)
    with torch.no_grad():
        net.layers[0].weight[2] = 0.0
        net.layers[0].bias[2] = -1.0                                 # unit 2 never fires
        net.layers[0].bias[[0, 1, 3]] = 5.0                          # the others always do
    before, original = net(X), copy.deepcopy(net)
    assert int(torch.argmin(unit_importance(net, X, criterion)[0])) == 2
    prune_neurons(net, X, 0.25, criterion)
    assert torch.equal(net.layers[0].weight, original.layers[0].weight[[0, 1, 3]])
    assert torch.equal(net.layers[1].weight, original.layers[1].weight[:, [0, 1, 3]])
    torch.testing.assert_close(net(X), before)


def test_neuron_pruning_keeps_the_units_with_largest_mean_activation() -> None:
    net, X = MLP(3, [4], 2), torch.randn(50, 3)
    with torch.no_grad():
        net.layers[0].weight.zero_()
        net.layers[0].bias.copy_(torch.tensor([2.0, 0.0, 3.0, 1.0]))   # constant activations 2, 0, 3, 1
    prune_neurons(net, X, 0.5, "mean_abs")
    assert net.layers[0].bias.tolist() == [2.0, 3.0]                 # units 0 and 2, in original order


def test_neuron_pruning_removes_a_dead_cnn_channel_first() -> None:
    torch.manual_seed(0)
    net, X = CNN([1, 8, 8], [4, 6], [8], 3), torch.randn(40, 1, 8, 8)
    with torch.no_grad():
        net.convs[0].weight[1] = 0.0
        net.convs[0].bias[1] = -1.0
        net.convs[0].bias[[0, 2, 3]] = 3.0
    before, original = net(X), copy.deepcopy(net)
    importance = unit_importance(net, X)
    assert int(torch.argmin(importance[0])) == 1
    net.keep_units(0, torch.tensor([0, 2, 3]))
    assert torch.equal(net.convs[0].weight, original.convs[0].weight[[0, 2, 3]])
    torch.testing.assert_close(net(X), before)


# ---------------------------------------------------------------- file sizes


@pytest.fixture(scope="module")
def lenet_sizes(digits_small) -> dict[str, int]:
    """Artifact sizes (default lzma codec) of one trained LeNet-300-100 under several schemes."""
    Xt, yt, pre = digits_small
    seed_everything(0)
    net = MLP(64, [300, 100], 10)
    train(net, Xt, yt, {**TRAIN_CFG, "epochs": 2}, seed=0, device="cpu")
    sizes = {}
    for name, quant in {"fp32": {"scheme": "none"}, "uniform8": {"scheme": "uniform", "bits": 8},
                        "binary": {"scheme": "binary"}, "ternary": {"scheme": "ternary"}}.items():
        model = Pipeline(copy.deepcopy(pre), copy.deepcopy(net))
        report = compress(model.net, Xt, yt, {"finetune_epochs": 0, "quant": quant}, TRAIN_CFG, seed=0, device="cpu")
        model.encodings = {f"net.{k}": v for k, v in report.encodings.items()}
        sizes[name] = len(artifact.pack(model))
    return sizes


def test_uniform_8_bit_file_is_about_4x_smaller_than_fp32(lenet_sizes) -> None:
    ratio = lenet_sizes["fp32"] / lenet_sizes["uniform8"]
    assert 3.0 < ratio < 4.5, lenet_sizes


@pytest.mark.parametrize("scheme", ["binary", "ternary"])
def test_binary_and_ternary_files_are_much_smaller_than_uniform_8_bit(lenet_sizes, scheme: str) -> None:
    assert lenet_sizes[scheme] * 3 < lenet_sizes["uniform8"], lenet_sizes


@pytest.mark.parametrize("clip", [1.0, 0.97])
@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("shape", [(30, 20), (8, 3, 3, 3)])
def test_uniform_fast_fake_equals_the_generic_encode_decode_path(shape, bits, clip) -> None:
    """The fine-tune's dense fast path gives exactly the values of ``decode(encode(w))`` (the base class)."""
    from trainers.compress.quantize import Quantizer, Uniform

    torch.manual_seed(bits)
    w = torch.randn(shape)
    mask = torch.rand(shape) > 0.5
    q = Uniform(bits, 1.1, clip)
    for x, m in ((w * mask, mask), (w, None)):
        assert torch.equal(q.fake(x, m), Quantizer.fake(q, x, m))


@pytest.mark.parametrize("qs", [(0.0, 1.0), (0.03, 0.97), (0.0, 0.5, 0.9)])
def test_channel_quantiles_of_an_unpruned_tensor_equal_the_masked_computation(qs) -> None:
    """The no-pruning shortcut (no masking pass over the table, which the fine-tune runs every step) gives
    exactly what the masked computation gives for the same kept values: here the same rows padded with a
    pruned column, so only the masked path can answer."""
    from trainers.compress.quantize import _channel_quantiles

    w = _randn(50, 16, seed=7)
    w[3] = 0.25                                                    # a constant row
    w[4, ::2] = -0.0
    padded = torch.cat([w, torch.full((50, 1), 99.0)], dim=1)
    keep = torch.cat([torch.ones(50, 16, dtype=torch.bool), torch.zeros(50, 1, dtype=torch.bool)], dim=1)
    fast = _channel_quantiles(w, None, qs)                          # None: every position kept
    masked = _channel_quantiles(padded, keep, qs)
    assert all(torch.equal(a, b) for a, b in zip(fast, masked))
    if qs[0] == 0.0:
        assert torch.equal(fast[0], w.amin(1))


@pytest.mark.parametrize("side_bits", [16, 32])
def test_uniform_fake_of_an_unpruned_table_equals_the_masked_and_generic_paths(side_bits) -> None:
    """The fine-tune's in-place fast path on a full mask (an embedding table without pruning) gives exactly
    the generic ``decode(encode(w))`` path and the masked path on the same rows padded with a pruned column,
    and keeps the straight-through gradient."""
    from trainers.compress.quantize import Quantizer

    w = (_randn(200, 8, seed=8) * 0.1).requires_grad_()
    full = torch.ones(200, 8, dtype=torch.bool)
    padded = torch.cat([w.detach(), torch.full((200, 1), 5.0)], dim=1)
    keep = torch.cat([full, torch.zeros(200, 1, dtype=torch.bool)], dim=1)
    q = Uniform(4, side_bits=side_bits)
    out = q.fake(w, None)
    assert torch.equal(out, Quantizer.fake(q, w, full)) and torch.equal(out, q.fake(w, full))
    assert torch.equal(out, q.fake(padded, keep)[:, :8])
    out.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))


# ---------------------------------------------------------------- side information at 16 bits


def _is_fp16(t: torch.Tensor) -> bool:
    return torch.equal(t.half().float(), t)


def test_to_side_precision_16_rounds_a_tensor_that_fits_float16() -> None:
    from trainers.compress.quantize import to_side_precision

    t = torch.tensor([0.1, -3.0, 0.0, 1234.567, 2.0**-14, -65504.0])
    rounded = to_side_precision(t, 16)
    assert rounded.dtype == torch.float32
    assert torch.equal(rounded, t.half().float()) and not torch.equal(rounded, t)
    assert rounded[1] == -3.0 and rounded[2] == 0.0 and rounded[5] == -65504.0


@pytest.mark.parametrize("bad", [7e4, -1e5, 1e-8, 1e-6, -2.0**-15, math.inf, math.nan],
                         ids=["over", "over_negative", "underflow", "subnormal", "subnormal_negative", "inf", "nan"])
def test_to_side_precision_16_keeps_float32_when_any_value_would_not_survive(bad: float) -> None:
    from trainers.compress.quantize import to_side_precision

    t = torch.tensor([0.1, -0.7, bad])
    out = to_side_precision(t, 16)
    torch.testing.assert_close(out, t, rtol=0, atol=0, equal_nan=True)     # the whole tensor stays float32
    assert not _is_fp16(out[:2])


def test_to_side_precision_32_is_the_identity_and_other_widths_are_refused() -> None:
    from trainers.compress.quantize import to_side_precision

    t = torch.tensor([0.1, 7e4, 1e-8])
    assert to_side_precision(t, 32) is t
    with pytest.raises(InputError, match=r"^compress\.side_bits: must be one of 16\|32, got 8"):
        to_side_precision(t, 8)
    with pytest.raises(InputError, match=r"^compress\.side_bits: "):
        Uniform(4, side_bits=24)


@pytest.mark.parametrize("clip", [1.0, 0.97])
@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("shape", [(30, 20), (8, 3, 3, 3)])
def test_uniform_fast_fake_equals_encode_decode_with_16_bit_side_information(shape, bits, clip) -> None:
    """With ``side_bits=16`` the grid is float16 (one kept weight in a channel included) and the fine-tune's
    fast path still gives exactly ``decode(encode(w))``."""
    from trainers.compress.quantize import Quantizer

    torch.manual_seed(bits)
    w = torch.randn(shape)
    mask = torch.rand(shape) > 0.5
    mask[0] = False
    mask[0].view(-1)[3] = True                                    # channel 0 keeps a single weight: range 0
    q = Uniform(bits, 1.1, clip, side_bits=16)
    for x, m in ((w * mask, mask), (w, None)):
        enc = q.encode(x, m)
        assert _is_fp16(enc.scale) and _is_fp16(enc.offset)
        assert not _is_fp16(Uniform(bits, 1.1, clip).encode(x, m).offset)   # side_bits=32: float32 as before
        assert torch.equal(q.fake(x, m), Quantizer.fake(q, x, m))
    single = w[0].view(-1)[3]                                     # within half a step + float16 rounding
    assert (q.encode(w * mask, mask).decode()[0].view(-1)[3] - single).abs() <= 2.0**-14 + single.abs() * 2.0**-11


def test_learned_step_is_used_at_16_bit_precision_in_fake_and_encode() -> None:
    w = _randn(6, 10, seed=5).requires_grad_()
    q = Uniform(4, learn_step=True, side_bits=16)
    q.prepare(w)
    with torch.no_grad():
        q.step.mul_(1.0001)                                        # a learned step float16 cannot hold
    assert not _is_fp16(q.step.detach())
    enc = q.encode(w)
    assert torch.equal(enc.scale, q.step.detach().half().float()) and _is_fp16(enc.offset)
    out = q.fake(w)
    torch.testing.assert_close(out, enc.decode(), rtol=0, atol=1e-6)
    out.sum().backward()
    assert q.step.grad is not None and q.step.grad.abs().sum() > 0


@pytest.mark.parametrize("quantizer", [Binary, Ternary])
def test_binary_and_ternary_alpha_is_float16_with_16_bit_side_information(quantizer) -> None:
    w = _randn(6, 20, seed=7)
    wide, narrow = quantizer().encode(w), quantizer(side_bits=16).encode(w)
    assert not _is_fp16(wide.scale) and torch.equal(narrow.scale, wide.scale.half().float())
    assert torch.equal(narrow.codes, wide.codes)                  # the signs (and ternary's zeros) are unchanged


def test_compress_rounds_biases_of_quantized_layers_only() -> None:
    """side_bits=16: a quantized layer's bias is float16; a layer kept fp32 (here the first and last) keeps
    its float32 bias, and an uncompressed model is not rounded at all."""
    torch.manual_seed(0)
    X, y = torch.randn(40, 10), torch.randint(0, 3, (40,))
    net = MLP(10, [12, 8], 3)
    before = [layer.bias.detach().clone() for layer in net.layers]
    assert not any(_is_fp16(b) for b in before)
    cfg = {"finetune_epochs": 0, "side_bits": 16,
           "quant": {"scheme": "uniform", "bits": 4, "quantize_first_last": False}}
    compress(net, X, y, cfg, TRAIN_CFG, seed=0, device="cpu")
    after = [layer.bias.detach() for layer in net.layers]
    assert torch.equal(after[0], before[0]) and torch.equal(after[2], before[2])
    assert torch.equal(after[1], before[1].half().float()) and not torch.equal(after[1], before[1])

    plain = MLP(10, [12, 8], 3)
    reference = copy.deepcopy(plain.state_dict())
    compress(plain, X, y, {"finetune_epochs": 0, "side_bits": 16}, TRAIN_CFG, seed=0, device="cpu")
    assert all(torch.equal(t, reference[k]) for k, t in plain.state_dict().items())


# ---------------------------------------------------------------- one grid per tensor (compress.quant.granularity)


@pytest.mark.parametrize("side_bits", [16, 32])
@pytest.mark.parametrize("bits", [2, 4])
@pytest.mark.parametrize("shape", [(30, 20), (8, 3, 3, 3)])
def test_tensor_granularity_shares_one_grid_and_fake_equals_encode_decode(shape, bits, side_bits) -> None:
    from trainers.compress.quantize import Quantizer

    torch.manual_seed(bits)
    w = torch.randn(shape)
    mask = torch.rand(shape) > 0.5
    q = Uniform(bits, 1.1, 0.97, side_bits=side_bits, granularity="tensor")
    enc = q.encode(w * mask, mask)
    assert torch.unique(enc.scale).numel() == 1 and torch.unique(enc.offset).numel() == 1
    assert torch.unique(Uniform(bits, 1.1, 0.97, side_bits=side_bits).encode(w * mask, mask).scale).numel() > 1
    assert torch.equal(q.fake(w * mask, mask), Quantizer.fake(q, w * mask, mask))


@pytest.mark.parametrize("scheme", ["binary", "ternary"])
def test_tensor_granularity_gives_binary_and_ternary_one_alpha(scheme: str) -> None:
    torch.manual_seed(0)
    w = torch.randn(12, 9)
    per_channel = make_quantizer({"scheme": scheme}).encode(w)
    shared = make_quantizer({"scheme": scheme, "granularity": "tensor"}).encode(w)
    assert torch.unique(per_channel.scale).numel() > 1 and torch.unique(shared.scale).numel() == 1
    if scheme == "binary":      # alpha = mean |w| over the whole tensor
        assert shared.scale[0].item() == pytest.approx(w.abs().mean().item(), rel=1e-6)


def test_tensor_granularity_learns_one_step() -> None:
    q = Uniform(3, learn_step=True, granularity="tensor")
    w = _randn(6, 10, seed=5)
    q.prepare(w)
    assert q.step.shape == (1,)
    assert torch.unique(q.encode(w).scale).numel() == 1


def test_an_unknown_granularity_names_the_key() -> None:
    with pytest.raises(InputError, match=r"^compress\.quant\.granularity: must be one of channel\|tensor"):
        make_quantizer({"scheme": "uniform", "bits": 4, "granularity": "row"})
