"""Load a user's CSV table: numeric feature columns plus one target column of class labels.

What a user would expect from a spreadsheet export, checked before any training:

* the delimiter is ``data.sep`` or detected from the first lines (``,``, ``;``, tab, ``|``);
* ``data.target`` is a column name, or a 0-based column index (negative counts from the end);
* a saved pandas index (a first column with no header name and distinct integer values, read by pandas
  as ``Unnamed: 0``) is dropped with a notice on stderr, so it never leaks the row order into training;
* duplicate header names, a continuous (regression) target, and features beyond float32's range are
  refused with a message that says what they are.
"""

from __future__ import annotations

import csv
import re
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from trainers.data._dataset import Dataset, config_value, encode_labels, required_path
from trainers.data._files import existing_file
from trainers.errors import InputError

__all__ = ["DELIMITERS", "detect_delimiter", "load_csv"]

#: delimiters tried by :func:`detect_delimiter`, in order of preference on a tie
DELIMITERS = (",", ";", "\t", "|")

_SEP_ALIASES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}
_SAMPLE_BYTES = 64 * 1024
_SAMPLE_LINES = 50
_FLOAT32_MAX = float(np.finfo(np.float32).max)
#: a target with non-integral numbers and more distinct values than this (or than half its rows) is continuous
_MAX_FLOAT_CLASSES = 20


def load_csv(data_cfg: Mapping) -> Dataset:
    """Read ``data.path`` with pandas and split it into features and the ``data.target`` column.

    Every column except the target (and a dropped index column) is a feature and must be numeric
    (booleans count) and finite in float32. Messages name the column and the file line (header =
    line 1) so the user can fix the file.

    Raises:
        InputError: for a missing ``data.path``/``data.target``, a missing, empty or unparsable file,
            duplicate column names, an absent target column or index, no feature columns, non-numeric
            or out-of-range features, missing target values, or a continuous target.
    """
    path = required_path(data_cfg, "my.csv")
    target_key = _required_target(data_cfg)
    file = existing_file(path)
    sep = _separator(data_cfg, path, file)
    frame = _read_frame(path, file, sep)
    target = _resolve_target(path, frame, target_key, sep)
    frame = _drop_index_column(path, frame, target)
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


# --- the file's shape: delimiter, header, target, index column ---------------------------------------


def detect_delimiter(lines: list[str]) -> str:
    """The delimiter of a CSV sample: the candidate that splits every line into the same number (>= 2) of
    fields, the most fields winning; else the one that splits the header most; else ``,``.

    Example:
        >>> detect_delimiter(["a;b;label", "1.5;2;x", "3;4;y"])
        ';'
        >>> detect_delimiter(["a\\tb", "1\\t2"])
        '\\t'
    """
    lines = [line for line in lines if line.strip()]
    if not lines:
        return ","
    best, best_fields = ",", 1
    for sep in DELIMITERS:
        counts = {len(row) for row in csv.reader(lines, delimiter=sep)}
        if len(counts) == 1 and (n := counts.pop()) > best_fields:
            best, best_fields = sep, n
    if best_fields > 1:
        return best
    header_fields = {sep: len(next(csv.reader(lines[:1], delimiter=sep))) for sep in DELIMITERS}
    sep = max(DELIMITERS, key=lambda s: header_fields[s])  # first wins ties (max keeps the first maximum)
    return sep if header_fields[sep] > 1 else ","


def _sample_lines(file: Path) -> list[str]:
    with open(file, "rb") as f:
        data = f.read(_SAMPLE_BYTES)
    text = data.decode("utf-8-sig", errors="replace")
    lines = text.splitlines()
    if len(data) == _SAMPLE_BYTES and len(lines) > 1:
        lines = lines[:-1]  # the last line may be cut
    return lines[:_SAMPLE_LINES]


def _separator(data_cfg: Mapping, path: str, file: Path) -> str:
    """``data.sep`` (``tab`` and ``\\t`` mean a tab), or the delimiter detected from the file's first lines."""
    sep = config_value(data_cfg, "sep")
    if sep is None:
        return detect_delimiter(_sample_lines(file))
    sep = _SEP_ALIASES.get(str(sep), str(sep))
    if len(sep) != 1 or sep in "\"\r\n":
        raise InputError("data.sep", f"must be null (detect), comma, semicolon, tab, pipe or one character, got {sep!r}")
    return sep


def _header(file: Path, sep: str) -> list[str]:
    lines = _sample_lines(file)
    return next(csv.reader(lines[:1], delimiter=sep)) if lines else []


def _read_frame(path: str, file: Path, sep: str) -> pd.DataFrame:
    """Parse the CSV file, turning pandas' errors into one-line input errors."""
    header = _header(file, sep)
    seen: dict[str, int] = {}
    for i, name in enumerate(header):
        if name.strip() and name in seen:
            raise InputError(path, f"has two columns named {name!r} (columns {seen[name]} and {i}, 0-based): "
                                   "rename or drop one")
        seen.setdefault(name, i)
    try:
        frame = pd.read_csv(file, sep=sep)
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


