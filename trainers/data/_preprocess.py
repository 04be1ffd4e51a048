"""Feature preprocessing fitted on training rows only: per-feature standardization, then optional PCA.

The fitted state is a handful of float32 arrays (:meth:`Preprocessor.state_dict`), and applying it
is plain numpy arithmetic, so a compressed model file can embed its preprocessing and run it
without scikit-learn.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping

import numpy as np
from sklearn.decomposition import PCA

from trainers.errors import InputError

__all__ = ["Preprocessor"]

_STATE_KEYS = frozenset({"mean", "scale", "pca_components", "pca_mean"})


class Preprocessor:
    """Standardize each feature (or pixel), then optionally project onto principal components.

    Args:
        standardize: subtract the training mean and divide by the training standard deviation of each
            feature; for images each pixel of ``(C, H, W)`` is a feature and the shape is kept.
            Constant features get a scale of 1 so they map to 0 instead of dividing by zero.
        pca: ``None`` for no PCA, an int for that many components, or a float in ``(0, 1)`` for the
            smallest number of components keeping that share of variance. PCA flattens its input, so
            the output is tabular ``(N, k)``.

    Raises:
        InputError: ``data.pca`` is not ``None``, an int >= 1 or a float in ``(0, 1)``.

    Example:
        >>> pre = Preprocessor(pca=2).fit(np.eye(4, dtype=np.float32))
        >>> pre.transform(np.eye(4, dtype=np.float32)).shape
        (4, 2)
    """

    def __init__(self, standardize: bool = True, pca: int | float | None = None) -> None:
        self.standardize = bool(standardize)
        self.pca = _check_pca(pca)
        self.variance_kept: float | None = None
        self._mean: np.ndarray | None = None
        self._scale: np.ndarray | None = None
        self._components: np.ndarray | None = None
        self._pca_mean: np.ndarray | None = None
        self._input_shape: tuple[int, ...] | None = None
        self._fitted = False

    @property
    def fitted(self) -> bool:
        """Whether :meth:`fit` (or :meth:`from_state_dict`) has set the state."""
        return self._fitted

    def fit(self, X: np.ndarray) -> Preprocessor:
        """Learn the statistics from ``X``, which must hold the training rows only.

        Args:
            X: ``(N, F)`` or ``(N, C, H, W)`` training rows.

        Returns:
            ``self``, for chaining.

        Raises:
            InputError: an int ``data.pca`` larger than the number of features or training rows.
        """
        X = _as_rows(X)
        self._input_shape = tuple(int(d) for d in X.shape[1:])
        if self.standardize:
            self._mean, self._scale = _mean_and_scale(X)
        if self.pca is not None:
            self._fit_pca(self._standardized(X).reshape(len(X), -1))
        self._fitted = True
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Apply the fitted preprocessing; returns float32 of :meth:`output_shape` per row."""
        if not self._fitted:
            raise RuntimeError("Preprocessor.transform called before fit")
        X = _as_rows(X)
        if self._input_shape is not None and tuple(X.shape[1:]) != self._input_shape:
            raise ValueError(
                f"Preprocessor was fitted on rows of shape {self._input_shape}, got {tuple(X.shape[1:])}"
            )
        out = self._standardized(X)
        if self._components is not None and self._pca_mean is not None:
            out = (out.reshape(len(out), -1) - self._pca_mean) @ self._components.T
        return np.ascontiguousarray(out, dtype=np.float32)

    def fit_transform(self, X: np.ndarray) -> np.ndarray:
        """:meth:`fit` on ``X`` and return ``transform(X)``."""
        return self.fit(X).transform(X)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of one transformed row for rows of ``input_shape`` (PCA: ``(k,)``, else unchanged)."""
        if self.pca is None:
            return tuple(int(d) for d in input_shape)
        if self._components is not None:
            return (int(self._components.shape[0]),)
        if isinstance(self.pca, int):
            return (self.pca,)
        raise RuntimeError("output_shape with a variance-share pca is known only after fit")

    def state_dict(self) -> dict[str, np.ndarray]:
        """The fitted state as float32 arrays: ``mean``/``scale`` and/or ``pca_components``/``pca_mean``."""
        if not self._fitted:
            raise RuntimeError("Preprocessor.state_dict called before fit")
        arrays = {
            "mean": self._mean,
            "scale": self._scale,
            "pca_components": self._components,
            "pca_mean": self._pca_mean,
        }
        return {
            key: value.astype(np.float32, copy=True) for key, value in arrays.items() if value is not None
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, np.ndarray]) -> Preprocessor:
        """Rebuild a fitted preprocessor from :meth:`state_dict`; its transform gives identical output."""
        unknown = set(state) - _STATE_KEYS
        if unknown:
            raise ValueError(f"unknown Preprocessor state keys: {sorted(unknown)}")
        for pair in (("mean", "scale"), ("pca_components", "pca_mean")):
            if (pair[0] in state) != (pair[1] in state):
                raise ValueError(f"Preprocessor state needs both {pair[0]!r} and {pair[1]!r} or neither")
        pre = cls(standardize="mean" in state)
        if "mean" in state:
            pre._mean = np.array(state["mean"], dtype=np.float32)
            pre._scale = np.array(state["scale"], dtype=np.float32)
            pre._input_shape = tuple(int(d) for d in pre._mean.shape)
        if "pca_components" in state:
            pre._components = np.array(state["pca_components"], dtype=np.float32)
            pre._pca_mean = np.array(state["pca_mean"], dtype=np.float32)
            pre.pca = int(pre._components.shape[0])
        pre._fitted = True
        return pre

    def _standardized(self, X: np.ndarray) -> np.ndarray:
        """``(X - mean) / scale`` in float32, or ``X`` unchanged when not standardizing."""
        if self._mean is None or self._scale is None:
            return X
        return (X - self._mean) / self._scale

    def _fit_pca(self, flat: np.ndarray) -> None:
        """Fit sklearn's PCA on the flattened, standardized training rows and keep its projection."""
        n_rows, n_features = flat.shape
        if isinstance(self.pca, int) and self.pca > min(n_rows, n_features):
            raise InputError(
                "data.pca",
                f"asks for {self.pca} components, but the data has {n_features} features and {n_rows} training rows",
            )
        pca = PCA(n_components=self.pca, svd_solver="full", random_state=0).fit(flat.astype(np.float64))
        self._components = pca.components_.astype(np.float32)
        self._pca_mean = pca.mean_.astype(np.float32)
        self.variance_kept = float(np.sum(pca.explained_variance_ratio_))


