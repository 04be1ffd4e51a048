"""Checks that need the loaded data, the machine or the file system, run before anything is created.

:func:`search.validate.validate_config` checks each key on its own; this module checks what only the
loaded dataset, the hardware, the network or the disk can tell, so a sweep that would fail inside the fp32
reference or while opening its stores stops first, with one line naming the key and what to do:

* data <-> model: ``model=cnn`` needs image data, ``model=seqrec`` needs sequence data (and back);
* a user's model (``model=custom``): its class imports, and neuron pruning (fixed or searched) only when it
  implements ``unit_layers()`` / ``keep_units()``;
* ``data.pca`` (also every integer the space can sample) against the features and a fold's training rows;
* ``device=cuda`` on a machine without CUDA;
* features that do not fit float32 (finite in float64, ``inf`` once cast);
* the MLflow tracking store (SQLite file: creatable, an SQLite file, fully created; http(s): answers within
  :data:`PROBE_SECONDS`; PostgreSQL/MySQL: the port answers), the artifact folder, the Optuna storage file;
* output files of ``search.export`` / ``search.predict`` (:func:`check_output_path`).

Every check is read-only: nothing is created, not even a folder. Each raises
:class:`~trainers.errors.InputError`.

Example:
    >>> check_output_path("out", "model.sqz")  # a new file in a writable folder: fine
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from trainers.errors import InputError
from trainers.task import Ranking, task_of

__all__ = [
    "PROBE_SECONDS",
    "check_all",
    "check_custom_model",
    "check_data_model",
    "check_device",
    "check_float32_range",
    "check_output_path",
    "check_pca",
    "check_stores",
    "check_storage",
    "check_tracking",
    "sqlite_path",
]

#: how long a tracking server or database port may take to answer before the sweep is refused
PROBE_SECONDS = 5.0

_FLOAT32_MAX = 3.4028234663852886e38
_SQLITE_MAGIC = b"SQLite format 3\x00"


def check_all(setup: Any) -> None:
    """Every check of this module for a prepared sweep (``search.sweep.Setup``), cheapest first.

    Raises:
        InputError: the first problem found.
    """
    cfg = setup.cfg_dict
    check_data_model(cfg["model"]["name"], cfg["data"]["name"], setup.dataset)
    check_custom_model(cfg["model"], cfg["compress"].get("neurons", {}).get("ratio", 0.0),
                       _space_values(setup, "compress.neurons.ratio"))
    check_pca(cfg["data"].get("pca"), setup.dataset, [len(train) for train, _ in setup.folds],
              _space_pca_values(setup))
    check_device(cfg["device"])
    check_float32_range(setup.dataset, cfg["data"])
    check_stores(cfg["mlflow"]["tracking_uri"], cfg["mlflow"].get("artifact_location"), setup.storage_url)


# --- data and model --------------------------------------------------------------------------------

def check_data_model(model: str, data_name: str, dataset: Any) -> None:
    """``model`` must fit the loaded data: cnn <- images, seqrec <- sequences, mlp <- rows or images.

    Ranking or not is :mod:`trainers.task`'s answer for both sides (the model's network type, the data's
    kind); ``search.schema.MODEL_INPUTS`` cannot answer it alone, as it does not list a user's model."""
    kind, shape = dataset.kind, tuple(dataset.input_shape)
    model_task, data_task = task_of(net_type=model), task_of(kind=kind)
    if model_task is not data_task:
        from search.schema import SEQUENCE_DATA  # only to word the error: pydantic stays out of the fast path

        if isinstance(model_task, Ranking):
            raise InputError("model", f"{model} ranks items of sequence data (data={'|'.join(SEQUENCE_DATA)}); "
                                      f"data={data_name} is {kind} data of shape {shape}: use model=mlp or model=cnn")
        raise InputError("model", f"data={data_name} holds users' event sequences, which only "
                                  f"model={'|'.join(Ranking.nets)} reads (space=seqrec searches it), got model={model}")
    if model == "cnn" and kind != "image":
        raise InputError("model", f"cnn needs image data (N, C, H, W); data={data_name} has rows of {shape[0]} "
                                  "features: use model=mlp (or data=npz with X of shape (N, H, W) or (N, C, H, W))")


