"""``load_dataset``: pick the loader named by ``data.name``."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from trainers.data._arrays import load_npz
from trainers.data._builtin import breast_cancer, digits
from trainers.data._dataset import Dataset
from trainers.data._ecommerce import ecommerce
from trainers.data._interactions import load_interactions
from trainers.data._tabular import load_csv
from trainers.errors import InputError

__all__ = ["DATASET_NAMES", "load_dataset"]

_LOADERS: dict[str, Callable[[Mapping], Dataset]] = {
    "digits": lambda _cfg: digits(),
    "breast_cancer": lambda _cfg: breast_cancer(),
    "csv": load_csv,
    "npz": load_npz,
    "ecommerce": ecommerce,                 # sequence data (trainers/data/_sequence.py)
    "interactions": load_interactions,
}

DATASET_NAMES: tuple[str, ...] = tuple(_LOADERS)


def load_dataset(data_cfg: Mapping) -> Dataset:
    """Load the dataset described by the ``data`` config group.

    Args:
        data_cfg: the ``data`` group as a plain dict or an OmegaConf ``DictConfig``; reads ``name`` and,
            for ``csv``/``npz``, ``path`` (and ``target`` for ``csv``); ``ecommerce`` and ``interactions``
            read their own keys (conf/data/ecommerce.yaml, conf/data/interactions.yaml).

    Returns:
        The full dataset; splitting and preprocessing happen later, so nothing here depends on the seed.

    Raises:
        InputError: for an unknown ``data.name`` or any problem the chosen loader finds in the config or file.
    """
    name = data_cfg.get("name")
    loader = _LOADERS.get(str(name)) if name is not None else None
    if loader is None:
        raise InputError("data", f"unknown dataset name {name!r}; choose one of: {', '.join(DATASET_NAMES)}")
    return loader(data_cfg)
