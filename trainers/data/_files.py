"""Checks shared by the file loaders: the file exists, and where a bad value sits."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from trainers.errors import InputError

__all__ = ["existing_file", "first_bad_row"]


def existing_file(path: str) -> Path:
    """Return ``path`` as a :class:`Path` if it is a readable file, else raise ``InputError(path, ...)``.

    The message shows the absolute path looked at, since relative paths depend on the working directory.
    """
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise InputError(path, f"file not found (looked for {resolved.absolute()})")
    if not resolved.is_file():
        raise InputError(path, f"is not a file (looked at {resolved.absolute()})")
    return resolved


def first_bad_row(bad: np.ndarray) -> int:
    """Index of the first row where the boolean mask ``bad`` (rows first, any rank) is true."""
    rows = bad.reshape(len(bad), -1).any(axis=1)
    return int(np.flatnonzero(rows)[0])