def _check_pca(pca: object) -> int | float | None:
    """Validate ``data.pca``: ``None``, an int >= 1, or a float strictly between 0 and 1."""
    if pca is None:
        return None
    if isinstance(pca, numbers.Integral) and not isinstance(pca, bool) and pca >= 1:
        return int(pca)
    if isinstance(pca, numbers.Real) and not isinstance(pca, (bool, numbers.Integral)) and 0 < pca < 1:
        return float(pca)
    raise InputError(
        "data.pca",
        f"must be null, an integer >= 1 (number of components) or a float in (0, 1) (share of variance), got {pca!r}",
    )


def _as_rows(X: np.ndarray) -> np.ndarray:
    """``X`` as float32 with a row axis and at least one feature axis."""
    X = np.asarray(X, dtype=np.float32)
    if X.ndim < 2:
        raise ValueError(f"Preprocessor needs rows of shape (N, ...), got shape {X.shape}")
    return X


def _mean_and_scale(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation (float64 sums, float32 result); constant features get scale 1."""
    if len(X) == 0:
        raise ValueError("Preprocessor.fit needs at least one row")
    mean = X.mean(axis=0, dtype=np.float64)
    std = X.std(axis=0, dtype=np.float64)
    constant = std <= 1e-7 * (1.0 + np.abs(mean))
    scale = np.where(constant, 1.0, std)
    return mean.astype(np.float32), scale.astype(np.float32)
