"""The final fit of a trial and the MLflow Model Registry.

:func:`final_fit` trains the trial's config on all development rows (everything but the held-out test
split), compresses, packs, loads back and scores the TEST split (metrics ``test_*``). :func:`run_final`
logs it as a ``role=final`` run holding ``model.sqz`` (the shipped file) and ``rows.json`` (the row indices it
trained and scored on), and with ``register=True`` also an MLflow pyfunc of it, registered in the Model
Registry (:func:`register_model`). :func:`register_front` does that for every Pareto trial of a study (the
sweep's ``mlflow.register=true``).

The final fit uses the seed of fold 0 (:func:`final_seed`) and the runtime the trial was scored on, so
running it twice gives the same file and the same test accuracy.
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search import names
from search.record import StudyData, TrialRecord, first_line, load_record, new_run, record_tracker, study_data

__all__ = ["FinalResult", "final_seed", "final_meta", "final_fit", "registry_name", "run_final", "register_model",
           "print_final", "register_front"]


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
    tracker = record_tracker(record)
    run_id = new_run(tracker, record, "final")
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
                  f"{first_line(err)}", file=sys.stderr)
            return 1
        print(f"registered trial {row.number}: models:/{final.version.name}/{final.version.version} "
              f"(test accuracy {final.metrics[names.TEST_PREFIX + names.ACCURACY]:.4f}, final run {final.run_id})")
    return 0
