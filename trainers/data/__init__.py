"""Datasets for squeeze: loading, validation, seeded stratified splits and train-only preprocessing.

Typical use by a trainer::

    ds = load_dataset(cfg.data)
    check_dataset(ds, folds=cfg.cv.folds, test_size=cfg.data.test_size)
    dev_idx, test_idx = split_test(ds.y, cfg.data.test_size, cfg.seed)
    for train, val in cv_folds(ds.y[dev_idx], cfg.cv.folds, cfg.seed):
        pre = Preprocessor(cfg.data.standardize, cfg.data.pca).fit(ds.X[dev_idx][train])
        ...
"""

from __future__ import annotations

from trainers.data._dataset import Dataset
from trainers.data._load import DATASET_NAMES, load_dataset
from trainers.data._preprocess import Preprocessor
from trainers.data._split import check_dataset, cv_folds, split_test

__all__ = [
    "DATASET_NAMES",
    "Dataset",
    "Preprocessor",
    "check_dataset",
    "cv_folds",
    "load_dataset",
    "split_test",
]
