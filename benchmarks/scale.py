"""Squeeze's own bookkeeping on a study of N finished trials: listing, tagging, per-trial overhead, sampler.

    PYTHONPATH=. python benchmarks/scale.py --trials 10000 --out /tmp/scale-10000.json
    PYTHONPATH=. python benchmarks/scale.py --trials 1000 5000 10000 --out benchmarks/results/scale.json

It synthesizes, in a fresh temporary folder, a squeeze-shaped study: N COMPLETE trials with the params of
``conf/space/joint.yaml`` (conditions honoured), the user attributes ``search.worker.run_trial`` writes
(``mlflow_run_id``, ``worker``, ``metrics``, ``fold_accuracy``), three objectives (accuracy, size_bytes,
latency_ms) drawn uniformly, in a SQLite Optuna storage; and one finished MLflow trial run per trial (tags,
params and summary metrics as a worker logs them, ``pareto=false`` as a worker tags a new run; the per-fold
series are left out) under a parent run, in a SQLite MLflow store. Writing 10,000 trials through the Optuna and MLflow APIs takes ~10 minutes here, so
the rows are bulk-inserted into both stores' tables in one transaction each (``synthesize``); everything
measured afterwards goes through the public code paths. ``tests/test_scale.py`` checks that the bulk rows
read back like trials and runs written through the APIs.

Measured (wall seconds, this machine):

* ``list_seconds``: ``python -m search.pareto study.name=... study.storage=...`` as a subprocess, cold;
  ``list_help_seconds`` is the same command with ``--help`` (interpreter and imports only);
* ``tag_seconds``: :func:`search.report.tag_runs` at the end of the sweep (the rows from ``collect`` on a
  warm study, as ``sweep.summarize`` has them), ``retag_seconds`` the same call again (nothing changed);
* ``overhead_per_trial_seconds``: the worker loop's bookkeeping per trial with :class:`search.ledger.
  StudyLedger` (updates, stale-trial check, budget lock and check, progress numbers); the sampler's ask and
  tell are excluded (the loop of the integration notes in ``search/ledger.py``: the stale-trial check, one
  update under the budget lock, one after the trial); ``overhead_full_reads_per_trial_seconds``: the same questions answered by the full
  reads the loop made before (``count_finished`` x2, ``budget_used``, ``_has_waiting``, ``_n_failed`` x2,
  ``pareto_size``);
* ``close_orphans_seconds``: :func:`search.doctor.close_orphan_runs` at a worker start;
* ``sampler_seconds``: one ``ask`` + parameter sampling + ``tell`` with the default sampler
  (``search.sweep.make_sampler("tpe", ...)``) at N trials, mean of a few.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))     # the `search` package, not benchmarks/search.py beside this file

STUDY = "scale"
OBJECTIVES = ["accuracy", "size_bytes", "latency_ms"]
DIRECTIONS = ["maximize", "minimize", "minimize"]
REFERENCE = {"accuracy": 0.97, "size_bytes": 186_709.0, "latency_ms": 0.018}
#: summary metrics of a trial besides the objectives (the shape of run_trial's "metrics" user attr)
_OTHER_METRICS = ["accuracy_std", "latency_p90_ms", "throughput_per_s", "sparsity", "avg_bits", "fit_seconds",
                  "train_seconds", "compress_seconds", "base_cached", "pack_seconds", "eval_seconds",
                  "compression_ratio", "speedup", "folds_run"]


def _space():
    """The joint space's params and the composed config their conditions read."""
    from search.config import compose
    from search.space import parse_space

    cfg = compose(["space=joint"])
    return parse_space(cfg.space), cfg


