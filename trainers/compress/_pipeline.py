"""Compress a trained network: neuron pruning -> low-rank tables -> weight pruning -> quantization, with a
fine-tune in the loop.

What happens to which tensor:

* **weights** of every Linear/Conv1d/Conv2d layer and every Embedding table (one row per item, quantized
  per row) are pruned and quantized, in any network, a user's own included; ``compress.include`` /
  ``compress.exclude`` (fnmatch patterns over layer names, e.g. ``layers.0``; a user's module: names inside
  it) narrow the selection. With ``compress.quant.quantize_first_last=false`` the first and last selected
  layer keep fp32 values (still pruned).
* **other layers** (LayerNorm, GRU, Conv3d, ...) and excluded ones keep fp32 weights, stored in the
  artifact like any tensor (sizes stay true); :func:`trainers.artifact.uncompressed_modules` names them.
* **side information**: with ``compress.side_bits=16`` (the config default; code default 32) each quantizer's
  per-channel scale/offset is float16 where every value of the tensor fits
  (:func:`~trainers.compress.quantize.to_side_precision`), in the fine-tune and in the final encoding alike.
* **biases** are neither pruned nor quantized. At the very end, the bias of every layer whose weights were
  quantized is rounded to ``side_bits`` like the side information (float16 when every value fits, which the
  artifact then stores in 2 bytes a value); layers whose weights stay fp32 keep fp32 biases, so an
  uncompressed model is never rounded.
* **neuron pruning** removes hidden units/channels (never inputs or classes) before weight pruning; it
  never touches embedding tables.
* **low-rank factorization** (``compress.lowrank.rank=r``, :mod:`trainers.compress.lowrank`): every selected
  Embedding table that stores fewer values as ``A (rows, r) @ B (r, dim)`` is initialised from its truncated
  SVD, and ``A`` and ``B`` take its place in what follows: each is pruned and quantized per row like any
  weight (with a quantizer of its own), the fine-tune trains them through ``W = Q(A) @ Q(B)``, and the
  encoding is a :class:`~trainers.compress.lowrank.Factored` (the artifact stores the two factors).
* the **fine-tune** (``compress.finetune_epochs``, lr ``compress.finetune_lr`` or ``train.lr``) trains
  through torch parametrizations ``w_eff = Q(w * mask) * mask`` (STE), so accuracy can recover; a
  ``gradual`` schedule raises sparsity along the Zhu & Gupta curve over the first 75% of fine-tune steps
  (with no fine-tune it is one-shot). With ``compress.distill.weight`` > 0 (classifiers) the fp32 model as it
  was before compression teaches: the loss mixes the labels' cross-entropy with the match to its softened
  outputs (:func:`trainers.fit.distillation_loss`), which lets smaller nets recover more of its accuracy.
* finally each weight (or factor) is encoded (:class:`~trainers.compress.quantize.Encoded`) and the layer's
  weight replaced by its decoded value (a factored table: ``Factored.decode()``, the product the loader
  computes), so the in-memory model equals what the artifact will load.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from trainers.compress.lowrank import Factored, LowRank, check_rank, factorize, factors_table
from trainers.compress.neurons import prune_neurons
from trainers.compress.prune import Pruner, zhu_gupta_sparsity
from trainers.compress.quantize import (
    Encoded,
    Float32,
    Quantizer,
    make_quantizer,
    release_mask_cache,
    to_side_precision,
)
from trainers.fit import Distillation, train

__all__ = ["COMPRESSIBLE", "CompressionReport", "compress", "compressible_layers"]


#: the layer types whose ``weight`` is pruned and quantized (dim 0 = output channel)
COMPRESSIBLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding)


def _pattern_name(net: nn.Module, name: str) -> str:
    """The name patterns match: inside the user's module for a :class:`~trainers.models.CustomNet`."""
    return name.removeprefix(getattr(net, "pattern_root", ""))


def _selected(name: str, include: Sequence[str] | None, exclude: Sequence[str] | None) -> bool:
    return ((not include or any(fnmatchcase(name, p) for p in include))
            and not any(fnmatchcase(name, p) for p in exclude or ()))


