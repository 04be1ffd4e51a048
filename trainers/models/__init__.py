"""Models: each readable top to bottom, each with ``spec()`` (plain-JSON architecture), ``unit_layers()``
and ``keep_units()`` (physical neuron removal); a user's own ``nn.Module`` comes in as :class:`CustomNet`
(``model=custom model._target_=...``, :mod:`trainers.models.custom`). :class:`Pipeline` = preprocessing +
network, the unit that is trained, compressed, packed into one file and loaded back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from trainers.errors import InputError
from trainers.models.cnn import CNN
from trainers.models.custom import CustomNet, custom_spec
from trainers.models.mlp import MLP
from trainers.models.preprocess import Preprocess
from trainers.models.seqrec import SeqRec

__all__ = ["CNN", "CustomNet", "MLP", "Pipeline", "Preprocess", "SeqRec", "build_net", "net_spec_from_config", "build_pipeline"]

_NETS = {"mlp": MLP, "cnn": CNN, "seqrec": SeqRec, "custom": CustomNet}


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
    """An untrained network of the architecture ``spec`` (as written by ``net.spec()``); a ``custom`` spec
    imports the user's class (:class:`CustomNet`): check where the spec came from first
    (:func:`trainers.artifact.load` does)."""
    spec = dict(spec)
    kind = spec.pop("type")
    if kind not in _NETS:
        raise ValueError(f"unknown network type {kind!r}; known: {sorted(_NETS)}")
    return _NETS[kind](**spec)


def build_pipeline(spec: Mapping[str, Any]) -> Pipeline:
    return Pipeline(Preprocess(**spec["preprocess"]), build_net(spec["net"]))


def _scaled(sizes: list[int], width: float) -> list[int]:
    return [max(1, round(s * width)) for s in sizes]


def net_spec_from_config(model_cfg: Mapping[str, Any], input_shape: list[int], n_classes: int,
                         side_vocab: list[int] | None = None, user_vocab: list[int] | None = None) -> dict[str, Any]:
    """The architecture for ``model.*`` config keys, the (preprocessed) input shape and class count.

    For ``seqrec``: ``input_shape`` is ``(C, L)`` event windows, ``n_classes = n_items + 1``,
    ``side_vocab`` the id-space size of each side-feature channel (used when ``model.side_features``) and
    ``user_vocab`` that of each user-feature channel, the last channels (used when ``model.user_features``).

    For ``custom``: ``model._target_`` names the user's class, ``model.kwargs`` its other arguments; the data's
    shapes are passed by name (:func:`trainers.models.custom.custom_spec`).
    """
    if model_cfg["name"] == "custom" or model_cfg.get("_target_") is not None:
        return custom_spec(model_cfg, input_shape, n_classes)
    name, width = model_cfg["name"], float(model_cfg.get("width", 1.0))
    dropout = float(model_cfg.get("dropout", 0.0))
    if name == "seqrec":
        return _seqrec_spec(model_cfg, input_shape, n_classes, side_vocab or [], user_vocab or [], width, dropout)
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


def _seqrec_spec(model_cfg: Mapping[str, Any], input_shape: list[int], n_classes: int, side_vocab: list[int],
                 user_vocab: list[int], width: float, dropout: float) -> dict[str, Any]:
    """``d_model * width`` rounded to a multiple of ``heads``; ``max_len`` capped at the data's window."""
    if len(input_shape) != 2:
        raise InputError("model", f"seqrec needs sequence data (C, L) such as data=ecommerce; this data has shape "
                                  f"{tuple(input_shape)}: use model=mlp or model=cnn")
    heads = int(model_cfg.get("heads", 1))
    d_model = max(heads, round(int(model_cfg["d_model"]) * width / heads) * heads)
    hidden = max(1, round(d_model * float(model_cfg.get("ffn_mult", 1.0))))
    return {"type": "seqrec", "n_items": n_classes - 1, "d_model": d_model, "heads": heads,
            "ffn_hidden": [hidden] * int(model_cfg.get("blocks", 1)),
            "max_len": min(int(model_cfg.get("max_len", input_shape[1])), int(input_shape[1])),
            "dropout": dropout,
            "side_vocab": list(side_vocab) if bool(model_cfg.get("side_features", True)) else [],
            "user_vocab": list(user_vocab) if bool(model_cfg.get("user_features", True)) else []}