def check_custom_model(model_cfg: Mapping[str, Any], neurons_ratio: Any, space_values: Iterable[Any] = ()) -> None:
    """A user's model (``model._target_``) must import as an ``nn.Module`` class, and neuron pruning, asked for
    by ``compress.neurons.ratio`` or sampled by the space, needs its ``unit_layers()`` / ``keep_units()``."""
    if model_cfg.get("_target_") is None:
        return
    from trainers.models.custom import import_target, supports_neuron_pruning

    cls = import_target(str(model_cfg["_target_"]))
    if supports_neuron_pruning(cls):
        return
    asked = [("compress.neurons.ratio", neurons_ratio),
             *(("space.params.compress.neurons.ratio", v) for v in space_values)]
    for key, value in asked:
        if isinstance(value, (int, float)) and value > 0:
            raise InputError(key, f"neuron pruning needs unit_layers() and keep_units() on the model, which "
                                  f"{model_cfg['_target_']} does not implement (README: Bring your own model): "
                                  f"use 0, or a space without it, got {value!r}")


def _space_values(setup: Any, key: str) -> list[Any]:
    """The largest value the space can sample for ``key`` (a float or integer range: its high end; a choice:
    every choice), empty when the space does not search it."""
    values: list[Any] = []
    for p in getattr(setup, "params", None) or []:
        if p.key != key:
            continue
        dist = p.distribution
        values += list(p.choices if p.choices is not None else dist.choices) if hasattr(dist, "choices") else [dist.high]
    return values


def _space_pca_values(setup: Any) -> list[int]:
    """Integers the space can sample for ``data.pca`` with this config (its ``when`` on fixed keys holds)."""
    params = list(getattr(setup, "params", None) or [])
    searched = {p.key for p in params}
    values: list[int] = []
    for p in params:
        if p.key != "data.pca":
            continue
        fixed = {k: v for k, v in p.when.items() if k not in searched}
        if fixed and not type(p)(p.key, p.distribution, fixed).conditions_hold({}, setup.cfg):
            continue
        dist = p.distribution
        if hasattr(dist, "choices"):
            values += [v for v in (p.choices if p.choices is not None else dist.choices)
                       if isinstance(v, int) and not isinstance(v, bool)]
        elif hasattr(dist, "high") and isinstance(dist.high, int):
            values.append(int(dist.high))
    return values


def check_pca(pca: Any, dataset: Any, fold_train_rows: Iterable[int], space_values: Iterable[int] = ()) -> None:
    """An integer ``data.pca`` (fixed or sampled) must not exceed the features nor a fold's training rows.

    PCA is fitted on each fold's training rows, so ``min(features, rows)`` components exist at most.
    """
    n_features = 1
    for d in dataset.input_shape:
        n_features *= int(d)
    rows = min(fold_train_rows, default=len(dataset.y))
    limit = min(n_features, rows)
    candidates = [("data.pca", pca)] + [("space.params.data.pca", v) for v in space_values]
    for key, value in candidates:
        if isinstance(value, int) and not isinstance(value, bool) and value > limit:
            why = (f"data={dataset.name} has {n_features} features" if n_features <= rows
                   else f"the smallest CV fold trains on {rows} rows")
            raise InputError(key, f"asks for {value} PCA components, but {why}: use at most {limit}, or a share of "
                                  f"variance in (0, 1) such as 0.95, got {value!r}")


def check_device(device: str) -> None:
    """``device=cuda`` needs a CUDA device visible to torch."""
    if device != "cuda":
        return
    import torch

    if not torch.cuda.is_available():
        raise InputError("device", "cuda was asked for but torch sees no CUDA device on this machine "
                                   f"(torch {torch.__version__}): use device=auto or device=cpu")