def compressible_layers(net: nn.Module, include: Sequence[str] | None = None,
                        exclude: Sequence[str] | None = None) -> list[tuple[str, nn.Module]]:
    """(name, module) of every Linear/Conv1d/Conv2d/Embedding layer in registration order whose name matches
    an ``include`` pattern (none = all) and no ``exclude`` pattern: the layers whose weights compress. An
    embedding table ``(rows, dim)`` is quantized per row (dim 0 = output channel).

    Example:
        >>> from trainers.models import MLP
        >>> [n for n, _ in compressible_layers(MLP(4, [8, 8], 3), exclude=["layers.0"])]
        ['layers.1', 'layers.2']
    """
    return [(name, m) for name, m in net.named_modules()
            if isinstance(m, COMPRESSIBLE) and _selected(_pattern_name(net, name), include, exclude)]


class _MaskedQuantized(nn.Module):
    """Parametrization ``w -> Q(w * mask) * mask`` used during the fine-tune, computed as ``Q(w * mask)``:
    :meth:`Quantizer.fake` is 0 at pruned positions, and its gradient (the identity) reaches ``w`` through
    ``w * mask``, so the outer multiply changed neither a value nor a gradient (a multiply by 1 is exact;
    at a pruned position +0 stays +0 and ``g * 0 * 0`` is ``g * 0``). With nothing pruned, both multiplies by
    1 are skipped too.

    ``mask`` (float, saved with the module) changes only through :meth:`set_mask`, which also refreshes what
    every forward pass would otherwise derive again: the bool mask and whether it keeps everything.
    """

    def __init__(self, mask: torch.Tensor, quantizer: Quantizer) -> None:
        super().__init__()
        self.register_buffer("mask", mask.float())
        self.register_buffer("keep", mask.bool(), persistent=False)
        self.quantizer = quantizer
        self.dense = bool(self.keep.all())

    def set_mask(self, mask: torch.Tensor) -> None:
        """Prune (or restore) to the bool ``mask``."""
        self.mask.copy_(mask)
        self.keep.copy_(mask)
        self.dense = bool(self.keep.all())

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.dense:
            return self.quantizer.fake(w)
        return self.quantizer.fake(w * self.mask, self.keep)


@dataclass
class CompressionReport:
    units_kept: list[int] = field(default_factory=list)
    sparsity: float = 0.0          # zero weights / all weights of the compressible layers, after encoding
    encodings: dict[str, Encoded | Factored] = field(default_factory=dict)


def _distillation(net: nn.Module, compress_cfg: Mapping[str, Any]) -> Distillation | None:
    """A frozen copy of the fp32 ``net`` as the fine-tune's teacher when ``compress.distill.weight`` > 0 and
    there is a fine-tune; else None."""
    cfg = compress_cfg.get("distill") or {}
    weight = float(cfg.get("weight", 0.0))
    if weight <= 0 or int(compress_cfg.get("finetune_epochs", 0)) <= 0:
        return None
    return Distillation(copy.deepcopy(net), weight, float(cfg.get("temperature", 4.0)))   # train() freezes it


