"""Datasets for squeeze: loading, validation, seeded stratified splits and train-only preprocessing.

Typical use by a trainer::

    ds = load_dataset(cfg.data)
    check_dataset(ds, folds=cfg.cv.folds, test_size=cfg.data.test_size)
    dev_idx, test_idx = split_test(ds.y, cfg.data.test_size, cfg.seed)
    for train, val in cv_folds(ds.y[dev_idx], cfg.cv.folds, cfg.seed):
        pre = Preprocessor(cfg.data.standardize, cfg.data.pca).fit(ds.X[dev_idx][train])
        ...

Sequence data (``data=ecommerce``, ``data=interactions``) has two rows per user and is split
leave-last-out with folds over users: use :func:`split_dataset`, which dispatches on ``ds.kind``
(the protocol is documented in :mod:`trainers.data._sequence`).
"""

from __future__ import annotations

from trainers.data._dataset import Dataset
from trainers.data._load import DATASET_NAMES, load_dataset
from trainers.data._preprocess import Preprocessor
from trainers.data._sequence import from_histories, leave_last_out, user_folds
from trainers.data._split import check_dataset, cv_folds, split_dataset, split_test

__all__ = [
    "DATASET_NAMES",
    "Dataset",
    "Preprocessor",
    "check_dataset",
    "cv_folds",
    "from_histories",
    "leave_last_out",
    "load_dataset",
    "split_dataset",
    "split_test",
    "user_folds",
]
