"""``python -m search.reproduce``: get a trial of a study back, check its numbers, ship its final model.

Two modes, two MLflow runs, never mixed:

* **reproduce** (default): downloads the trial's resolved ``config.yaml``, rebuilds the study's data split
  and CV folds from it (and checks them against the study's ``split.json``), re-runs the same k-fold CV
  (same fold seeds, same artifact meta, each fold scored on the runtime it was scored on in the study) and
  prints logged vs reproduced metrics. Accuracy, its std and size_bytes must match exactly; latency within
  ``latency_rel_tol`` (default 50 %) or ``latency_abs_tol_ms`` (default 0.05 ms), since latency on a shared
  CPU is noisy. Exit 0 when it reproduces, 1 when it does not (the difference is printed). Logs a run with
  ``role=reproduce``, ``reproduces=<trial run id>``, nested under the study's parent run.
* **final=true**: trains the config on all development rows (everything but the held-out test split),
  compresses, packs, loads back and scores the TEST split; metrics are named ``test_*``. Logs a run with
  ``role=final`` holding ``model.sqz`` (the shipped file) and ``rows.json`` (the row indices it trained
  and scored on). ``register=true`` also logs an MLflow pyfunc of it and registers it in the Model Registry.

The final fit uses the seed of fold 0 (:func:`final_seed`) and the runtime the trial was scored on, so
running it twice gives the same file and the same test accuracy.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from search import names
from search.config import parse_key_values
from trainers.errors import InputError

__all__ = ["main", "TrialRecord", "StudyData", "Check", "open_client", "find_trial", "load_record",
           "study_data", "cross_validate", "compare", "final_fit", "run_final", "register_front",
           "final_seed", "LATENCY_REL_TOL", "LATENCY_ABS_TOL_MS"]

USAGE = """\
usage: python -m search.reproduce run_id=<mlflow run id> [key=value ...]
       python -m search.reproduce study.name=<name> trial=<n> [key=value ...]

Re-runs a trial's k-fold CV from what the study logged and prints logged vs reproduced metrics
(accuracy, accuracy_std and size_bytes must match exactly; latency within a tolerance). With final=true,
trains the trial's config on all development rows instead and reports its TEST-split numbers (test_*),
logging the artifact model.sqz.

