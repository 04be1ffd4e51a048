"""The in-memory dataset every trainer consumes, and the label encoding shared by the loaders."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainers.errors import InputError

__all__ = ["Dataset", "KINDS", "config_value", "encode_labels", "required_path"]

KINDS = ("tabular", "image", "sequence")

_MISSING = "???"


@dataclass
class Dataset:
    """Features and integer class labels, ready for splitting and training.

    Attributes:
        X: float32 features, ``(N, F)`` for kind ``"tabular"`` or ``(N, C, H, W)`` for kind ``"image"``;
            int64 ``(N, C, L)`` event windows for kind ``"sequence"`` (see :mod:`trainers.data._sequence`).
        y: int64 class ids ``0 .. K-1`` (for ``"sequence"``: the next item id, ``1 .. K-1``).
        classes: the original labels as strings; ``classes[i]`` is the label of class id ``i`` (for
            ``"sequence"``: item names, ``classes[0]`` is the padding id).
        kind: ``"tabular"``, ``"image"`` or ``"sequence"``; decides which models and preprocessing apply.
        name: the dataset's config name (``data.name``), e.g. ``"digits"`` or ``"csv"``.
        feature_names: column names of a tabular dataset, channel names of a sequence dataset, else ``None``.
        users: ``"sequence"`` only: the user (0 .. U-1) of each row.
        heldout: ``"sequence"`` only: True where the row's target is the user's last event (the test row).
    """

    X: np.ndarray
    y: np.ndarray
    classes: list[str]
    kind: str
    name: str
    feature_names: list[str] | None = None
    users: np.ndarray | None = None
    heldout: np.ndarray | None = None

    def __post_init__(self) -> None:
        """Check internal consistency; a failure here is a loader bug, not a user error."""
        if self.kind not in KINDS:
            raise ValueError(f"Dataset.kind must be one of {KINDS}, got {self.kind!r}")
        if self.kind == "sequence":
            from trainers.data._sequence import check_sequence_arrays

            check_sequence_arrays(self)
            return
        expected_rank = 2 if self.kind == "tabular" else 4
        if self.X.ndim != expected_rank:
            raise ValueError(
                f"{self.kind} Dataset.X must have rank {expected_rank}, got shape {self.X.shape}"
            )
        if self.X.dtype != np.float32 or self.y.dtype != np.int64:
            raise ValueError(f"Dataset needs X float32 and y int64, got {self.X.dtype} and {self.y.dtype}")
        if self.y.shape != (len(self.X),):
            raise ValueError(f"Dataset.y must have shape ({len(self.X)},), got {self.y.shape}")

    @property
    def n_classes(self) -> int:
        """Number of classes K (labels are ``0 .. K-1``)."""
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example, i.e. ``X.shape`` without the row axis."""
        return tuple(int(d) for d in self.X.shape[1:])


def config_value(data_cfg: Mapping, key: str) -> Any:
    """Read ``data_cfg[key]``, mapping absent and OmegaConf-missing (``???``) values to ``None``.

    Works for a plain dict (where ``???`` is a literal string) and for an OmegaConf ``DictConfig``
    (whose ``.get`` returns ``None`` for a missing mandatory value) without importing OmegaConf.
    """
    value = data_cfg.get(key)
    if isinstance(value, str) and value.strip() == _MISSING:
        return None
    return value


def required_path(data_cfg: Mapping, example: str) -> str:
    """Return ``data.path`` as a string, or raise a one-line error telling the user how to set it."""
    path = config_value(data_cfg, "path")
    if path is None or str(path).strip() == "":
        raise InputError(
            "data.path", f"is required for data={data_cfg.get('name')}, e.g. data.path={example}"
        )
    return str(path)


def encode_labels(values: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Map raw labels to class ids ``0 .. K-1`` in sorted label order.

    Numeric labels sort numerically (so ``2`` comes before ``10``) and integral floats print as
    integers (``1.0`` -> ``"1"``); anything else is compared as text. The caller has already rejected
    missing values.

    Args:
        values: 1-D array of raw labels (numbers, booleans, str or bytes).

    Returns:
        ``(y, classes)``: int64 class ids and the label string of each id.
    """
    values = np.asarray(values)
    if values.dtype.kind == "S":
        values = np.char.decode(values, "utf-8", errors="replace")
    if values.dtype.kind == "f" and np.all(values == np.round(values)):
        values = values.astype(np.int64)
    if values.dtype.kind not in "biuf":
        values = values.astype(str)
    uniques, y = np.unique(values, return_inverse=True)
    return y.reshape(-1).astype(np.int64), [str(v) for v in uniques.tolist()]
