"""Build layers from sliced weights: the one tool neuron pruning uses to make layers physically smaller."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def linear_from(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    layer.weight.copy_(weight)
    layer.bias.copy_(bias)
    return layer


@torch.no_grad()
def conv_from(weight: torch.Tensor, bias: torch.Tensor) -> nn.Conv2d:
    k = weight.shape[2]
    conv = nn.Conv2d(weight.shape[1], weight.shape[0], kernel_size=k, padding=k // 2)
    conv.weight.copy_(weight)
    conv.bias.copy_(bias)
    return conv
