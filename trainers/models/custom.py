"""A user's own ``nn.Module``, named by its import path (Hydra's ``_target_``), trained and compressed like ours.

    model=custom model._target_=my_pkg.nets.ResMLP +model.kwargs.hidden=256

:class:`CustomNet` wraps the user's module (``self.module``) so that it has what squeeze needs of a network:

* ``spec()``: plain JSON (``{"type": "custom", "target": ..., "kwargs": ..., "kept": ...}``) from which
  :func:`trainers.models.build_net` rebuilds an empty model of the same shape, so the artifact stores no
  code and no pickle, only the import path and the constructor's keyword arguments;
* ``forward(x)``: the user's forward, ``x`` of shape ``(B, *input_shape)`` (preprocessed rows);
* ``training_loss(x, y)``: only when the user's module defines it (:func:`trainers.fit.train` then trains on
  it instead of cross-entropy);
* neuron pruning, only when the user's module implements the protocol (:func:`supports_neuron_pruning`):

  - ``unit_layers() -> list[nn.Module]``: the layers whose outputs (after ReLU) are prunable units, in
    forward order; a unit is an output feature (Linear) or channel (Conv);
  - ``keep_units(index, keep)``: keep only units ``keep`` (sorted int64 indices) of unit layer ``index``,
    slicing the producer's rows and every consumer's matching inputs, so the model really shrinks.

  The wrapper records how many units each ``keep_units`` call left (``kept``), and the rebuild replays those
  calls on a freshly constructed module (keeping the first units: only the shape matters, the weights come
  from the file). So the protocol needs no third method to describe the smaller shape.

Data-dependent shapes are passed by name when the constructor has that parameter: ``in_features`` (the
flat feature count), ``input_shape`` (``(C, H, W)`` or ``(F,)``) and ``n_classes``
(:func:`data_kwargs`).
"""

from __future__ import annotations

import importlib
import inspect
import json
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from trainers.errors import InputError

__all__ = ["DATA_KWARGS", "CustomNet", "custom_spec", "data_kwargs", "import_target", "supports_neuron_pruning",
           "trusted_modules"]

#: constructor parameters squeeze fills from the data when the user's class has them
DATA_KWARGS = ("in_features", "input_shape", "n_classes")

#: modules whose code this process chose to run from its own config (``model._target_``): artifacts it
#: wrote itself load back without an allow-list (see :func:`trainers.artifact.load`)
_TRUSTED: set[str] = set()


def trusted_modules() -> frozenset[str]:
    """Modules this process imported for a model of its own config (they load back without an allow-list)."""
    return frozenset(_TRUSTED)


def import_target(target: str, where: str = "model._target_") -> type[nn.Module]:
    """The class at the dotted path ``target`` (``pkg.module.Class``); it must be an ``nn.Module`` subclass."""
    module_name, _, attr = str(target).rpartition(".")
    if not module_name or not attr:
        raise InputError(where, f"must be a dotted import path such as my_pkg.nets.ResMLP, got {target!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise InputError(where, f"cannot import module {module_name!r} ({err}): put its package on PYTHONPATH or install it, "
                                f"got {target!r}") from err
    cls = getattr(module, attr, None)
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise InputError(where, f"must name an nn.Module subclass; {module_name}.{attr} is "
                                f"{'missing' if cls is None else type(cls).__name__}, got {target!r}")
    return cls


def supports_neuron_pruning(cls: type) -> bool:
    """Whether the class implements the neuron-pruning protocol (``unit_layers`` and ``keep_units``)."""
    return callable(getattr(cls, "unit_layers", None)) and callable(getattr(cls, "keep_units", None))


def data_kwargs(cls: type, input_shape: Sequence[int], n_classes: int) -> dict[str, Any]:
    """The data-dependent arguments ``cls.__init__`` takes by name (:data:`DATA_KWARGS`)."""
    in_features = 1
    for d in input_shape:
        in_features *= int(d)
    values = {"in_features": in_features, "input_shape": [int(d) for d in input_shape], "n_classes": int(n_classes)}
    params = inspect.signature(cls.__init__).parameters
    return {k: v for k, v in values.items() if k in params}


def custom_spec(model_cfg: Mapping[str, Any], input_shape: Sequence[int], n_classes: int) -> dict[str, Any]:
    """The ``custom`` network spec for ``model._target_`` / ``model.kwargs`` / ``model.width`` (which scales
    the integer kwargs named in ``model.widen``) and the data's shapes. Marks the module as trusted."""
    target = model_cfg.get("_target_")
    if not target or target == "???":
        raise InputError("model._target_", "is required with model=custom: add model._target_=my_pkg.nets.MyNet")
    cls = import_target(str(target))
    kwargs = dict(model_cfg.get("kwargs") or {})
    width = float(model_cfg.get("width", 1.0))
    for name in model_cfg.get("widen") or []:
        if name not in kwargs:
            raise InputError("model.widen", f"names kwargs that model.width scales; {name!r} is not in model.kwargs "
                                            f"({sorted(kwargs)}), got {list(model_cfg.get('widen'))!r}")
        value = kwargs[name]
        kwargs[name] = ([max(1, round(v * width)) for v in value] if isinstance(value, (list, tuple))
                        else max(1, round(value * width)))
    clash = sorted(set(kwargs) & set(DATA_KWARGS))
    if clash:
        raise InputError(f"model.kwargs.{clash[0]}", "is set from the data (in_features, input_shape, n_classes are "
                                                     "passed by squeeze): remove it from model.kwargs")
    kwargs.update(data_kwargs(cls, input_shape, n_classes))
    try:
        json.dumps(kwargs)
    except TypeError as err:
        raise InputError("model.kwargs", f"must be plain JSON values (numbers, strings, lists, dicts): {err}") from err
    _TRUSTED.add(cls.__module__)
    return {"type": "custom", "target": f"{cls.__module__}.{cls.__qualname__}", "kwargs": kwargs, "kept": []}


class CustomNet(nn.Module):
    """The user's module ``target(**kwargs)`` with the ``spec()`` and pruning bookkeeping squeeze needs."""

    #: compress.include / compress.exclude patterns match layer names inside the user's module
    pattern_root = "module."

    def __init__(self, target: str, kwargs: Mapping[str, Any], kept: Sequence[Sequence[int]] = ()) -> None:
        super().__init__()
        cls = import_target(target, "artifact: net.target")
        self.target, self.kwargs = target, dict(kwargs)
        self.module = cls(**self.kwargs)
        self.kept: list[list[int]] = []
        if hasattr(self.module, "training_loss"):
            self.training_loss = self.module.training_loss      # fit.train uses it instead of cross-entropy
        for index, n_keep in kept:                              # replay neuron pruning: same shapes
            self.keep_units(int(index), torch.arange(int(n_keep)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)                                   # (B, *input_shape) -> (B, n_classes)

    def spec(self) -> dict[str, Any]:
        return {"type": "custom", "target": self.target, "kwargs": self.kwargs, "kept": [list(k) for k in self.kept]}

    def unit_layers(self) -> list[nn.Module]:
        if not supports_neuron_pruning(type(self.module)):
            raise InputError("compress.neurons.ratio", f"must be 0: {self.target} does not implement unit_layers() "
                                                       "and keep_units() (README: Bring your own model)")
        return list(self.module.unit_layers())

    @torch.no_grad()
    def keep_units(self, index: int, keep: torch.Tensor) -> None:
        self.unit_layers()                                      # refuses a module without the protocol
        self.module.keep_units(index, keep)
        self.kept.append([int(index), int(len(keep))])
