"""Models a user brings, defined outside squeeze (tests/test_custom_model.py runs them end to end).

* :class:`ResMLP`: a residual MLP, ``x -> Linear -> [x + W2 relu(W1 x)] * blocks -> Linear``, with the
  neuron-pruning protocol (the hidden units of each block's ``W1``);
* :class:`RowConv`: a 1-D conv net over the feature row reshaped to ``(1, L)``, with the protocol (the
  channels of each conv);
* :class:`GatedNet`: a tiny net with layer types squeeze does not compress (``nn.BatchNorm1d``,
  ``nn.Bilinear``, ``nn.LayerNorm``) and no protocol.
"""

from __future__ import annotations

import torch
from torch import nn


def _linear(weight: torch.Tensor, bias: torch.Tensor) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return layer


def _conv1d(weight: torch.Tensor, bias: torch.Tensor, padding: int) -> nn.Conv1d:
    conv = nn.Conv1d(weight.shape[1], weight.shape[0], kernel_size=weight.shape[2], padding=padding)
    with torch.no_grad():
        conv.weight.copy_(weight)
        conv.bias.copy_(bias)
    return conv


class Block(nn.Module):
    """``x + W2 relu(W1 x)``: the hidden units of ``W1`` are prunable, the residual width is not."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.relu(self.fc1(x)))


class ResMLP(nn.Module):
    def __init__(self, in_features: int, n_classes: int, dim: int = 32, hidden: int = 64, blocks: int = 2) -> None:
        super().__init__()
        self.stem = nn.Linear(in_features, dim)
        self.blocks = nn.ModuleList(Block(dim, hidden) for _ in range(blocks))
        self.head = nn.Linear(dim, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x.flatten(1)))              # (B, dim)
        for block in self.blocks:
            x = block(x)
        return self.head(x)                                  # (B, n_classes)

    def unit_layers(self) -> list[nn.Module]:
        return [block.fc1 for block in self.blocks]

    @torch.no_grad()
    def keep_units(self, index: int, keep: torch.Tensor) -> None:
        block = self.blocks[index]
        block.fc1 = _linear(block.fc1.weight[keep], block.fc1.bias[keep])
        block.fc2 = _linear(block.fc2.weight[:, keep], block.fc2.bias)


class RowConv(nn.Module):
    """Conv1d stack over the row as a 1-channel signal ``(B, 1, L)``, then global average pooling."""

    def __init__(self, in_features: int, n_classes: int, channels: tuple[int, ...] = (8, 16), kernel: int = 3) -> None:
        super().__init__()
        sizes = [1, *channels]
        self.kernel = kernel
        self.convs = nn.ModuleList(nn.Conv1d(a, b, kernel, padding=kernel // 2) for a, b in zip(sizes[:-1], sizes[1:]))
        self.head = nn.Linear(channels[-1], n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1).unsqueeze(1)                         # (B, 1, L)
        for conv in self.convs:
            x = torch.relu(conv(x))                           # (B, C_i, L)
        return self.head(x.mean(2))                           # (B, n_classes)

    def unit_layers(self) -> list[nn.Module]:
        return list(self.convs)

    @torch.no_grad()
    def keep_units(self, index: int, keep: torch.Tensor) -> None:
        conv = self.convs[index]
        self.convs[index] = _conv1d(conv.weight[keep], conv.bias[keep], self.kernel // 2)
        if index + 1 < len(self.convs):
            nxt = self.convs[index + 1]
            self.convs[index + 1] = _conv1d(nxt.weight[:, keep], nxt.bias, self.kernel // 2)
        else:
            self.head = _linear(self.head.weight[:, keep], self.head.bias)


class GatedNet(nn.Module):
    """A bilinear gate (a layer type squeeze leaves in fp32) between two Linear layers; no pruning protocol."""

    def __init__(self, in_features: int, n_classes: int, hidden: int = 16) -> None:
        super().__init__()
        self.inp = nn.Linear(in_features, hidden)
        self.bn = nn.BatchNorm1d(hidden)                      # an int64 buffer too (num_batches_tracked)
        self.gate = nn.Bilinear(hidden, hidden, hidden)
        self.norm = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn(self.inp(x.flatten(1))))
        return self.out(self.norm(self.gate(h, h)))
