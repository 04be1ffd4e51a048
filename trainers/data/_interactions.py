"""``data=interactions``: real interaction logs as sequence data (MovieLens files or any CSV).

Formats (``data.format``; ``auto`` picks from the first line of the file):

* ``movielens_tab``: ml-100k ``u.data``, tab-separated ``user item rating timestamp``, no header;
* ``movielens_dat``: ml-1m ``ratings.dat``, ``user::item::rating::timestamp``, no header;
* ``csv``: a CSV file with a header; ``data.user_col``, ``data.item_col`` and ``data.time_col`` name the
  columns (``time_col: null`` = the file's row order; times may be numbers or dates). Other columns are
  ignored.

Every interaction is one event (ratings are not thresholded). Events are ordered per user by time, and
ties (several events at the same timestamp) by item id, so the order never depends on the order of the
lines; exact duplicate lines (same user, item and time) are kept once. Users with fewer than
``data.min_events`` (>= 3: an input, the validation and the test event) are dropped, and the count is
printed. The catalog is every item of the kept users.

Optional ``data.item_features``: a CSV with the ``data.item_col`` column and one column per categorical
side feature (e.g. ``category``, ``brand``); each becomes an input channel (ids in sorted value order,
0 = unknown for items the file does not list).

Optional ``data.user_features``: a CSV with the ``data.user_col`` column and one column per categorical user
feature (e.g. ``age``, ``gender``, ``occupation``); each becomes an input channel ``user:<column>`` after the
side features (ids in sorted value order, 0 = unknown for users the file does not list).

:func:`serving_rows` turns a new log (and user file) into the model's input rows with the ids the training
data used (the dataset's ``serving`` JSON, stored in the shipped artifact): ``python -m search.predict``.
"""

from __future__ import annotations

import io
import numbers
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from trainers.data._dataset import config_value, required_path
from trainers.data._files import existing_file
from trainers.data._sequence import MIN_EVENTS, USER_PREFIX, from_histories
from trainers.errors import InputError

__all__ = ["FORMATS", "load_interactions", "log_from_frame", "read_log", "serving_rows", "user_feature_names"]

FORMATS = ("auto", "movielens_tab", "movielens_dat", "csv")
_MOVIELENS = ["user", "item", "rating", "timestamp"]


def load_interactions(data_cfg: Mapping):
    """The log at ``data.path`` as a sequence :class:`~trainers.data.Dataset` (see the module docstring).

    Raises:
        InputError: missing path or file, unknown format, a missing column (named with the file's columns),
            missing user/item values, unparsable times, ``min_events`` < 3, or fewer than 2 items left.
    """
    path = required_path(data_cfg, "ratings.dat")
    min_events = _integer(data_cfg, "min_events", 5, lo=MIN_EVENTS)
    max_len = _integer(data_cfg, "max_len", 50, lo=1)
    log = read_log(path, data_cfg)
    counts = log.groupby("user", sort=False)["item"].transform("size")
    kept = log[counts >= min_events]
    n_users, n_kept = log["user"].nunique(), kept["user"].nunique()
    if n_kept < n_users:
        print(f"data={data_cfg.get('name', 'interactions')}: dropped {n_users - n_kept} of {n_users} users with "
              f"fewer than data.min_events={min_events} events", file=sys.stderr)
    if n_kept == 0:
        raise InputError(path, f"no user has data.min_events={min_events} events or more")

    item_names = _sorted_unique(kept["item"])
    if len(item_names) < 2:
        raise InputError(path, f"the kept users have {len(item_names)} distinct item(s); ranking needs at least 2")
    item_id = pd.Index(item_names).get_indexer(kept["item"]) + 1                  # 1 .. n_items
    user_id = pd.Index(_sorted_unique(kept["user"])).get_indexer(kept["user"])
    order = np.lexsort((item_id, kept["time"].to_numpy(), user_id))                # user, then time, then item
    channels = [item_id]
    feature_names = ["item"]
    serving: dict = {"item_features": {}, "user_features": {}}
    side_path = config_value(data_cfg, "item_features")
    if side_path:
        names, tables, _ = _categorical_table(str(side_path), "item_features", "item_col", "item",
                                              data_cfg, item_names)
        channels += [table[item_id] for table in tables]
        feature_names += names
        serving["item_features"] = {n: t.tolist() for n, t in zip(names, tables)}
    user_path = config_value(data_cfg, "user_features")
    if user_path:
        user_names = _sorted_unique(kept["user"])
        names, tables, vocabs = _categorical_table(str(user_path), "user_features", "user_col", "user",
                                                   data_cfg, user_names)
        channels += [table[user_id + 1] for table in tables]
        feature_names += [USER_PREFIX + n for n in names]
        serving["user_features"] = dict(zip(names, vocabs))
    events = np.stack(channels, axis=1).astype(np.int64)[order]                    # (n_events, C)
    starts = np.flatnonzero(np.diff(user_id[order], prepend=-1))
    histories = np.split(events, starts[1:])
    return from_histories(histories, ["<pad>", *item_names], feature_names,
                          str(data_cfg.get("name", "interactions")), max_len, serving)