keys:
  run_id=<id>                 the trial's MLflow run id (python -m search.pareto lists them)
  study.name=<name> trial=<n> or the study and trial number (looked up in the Optuna storage)
  mlflow.tracking_uri=<uri>   default: the one of conf/sweep.yaml (sqlite:///mlruns/mlflow.db)
  study.storage=<url>         Optuna storage for study.name lookups (default sqlite:///mlruns/optuna.db)
  data.path=<file>            where the csv/npz data file is now, if it moved since the sweep
  latency_rel_tol=0.5         reproduce: latency passes within this relative difference ...
  latency_abs_tol_ms=0.05     ... or within this many milliseconds
  final=true                  fit on all development rows, score the test split, log model.sqz
  register=true               with final=true: register the final model in the MLflow Model Registry
  registry_name=<name>        registered model name (default: the study's mlflow.registry_name,
                              else squeeze-<study name>)

exit codes: 0 reproduced (or final fit done), 1 not reproduced (difference shown), 2 bad input
"""

#: latency passes when within this relative difference of the logged value ...
LATENCY_REL_TOL = 0.5
#: ... or within this absolute difference in milliseconds (tiny models time in microseconds; a sweep times
#: each fold interleaved with the fp32 reference, which adds tens of microseconds a lone reproduction lacks)
LATENCY_ABS_TOL_MS = 0.1
#: metrics that must match exactly (deterministic training, same split, same folds, same file)
EXACT = (names.ACCURACY, names.ACCURACY_STD, names.SIZE_BYTES)

KEYS = ("run_id", "study.name", "trial", "mlflow.tracking_uri", "study.storage", "data.path",
        "latency_rel_tol", "latency_abs_tol_ms", "final", "register", "registry_name")


class NotReproduced(Exception):
    """The study's record and what this machine computes disagree (split, or metrics)."""


# --- arguments ---------------------------------------------------------------------------------------

def parse_args(argv: Sequence[str], keys: Sequence[str] = KEYS) -> dict[str, str]:
    """``key=value`` pairs of ``keys`` (default: this command's); see :func:`search.config.parse_key_values`."""
    return parse_key_values(argv, keys)


def flag(args: Mapping[str, str], key: str) -> bool:
    value = args.get(key, "false").strip().lower()
    if value not in ("true", "false"):
        raise InputError(key, f"must be true or false, got {value!r}")
    return value == "true"


def number(args: Mapping[str, str], key: str, default: float) -> float:
    try:
        value = float(args.get(key, default))
    except ValueError:
        raise InputError(key, f"must be a number, got {args[key]!r}") from None
    if not math.isfinite(value) or value < 0:
        raise InputError(key, f"must be a number >= 0, got {args[key]!r}")
    return value


def default_tracking_uri() -> str:
    from omegaconf import OmegaConf

    from search.config import CONF_DIR

    return str(OmegaConf.load(CONF_DIR / "sweep.yaml").mlflow.tracking_uri)


# --- finding the trial -------------------------------------------------------------------------------

def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


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
        raise InputError("mlflow.tracking_uri", f"cannot open {uri!r}: {_first_line(err)}") from err
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
        raise InputError("run_id", f"no MLflow run {run_id!r} in this tracking store ({_first_line(err)})") from None
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


# --- reproduce: the same CV --------------------------------------------------------------------------

def trial_meta(record: TrialRecord, dataset: Any) -> dict[str, Any]:
    """The artifact meta the sweep wrote for this trial's fold files (it is part of size_bytes)."""
    return {"classes": dataset.classes, "study": record.study_name, "trial": record.trial_number}


def cross_validate(record: TrialRecord, data: StudyData, workdir: Path) -> tuple[dict[str, float], list[str]]:
    """The trial's CV again, with :func:`search.objective.evaluate_config` as the sweep ran it, each fold
    scored on its recorded runtime; returns (metrics, runtime of each fold)."""
    from search.objective import evaluate_config

    ds = data.dataset
    runtimes = list(record.fold_runtimes) or [record.runtime]    # older records: fold 0's runtime only
    ev = evaluate_config(data.trainer_config(record.cfg), ds.X[data.dev_idx], ds.y[data.dev_idx], data.folds,
                         workdir,
                         meta=trial_meta(record, ds), runtimes=runtimes)
    return dict(ev.metrics), list(ev.runtimes)


@dataclass
class Check:
    metric: str
    logged: float | None
    reproduced: float
    rule: str
    ok: bool

    @property
    def difference(self) -> float:
        return float("nan") if self.logged is None else self.reproduced - self.logged


def compare(logged: Mapping[str, float], reproduced: Mapping[str, float], rel_tol: float = LATENCY_REL_TOL,
            abs_tol_ms: float = LATENCY_ABS_TOL_MS) -> list[Check]:
    """Exact checks for :data:`EXACT`, the latency tolerance for ``latency_ms``."""
    checks = []
    for m in EXACT:
        got = logged.get(m)
        checks.append(Check(m, got, reproduced[m], "exact", got is not None and got == reproduced[m]))
    got, new = logged.get(names.LATENCY_MS), reproduced[names.LATENCY_MS]
    ok = got is not None and (abs(new - got) <= abs_tol_ms or abs(new - got) <= rel_tol * abs(got))
    checks.append(Check(names.LATENCY_MS, got, new, f"±{rel_tol:.0%} or ±{abs_tol_ms:g} ms", ok))
    return checks


def format_checks(checks: Sequence[Check]) -> str:
    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.10g}"

    lines = [f"{'metric':<14}{'logged':>18}{'reproduced':>18}{'difference':>14}  {'rule':<22}result"]
    for c in checks:
        diff = "-" if c.logged is None else f"{c.difference:+.4g}"
        lines.append(f"{c.metric:<14}{fmt(c.logged):>18}{fmt(c.reproduced):>18}{diff:>14}  {c.rule:<22}"
                     f"{'ok' if c.ok else 'DIFFERS'}")
    return "\n".join(lines)


# --- MLflow runs of this command ---------------------------------------------------------------------

def _tracker(record: TrialRecord):
    from search.tracking import Tracker

    experiment = record.client.get_experiment(record.experiment_id).name
    return Tracker(record.tracking_uri, experiment)


def _new_run(tracker, record: TrialRecord, role: str) -> str:
    run_id = tracker.create_run(f"{role}-trial-{record.trial_number}", {
        names.ROLE: role, names.REPRODUCES: record.run_id, names.STUDY_NAME: record.study_name,
        names.TRIAL_NUMBER: record.trial_number}, parent_run_id=record.parent_run_id)
    tracker.log_text(run_id, record.config_text, names.CONFIG_ARTIFACT)
    return run_id


def run_reproduce(record: TrialRecord, data: StudyData, rel_tol: float, abs_tol_ms: float) -> int:
    """Re-run the CV, print the comparison, log the reproduce run; returns the exit code."""
    tracker = _tracker(record)
    run_id = _new_run(tracker, record, "reproduce")
    print(f"reproducing trial {record.trial_number} of study {record.study_name!r} (run {record.run_id}): "
          f"{len(data.folds)}-fold CV on the {len(data.dev_idx)} development rows; the split matches the "
          f"study's {names.SPLIT_ARTIFACT}", flush=True)
    try:
        with tempfile.TemporaryDirectory(prefix="squeeze-reproduce-") as tmp:
            metrics, runtimes = cross_validate(record, data, Path(tmp))
    except BaseException:
        tracker.end_run(run_id, "FAILED")
        raise
    checks = compare(record.logged, metrics, rel_tol, abs_tol_ms)
    ok = all(c.ok for c in checks)
    tracker.log(run_id, metrics=metrics, tags={names.REPRODUCED: str(ok).lower(),
                                               names.FOLD_RUNTIMES: json.dumps(runtimes)})
    tracker.end_run(run_id, "FINISHED" if ok else "FAILED")
    print(format_checks(checks))
    if ok:
        print(f"reproduced: accuracy and size_bytes match exactly, latency within tolerance (MLflow run {run_id})")
        return 0
    bad = "; ".join(f"{c.metric} logged {c.logged!r}, reproduced {c.reproduced!r} (difference {c.difference:+.6g}, "
                    f"{c.rule})" for c in checks if not c.ok)
    print(f"squeeze: NOT reproduced: {bad} (MLflow run {run_id})", file=sys.stderr)
    return 1


# --- final: all development rows, scored on the test split --------------------------------------------

def final_seed(seed: int) -> int:
    """The training seed of the final fit: fold 0's (the final fit is deterministic, like every fold)."""
    from search.objective import fold_seed

    return fold_seed(seed, 0)


def final_meta(record: TrialRecord, dataset: Any, runtime: str) -> dict[str, Any]:
    """The shipped file's meta: what :mod:`search.predict` needs (labels, columns, input shape, runtime)."""
    meta = {"classes": dataset.classes, "study": record.study_name, "trial": record.trial_number,
            "trial_run_id": record.run_id, "fit": "final: all development rows", "runtime": runtime,
            "feature_names": dataset.feature_names, "input_shape": list(dataset.input_shape)}
    if getattr(dataset, "serving", None):     # sequence data: how search.predict turns an event log into rows
        meta["sequence"] = dataset.serving
    return meta


def final_fit(record: TrialRecord, data: StudyData, path: Path) -> dict[str, Any]:
    """Train on all development rows, write ``path``, score it on the test rows; metrics named ``test_*``.

    :func:`trainers.pipeline.run_fold` with the development rows as training rows and the test rows as the
    rows it scores: the model sees the test rows only after it is written and loaded back.
    """
    from trainers.pipeline import run_fold

    cfg = data.trainer_config(record.cfg)             # as the CV folds: the same task and output size
    ds = data.dataset
    X_dev, y_dev = ds.X[data.dev_idx], ds.y[data.dev_idx]
    runtime = record.runtime or "fp32_dense"
    result = run_fold(cfg, X_dev, y_dev, ds.X[data.test_idx], ds.y[data.test_idx], final_seed(cfg["seed"]),
                      path, meta=final_meta(record, ds, runtime), runtime=runtime)
    metrics = {names.TEST_PREFIX + k: v for k, v in result.metrics().items()
               if k not in (names.FIT_SECONDS, names.EVAL_SECONDS)}
    metrics["final_" + names.FIT_SECONDS] = float(result.fit_seconds)
    metrics["n_train_rows"], metrics["n_test_rows"] = float(len(data.dev_idx)), float(len(data.test_idx))
    return {"metrics": metrics, "runtime": result.runtime}


@dataclass
class FinalResult:
    run_id: str
    metrics: dict[str, float]
    runtime: str
    version: Any = None                       # the registered ModelVersion, when registered


def registry_name(record: TrialRecord, name: str | None = None) -> str:
    return name or record.cfg.get("mlflow", {}).get("registry_name") or f"squeeze-{record.study_name}"


def run_final(record: TrialRecord, data: StudyData, register: bool = False, name: str | None = None,
              out: Path | None = None) -> FinalResult:
    """The final fit, logged as a ``role=final`` run with model.sqz and rows.json; optionally registered."""
    tracker = _tracker(record)
    run_id = _new_run(tracker, record, "final")
    try:
        with tempfile.TemporaryDirectory(prefix="squeeze-final-") as tmp:
            path = Path(tmp) / names.FINAL_ARTIFACT
            fit = final_fit(record, data, path)
            tracker.log(run_id, metrics=fit["metrics"], tags={names.RUNTIME: fit["runtime"]})
            tracker.log_file(run_id, path)
            tracker.log_text(run_id, json.dumps({"train": data.dev_idx.tolist(), "test": data.test_idx.tolist()}),
                             names.ROWS_ARTIFACT)
            result = FinalResult(run_id, fit["metrics"], fit["runtime"])
            if register:
                result.version = register_model(record, result, path, registry_name(record, name))
            if out is not None:
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(path.read_bytes())
    except BaseException:
        tracker.end_run(run_id, "FAILED")
        raise
    tracker.end_run(run_id, "FINISHED")
    return result


def register_model(record: TrialRecord, final: FinalResult, path: Path, name: str) -> Any:
    """Log the pyfunc of ``path`` on the final run and register it as a new version of ``name``."""
    import mlflow

    from search.pyfunc import log_pyfunc

    m = final.metrics
    tags = {f"{names.TEST_PREFIX}{names.ACCURACY}": m[names.TEST_PREFIX + names.ACCURACY],
            f"{names.TEST_PREFIX}{names.SIZE_BYTES}": int(m[names.TEST_PREFIX + names.SIZE_BYTES]),
            f"{names.TEST_PREFIX}{names.LATENCY_MS}": m[names.TEST_PREFIX + names.LATENCY_MS],
            f"cv_{names.ACCURACY}": record.logged.get(names.ACCURACY),
            f"cv_{names.SIZE_BYTES}": record.logged.get(names.SIZE_BYTES),
            f"cv_{names.LATENCY_MS}": record.logged.get(names.LATENCY_MS),
            "study": record.study_name, names.TRIAL_NUMBER: record.trial_number,
            "trial_run_id": record.run_id, "final_run_id": final.run_id, names.RUNTIME: final.runtime}
    # log_model attaches to the active run: open the final run for just this call (no other fluent use)
    with mlflow.start_run(run_id=final.run_id):
        info = log_pyfunc(path)
    return mlflow.register_model(info.model_uri, name, tags={k: str(v) for k, v in tags.items()})


def print_final(record: TrialRecord, data: StudyData, final: FinalResult) -> None:
    m = final.metrics
    print(f"final fit of trial {record.trial_number} of study {record.study_name!r} (run {record.run_id}): "
          f"trained on all {len(data.dev_idx)} development rows, scored once on the {len(data.test_idx)} "
          f"held-out TEST rows")
    print("TEST-split numbers (not comparable with the study's cross-validation numbers):")
    print(f"  {names.TEST_PREFIX}{names.ACCURACY:<12} {m[names.TEST_PREFIX + names.ACCURACY]:.6f}")
    print(f"  {names.TEST_PREFIX}{names.SIZE_BYTES:<12} {m[names.TEST_PREFIX + names.SIZE_BYTES]:.0f}")
    print(f"  {names.TEST_PREFIX}{names.LATENCY_MS:<12} {m[names.TEST_PREFIX + names.LATENCY_MS]:.4f}  "
          f"(runtime {final.runtime})")
    print(f"artifact {names.FINAL_ARTIFACT} logged on MLflow run {final.run_id} (role=final)")
    if final.version is not None:
        print(f"registered: models:/{final.version.name}/{final.version.version}")


def register_front(tracker, study, objectives: Sequence[str], dataset: Any = None, name: str | None = None) -> int:
    """The sweep's ``mlflow.register=true``: final-fit and register every Pareto trial of ``study``.

    Returns an exit code: 0 when every Pareto trial is registered, 1 otherwise (the error is printed).
    """
    from search import report

    front = sorted((r for r in report.collect(study, objectives) if r.pareto and r.run_id), key=lambda r: r.number)
    for row in front:
        try:
            record = load_record(tracker.client, tracker.tracking_uri, row.run_id)
            data = study_data(record, dataset)
            final = run_final(record, data, register=True, name=name)
        except Exception as err:  # the study is done: report which trial failed, keep the others
            print(f"squeeze: error: registering trial {row.number} failed: {type(err).__name__}: "
                  f"{_first_line(err)}", file=sys.stderr)
            return 1
        print(f"registered trial {row.number}: models:/{final.version.name}/{final.version.version} "
              f"(test accuracy {final.metrics[names.TEST_PREFIX + names.ACCURACY]:.4f}, final run {final.run_id})")
    return 0


# --- the command -------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    from search.cli import run_command

    return run_command("reproduce", USAGE, _reproduce, argv)


def _reproduce(argv: list[str]) -> int:
    args = parse_args(argv)
    final, register = flag(args, "final"), flag(args, "register")
    rel_tol = number(args, "latency_rel_tol", LATENCY_REL_TOL)
    abs_tol = number(args, "latency_abs_tol_ms", LATENCY_ABS_TOL_MS)
    if register and not final:
        raise InputError("register", "needs final=true (the registry holds final models)")
    try:
        record = find_trial(args)
        data = study_data(record)
    except NotReproduced as err:
        print(f"squeeze: NOT reproduced: {err}", file=sys.stderr)
        return 1
    if final:
        result = run_final(record, data, register=register, name=args.get("registry_name") or None)
        print_final(record, data, result)
        return 0
    return run_reproduce(record, data, rel_tol, abs_tol)


if __name__ == "__main__":
    sys.exit(main())
