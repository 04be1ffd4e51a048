"""scikit-learn's bundled datasets: no download, always available."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_breast_cancer, load_digits

from trainers.data._dataset import Dataset, encode_labels

__all__ = ["breast_cancer", "digits"]


def digits() -> Dataset:
    """The 8x8 handwritten digits (1797 images, 10 classes) as ``(N, 1, 8, 8)`` float32 images.

    Pixel values stay in their original 0..16 range; scaling is the :class:`Preprocessor`'s job.
    """
    bunch = load_digits()
    X = np.asarray(bunch.data, dtype=np.float32).reshape(-1, 1, 8, 8)
    y, classes = encode_labels(np.asarray(bunch.target))
    return Dataset(X=X, y=y, classes=classes, kind="image", name="digits")


def breast_cancer() -> Dataset:
    """Wisconsin breast cancer (569 rows, 30 numeric features) with its two class names."""
    bunch = load_breast_cancer()
    X = np.asarray(bunch.data, dtype=np.float32)
    y = np.asarray(bunch.target, dtype=np.int64)
    classes = [str(name) for name in bunch.target_names]
    return Dataset(
        X=X,
        y=y,
        classes=classes,
        kind="tabular",
        name="breast_cancer",
        feature_names=[str(name) for name in bunch.feature_names],
    )