def _draw_params(rng: np.random.Generator, params: list, cfg: Any) -> dict[str, tuple[Any, Any]]:
    """One trial's parameters as Optuna would store them: {name: (distribution, external value)},
    drawn uniformly (log-uniformly for log distributions), conditions checked as search.space.sample does."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    sampled: dict[str, Any] = {}
    out: dict[str, tuple[Any, Any]] = {}
    for p in params:
        if not p.conditions_hold(sampled, cfg):
            continue
        d = p.distribution
        if isinstance(d, CategoricalDistribution):
            value = d.choices[int(rng.integers(len(d.choices)))]
            sampled[p.key] = p.decode(value)
        elif isinstance(d, FloatDistribution):
            value = float(np.exp(rng.uniform(np.log(d.low), np.log(d.high)))) if d.log else float(rng.uniform(d.low, d.high))
            sampled[p.key] = value
        else:
            value = int(rng.integers(d.low, d.high + 1))
            sampled[p.key] = value
        out[p.key] = (d, value)
    return out


def synthesize(workdir: Path, n: int, seed: int = 0) -> dict[str, str]:
    """Create the study and its runs in ``workdir``; returns the storage URLs and the parent run id."""
    import optuna
    import sqlalchemy as sa
    from mlflow.store.tracking.dbmodels import models as ml
    from optuna.distributions import distribution_to_json
    from optuna.storages._rdb import models as om
    from optuna.trial import TrialState

    from search import names
    from search.storage import open_storage
    from search.tracking import Tracker, _param_value

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rng = np.random.default_rng(seed)
    params, cfg = _space()
    storage_url = f"sqlite:///{workdir}/optuna.db"
    tracking_uri = f"sqlite:///{workdir}/mlflow.db"
    tracker = Tracker(tracking_uri, "scale", str(workdir / "artifacts"))
    parent = tracker.create_run(STUDY, {names.ROLE: "study", names.STUDY_NAME: STUDY})
    storage = open_storage(storage_url)
    study = optuna.create_study(study_name=STUDY, storage=storage, directions=DIRECTIONS)
    study.set_user_attr("reference", REFERENCE)
    study.set_user_attr("mlflow_parent_run_id", parent)

    values = np.column_stack([rng.uniform(0.5, 1.0, n), rng.uniform(1e3, 2e5, n), rng.uniform(0.005, 0.05, n)])
    start = datetime(2026, 1, 1)
    experiment = tracker.client.get_experiment(tracker.experiment_id)
    trials, tparams, tvalues, tattrs = [], [], [], []
    runs, rtags, rparams, rmetrics = [], [], [], []
    for i in range(n):
        trial_id = i + 1                                  # fresh database: ids start at 1
        run_id = uuid.uuid4().hex
        t0 = start + timedelta(seconds=60 * i)
        trials.append({"trial_id": trial_id, "number": i, "study_id": study._study_id, "state": TrialState.COMPLETE,
                       "datetime_start": t0, "datetime_complete": t0 + timedelta(seconds=50)})
        drawn = _draw_params(rng, params, cfg)
        for name, (dist, value) in drawn.items():
            tparams.append({"trial_id": trial_id, "param_name": name, "param_value": dist.to_internal_repr(value),
                            "distribution_json": distribution_to_json(dist)})
        for k in range(3):
            stored, kind = om.TrialValueModel.value_to_stored_repr(float(values[i, k]))
            tvalues.append({"trial_id": trial_id, "objective": k, "value": stored, "value_type": kind})
        metrics = dict(zip(OBJECTIVES, (float(v) for v in values[i])))
        metrics.update({m: float(rng.uniform(0, 1)) for m in _OTHER_METRICS})
        folds = [float(values[i, 0] + rng.normal(0, 0.01)) for _ in range(3)]
        for key, value in (("mlflow_run_id", run_id), ("worker", f"bench:{os.getpid()}"), ("metrics", metrics),
                           ("fold_accuracy", folds)):
            tattrs.append({"trial_id": trial_id, "key": key, "value_json": json.dumps(value)})
        # the MLflow run, as Tracker.create_run / log / end_run leave it
        ms = int(t0.replace(tzinfo=timezone.utc).timestamp() * 1000)
        runs.append({"run_uuid": run_id, "name": f"trial-{i}", "source_type": "UNKNOWN", "source_name": "",
                     "entry_point_name": "", "user_id": "bench", "status": "FINISHED", "start_time": ms,
                     "end_time": ms + 50_000, "deleted_time": None, "source_version": "", "lifecycle_stage": "active",
                     "artifact_uri": f"{experiment.artifact_location}/{run_id}/artifacts",
                     "experiment_id": int(tracker.experiment_id)})
        tags = {names.ROLE: "trial", names.TRIAL_NUMBER: str(i), names.STUDY_NAME: STUDY, names.STATE: "COMPLETE",
                "worker": f"bench:{os.getpid()}", "mlflow.parentRunId": parent, names.PARETO: "false", "mlflow.runName": f"trial-{i}",
                names.RUNTIME: "torchscript", names.FOLD_RUNTIMES: json.dumps(["torchscript"] * 3),
                "latency_protocol": json.dumps({"batch_size": 1, "repeats": 200})}
        rtags += [{"run_uuid": run_id, "key": k, "value": v} for k, v in tags.items()]
        rparams += [{"run_uuid": run_id, "key": k, "value": _param_value(params_value)[:6000]}
                    for k, (_, params_value) in drawn.items()]
        metrics[names.TRIAL_SECONDS] = 50.0
        rmetrics += [{"run_uuid": run_id, "key": k, "value": v, "timestamp": ms, "step": 0, "is_nan": False}
                     for k, v in metrics.items()]
    with storage.engine.begin() as conn:
        for model, rows in ((om.TrialModel, trials), (om.TrialParamModel, tparams), (om.TrialValueModel, tvalues),
                            (om.TrialUserAttributeModel, tattrs)):
            conn.execute(sa.insert(model.__table__), rows)
    engine = tracker.client._tracking_client.store.engine
    with engine.begin() as conn:
        for model, rows in ((ml.SqlRun, runs), (ml.SqlTag, rtags), (ml.SqlParam, rparams),
                            (ml.SqlMetric, rmetrics), (ml.SqlLatestMetric, rmetrics)):
            conn.execute(sa.insert(model.__table__), rows)
    return {"storage": storage_url, "tracking_uri": tracking_uri, "parent_run_id": parent}


def _timed(fn) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def measure_list(urls: dict[str, str]) -> dict[str, float]:
    cmd = [sys.executable, "-m", "search.pareto", f"study.name={STUDY}", f"study.storage={urls['storage']}"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    help_s, _ = _timed(lambda: subprocess.run([*cmd[:3], "--help"], cwd=REPO, env=env, capture_output=True, check=True))
    list_s, proc = _timed(lambda: subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True))
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    return {"list_seconds": list_s, "list_help_seconds": help_s, "list_header": proc.stdout.splitlines()[0]}


def measure_tag(urls: dict[str, str]) -> dict[str, float]:
    import optuna

    from search import report
    from search.storage import open_storage
    from search.tracking import Tracker

    study = optuna.load_study(study_name=STUDY, storage=open_storage(urls["storage"]))
    cold_s, _ = _timed(lambda: study.get_trials(deepcopy=False))
    collect_s, rows = _timed(lambda: report.collect(study, OBJECTIVES))
    tracker = Tracker(urls["tracking_uri"], "scale")
    tag_s, written = _timed(lambda: report.tag_runs(tracker, rows))
    retag_s, rewritten = _timed(lambda: report.tag_runs(tracker, rows))
    return {"tag_seconds": tag_s, "tagged_runs": written, "retag_seconds": retag_s, "retagged_runs": rewritten,
            "collect_warm_seconds": collect_s, "first_read_seconds": cold_s}


def measure_overhead(urls: dict[str, str], iterations: int, full_iterations: int) -> dict[str, float]:
    """The worker loop's bookkeeping around ask/tell, timed without them (random sampler, no params)."""
    import optuna

    from search import worker
    from search.ledger import StudyLedger
    from search.storage import open_storage

    study = optuna.load_study(study_name=STUDY, storage=open_storage(urls["storage"]),
                              sampler=optuna.samplers.RandomSampler(seed=0))
    rng = np.random.default_rng(1)
    first_s, ledger = _timed(lambda: StudyLedger(study, OBJECTIVES).update())

    def one_trial(bookkeeping) -> float:
        spent = 0.0
        start = time.perf_counter()
        bookkeeping("before")
        spent += time.perf_counter() - start
        trial = study.ask()                               # excluded: the sampler
        study.tell(trial, [float(rng.uniform(0.5, 1.0)), float(rng.uniform(1e3, 2e5)), float(rng.uniform(0.005, 0.05))])
        start = time.perf_counter()
        bookkeeping("after")
        return spent + time.perf_counter() - start

    failed_seen = ledger.failed_all

    def with_ledger(phase: str) -> None:
        """The loop of the integration notes: two ledger updates per trial, no full read."""
        nonlocal failed_seen
        if phase == "before":
            optuna.storages.fail_stale_trials(study)
            with worker.budget_lock(urls["storage"], STUDY):
                ledger.update()
                _ = ledger.budget_used >= 10**9 and not ledger.waiting
            if ledger.failed_all != failed_seen:
                raise AssertionError("no trial should fail here")
        else:
            ledger.update()
            _ = (ledger.finished, ledger.pareto_size)
            failed_seen = ledger.failed_all

    def with_full_reads(phase: str) -> None:
        if phase == "before":
            failed_before = worker._n_failed(study)
            optuna.storages.fail_stale_trials(study)
            if worker._n_failed(study) != failed_before:
                raise AssertionError("no trial should go stale here")
            with worker.budget_lock(urls["storage"], STUDY):
                _ = worker.budget_used(study) >= 10**9 and not worker._has_waiting(study)
        else:
            _ = (worker.count_finished(study), worker.pareto_size(study, OBJECTIVES), worker.count_finished(study))

    ledger_times = [one_trial(with_ledger) for _ in range(iterations)]
    study.get_trials(deepcopy=False)                      # the full reads start from a warm cache, as in a worker
    full_times = [one_trial(with_full_reads) for _ in range(full_iterations)]
    return {"overhead_per_trial_seconds": float(np.mean(ledger_times)),
            "overhead_per_trial_max_seconds": float(np.max(ledger_times)),
            "overhead_full_reads_per_trial_seconds": float(np.mean(full_times)),
            "ledger_first_update_seconds": first_s}


