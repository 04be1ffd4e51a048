"""A trial's record, read back: what the study logged about one trial, and the study's data split rebuilt.

:func:`find_trial` opens the MLflow tracking store and reads the trial named by its run id (or by study name
and trial number, looked up in the Optuna storage) as a :class:`TrialRecord`: its resolved config, its
logged metrics, the runtimes its folds were scored on. :func:`study_data` loads the data and rebuilds the
test split and the CV folds from that config, checked against the study's ``split.json``.
:func:`record_tracker` and :func:`new_run` open the MLflow runs that re-run a record (``role=reproduce``
in :mod:`search.reproduce`, ``role=final`` in :mod:`search.final`), nested under the study's parent run.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from search import names
from trainers.errors import InputError

__all__ = ["NotReproduced", "TrialRecord", "StudyData", "default_tracking_uri", "open_client", "find_trial",
           "load_record", "study_data", "record_tracker", "new_run", "first_line"]


class NotReproduced(Exception):
    """The study's record and what this machine computes disagree (split, or metrics)."""


def default_tracking_uri() -> str:
    from omegaconf import OmegaConf

    from search.config import CONF_DIR

    return str(OmegaConf.load(CONF_DIR / "sweep.yaml").mlflow.tracking_uri)


def first_line(err: BaseException) -> str:
    """The first line of ``err``'s message (its type's name when it has none), for one-line errors."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


# --- finding the trial -------------------------------------------------------------------------------

def open_client(uri: str):
    """An MlflowClient of an existing store; InputError on ``mlflow.tracking_uri`` otherwise."""
    import os

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one config.yaml: no bars
    import mlflow
    from mlflow import MlflowClient

    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).is_file():
        raise InputError("mlflow.tracking_uri", f"no MLflow database at {uri[len('sqlite:///'):]!r}")
    if uri.startswith(("http://", "https://")):  # fail in seconds, not after MLflow's minutes of retries
        import socket
        from urllib.parse import urlsplit

        parts = urlsplit(uri)
        try:
            socket.create_connection((parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)),
                                     timeout=10).close()
        except OSError as err:
            raise InputError("mlflow.tracking_uri", f"cannot reach {uri!r}: {err}") from None
    try:
        client = MlflowClient(uri)
        client.search_experiments(max_results=1)
    except Exception as err:  # unreachable server, unreadable database
        raise InputError("mlflow.tracking_uri", f"cannot open {uri!r}: {first_line(err)}") from err
    mlflow.set_tracking_uri(uri)
    return client


def _run_id_from_study(args: Mapping[str, str]) -> str:
    import optuna

    from search.storage import open_storage, storage_url

    name = args["study.name"]
    if "trial" not in args:
        raise InputError("trial", "is required with study.name: trial=<trial number>")
    try:
        number = int(args["trial"])
    except ValueError:
        raise InputError("trial", f"must be a trial number, got {args['trial']!r}") from None
    url = storage_url(args.get("study.storage") or None)
    for prefix in ("sqlite:///", "journal:"):
        if url.startswith(prefix) and not Path(url[len(prefix):]).is_file():
            raise InputError("study.storage", f"no Optuna storage at {url[len(prefix):]!r}")
    storage = open_storage(url)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        known = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise InputError("study.name", f"no study {name!r} in {url}; studies: {', '.join(known) or 'none'}") from None
    trials = study.get_trials(deepcopy=False)
    if not 0 <= number < len(trials):
        raise InputError("trial", f"study {name!r} has trials 0..{len(trials) - 1}, got {number}")
    run_id = trials[number].user_attrs.get("mlflow_run_id")
    if not run_id:
        raise InputError("trial", f"trial {number} of {name!r} has no MLflow run id")
    return run_id


@dataclass
class TrialRecord:
    """What the study logged about one trial, read back from MLflow."""

    client: Any
    tracking_uri: str
    run_id: str
    experiment_id: str
    parent_run_id: str
    study_name: str
    trial_number: int
    cfg: dict[str, Any]                       # the resolved complete trial config
    config_text: str
    logged: dict[str, float]                  # the trial run's metrics
    runtime: str | None                       # runtime of fold 0 (tag)
    fold_runtimes: list[str | None] = field(default_factory=list)


def _download_text(client, run_id: str, path: str, key: str) -> str:
    with tempfile.TemporaryDirectory(prefix="squeeze-dl-") as tmp:
        try:
            local = client.download_artifacts(run_id, path, tmp)
        except Exception:
            raise InputError(key, f"run {run_id} has no {path} artifact") from None
        return Path(local).read_text()


def load_record(client, tracking_uri: str, run_id: str, data_path: str | None = None) -> TrialRecord:
    """The trial of MLflow run ``run_id`` (which must be a completed trial run)."""
    from omegaconf import OmegaConf

    try:
        run = client.get_run(run_id)
    except Exception as err:
        raise InputError("run_id", f"no MLflow run {run_id!r} in this tracking store ({first_line(err)})") from None
    tags = run.data.tags
    role = tags.get(names.ROLE)
    if role != "trial":
        raise InputError("run_id", f"run {run_id} is a {role or 'non-squeeze'} run, not a trial run (role=trial)")
    if tags.get(names.STATE) != "COMPLETE":
        raise InputError("run_id", f"trial run {run_id} is {tags.get(names.STATE)}, not COMPLETE: nothing to reproduce")
    parent = tags.get("mlflow.parentRunId")
    if not parent:
        raise InputError("run_id", f"trial run {run_id} has no parent study run")
    text = _download_text(client, run_id, names.CONFIG_ARTIFACT, "run_id")
    cfg = OmegaConf.to_container(OmegaConf.create(text), resolve=True)
    if data_path:
        cfg["data"]["path"] = data_path
    runtimes = json.loads(tags.get(names.FOLD_RUNTIMES, "[]"))
    return TrialRecord(client, tracking_uri, run_id, run.info.experiment_id, parent, tags[names.STUDY_NAME],
                       int(tags[names.TRIAL_NUMBER]), cfg, text, dict(run.data.metrics),
                       tags.get(names.RUNTIME), runtimes)


def find_trial(args: Mapping[str, str]) -> TrialRecord:
    """Open the tracking store and read the trial named by ``run_id=`` or ``study.name= trial=``."""
    uri = args.get("mlflow.tracking_uri") or default_tracking_uri()
    client = open_client(uri)
    if args.get("run_id"):
        run_id = args["run_id"]
    elif args.get("study.name"):
        run_id = _run_id_from_study(args)
    else:
        raise InputError("run_id", "is required: run_id=<mlflow run id>, or study.name=<name> trial=<n>")
    return load_record(client, uri, run_id, args.get("data.path") or None)


# --- data, split and folds ---------------------------------------------------------------------------

@dataclass
class StudyData:
    dataset: Any
    dev_idx: np.ndarray
    test_idx: np.ndarray
    folds: list[tuple[np.ndarray, np.ndarray]]

    def trainer_config(self, cfg: Mapping[str, Any]) -> dict[str, Any]:
        """``cfg`` with the data's task and output size (:func:`trainers.task.configure`): the CV folds and
        the final fit build the same output layer (a ranker scores every item, not only the dev targets)."""
        from trainers.task import configure

        return configure(cfg, self.dataset)


def _split(ds: Any, cfg: Mapping[str, Any]):
    """``(dev_idx, test_idx, folds)`` exactly as the sweep computes them."""
    import trainers.data as data

    if hasattr(data, "split_dataset"):  # one function for every kind of data (sequences: leave-last-out)
        return data.split_dataset(ds, cfg["data"].get("test_size"), cfg["cv"]["folds"], cfg["seed"])
    dev_idx, test_idx = data.split_test(ds.y, cfg["data"]["test_size"], cfg["seed"])
    return dev_idx, test_idx, data.cv_folds(ds.y[dev_idx], cfg["cv"]["folds"], cfg["seed"])


def study_data(record: TrialRecord, dataset: Any = None) -> StudyData:
    """Load the data, rebuild the test split and the CV folds from the trial config, and check them
    against the study's ``split.json``.

    Raises:
        NotReproduced: the split or folds differ (the data changed since the sweep).
    """
    from trainers.data import load_dataset

    cfg = record.cfg
    ds = dataset if dataset is not None else load_dataset(cfg["data"])
    dev_idx, test_idx, folds = _split(ds, cfg)
    split = json.loads(_download_text(record.client, record.parent_run_id, names.SPLIT_ARTIFACT, "run_id"))
    mine = {"dev": dev_idx.tolist(), "test": test_idx.tolist(), "folds": [v.tolist() for _, v in folds]}
    for key in ("dev", "test", "folds"):
        if split.get(key) != mine[key]:
            raise NotReproduced(f"the data split differs from the study's {names.SPLIT_ARTIFACT} ({key} rows): "
                                f"the data ({cfg['data']['name']}) changed since the sweep")
    return StudyData(ds, dev_idx, test_idx, folds)


# --- MLflow runs made from a record -------------------------------------------------------------------

def record_tracker(record: TrialRecord):
    """A :class:`search.tracking.Tracker` of the record's tracking store and experiment."""
    from search.tracking import Tracker

    experiment = record.client.get_experiment(record.experiment_id).name
    return Tracker(record.tracking_uri, experiment)


def new_run(tracker, record: TrialRecord, role: str) -> str:
    """Open a ``role`` run (``reproduce``, ``final``) that reproduces the record's trial, nested under the
    study's parent run and holding the trial's ``config.yaml``; returns its run id."""
    run_id = tracker.create_run(f"{role}-trial-{record.trial_number}", {
        names.ROLE: role, names.REPRODUCES: record.run_id, names.STUDY_NAME: record.study_name,
        names.TRIAL_NUMBER: record.trial_number}, parent_run_id=record.parent_run_id)
    tracker.log_text(run_id, record.config_text, names.CONFIG_ARTIFACT)
    return run_id
