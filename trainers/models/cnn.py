"""A small convolutional net for image-shaped input (e.g. scikit-learn digits as 1x8x8).

    x (B, C, H, W)
      -> [Conv3x3(pad 1) -> ReLU -> MaxPool2x2 if pool_after[i]] * len(channels)   (B, C_last, H', W')
      -> flatten (B, C_last*H'*W') -> [Linear -> ReLU -> Dropout] * len(hidden) -> Linear (B, K)

The first conv block keeps full resolution; later blocks halve it while it stays >= 2. Channels and
hidden units can be removed physically (neuron pruning), see :meth:`CNN.keep_units`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trainers.models._surgery import conv_from, linear_from

__all__ = ["CNN"]


class CNN(nn.Module):
    def __init__(
        self,
        in_shape: list[int],
        channels: list[int],
        hidden: list[int],
        n_classes: int,
        dropout: float = 0.0,
        pool_after: list[bool] | None = None,
    ) -> None:
        super().__init__()
        assert len(in_shape) == 3, f"CNN needs (C, H, W) input, got {in_shape}"
        assert channels, "CNN needs at least one conv block"
        c, h, w = in_shape
        if pool_after is None:  # pool after every block but the first, while the map stays >= 2x2
            pool_after = []
            for i in range(len(channels)):
                pool = i > 0 and h >= 4 and w >= 4
                pool_after.append(pool)
                h, w = (h // 2, w // 2) if pool else (h, w)
        else:
            for pool in pool_after:
                h, w = (h // 2, w // 2) if pool else (h, w)
        self.in_shape, self.pool_after, self.drop_p = list(in_shape), list(pool_after), dropout
        self.map_size = h * w                                # H' * W' after the conv stack
        self.convs = nn.ModuleList(
            nn.Conv2d(a, b, kernel_size=3, padding=1) for a, b in zip([c, *channels[:-1]], channels)
        )
        sizes = [channels[-1] * self.map_size, *hidden, n_classes]
        self.fcs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, pool in zip(self.convs, self.pool_after):
            x = torch.relu(conv(x))                          # (B, C_i, H_i, W_i)
            if pool:
                x = nn.functional.max_pool2d(x, 2)
        x = x.flatten(1)                                     # (B, C_last * H' * W')
        for fc in self.fcs[:-1]:
            x = self.dropout(torch.relu(fc(x)))
        return self.fcs[-1](x)                               # (B, K) logits

    def spec(self) -> dict[str, Any]:
        return {
            "type": "cnn",
            "in_shape": self.in_shape,
            "channels": [conv.out_channels for conv in self.convs],
            "hidden": [fc.out_features for fc in self.fcs[:-1]],
            "n_classes": self.fcs[-1].out_features,
            "dropout": self.drop_p,
            "pool_after": self.pool_after,
        }

    def unit_layers(self) -> list[nn.Module]:
        """Conv channels and hidden FC units, in forward order (their ReLU outputs are the units)."""
        return [*self.convs, *self.fcs[:-1]]

    @torch.no_grad()
    def keep_units(self, index: int, keep: torch.Tensor) -> None:
        """Keep channels/units ``keep`` (sorted indices) of unit layer ``index``; consumers follow."""
        n_convs = len(self.convs)
        if index < n_convs:
            conv = self.convs[index]
            self.convs[index] = conv_from(conv.weight[keep], conv.bias[keep])
            if index + 1 < n_convs:
                nxt = self.convs[index + 1]
                self.convs[index + 1] = conv_from(nxt.weight[:, keep], nxt.bias)
            else:  # the flatten maps channel c to columns c*S .. c*S+S-1 of the first FC layer
                cols = (keep[:, None] * self.map_size + torch.arange(self.map_size)).flatten()
                fc = self.fcs[0]
                self.fcs[0] = linear_from(fc.weight[:, cols], fc.bias)
        else:
            j = index - n_convs
            fc, nxt = self.fcs[j], self.fcs[j + 1]
            self.fcs[j] = linear_from(fc.weight[keep], fc.bias[keep])
            self.fcs[j + 1] = linear_from(nxt.weight[:, keep], nxt.bias)

