"""Input preprocessing as a module, so an artifact maps raw features to logits on its own.

    x (B, *input_shape) -> (x - mean) / scale -> [flatten -> (x - pca_mean) @ pca_components.T]   (B, ...)

The statistics are fitted on training rows only (``trainers.data.Preprocessor``) and rounded to float16
precision where every value of a tensor fits (:func:`trainers.compress.quantize.to_side_precision`; a relative
change of at most 2^-11, made before the network trains, so the network is fitted to the rounded values). The
artifact keeps them uncompressed (they are part of the model and count in its size), in 2 bytes a value where
the rounding applied: on a small model they would otherwise be a sixth of the file.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from trainers.compress.quantize import to_side_precision

__all__ = ["Preprocess"]


class Preprocess(nn.Module):
    def __init__(self, input_shape: list[int], standardize: bool, pca_components: int = 0) -> None:
        super().__init__()
        self.input_shape, self.standardize, self.n_components = list(input_shape), standardize, pca_components
        n_features = int(np.prod(input_shape))
        if standardize:
            self.register_buffer("mean", torch.zeros(input_shape))
            self.register_buffer("scale", torch.ones(input_shape))
        if pca_components:
            self.register_buffer("pca_components", torch.zeros(pca_components, n_features))
            self.register_buffer("pca_mean", torch.zeros(n_features))

    @classmethod
    def from_state(cls, input_shape: list[int], state: dict[str, np.ndarray]) -> Preprocess:
        """Build from ``trainers.data.Preprocessor.state_dict()`` (mean, scale, pca_components, pca_mean), each
        statistic at float16 precision where all of its values fit (see the module docstring)."""
        n = int(state["pca_components"].shape[0]) if "pca_components" in state else 0
        module = cls(input_shape, standardize="mean" in state, pca_components=n)
        for name, value in state.items():
            buf = getattr(module, name)
            stat = torch.as_tensor(np.asarray(value, dtype=np.float32)).reshape(buf.shape)
            buf.copy_(to_side_precision(stat, 16))
        return module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.standardize:
            x = (x - self.mean) / self.scale
        if self.n_components:
            x = (x.flatten(1) - self.pca_mean) @ self.pca_components.T       # (B, k)
        return x

    def output_shape(self) -> list[int]:
        return [self.n_components] if self.n_components else list(self.input_shape)

    def spec(self) -> dict[str, Any]:
        return {"input_shape": self.input_shape, "standardize": self.standardize,
                "pca_components": self.n_components}