def check_float32_range(dataset: Any, data_cfg: Mapping[str, Any]) -> None:
    """Float features must be finite in float32, the type every model trains in."""
    import numpy as np

    X = dataset.X
    if X.dtype.kind != "f":
        return
    bad = ~np.isfinite(X)
    if bad.any():
        row = int(np.flatnonzero(bad.reshape(len(X), -1).any(axis=1))[0])
        where = str(data_cfg.get("path") or "data")
        raise InputError(where, f"has {int(bad.sum())} feature value(s) that are infinite in float32 (|x| > "
                                f"{_FLOAT32_MAX:.3g}), first in row {row}: rescale those features (e.g. take logs)")


# --- stores and files ------------------------------------------------------------------------------

def check_stores(tracking_uri: str, artifact_location: str | None, storage_url: str) -> None:
    """The MLflow tracking store, its artifact folder and the Optuna storage can be opened or created."""
    check_tracking(tracking_uri)
    if artifact_location and not tracking_uri.startswith(("http://", "https://")):
        _check_artifact_location(artifact_location)
    check_storage(storage_url)


def check_tracking(uri: str) -> None:
    """``mlflow.tracking_uri``: a creatable, complete SQLite store, a folder, or a server that answers."""
    key = "mlflow.tracking_uri"
    if uri.startswith("sqlite:///"):
        path = sqlite_path(uri)
        _check_sqlite_file(key, path)
        from search.tracking import sqlite_store_problem

        problem = sqlite_store_problem(path)
        if problem:
            raise InputError(key, problem)
    elif uri.startswith(("http://", "https://")):
        _probe_http(key, uri)
    elif uri.startswith("file:"):
        _check_folder(key, _file_uri_path(uri))
    elif uri.startswith(("postgresql", "mysql")):
        _probe_port(key, uri)


def check_storage(url: str) -> None:
    """``study.storage``: the SQLite or journal file can be created (or is the right kind of file)."""
    key = "study.storage"
    if url.startswith("sqlite:///"):
        path = _check_sqlite_file(key, sqlite_path(url))
        tables = _sqlite_tables(path)
        if "experiments" in tables and "studies" not in tables:
            raise InputError(key, f"{str(path)!r} is an MLflow tracking database, not an Optuna storage: use "
                                  "another file, e.g. study.storage=sqlite:///mlruns/optuna.db")
    elif url.startswith("journal:"):
        _check_new_or_writable_file(key, url[len("journal:"):], "journal file")
    elif url.startswith(("postgresql", "mysql")):
        _probe_port(key, url)


def sqlite_path(url: str) -> str:
    """The file of an ``sqlite:///<file>`` URL (without a ``?query``)."""
    return url[len("sqlite:///"):].split("?", 1)[0]


def check_output_path(key: str, path: str | os.PathLike[str]) -> Path:
    """A file a command will write (``out=``): not a folder, not under a regular file, in a writable folder.

    Missing parent folders are fine (the command creates them). Returns ``path`` as a :class:`Path`.

    Raises:
        InputError: at ``key``.
    """
    text = os.fspath(path)
    if not text.strip():
        raise InputError(key, "is empty: name the file to write, e.g. out=model.sqz")
    if text.endswith(("/", os.sep)) or Path(text).is_dir():
        raise InputError(key, f"{text!r} is a folder: name a file in it, e.g. {key}={Path(text) / 'model.sqz'}")
    _check_new_or_writable_file(key, text, "file")
    return Path(text)


def _check_artifact_location(location: str) -> None:
    key = "mlflow.artifact_location"
    if location.startswith("file:"):
        _check_folder(key, _file_uri_path(location))
    elif "://" not in location:
        _check_folder(key, location)
    # other schemes (s3://, gs://, ...) are checked by MLflow when the first artifact is written


def _file_uri_path(uri: str) -> str:
    parts = urlsplit(uri)
    return parts.path if parts.netloc in ("", "localhost") else uri[len("file:"):]


def _absolute(path: str) -> Path:
    return Path(path).expanduser().absolute()


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_creatable(key: str, path: Path, what: str) -> None:
    """``path`` does not exist: its nearest existing ancestor must be a writable folder."""
    base = _nearest_existing(path.parent)
    if not base.is_dir():
        raise InputError(key, f"cannot create the {what} {str(path)!r}: {str(base)!r} is a regular file, not a "
                              "folder; choose a path in a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise InputError(key, f"cannot create the {what} {str(path)!r}: folder {str(base)!r} is not writable; "
                              "choose a path in a folder you can write to")


