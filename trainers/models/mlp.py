"""Multi-layer perceptron over flattened input.

    x (B, *input_shape) -> flatten (B, F) -> [Linear -> ReLU -> Dropout] * len(hidden) -> Linear (B, K)

Hidden units can be removed physically (neuron pruning): ``keep_units(i, keep)`` slices the rows of layer
``i`` and the matching input columns of layer ``i + 1``, so the model really gets smaller and faster.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trainers.models._surgery import linear_from

__all__ = ["MLP"]


class MLP(nn.Module):
    def __init__(self, in_features: int, hidden: list[int], n_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        assert in_features >= 1 and n_classes >= 2, f"bad MLP shape {in_features=} {n_classes=}"
        assert all(h >= 1 for h in hidden), f"hidden sizes must be >= 1, got {hidden}"
        sizes = [in_features, *hidden, n_classes]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.dropout = nn.Dropout(dropout)
        self.drop_p = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)                                   # (B, F)
        for layer in self.layers[:-1]:
            x = self.dropout(torch.relu(layer(x)))         # (B, H_i)
        return self.layers[-1](x)                          # (B, K) logits

    # --- what the artifact and the neuron pruner need -----------------------------------------------
    def spec(self) -> dict[str, Any]:
        """The architecture as plain JSON: enough to rebuild an empty model of the same shape."""
        return {
            "type": "mlp",
            "in_features": self.layers[0].in_features,
            "hidden": [layer.out_features for layer in self.layers[:-1]],
            "n_classes": self.layers[-1].out_features,
            "dropout": self.drop_p,
        }

    def unit_layers(self) -> list[nn.Module]:
        """Layers whose outputs (after ReLU) are hidden units that neuron pruning may remove."""
        return list(self.layers[:-1])

    @torch.no_grad()
    def keep_units(self, index: int, keep: torch.Tensor) -> None:
        """Keep only hidden units ``keep`` (sorted indices) of hidden layer ``index``."""
        producer, consumer = self.layers[index], self.layers[index + 1]
        self.layers[index] = linear_from(producer.weight[keep], producer.bias[keep])
        self.layers[index + 1] = linear_from(consumer.weight[:, keep], consumer.bias)