def measure_orphans(urls: dict[str, str]) -> dict[str, float]:
    """``doctor.close_orphan_runs`` as a worker start runs it (nothing to close: the common case)."""
    import optuna

    from search.doctor import close_orphan_runs
    from search.storage import open_storage
    from search.tracking import Tracker

    study = optuna.load_study(study_name=STUDY, storage=open_storage(urls["storage"]))
    tracker = Tracker(urls["tracking_uri"], "scale")
    seconds, closed = _timed(lambda: close_orphan_runs(study, tracker))
    return {"close_orphans_seconds": seconds, "closed_orphans": closed}


def measure_sampler(urls: dict[str, str], n_trials: int, iterations: int) -> dict[str, float]:
    import optuna

    from search.space import sample
    from search.storage import open_storage
    from search.sweep import make_sampler

    params, cfg = _space()
    study = optuna.load_study(study_name=STUDY, storage=open_storage(urls["storage"]),
                              sampler=make_sampler("tpe", 0, n_trials))
    study.get_trials(deepcopy=False)                      # a running worker's cache is warm
    rng = np.random.default_rng(2)
    times = []
    for _ in range(iterations):
        start = time.perf_counter()
        trial = study.ask()
        sample(trial, params, cfg)
        study.tell(trial, [float(rng.uniform(0.5, 1.0)), float(rng.uniform(1e3, 2e5)), float(rng.uniform(0.005, 0.05))])
        times.append(time.perf_counter() - start)
    return {"sampler_seconds": float(np.mean(times)), "sampler": "tpe (make_sampler defaults)"}


