"""Train once, compress many: a disk cache of the trained fp32 model of a CV fold.

The fp32 model that a trial compresses depends only on its training rows, the preprocessing and model
config, the training config and the seed. Every trial of a ``space=compress_only`` study trains exactly
the same model per fold, and a joint study repeats it whenever the sampled training part repeats (the
seed recipes, the reference). :class:`BaseCache` stores that model once per fold and hands it back:

    cache = BaseCache("mlruns/base-cache/digits-mlp", max_bytes=2 * 2**30)
    key = base_key(cfg, X_train, y_train, seed, n_classes)
    state = cache.get(key)          # None on a miss
    ...train...
    cache.put(key, spec, pipeline.state_dict())

Guarantees:

* **The key is a hash of exactly what training reads**: the bytes of the training rows and labels, the
  preprocessing keys (``data.standardize``, ``data.pca``), every ``model.*`` and ``train.*`` key, the seed,
  the class count, the device type and the torch version (and, for a user model, its module's source). Anything else (compression keys, latency, the
  study name) does not change the key, so a compress-only study hits for every trial after the first.
* **Atomic writes**: an entry is written to a temporary file in the cache directory and renamed into place
  (``os.replace``), so concurrent workers and machines sharing the directory never read a half-written
  entry; two writers of the same key write identical bytes and the last rename wins.
* **No pickle**: entries hold tensors, strings and numbers only and load with ``torch.load(weights_only=True)``.
* **Bounded size**: after each write the least recently used entries (by modification time, refreshed on
  every hit) are removed until the directory holds at most ``max_bytes``.
* An unreadable entry (truncated by a full disk, another version's format) is a miss, never an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["BaseCache", "base_key", "TRAINING_DATA_KEYS"]

#: data keys that change the fitted preprocessing (the rows themselves are hashed)
TRAINING_DATA_KEYS = ("standardize", "pca")
_FORMAT = 1
_SUFFIX = ".base.pt"


def _canonical(value: Any) -> Any:
    """JSON-stable form: mappings sorted, tuples as lists, numpy scalars as Python numbers."""
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def base_key(cfg: Mapping[str, Any], X_train: np.ndarray, y_train: np.ndarray, seed: int,
             n_classes: int | None, device: str) -> str:
    """The cache key of the fp32 model that ``cfg`` trains on ``X_train, y_train`` with ``seed``.

    ``device`` is the resolved device type (``cpu`` or ``cuda``): the same seed trains different bits on
    different hardware.
    """
    digest = hashlib.sha256()
    for array in (np.ascontiguousarray(X_train), np.ascontiguousarray(y_train)):
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    data = cfg.get("data", {})
    described = {
        "format": _FORMAT,
        "torch": torch.__version__,
        "device": device,
        "seed": int(seed),
        "n_classes": n_classes,
        "data": {k: data.get(k) for k in TRAINING_DATA_KEYS},
        "model": cfg["model"],
        "model_source": _model_source_digest(cfg["model"]),
        "train": cfg["train"],
    }
    digest.update(json.dumps(_canonical(described), sort_keys=True).encode())
    return digest.hexdigest()[:40]


def _model_source_digest(model_cfg: Mapping[str, Any]) -> str | None:
    """A user model (``model._target_``): the sha256 of its module's source file, so editing the class
    invalidates its cached bases; ``None`` for the built-in models (squeeze's own version is in the key
    through the config they are built from)."""
    target = model_cfg.get("_target_") if isinstance(model_cfg, Mapping) else None
    if not target or "." not in str(target):
        return None
    import importlib.util

    try:
        spec = importlib.util.find_spec(str(target).rsplit(".", 1)[0])
        origin = spec.origin if spec is not None else None
        return hashlib.sha256(Path(origin).read_bytes()).hexdigest() if origin else None
    except (ImportError, OSError, ValueError):
        return None


class BaseCache:
    """Trained fp32 pipelines on disk, keyed by :func:`base_key` (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str], max_bytes: int) -> None:
        self.root = Path(root)
        self.max_bytes = int(max_bytes)

    def path(self, key: str) -> Path:
        return self.root / f"{key}{_SUFFIX}"

    def get(self, key: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]] | None:
        """``(spec, state_dict)`` of the cached pipeline, or ``None`` on a miss."""
        path = self.path(key)
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
            if entry.get("format") != _FORMAT or entry.get("key") != key:
                return None
            os.utime(path)                                # recently used: evicted last
            return json.loads(entry["spec"]), entry["state"]
        except Exception:  # missing, truncated, another format: the unpickler raises many types; all are misses
            return None

    def put(self, key: str, spec: Mapping[str, Any], state: Mapping[str, torch.Tensor]) -> Path:
        """Write the entry atomically, then trim the cache to ``max_bytes``; returns the entry's path."""
        self.root.mkdir(parents=True, exist_ok=True)
        entry = {"format": _FORMAT, "key": key, "spec": json.dumps(_canonical(spec), sort_keys=True),
                 "state": {name: t.detach().cpu().clone() for name, t in state.items()}}
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as handle:
                torch.save(entry, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path(key))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.trim()
        return self.path(key)

    def entries(self) -> list[Path]:
        return sorted(self.root.glob(f"*{_SUFFIX}")) if self.root.is_dir() else []

    def size_bytes(self) -> int:
        return sum(_size(p) for p in self.entries())

    def trim(self) -> None:
        """Remove least recently used entries until the cache holds at most ``max_bytes``."""
        entries = [(p, _mtime(p), _size(p)) for p in self.entries()]
        total = sum(size for _, _, size in entries)
        for path, _, size in sorted(entries, key=lambda e: e[1]):
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)                   # another worker may have removed it already
            total -= size


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