def _required_target(data_cfg: Mapping) -> str | int:
    """``data.target`` as a column name (str) or index (int), or explain how to set it."""
    target = config_value(data_cfg, "target")
    if target is None or str(target).strip() == "":
        raise InputError(
            "data.target", "is required for data=csv: the name of the label column, e.g. data.target=label"
        )
    if isinstance(target, int) and not isinstance(target, bool):
        return target
    return str(target)


def _resolve_target(path: str, frame: pd.DataFrame, target: str | int, sep: str) -> str:
    """The target's column name: by name, or by 0-based index (an index that is also another column's name
    is refused as ambiguous)."""
    columns = list(frame.columns)
    if isinstance(target, int):
        if not -len(columns) <= target < len(columns):
            raise InputError("data.target", f"column index {target} is out of range: {path} has {len(columns)} "
                                            f"columns, 0..{len(columns) - 1}: {', '.join(columns)}")
        chosen = columns[target]
        if str(target) in columns and str(target) != chosen:
            raise InputError("data.target", f"{target} is both the index of column {chosen!r} and the name of another "
                                            f"column of {path}: write data.target={chosen} (by name) or "
                                            f"data.target='{target}' (the column named {target})")
        return chosen
    if target in columns:
        return target
    hint = ""
    if len(columns) == 1:
        found = [s for s in DELIMITERS if s != sep and s in columns[0]]
        if found:
            shown = "tab" if found[0] == "\t" else repr(found[0])
            hint = f" (the header holds {shown}: is that the delimiter? set data.sep={shown})"
    raise InputError("data.target", f"column {target!r} is not in {path}; its columns are: {', '.join(columns)}"
                                    f"{hint} (data.target also takes a 0-based column index)")


def _drop_index_column(path: str, frame: pd.DataFrame, target: str) -> pd.DataFrame:
    """Drop a saved pandas index: a first column without a header name holding distinct integers."""
    first = frame.columns[0]
    if first != "Unnamed: 0" or first == target or frame.shape[1] < 2:
        return frame
    column = frame[first]
    if not pd.api.types.is_integer_dtype(column) or not column.is_unique:
        return frame
    values = column.to_numpy()
    print(f"squeeze: note: {path}: dropped its first column (no header name, {len(values)} distinct integers "
          f"{values.min()}..{values.max()}: a saved row index, not a feature)", file=sys.stderr)
    return frame.drop(columns=[first])


# --- columns -----------------------------------------------------------------------------------------


def _feature_column(path: str, column: pd.Series, name: str) -> np.ndarray:
    """Return one feature column as float64 values finite in float32, naming the column and line when not."""
    if not (pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column)):
        numbers = pd.to_numeric(column, errors="coerce")
        bad = np.flatnonzero(numbers.isna().to_numpy() & column.notna().to_numpy())
        row = int(bad[0]) if len(bad) else 0
        value = column.iloc[row]
        hint = "; decimal commas are not read: write 1.5, not 1,5" if re.fullmatch(r"-?\d+,\d+", str(value)) else ""
        raise InputError(
            path,
            f"feature column {name!r} is not numeric (line {_line(row)}: {value!r}); "
            f"encode it as numbers or drop the column{hint}",
        )
    values = column.to_numpy(dtype=np.float64, na_value=np.nan)
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        raise InputError(
            path,
            f"feature column {name!r} has {len(bad)} missing or infinite value(s), "
            f"first at line {_line(int(bad[0]))}: {float(values[bad[0]])} (NaN = empty cell)",
        )
    big = np.flatnonzero(np.abs(values) > _FLOAT32_MAX)
    if len(big):
        raise InputError(
            path,
            f"feature column {name!r} has {len(big)} value(s) beyond float32's range (|x| > {_FLOAT32_MAX:.3g}, "
            f"the models' number type), first at line {_line(int(big[0]))}: {float(values[big[0]]):g}; "
            "rescale the column (e.g. take its log)",
        )
    return values


def _encode_target(path: str, column: pd.Series, name: str) -> tuple[np.ndarray, list[str]]:
    """Class ids and label strings of the target column; missing labels and continuous values are errors."""
    missing = np.flatnonzero(column.isna().to_numpy())
    if len(missing):
        raise InputError(
            path,
            f"target column {name!r} has {len(missing)} missing value(s), first at line {_line(int(missing[0]))}",
        )
    values = column.to_numpy()
    if values.dtype.kind == "f" and not np.all(values == np.round(values)):
        distinct = len(np.unique(values))
        if distinct > _MAX_FLOAT_CLASSES or (distinct > 2 and distinct > len(values) / 2):
            raise InputError(
                path,
                f"target column {name!r} looks like a regression target ({distinct} distinct non-integer values in "
                f"{len(values)} rows, e.g. {values[0]:g}); squeeze classifies: bin it into classes or pick the "
                "label column with data.target",
            )
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