def run(n: int, iterations: int, full_iterations: int, sampler_iterations: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="squeeze-scale-") as tmp:
        synth_s, urls = _timed(lambda: synthesize(Path(tmp), n))
        out: dict[str, Any] = {"trials": n, "synthesize_seconds": synth_s}
        out.update(measure_list(urls))
        out.update(measure_tag(urls))
        out["list_plus_tag_seconds"] = out["list_seconds"] + out["tag_seconds"]
        out.update(measure_overhead(urls, iterations, full_iterations))
        out.update(measure_orphans(urls))
        if sampler_iterations:
            out.update(measure_sampler(urls, n, sampler_iterations))
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[1000])
    parser.add_argument("--out", required=True)
    parser.add_argument("--iterations", type=int, default=20, help="worker-loop iterations timed with the ledger")
    parser.add_argument("--full-iterations", type=int, default=3, help="... with the former full reads")
    parser.add_argument("--sampler-iterations", type=int, default=3)
    args = parser.parse_args()
    rows = []
    for n in args.trials:
        rows.append(run(n, args.iterations, args.full_iterations, args.sampler_iterations))
        print(json.dumps(rows[-1]), file=sys.stderr)
    out: dict[str, Any] = rows[0] if len(rows) == 1 else {
        "benchmark": "scale", "cpu_count": os.cpu_count(), "storage": "sqlite (Optuna and MLflow)", "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
