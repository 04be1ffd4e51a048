"""The MLflow record of a study: one parent run per study, one nested run per trial, batched logging.

Uses :class:`mlflow.MlflowClient` with explicit run ids (never the fluent "active run"), so several
workers, or several trials in one process, never trip over each other. Names come from :mod:`search.names`.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from search import names

__all__ = ["Tracker", "flatten"]

PARENT_RUN_ATTR = "mlflow_parent_run_id"


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists kept as values)."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def _param_value(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict, bool)) or value is None else str(value)


class Tracker:
    """Thin wrapper over an MLflow tracking store for one experiment."""

    def __init__(self, tracking_uri: str, experiment: str, artifact_location: str | None = None) -> None:
        import mlflow
        from mlflow import MlflowClient

        if tracking_uri.startswith("sqlite:///"):
            Path(tracking_uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        self.tracking_uri = tracking_uri
        mlflow.set_tracking_uri(tracking_uri)
        for attempt in range(5):
            try:
                self.client = MlflowClient(tracking_uri)
                exp = self.client.get_experiment_by_name(experiment)
                break
            except Exception as err:
                # the first client of a fresh database store migrates it; clients racing it see
                # "duplicate key"/"already exists" and find the schema on a second look
                if attempt == 4 or not ("duplicate key" in str(err) or "already exists" in str(err)):
                    raise
                time.sleep(0.5 * (attempt + 1))
        if exp is None:
            location = None
            if artifact_location and not tracking_uri.startswith(("http://", "https://")):
                location = Path(artifact_location).resolve().as_uri()
            try:
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
            except Exception:  # another worker created it first
                self.experiment_id = self.client.get_experiment_by_name(experiment).experiment_id
        else:
            self.experiment_id = exp.experiment_id

    # --- runs -------------------------------------------------------------------------------------
    def find_runs(self, **tags: str) -> list[Any]:
        """Runs of this experiment whose tags equal ``tags`` (oldest first)."""
        flt = " and ".join(f"tags.{k} = '{v}'" for k, v in tags.items())
        runs = self.client.search_runs([self.experiment_id], filter_string=flt, max_results=50000,
                                       order_by=["attributes.start_time ASC"])
        return list(runs)

    def create_run(self, run_name: str, tags: Mapping[str, Any], parent_run_id: str | None = None) -> str:
        all_tags = {k: str(v) for k, v in tags.items()}
        if parent_run_id:
            all_tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=all_tags)
        return run.info.run_id

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    def run(self, run_id: str):
        return self.client.get_run(run_id)

    # --- logging (batched) -----------------------------------------------------------------------
    def log(self, run_id: str, params: Mapping[str, Any] | None = None, metrics: Mapping[str, float] | None = None,
            tags: Mapping[str, Any] | None = None, step: int = 0) -> None:
        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        batch_params = [Param(k, _param_value(v)[:6000]) for k, v in (params or {}).items()]
        batch_metrics = [Metric(k, float(v), now, step) for k, v in (metrics or {}).items()
                         if v is not None and math.isfinite(float(v))]
        batch_tags = [RunTag(k, str(v)[:5000]) for k, v in (tags or {}).items()]
        for i in range(0, max(len(batch_params), len(batch_metrics), len(batch_tags), 1), 100):
            self.client.log_batch(run_id, metrics=batch_metrics[i:i + 100], params=batch_params[i:i + 100],
                                  tags=batch_tags[i:i + 100])

    def log_series(self, run_id: str, rows: list[Mapping[str, float]], prefix: str = "fold_") -> None:
        """Per-fold values as stepped metrics ``fold_<name>`` (step = fold index), one batch."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(f"{prefix}{k}", float(v), now, step) for step, row in enumerate(rows)
                   for k, v in row.items() if v is not None and math.isfinite(float(v))]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(run_id, metrics=metrics[i:i + 1000])

    def log_file(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def log_text(self, run_id: str, text: str, file_name: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / file_name
            path.write_text(text)
            self.client.log_artifact(run_id, str(path))

    def set_tags(self, run_id: str, tags: Mapping[str, Any]) -> None:
        self.log(run_id, tags=tags)

    # --- the study's parent run ------------------------------------------------------------------
    def study_run(self, study_name: str) -> str | None:
        runs = self.find_runs(**{names.ROLE: "study", names.STUDY_NAME: study_name})
        return runs[0].info.run_id if runs else None
