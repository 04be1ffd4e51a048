"""Models: each readable top to bottom, each with ``spec()`` (plain-JSON architecture), ``unit_layers()``
and ``keep_units()`` (physical neuron removal). :class:`Pipeline` = preprocessing + network, the unit that
is trained, compressed, packed into one file and loaded back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from trainers.errors import InputError
from trainers.models.cnn import CNN
from trainers.models.mlp import MLP
from trainers.models.preprocess import Preprocess

__all__ = ["CNN", "MLP", "Pipeline", "Preprocess", "build_net", "net_spec_from_config", "build_pipeline"]

_NETS = {"mlp": MLP, "cnn": CNN}


class Pipeline(nn.Module):
    """Raw input -> :class:`Preprocess` -> network -> logits. ``encodings`` holds compressed weights."""

    def __init__(self, preprocess: Preprocess, net: nn.Module) -> None:
        super().__init__()
        self.preprocess, self.net = preprocess, net
        self.encodings: dict[str, Any] = {}    # parameter name -> trainers.compress.quantize.Encoded

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.preprocess(x))

    def spec(self) -> dict[str, Any]:
        return {"preprocess": self.preprocess.spec(), "net": self.net.spec()}


def build_net(spec: Mapping[str, Any]) -> nn.Module:
    """An untrained network of the architecture ``spec`` (as written by ``net.spec()``)."""
    spec = dict(spec)
    kind = spec.pop("type")
    if kind not in _NETS:
        raise ValueError(f"unknown network type {kind!r}; known: {sorted(_NETS)}")
    return _NETS[kind](**spec)


def build_pipeline(spec: Mapping[str, Any]) -> Pipeline:
    return Pipeline(Preprocess(**spec["preprocess"]), build_net(spec["net"]))


def _scaled(sizes: list[int], width: float) -> list[int]:
    return [max(1, round(s * width)) for s in sizes]


def net_spec_from_config(model_cfg: Mapping[str, Any], input_shape: list[int], n_classes: int) -> dict[str, Any]:
    """The architecture for ``model.*`` config keys, the (preprocessed) input shape and class count."""
    name, width = model_cfg["name"], float(model_cfg.get("width", 1.0))
    dropout = float(model_cfg.get("dropout", 0.0))
    if name == "mlp":
        in_features = 1
        for d in input_shape:
            in_features *= int(d)
        return {"type": "mlp", "in_features": in_features, "hidden": _scaled(list(model_cfg["hidden"]), width),
                "n_classes": n_classes, "dropout": dropout}
    if name == "cnn":
        if len(input_shape) != 3:
            raise InputError("model", f"cnn needs image input (C, H, W); this data has shape {tuple(input_shape)}: use model=mlp")
        return {"type": "cnn", "in_shape": list(input_shape), "channels": _scaled(list(model_cfg["channels"]), width),
                "hidden": _scaled(list(model_cfg["hidden"]), width), "n_classes": n_classes, "dropout": dropout}
    raise InputError("model", f"unknown model {name!r}; choices: {sorted(_NETS)}")