def _check_new_or_writable_file(key: str, text: str, what: str) -> Path:
    path = _absolute(text)
    if path.is_dir():
        raise InputError(key, f"{str(path)!r} is a folder, not a {what}: name a file in it")
    if path.exists():
        if not os.access(path, os.R_OK | os.W_OK):
            raise InputError(key, f"the {what} {str(path)!r} is not writable: fix its permissions or choose another")
        if not os.access(path.parent, os.W_OK | os.X_OK):
            raise InputError(key, f"folder {str(path.parent)!r} of the {what} is not writable: fix its permissions "
                                  "or choose another path")
    else:
        _check_creatable(key, path, what)
    return path


def _check_sqlite_file(key: str, text: str) -> Path:
    """An SQLite file to open or create: the file rules, and an existing non-empty file must be SQLite."""
    path = _check_new_or_writable_file(key, text, "SQLite database file")
    if path.is_file() and path.stat().st_size > 0:
        with open(path, "rb") as f:
            head = f.read(len(_SQLITE_MAGIC))
        if head != _SQLITE_MAGIC:
            raise InputError(key, f"{str(path)!r} is not an SQLite database: point {key} at the right file or a new one")
    return path


def _sqlite_tables(path: Path) -> set[str]:
    """Table names of an existing SQLite file, read-only (empty when absent, empty or unreadable)."""
    import sqlite3

    if not path.is_file() or path.stat().st_size == 0:
        return set()
    try:
        con = sqlite3.connect(path.as_uri() + "?mode=ro", uri=True, timeout=30)
        try:
            return {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        finally:
            con.close()
    except sqlite3.Error:
        return set()


def _check_folder(key: str, text: str) -> None:
    path = _absolute(text)
    if path.exists():
        if not path.is_dir():
            raise InputError(key, f"{str(path)!r} is a regular file, not a folder: choose a folder path")
        if not os.access(path, os.W_OK | os.X_OK):
            raise InputError(key, f"folder {str(path)!r} is not writable: fix its permissions or choose another")
        return
    _check_creatable(key, path, "folder")


def _probe_http(key: str, uri: str) -> None:
    """Any HTTP answer within :data:`PROBE_SECONDS` will do; silence or a refused connection will not."""
    import urllib.error
    import urllib.request

    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=PROBE_SECONDS):  # noqa: S310 - the user's own server
            return
    except urllib.error.HTTPError:
        return  # it answered (an MLflow server answers /health; another status still means it is up)
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        text = "no answer" if isinstance(reason, (TimeoutError, socket.timeout)) else str(reason).strip() or type(reason).__name__
        raise InputError(key, f"the MLflow server {uri} did not answer within {PROBE_SECONDS:g} s ({text}): start it "
                              "(mlflow server --host ... --port ...) or use sqlite:///mlruns/mlflow.db") from None


def _probe_port(key: str, url: str) -> None:
    """A database URL: its host and port must accept a TCP connection within :data:`PROBE_SECONDS`."""
    parts = urlsplit(url)
    if not parts.hostname or parts.hostname.startswith("/"):
        return  # a Unix socket or a DSN the driver resolves: the driver reports it
    try:
        port = parts.port or (3306 if url.startswith("mysql") else 5432)
    except ValueError:
        raise InputError(key, f"has a bad port after {parts.hostname}: write host:port with a number") from None
    try:
        with socket.create_connection((parts.hostname, port), timeout=PROBE_SECONDS):
            return
    except OSError as err:
        text = "no answer" if isinstance(err, (TimeoutError, socket.timeout)) else (err.strerror or str(err))
        raise InputError(key, f"cannot open the database: nothing answers on {parts.hostname}:{port} within "
                              f"{PROBE_SECONDS:g} s ({text}): start the database server or fix the host and port") from None
