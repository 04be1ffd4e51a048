"""Load a user's CSV table: numeric feature columns plus one target column of class labels."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from trainers.data._dataset import Dataset, config_value, encode_labels, required_path
from trainers.data._files import existing_file
from trainers.errors import InputError

__all__ = ["load_csv"]


def load_csv(data_cfg: Mapping) -> Dataset:
    """Read ``data.path`` with pandas and split it into features and the ``data.target`` column.

    Every column except the target is a feature and must be numeric (booleans count) and finite.
    Messages name the column and the file line (header = line 1) so the user can fix the file.

    Raises:
        InputError: for a missing ``data.path``/``data.target``, a missing, empty or unparsable file,
            an absent target column, no feature columns, non-numeric or non-finite features, or
            missing target values.
    """
    path = required_path(data_cfg, "my.csv")
    target = _required_target(data_cfg)
    frame = _read_frame(path, existing_file(path))
    if target not in frame.columns:
        columns = ", ".join(map(str, frame.columns))
        raise InputError("data.target", f"column {target!r} is not in {path}; its columns are: {columns}")
    features = frame.drop(columns=[target])
    if features.shape[1] == 0:
        raise InputError(path, f"has no feature columns besides the target {target!r}")
    X = np.column_stack([_feature_column(path, features[col], col) for col in features.columns])
    y, classes = _encode_target(path, frame[target], target)
    return Dataset(
        X=X.astype(np.float32),
        y=y,
        classes=classes,
        kind="tabular",
        name=str(data_cfg.get("name", "csv")),
        feature_names=[str(col) for col in features.columns],
    )


def _required_target(data_cfg: Mapping) -> str:
    """Return ``data.target`` as a column name, or explain how to set it."""
    target = config_value(data_cfg, "target")
    if target is None or str(target).strip() == "":
        raise InputError(
            "data.target", "is required for data=csv: the name of the label column, e.g. data.target=label"
        )
    return str(target)


def _read_frame(path: str, file: Path) -> pd.DataFrame:
    """Parse the CSV file, turning pandas' errors into one-line input errors."""
    try:
        frame = pd.read_csv(file)
    except pd.errors.EmptyDataError:
        raise InputError(path, "is empty: expected a header line and data rows") from None
    except pd.errors.ParserError as err:
        raise InputError(path, f"is not valid CSV: {_first_line(err)}") from None
    except UnicodeDecodeError as err:
        raise InputError(path, f"is not UTF-8 text ({err.reason} at byte {err.start})") from None
    if len(frame) == 0:
        raise InputError(path, "has a header but no data rows")
    frame.columns = [str(col) for col in frame.columns]
    return frame


def _feature_column(path: str, column: pd.Series, name: str) -> np.ndarray:
    """Return one feature column as finite float64 values, naming the column and line when it is not."""
    if not (pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)):
        numbers = pd.to_numeric(column, errors="coerce")
        bad = np.flatnonzero(numbers.isna().to_numpy() & column.notna().to_numpy())
        row = int(bad[0]) if len(bad) else 0
        raise InputError(
            path,
            f"feature column {name!r} is not numeric (line {_line(row)}: {column.iloc[row]!r}); "
            "encode it as numbers or drop the column",
        )
    values = column.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        raise InputError(
            path,
            f"feature column {name!r} has {len(bad)} missing or infinite value(s), "
            f"first at line {_line(int(bad[0]))}: {float(values[bad[0]])} (NaN = empty cell)",
        )
    return values


def _encode_target(path: str, column: pd.Series, name: str) -> tuple[np.ndarray, list[str]]:
    """Class ids and label strings of the target column; missing labels are an error."""
    missing = np.flatnonzero(column.isna().to_numpy())
    if len(missing):
        raise InputError(
            path,
            f"target column {name!r} has {len(missing)} missing value(s), first at line {_line(int(missing[0]))}",
        )
    values = column.to_numpy()
    if values.dtype == object:
        values = values.astype(str)
    return encode_labels(values)


def _line(row: int) -> int:
    """File line of data row ``row`` (0-based), counting the header as line 1."""
    return row + 2


def _first_line(err: Exception) -> str:
    """First non-empty line of an exception message, to keep errors on one line."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__
