"""Load a user's ``.npz`` file holding arrays ``X`` (features or images) and ``y`` (labels)."""

from __future__ import annotations

import zipfile
from collections.abc import Mapping

import numpy as np

from trainers.data._dataset import Dataset, encode_labels, required_path
from trainers.data._files import existing_file, first_bad_row
from trainers.errors import InputError

__all__ = ["load_npz"]

_RANKS = "rank 2 (N, F) tabular, 3 (N, H, W) or 4 (N, C, H, W) images"


def load_npz(data_cfg: Mapping) -> Dataset:
    """Read ``X`` and ``y`` from ``data.path``; the rank of ``X`` decides the kind.

    Rank 2 is tabular, rank 4 is ``(N, C, H, W)`` images, and rank 3 is ``(N, H, W)`` images that
    get a channel axis of 1. Pickled (object) arrays are refused, so loading never runs code.

    Raises:
        InputError: for a missing ``data.path``, a missing or unreadable file, a missing array,
            a bad rank or dtype, no rows, ``len(X) != len(y)``, or NaN/inf values.
    """
    path = required_path(data_cfg, "my.npz")
    arrays = _read_arrays(path)
    X = _features(path, arrays["X"])
    y, classes = _labels(path, arrays["y"], n_rows=len(X))
    kind = "tabular" if X.ndim == 2 else "image"
    return Dataset(X=X, y=y, classes=classes, kind=kind, name=str(data_cfg.get("name", "npz")))


def _read_arrays(path: str) -> dict[str, np.ndarray]:
    """Load arrays ``X`` and ``y`` from the file, naming whichever is absent."""
    file = existing_file(path)
    if not zipfile.is_zipfile(file):
        raise InputError(path, "is not a .npz archive; save one with np.savez(path, X=..., y=...)")
    try:
        with np.load(file, allow_pickle=False) as npz:
            names = list(npz.files)
            missing = [key for key in ("X", "y") if key not in names]
            if missing:
                found = ", ".join(names) if names else "none"
                raise InputError(
                    path,
                    f"has no array {missing[0]!r} (arrays found: {found}); save it with np.savez(path, X=..., y=...)",
                )
            return {key: npz[key] for key in ("X", "y")}
    except InputError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise InputError(path, f"is not a readable .npz file ({type(err).__name__}: {err})") from None
    except ValueError as err:
        raise InputError(
            path, f"cannot be loaded without pickle; save numeric or string arrays ({err})"
        ) from None


def _features(path: str, X: np.ndarray) -> np.ndarray:
    """Validate ``X`` (rank, dtype, rows, finiteness) and return it float32, images with a channel axis."""
    if X.ndim not in (2, 3, 4):
        raise InputError(path, f"array 'X' must have {_RANKS}; got shape {X.shape}")
    if X.dtype.kind not in "biuf":
        raise InputError(path, f"array 'X' must be numeric, got dtype {X.dtype}")
    if len(X) == 0:
        raise InputError(path, f"array 'X' has no rows (shape {X.shape})")
    if X.size == 0:
        raise InputError(path, f"array 'X' has an empty feature axis (shape {X.shape})")
    X = X.astype(np.float32)
    bad = ~np.isfinite(X)
    if bad.any():
        raise InputError(
            path,
            f"array 'X' has {int(bad.sum())} NaN or infinite value(s), first in row {first_bad_row(bad)}",
        )
    return X[:, None] if X.ndim == 3 else X


def _labels(path: str, y: np.ndarray, n_rows: int) -> tuple[np.ndarray, list[str]]:
    """Validate ``y`` (1-D, one label per row of ``X``, no NaN) and encode it as class ids."""
    if y.ndim != 1:
        raise InputError(path, f"array 'y' must be 1-D (one label per row), got shape {y.shape}")
    if len(y) != n_rows:
        raise InputError(path, f"arrays 'X' and 'y' differ in length: len(X)={n_rows}, len(y)={len(y)}")
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise InputError(
            path, f"array 'y' has NaN or infinite label(s), first in row {first_bad_row(~np.isfinite(y))}"
        )
    if y.dtype.kind not in "biufUS":
        raise InputError(path, f"array 'y' must hold numbers or strings, got dtype {y.dtype}")
    return encode_labels(y)
