"""Neuron (activation) pruning: remove whole hidden units / channels, making layers physically smaller.

Importance is measured on training data from each unit's ReLU output:
``mean_abs`` = mean activation (ReLU outputs are >= 0), ``apoz`` = 1 - average percentage of zeros
(Hu et al. 2016). The least important ``ratio`` of units of every hidden layer are removed (at least one
unit is kept per layer); the input features and output classes are never touched.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from trainers.errors import InputError
from trainers.options import NEURON_IMPORTANCES, NEURONS_MAX_RATIO

__all__ = ["unit_importance", "prune_neurons"]


@torch.no_grad()
def unit_importance(net: nn.Module, X: torch.Tensor, criterion: str = "mean_abs",
                    batch_size: int = 512) -> list[torch.Tensor]:
    """One importance score per unit of each of ``net.unit_layers()``, measured on ``X``."""
    if criterion not in NEURON_IMPORTANCES:
        raise InputError("compress.neurons.importance",
                         f"must be one of {'|'.join(NEURON_IMPORTANCES)}, got {criterion!r}")
    layers = net.unit_layers()
    sums = [None] * len(layers)
    count = 0

    def hook(i):
        def fn(_module, _inputs, out):
            act = torch.relu(out)
            dims = [0, *range(2, act.dim())]                 # all but the unit/channel axis
            stat = act.mean(dims) if criterion == "mean_abs" else (act > 0).float().mean(dims)
            sums[i] = stat * len(out) if sums[i] is None else sums[i] + stat * len(out)
        return fn

    handles = [layer.register_forward_hook(hook(i)) for i, layer in enumerate(layers)]
    try:
        net.eval()
        for start in range(0, len(X), batch_size):
            xb = X[start:start + batch_size]
            net(xb)
            count += len(xb)
    finally:
        for h in handles:
            h.remove()
    return [s / count for s in sums]


def prune_neurons(net: nn.Module, X: torch.Tensor, ratio: float, criterion: str = "mean_abs") -> list[int]:
    """Remove the least important ``ratio`` of units in every hidden layer; returns units kept per layer."""
    if not 0.0 <= ratio <= NEURONS_MAX_RATIO:
        raise InputError("compress.neurons.ratio", f"must be in [0, {NEURONS_MAX_RATIO:g}], got {ratio}")
    importance = unit_importance(net, X, criterion)
    kept = []
    for i, scores in enumerate(importance):
        n_keep = max(1, math.ceil(len(scores) * (1.0 - ratio) - 1e-9))   # -1e-9: 100 * (1 - 0.41) is 59.000000000000004
        keep = torch.sort(torch.argsort(scores, descending=True, stable=True)[:n_keep]).values
        if n_keep < len(scores):
            net.keep_units(i, keep)
        kept.append(n_keep)
    return kept