def compress(net: nn.Module, X: torch.Tensor, y: torch.Tensor, compress_cfg: Mapping[str, Any],
             train_cfg: Mapping[str, Any], seed: int, device: str = "auto") -> CompressionReport:
    """Compress ``net`` in place (see the module docstring); returns what was done and the encodings."""
    report = CompressionReport()
    distill = _distillation(net, compress_cfg)       # the teacher is the fp32 model before anything is removed
    neurons = compress_cfg.get("neurons", {})
    if float(neurons.get("ratio", 0.0)) > 0:
        report.units_kept = prune_neurons(net, X, float(neurons["ratio"]), neurons.get("importance", "mean_abs"))

    layers = compressible_layers(net, compress_cfg.get("include"), compress_cfg.get("exclude"))
    rank = check_rank(compress_cfg.get("lowrank", {}).get("rank", 0))
    factored = {i: LowRank(*factorize(m.weight, rank)) for i, (_, m) in enumerate(layers)
                if isinstance(m, nn.Embedding) and factors_table(*m.weight.shape, rank)}
    # the tensors that are pruned and quantized, (layer index, owner, name): a layer's weight, or the two
    # factors of a factored table
    slots: list[tuple[int, nn.Module, str]] = []
    for i, (_, m) in enumerate(layers):
        slots += [(i, factored[i], "a"), (i, factored[i], "b")] if i in factored else [(i, m, "weight")]
    quant_cfg = compress_cfg.get("quant", {})
    keep_ends_fp32 = not bool(quant_cfg.get("quantize_first_last", True))
    side_bits = int(compress_cfg.get("side_bits", 32))
    quantizers = [
        Float32() if keep_ends_fp32 and i in (0, len(layers) - 1) else make_quantizer(quant_cfg, seed + j, side_bits)
        for j, (i, _, _) in enumerate(slots)
    ]
    prune_cfg = compress_cfg.get("prune", {})
    ratio = float(prune_cfg.get("ratio", 0.0))
    pruner = Pruner(prune_cfg.get("criterion", "magnitude"), prune_cfg.get("scope", "per_layer"), seed)
    weights = [getattr(owner, name) for _, owner, name in slots]
    epochs = int(compress_cfg.get("finetune_epochs", 0))
    gradual = prune_cfg.get("schedule", "one_shot") == "gradual" and epochs > 0
    masks = [torch.ones_like(w, dtype=torch.bool) for w in weights]
    if ratio > 0 and not gradual:
        masks = pruner.masks(weights, ratio)

    for w, mask, q in zip(weights, masks, quantizers):
        q.prepare(w * mask, mask)                     # learned steps exist before the optimizer does
    params = [_MaskedQuantized(mask, q) for mask, q in zip(masks, quantizers)]
    for (_, owner, name), p in zip(slots, params):
        parametrize.register_parametrization(owner, name, p)
    for i, lowrank in factored.items():               # the table's weight = Q(A * mask) @ Q(B * mask)
        parametrize.register_parametrization(layers[i][1], "weight", lowrank)

    def raw() -> list[torch.Tensor]:
        return [owner.parametrizations[name].original for _, owner, name in slots]

    try:
        if epochs > 0:
            lr = compress_cfg.get("finetune_lr") or float(train_cfg["lr"])
            every = [1]

            def on_step(step: int, total: int) -> None:
                if not (gradual and ratio > 0):
                    return
                end = max(1, int(0.75 * total))
                every[0] = max(1, end // 20)          # ~20 pruning steps along the curve
                if step % every[0] == 0 or step == end:
                    target = zhu_gupta_sparsity(step, total, ratio, end=end)
                    current = [p.keep for p in params]
                    for p, new in zip(params, pruner.masks(raw(), target, previous=current)):
                        p.set_mask(new)

            train(net, X, y, train_cfg, seed + 1, epochs=epochs, lr=float(lr), device=device, on_step=on_step,
                  distill=distill)
            if gradual and ratio > 0:  # make sure the final sparsity is exactly the requested one
                for p, new in zip(params, pruner.masks(raw(), ratio, previous=[p.keep for p in params])):
                    p.set_mask(new)
    finally:
        release_mask_cache()
        final_masks = [p.keep.cpu().clone() for p in params]
        for i in factored:
            parametrize.remove_parametrizations(layers[i][1], "weight", leave_parametrized=False)
        for _, owner, name in slots:
            parametrize.remove_parametrizations(owner, name, leave_parametrized=False)
    net.cpu().eval()

    zeros = total = 0
    with torch.no_grad():
        encoded: dict[int, list[Encoded]] = {}           # layer index -> its weight's (or factors') encodings
        layer_quantizer: dict[int, Quantizer] = {}
        for (i, owner, name), mask, q in zip(slots, final_masks, quantizers):
            enc = q.encode(getattr(owner, name).detach().cpu() * mask, mask)
            encoded.setdefault(i, []).append(enc)
            layer_quantizer.setdefault(i, q)
            zeros += enc.numel - enc.n_kept + int((enc.values() == 0).sum())
            total += enc.numel
        for i, (name, module) in enumerate(layers):
            enc = Factored(*encoded[i]) if i in factored else encoded[i][0]
            module.weight.copy_(enc.decode())
            report.encodings[f"{name}.weight"] = enc
            bias = getattr(module, "bias", None)           # Embedding has none
            if bias is not None and not isinstance(layer_quantizer[i], Float32):
                bias.copy_(to_side_precision(bias, side_bits))
    report.sparsity = zeros / max(total, 1)
    release_mask_cache()                               # the encodings derived from the final masks too
    return report