def user_feature_names(data_cfg: Mapping) -> list[str]:
    """The user-feature columns of ``data.user_features`` (its header; [] without a user file)."""
    path = config_value(data_cfg, "user_features")
    if not path:
        return []
    file = existing_file(str(path))
    try:
        columns = [str(c) for c in pd.read_csv(file, dtype=str, nrows=0).columns]
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise InputError(str(path), f"is not a readable user-features CSV ({str(err).strip().splitlines()[0]})") from None
    user_col = str(data_cfg.get("user_col", "user") or "user")
    return [c for c in columns if c != user_col]


def serving_rows(log: pd.DataFrame, classes: list[str], feature_names: list[str], serving: Mapping,
                 max_len: int, users_frame: pd.DataFrame | None = None, user_col: str = "user"
                 ) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The model's input rows for every user of a new ``log`` (columns ``user``, ``item``, ``time``, as
    :func:`read_log` gives): ``(users, X, seen)``.

    ``X`` (U, C, max_len) holds each user's most recent events with the training data's ids (``classes``,
    and the ``serving`` tables for side and user features, channels in ``feature_names`` order), so the
    same events give the same row as in training; items not in ``classes`` are skipped, and a user with
    none keeps an empty window (the user features still sit at the last position). ``seen`` (U, H) lists
    every catalog item of the user's log (0-padded): what a recommendation must not repeat. Users are in
    :func:`_sorted_unique` order (numeric ids numerically).
    """
    user_names = _sorted_unique(log["user"])
    item_id = pd.Index([str(c) for c in classes[1:]]).get_indexer(log["item"].astype(str)) + 1   # 0 = unknown
    user_id = pd.Index(user_names).get_indexer(log["user"].astype(str))
    known = item_id > 0
    item_id, user_id, times = item_id[known], user_id[known], log["time"].to_numpy()[known]
    order = np.lexsort((item_id, times, user_id))
    item_id, user_id = item_id[order], user_id[order]
    n_users = len(user_names)
    user_ids = np.zeros((n_users, 0), dtype=np.int64)
    user_feats = [n for n in feature_names if n.startswith(USER_PREFIX)]
    if user_feats:
        user_ids = np.zeros((n_users, len(user_feats)), dtype=np.int64)
        if users_frame is not None:
            if user_col not in users_frame.columns:
                raise InputError("data.user_features", f"needs the user column {user_col!r} (data.user_col); its "
                                                       f"columns are: {', '.join(map(str, users_frame.columns))}")
            row_of = pd.Index(users_frame[user_col].astype(str)).get_indexer(user_names)
            for j, name in enumerate(user_feats):
                col = name[len(USER_PREFIX):]
                if col not in users_frame.columns:
                    continue                                           # not given: unknown (0)
                vocab = pd.Index(serving["user_features"][col])
                ids = vocab.get_indexer(users_frame[col].fillna("").astype(str)) + 1    # unseen values -> 0
                user_ids[:, j] = np.where(row_of >= 0, ids[np.maximum(row_of, 0)], 0)
    X = np.zeros((n_users, len(feature_names), max_len), dtype=np.int64)
    starts = np.searchsorted(user_id, np.arange(n_users + 1))
    seen_lists = []
    for u in range(n_users):
        items = item_id[starts[u]:starts[u + 1]]
        seen_lists.append(np.unique(items))
        window = items[-max_len:]
        T = len(window)
        for c, name in enumerate(feature_names):
            if name == "item":
                values = window
            elif name.startswith(USER_PREFIX):
                X[u, c, -1] = user_ids[u, user_feats.index(name)]
                values = np.full(T, user_ids[u, user_feats.index(name)])
            else:
                values = np.asarray(serving["item_features"][name], dtype=np.int64)[window]
            if T:
                X[u, c, max_len - T:] = values
    seen = np.zeros((n_users, max((len(s) for s in seen_lists), default=0)), dtype=np.int64)
    for u, s in enumerate(seen_lists):
        seen[u, :len(s)] = s
    return user_names, X, seen


def read_log(path: str, data_cfg: Mapping) -> pd.DataFrame:
    """The log as columns ``user``, ``item`` (as read) and ``time`` (numbers), exact duplicates removed."""
    file = existing_file(path)
    fmt = str(data_cfg.get("format", "auto") or "auto")
    if fmt not in FORMATS:
        raise InputError("data.format", f"must be one of {'|'.join(FORMATS)}, got {fmt!r}")
    text = _read_text(path, file)
    if fmt == "auto":
        fmt = _detect(text)
    if fmt == "csv":
        frame = _read_csv(path, text, data_cfg)
    else:
        sep = "\t" if fmt == "movielens_tab" else "::"
        frame = _read_movielens(path, text, sep, fmt)
    for col in ("user", "item"):
        missing = np.flatnonzero(frame[col].isna().to_numpy())
        if len(missing):
            raise InputError(path, f"has {len(missing)} event(s) without a {col}, first in data row {missing[0] + 1}")
    return frame.drop_duplicates(["user", "item", "time"]).reset_index(drop=True)


def _read_text(path: str, file: Path) -> str:
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        text = file.read_text(encoding="latin-1")                 # MovieLens files are latin-1
    if not text.strip():
        raise InputError(path, "is empty: expected one interaction per line")
    return text


def _detect(text: str) -> str:
    first = next(line for line in text.splitlines() if line.strip())
    if "::" in first:
        return "movielens_dat"
    if "\t" in first and first.split("\t")[0].strip().isdigit():
        return "movielens_tab"
    return "csv"


def _read_movielens(path: str, text: str, sep: str, fmt: str) -> pd.DataFrame:
    try:
        frame = pd.read_csv(io.StringIO(text.replace("::", "\t") if sep == "::" else text), sep="\t",
                            header=None, dtype=str)
    except pd.errors.ParserError as err:
        raise InputError(path, f"is not a {fmt} file ({str(err).strip().splitlines()[0]})") from None
    if frame.shape[1] != 4:
        raise InputError(path, f"{fmt} expects 4 fields per line (user item rating timestamp), "
                               f"the file has {frame.shape[1]}; set data.format=csv with data.user_col/item_col/time_col")
    frame.columns = _MOVIELENS
    return pd.DataFrame({"user": frame["user"], "item": frame["item"],
                         "time": _times(path, frame["timestamp"], "timestamp", "data.format")})


def _read_csv(path: str, text: str, data_cfg: Mapping) -> pd.DataFrame:
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise InputError(path, f"is not valid CSV ({str(err).strip().splitlines()[0]})") from None
    if len(frame) == 0:
        raise InputError(path, "has a header but no interactions")
    return log_from_frame(frame, data_cfg, path)


def log_from_frame(frame: pd.DataFrame, data_cfg: Mapping, source: str) -> pd.DataFrame:
    """The columns ``user``, ``item``, ``time`` of a DataFrame of events, named by ``data.user_col``,
    ``data.item_col`` and ``data.time_col`` (``null``: the row order); InputError at ``source`` naming a
    missing column or a bad time. Exact duplicates and missing ids are left to the caller."""
    frame = frame.rename(columns=str)
    columns = {}
    for key, default in (("user_col", "user"), ("item_col", "item"), ("time_col", "timestamp")):
        name = data_cfg.get(key, default)
        if name is None and key == "time_col":
            continue
        if str(name) not in frame.columns:
            raise InputError(f"data.{key}", f"column {name!r} is not in {source}; its columns are: "
                                            f"{', '.join(map(str, frame.columns))}")
        columns[key] = str(name)
    time_col = columns.get("time_col")
    times = (np.arange(len(frame), dtype=np.int64) if time_col is None
             else _times(source, frame[time_col].astype(str), time_col, "data.time_col"))
    return pd.DataFrame({"user": frame[columns["user_col"]], "item": frame[columns["item_col"]], "time": times})


def _times(path: str, column: pd.Series, name: str, key: str) -> np.ndarray:
    """Sortable times of a column of numbers or dates (as int64 ns); InputError naming the first bad value."""
    numbers_ = pd.to_numeric(column, errors="coerce")
    if not numbers_.isna().any():
        return numbers_.to_numpy()                                   # int64, or float64 for fractional times
    dates = pd.to_datetime(column, errors="coerce", format="mixed")
    bad = np.flatnonzero(dates.isna().to_numpy())
    if len(bad):
        raise InputError(path, f"time column {name!r} has {len(bad)} value(s) that are neither numbers nor dates, "
                               f"first in data row {bad[0] + 1}: {column.iloc[bad[0]]!r} (fix the file or {key})")
    return dates.to_numpy().astype("datetime64[ns]").astype(np.int64)


def _sorted_unique(values: pd.Series) -> list[str]:
    """Distinct ids as strings, numerically sorted when they are all integers (2 before 10)."""
    uniques = pd.unique(values.astype(str))
    numeric = pd.to_numeric(pd.Series(uniques), errors="coerce")
    if not numeric.isna().any():
        order = np.argsort(numeric.to_numpy(), kind="stable")
        return [str(uniques[i]) for i in order]
    return sorted(str(u) for u in uniques)


def _categorical_table(path: str, key: str, col_key: str, what: str, data_cfg: Mapping,
                       keys: list[str]) -> tuple[list[str], list[np.ndarray], list[list[str]]]:
    """Feature names, per feature an id table indexed by ``1 + position in keys`` (0 = padding/unknown), and
    per feature its values (id = index + 1), of the CSV ``data.<key>`` keyed by ``data.<col_key>``."""
    file = existing_file(path)
    try:
        frame = pd.read_csv(file, dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise InputError(path, f"is not a readable {what}-features CSV ({str(err).strip().splitlines()[0]})") from None
    key_col = str(data_cfg.get(col_key, what) or what)
    if key_col not in frame.columns:
        raise InputError(f"data.{key}", f"{path} needs the {what} column {key_col!r} (data.{col_key}); its "
                                        f"columns are: {', '.join(map(str, frame.columns))}")
    dup = frame[key_col][frame[key_col].duplicated()]
    if len(dup):
        raise InputError(path, f"{what} {dup.iloc[0]!r} is listed {int((frame[key_col] == dup.iloc[0]).sum())} times; "
                               f"one line per {what}")
    names = [str(c) for c in frame.columns if c != key_col]
    if not names:
        raise InputError(path, f"has no feature columns besides {key_col!r}")
    row_of = pd.Index(frame[key_col].astype(str)).get_indexer(keys)                # -1 = not listed
    tables, vocabs = [], []
    for name in names:
        values = frame[name].fillna("").astype(str)
        vocab = sorted(set(values) - {""})
        ids = pd.Index(vocab).get_indexer(values) + 1                             # "" -> 0 (unknown)
        table = np.zeros(len(keys) + 1, dtype=np.int64)
        table[1:] = np.where(row_of >= 0, ids[row_of], 0)
        tables.append(table)
        vocabs.append(vocab)
    return names, tables, vocabs


def _integer(cfg: Mapping, key: str, default: int, lo: int) -> int:
    value = cfg.get(key, default)
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < lo:
        raise InputError(f"data.{key}", f"must be an integer >= {lo}, got {value!r}")
    return int(value)
