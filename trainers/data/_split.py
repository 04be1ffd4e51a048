"""Seeded, stratified splits: one held-out test split, then K cross-validation folds on the rest.

The test split is computed class by class with a fixed rule (:func:`test_rows_per_class`) so that
:func:`check_dataset` can tell in advance, without a seed, whether every class is big enough.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
from sklearn.model_selection import StratifiedKFold

from trainers.data._dataset import Dataset
from trainers.data._sequence import check_sequence_dataset, leave_last_out, user_folds
from trainers.errors import InputError

__all__ = ["check_dataset", "cv_folds", "split_dataset", "split_test", "test_rows_per_class"]


def test_rows_per_class(n_rows: int, test_size: float) -> int:
    """How many of a class's ``n_rows`` go to the test split.

    ``round(n_rows * test_size)`` (halves up), but at least 1 so the test split sees every class and
    at most ``n_rows - 1`` so training does too; a class with a single row stays in development.
    """
    if n_rows < 2:
        return 0
    return min(max(1, math.floor(n_rows * test_size + 0.5)), n_rows - 1)


def split_test(y: np.ndarray, test_size: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split rows into development and held-out test rows, stratified by class and shuffled by ``seed``.

    Args:
        y: class ids of all rows.
        test_size: share of each class held out, in ``(0, 1)``.
        seed: the same seed always gives the same split.

    Returns:
        ``(dev_idx, test_idx)``: sorted, disjoint int64 index arrays that together cover every row.
    """
    _check_test_size(test_size)
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    test_parts = []
    for label in np.unique(y):
        rows = rng.permutation(np.flatnonzero(y == label))
        test_parts.append(rows[: test_rows_per_class(len(rows), test_size)])
    is_test = np.zeros(len(y), dtype=bool)
    if test_parts:
        is_test[np.concatenate(test_parts)] = True
    return np.flatnonzero(~is_test).astype(np.int64), np.flatnonzero(is_test).astype(np.int64)


def cv_folds(y: np.ndarray, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Stratified, shuffled K-fold splits of the rows of ``y``.

    Args:
        y: class ids of the rows to split (usually the development rows); indices refer to ``y``.
        folds: number of folds K >= 2; every class needs at least K rows.
        seed: the same seed gives the same folds, so every trial of a study sees the same folds.

    Returns:
        K ``(train_idx, val_idx)`` pairs; the validation sets partition ``range(len(y))``.
    """
    _check_folds(folds)
    y = np.asarray(y)
    labels, counts = np.unique(y, return_counts=True)
    if len(labels) and counts.min() < folds:
        small = int(np.argmin(counts))
        raise InputError(
            "cv.folds",
            f"{folds} stratified folds need >= {folds} rows per class, class {labels[small].item()!r} has {counts[small]}",
        )
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [
        (train.astype(np.int64), val.astype(np.int64))
        for train, val in splitter.split(np.zeros((len(y), 1)), y)
    ]


def split_dataset(ds: Dataset, test_size: float | None, folds: int,
                  seed: int) -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """``(dev_idx, test_idx, folds)`` of ``ds``: the split every caller should use.

    Classification data: :func:`split_test` then :func:`cv_folds` on the development rows (stratified).
    Sequence data: leave-last-out per user (``test_size`` is ignored) and folds over users, see
    :mod:`trainers.data._sequence`. Fold indices refer to ``dev_idx`` positions.
    """
    if ds.kind == "sequence":
        dev_idx, test_idx = leave_last_out(ds)
        _check_folds(folds)
        return dev_idx, test_idx, user_folds(len(dev_idx), folds, seed)
    dev_idx, test_idx = split_test(ds.y, test_size, seed)
    return dev_idx, test_idx, cv_folds(ds.y[dev_idx], folds, seed)


def check_dataset(ds: Dataset, folds: int, test_size: float) -> None:
    """Fail early, before any training, when the data cannot support the configured evaluation.

    Args:
        ds: the loaded dataset.
        folds: ``cv.folds``.
        test_size: ``data.test_size``.

    Raises:
        InputError: ``data.test_size`` outside ``(0, 1)``, ``cv.folds`` < 2, a single class, or a class
            too small for one test row plus ``folds`` stratified folds; for sequence data, fewer than
            ``2 * folds`` users.
    """
    if ds.kind == "sequence":  # leave-last-out: data.test_size does not apply
        _check_folds(folds)
        check_sequence_dataset(ds, folds)
        return
    _check_test_size(test_size)
    _check_folds(folds)
    counts = np.bincount(ds.y, minlength=ds.n_classes)
    present = np.flatnonzero(counts)
    if len(present) < 2:
        only = ds.classes[present[0]] if len(present) else "none"
        raise InputError(
            _labels_key(ds), f"has a single class ({only!r}) in data={ds.name}; a classifier needs at least 2"
        )
    smallest = int(present[np.argmin(counts[present])])
    n_rows = int(counts[smallest])
    need = _rows_needed(folds, test_size)
    if n_rows < need:
        raise InputError(
            "cv.folds",
            f"class {ds.classes[smallest]!r} has only {n_rows} rows, but a stratified test split "
            f"(data.test_size={test_size}) plus {folds} stratified folds need >= {need}; lower cv.folds or add rows",
        )


def _rows_needed(folds: int, test_size: float) -> int:
    """Smallest class size that leaves at least ``folds`` development rows after the test split."""
    n = folds + 1
    while n - test_rows_per_class(n, test_size) < folds:
        n += 1
    return n


def _labels_key(ds: Dataset) -> str:
    """The config key a user changes to fix the labels: the target column, the file, or the dataset."""
    return {"csv": "data.target", "npz": "data.path"}.get(ds.name, "data")


def _check_test_size(test_size: float) -> None:
    """``data.test_size`` must be a number strictly between 0 and 1."""
    ok = isinstance(test_size, numbers.Real) and not isinstance(test_size, bool) and 0 < test_size < 1
    if not ok:
        raise InputError("data.test_size", f"must be a number in (0, 1), got {test_size!r}")


def _check_folds(folds: int) -> None:
    """``cv.folds`` must be an integer >= 2."""
    ok = isinstance(folds, numbers.Integral) and not isinstance(folds, bool) and folds >= 2
    if not ok:
        raise InputError("cv.folds", f"must be an integer >= 2, got {folds!r}")
