"""The worker loop: ask a trial, run it, record it in MLflow, tell Optuna — until the study's budget is used.

Any number of workers (processes on one machine via ``study.n_workers``, or the same command on many
machines) run this loop against one Optuna storage; Optuna hands each ``ask()`` a distinct trial, so the
workers never wait for each other (no batches).

Budget: ``study.n_trials`` counts trials that are complete, failed, running or waiting, except a trial
that was killed and has been re-queued (its retry counts instead). So a study resumed after every worker
was killed ends with exactly ``n_trials`` finished trials.

Crash recovery: on a storage with heartbeats (SQLite / PostgreSQL / MySQL via ``RDBStorage``) each running
trial records a heartbeat every few seconds; a trial whose worker died (SIGKILL, lost machine) goes stale
after the grace period, is marked FAIL and re-queued with the same parameters
(:class:`optuna.storages.RetryHeartbeatStaleTrialCallback`), and its MLflow run is closed as KILLED by
:func:`search.doctor.close_orphan_runs`. Journal storage has no heartbeats: there the parent process of
local workers fails and re-queues the trials of a worker that died.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from search import names

__all__ = ["Context", "run_trial", "run_trials", "budget_used", "count_finished", "WORKER_ATTR"]

WORKER_ATTR = "worker"          # trial user attr "<host>:<pid>" of the worker that ran it


@dataclass
class Context:
    setup: Any                  # search.sweep.Setup
    study: Any
    tracker: Any                # search.tracking.Tracker
    parent_run_id: str
    reference: dict[str, float]
    failed: int = 0
    completed: int = 0
    pruned: int = 0
    last_error: str = ""
    finished: Any = None        # search.finished.FinishedTrials, made on first use (_finished_trials)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _retried(trials) -> set[int]:
    out: set[int] = set()
    for t in trials:
        out.update(t.system_attrs.get("retry_history", []))
    return out


def budget_used(study) -> int:
    """Trials that count against ``study.n_trials`` (see the module docstring)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = _retried(trials)
    active = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
    return sum(1 for t in trials if t.state in active or (t.state == TrialState.FAIL and t.number not in retried))


def count_finished(study) -> tuple[int, int]:
    """(complete or stopped early, failed-and-not-retried) trials of the study."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    retried = _retried(trials)
    complete = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    failed = sum(t.state == TrialState.FAIL and t.number not in retried for t in trials)
    return complete, failed


def _n_failed(study) -> int:
    """All FAIL trials, retried or not (a stale trial is re-queued in the same call that fails it)."""
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))


def pareto_size(study, objectives) -> int:
    """How many completed feasible trials are non-dominated right now (for the progress bar)."""
    from search.report import collect

    return sum(r.pareto for r in collect(study, objectives))


def _has_waiting(study) -> bool:
    from optuna.trial import TrialState

    return bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


_LOCK_ENGINES: dict[str, Any] = {}


@contextmanager
def budget_lock(storage_url: str, study_name: str):
    """Serialize "is there budget left? then ask" across all workers of a study.

    PostgreSQL: a session advisory lock keyed by the study name (works across machines); SQLite and
    journal files: an exclusive ``flock`` on a lock file beside the storage file (one machine).
    """
    import hashlib

    key = int(hashlib.sha256(study_name.encode()).hexdigest()[:15], 16)
    if storage_url.startswith("postgresql"):
        import sqlalchemy as sa

        engine = _LOCK_ENGINES.get(storage_url)
        if engine is None:
            engine = _LOCK_ENGINES[storage_url] = sa.create_engine(storage_url, poolclass=sa.pool.NullPool)
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": key})
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        return
    path = None
    if storage_url.startswith("journal:"):
        path = storage_url[len("journal:"):]
    elif storage_url.startswith("sqlite:///"):
        path = storage_url[len("sqlite:///"):]
    if path is None:                       # other databases: no lock (a rare extra trial is possible)
        yield
        return
    import fcntl

    with open(f"{path}.{key:x}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


#: trial id -> time.monotonic() of the beat :func:`first_beat` recorded, read by :func:`heartbeat`
_FIRST_BEATS: dict[int, float] = {}


def first_beat(study, trial) -> None:
    """Record one heartbeat now (RDB storages with heartbeats): Optuna only fails trials that have one."""
    storage = study._storage
    if hasattr(storage, "get_heartbeat_interval") and storage.get_heartbeat_interval():
        storage.record_heartbeat(trial._trial_id)
        _FIRST_BEATS[trial._trial_id] = time.monotonic()


@contextmanager
def heartbeat(study, trial):
    """Record the trial's heartbeat in a background thread while it runs (RDB storages with heartbeats).

    The first beat is due one interval after :func:`first_beat`'s, when that recorded one for this trial (else at
    once): a second write a few milliseconds after it told the storage nothing new, and competed with the
    trial's own first writes for the SQLite lock."""
    storage = study._storage
    interval = storage.get_heartbeat_interval() if hasattr(storage, "get_heartbeat_interval") else None
    beaten = _FIRST_BEATS.pop(trial._trial_id, None)
    if not interval:
        yield
        return
    stop = threading.Event()
    first_wait = 0.0 if beaten is None else max(0.0, interval - (time.monotonic() - beaten))

    def beat() -> None:
        if stop.wait(first_wait):
            return
        while not stop.is_set():
            try:
                storage.record_heartbeat(trial._trial_id)
            except Exception:  # a missed beat is harmless; the next one retries
                pass
            stop.wait(interval)

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def _set_constraints(trial, cfg_study: dict[str, Any], metrics: dict[str, float]) -> None:
    checks = [("min_accuracy", lambda lim: lim - metrics[names.ACCURACY]),
              ("max_size_bytes", lambda lim: metrics[names.SIZE_BYTES] - lim),
              ("max_latency_ms", lambda lim: metrics[names.LATENCY_MS] - lim)]
    for key, violation in checks:
        if cfg_study.get(key) is not None:
            trial.set_constraint(key, float(violation(float(cfg_study[key]))))


def _finished_trials(ctx: Context):
    """The worker's :class:`search.finished.FinishedTrials` of this study (made on first use)."""
    if ctx.finished is None:
        from search.finished import FinishedTrials

        objectives = ctx.setup.objectives
        ctx.finished = FinishedTrials(
            use_size=names.SIZE_BYTES in objectives or names.COMPRESSION_RATIO in objectives,
            use_latency=names.LATENCY_MS in objectives or names.SPEEDUP in objectives)
    return ctx.finished


def _early_stopper(ctx: Context, study_attrs: dict[str, Any] | None = None):
    """``after_fold(rows)`` for :func:`search.objective.evaluate_config`: the rule of
    :mod:`search.early_stop` against the study's finished feasible trials; ``None`` when turned off or when
    accuracy is not an objective. ``study_attrs``: the study's user attributes when the caller has read them."""
    import numpy as np
    from optuna.trial import TrialState

    from search.early_stop import LATENCY_TOLERANCE, Running, should_stop
    from search.ledger import latency_noise

    setup = ctx.setup
    cfg_study = setup.cfg_dict["study"]
    if not cfg_study.get("early_stop", True) or names.ACCURACY not in setup.objectives:
        return None
    chance = setup.task.chance_accuracy(setup.dataset.y[setup.dev_idx])     # None: the task has none
    # a faster trial is "no slower" only within the latency noise the front ties on (search.ledger.pareto_mask):
    # a stop must never remove a trial that the study's own front rule would keep (set once, when the study starts)
    tolerance = min(LATENCY_TOLERANCE, latency_noise(ctx.study, study_attrs))
    margin = float(cfg_study.get("early_stop_margin", 0.01))
    reference_spread = float(ctx.reference.get(names.ACCURACY_STD, 0.0))
    seen = _finished_trials(ctx)
    use_size, use_latency = seen.use_size, seen.use_latency
    fold_rows = [len(val) for _, val in setup.folds]      # validation rows per fold (users for a ranker)

    def after_fold(rows: list[dict[str, float]]) -> bool:
        # the running trial is not COMPLETE, so it is never among the trials it is compared with
        seen.update(ctx.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        sizes = [r[names.SIZE_BYTES] for r in rows] if use_size else []
        running = Running([r[names.ACCURACY] for r in rows], float(np.mean(sizes)) if use_size else 0.0,
                          float(np.mean([r[names.LATENCY_MS] for r in rows])) if use_latency else 0.0, sizes)
        size_spread = float(np.median(seen.size_spreads)) if use_size and seen.size_spreads else 0.0
        return should_stop(running, seen.comparisons, margin, float(np.median([reference_spread, *seen.spreads])),
                           chance if use_size else None, latency_tolerance=tolerance, study_size_spread=size_spread,
                           fold_rows=float(np.mean(fold_rows[:len(rows)])))

    return after_fold


def run_trial(ctx: Context, trial) -> str:
    """One trial, recorded in Optuna and MLflow; returns the final state name (COMPLETE, PRUNED when stopped
    early, FAIL). Never raises for a bad trial (only KeyboardInterrupt propagates, after the trial is
    marked)."""
    import optuna

    from search.config import resolved
    from search.finished import FOLD_ACCURACY_ATTR
    from search.ledger import reference_artifacts
    from search.objective import evaluate_config
    from search.recipes import RECIPE_ATTR
    from search.shrink import SHRINK_ATTR, SHRINK_TOLERANCE_ATTR
    from search.space import apply_values, sample
    from search.tracking import fold_metrics, trial_params, trial_run_name
    from trainers.artifact import read_header
    from trainers.task import configure

    setup, tracker = ctx.setup, ctx.tracker
    study_name = setup.cfg_dict["study"]["name"]
    start = time.perf_counter()
    tags = {names.ROLE: "trial", names.TRIAL_NUMBER: trial.number, names.STUDY_NAME: study_name,
            names.STATE: "RUNNING", names.PARETO: "false", WORKER_ATTR: worker_id()}
    recipe = trial.user_attrs.get(RECIPE_ATTR)
    if recipe:
        tags[names.RECIPE] = recipe
    if (parent := trial.user_attrs.get(SHRINK_ATTR)) is not None:
        tags[names.SHRINK_OF] = parent
        if (tolerance := trial.user_attrs.get(SHRINK_TOLERANCE_ATTR)) is not None:
            tags[names.SHRINK_TOLERANCE] = tolerance
    digits = max(2, len(str(int(setup.cfg_dict["study"]["n_trials"]) - 1)))   # t07 of 20, t007 of 200
    cfg_dict = None
    run_id = tracker.create_run(trial_run_name(trial.number, digits=digits), tags, parent_run_id=ctx.parent_run_id)
    trial.set_user_attr("mlflow_run_id", run_id)
    trial.set_user_attr(WORKER_ATTR, worker_id())
    try:
        with heartbeat(ctx.study, trial):
            values = sample(trial, setup.params, setup.cfg)
            cfg_dict, cfg_yaml = resolved(apply_values(setup.cfg, values))
            tracker.log(run_id, params={**values, **trial_params(cfg_dict)},
                        name=trial_run_name(trial.number, cfg_dict, digits=digits))
            tracker.log_text(run_id, cfg_yaml, names.CONFIG_ARTIFACT)
            study_attrs = ctx.study.user_attrs   # one storage read: the reference artifacts and the latency noise
            ds = setup.dataset
            with tempfile.TemporaryDirectory(prefix="squeeze-trial-") as tmp:
                ev = evaluate_config(configure(cfg_dict, ds), ds.X[setup.dev_idx], ds.y[setup.dev_idx],
                                     setup.folds, tmp,
                                     meta={"classes": ds.classes, "study": study_name, "trial": trial.number},
                                     cache=setup.base_cache,
                                     after_fold=_early_stopper(ctx, study_attrs),
                                     references=reference_artifacts(ctx.study, study_attrs))
                tracker.log_file(run_id, ev.artifact_path)
                uncompressed = read_header(ev.artifact_path).get("uncompressed_modules", [])
        metrics = dict(ev.metrics)
        ref = ctx.reference
        metrics[names.COMPRESSION_RATIO] = ref[names.SIZE_BYTES] / metrics[names.SIZE_BYTES]
        metrics.setdefault(names.SPEEDUP, ref[names.LATENCY_MS] / metrics[names.LATENCY_MS])  # paired when timed so
        metrics[names.FOLDS_RUN] = float(ev.folds_run)
        metrics[names.SIZE_KIB] = metrics[names.SIZE_BYTES] / 1024
        tags = {names.RUNTIME: ev.runtime, names.FOLD_RUNTIMES: json.dumps(ev.runtimes),
                "latency_protocol": json.dumps(ev.latency_protocol)}
        if uncompressed:        # a user model's layers squeeze cannot compress: kept fp32 (and counted in the size)
            tags[names.UNCOMPRESSED_MODULES] = json.dumps(uncompressed)
        tags.update(tracker.log_fold_table(run_id, ev.folds, ev.runtimes))    # folds.json, shown as a table
        trial.set_user_attr("metrics", metrics)
        trial.set_user_attr(FOLD_ACCURACY_ATTR, [f[names.ACCURACY] for f in ev.folds])
        if ev.stopped_early:     # dominated by the study's results: the remaining folds were skipped
            ctx.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            state, status = "PRUNED", "KILLED"
        else:
            _set_constraints(trial, setup.cfg_dict["study"], metrics)
            ctx.study.tell(trial, [metrics[o] for o in setup.objectives])
            state, status = "COMPLETE", "FINISHED"
        # one batch: every value, the state and the final name (then the run's status)
        tracker.finish(run_id, trial_run_name(trial.number, cfg_dict, metrics, state, digits), status,
                       metrics={**metrics, **fold_metrics(ev.folds), names.TRIAL_SECONDS: time.perf_counter() - start},
                       tags={**tags, names.STATE: state})
        if state == "PRUNED":
            ctx.pruned += 1
        else:
            ctx.completed += 1
        return state
    except KeyboardInterrupt:
        ctx.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        tracker.log(run_id, tags={names.STATE: "FAIL", names.ERROR: "interrupted (Ctrl-C)"})
        tracker.end_run(run_id, "KILLED")
        raise
    except Exception as err:  # a failing trial is recorded and the study goes on
        message = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
        trial.set_user_attr("error", message[:1000])
        ctx.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        tracker.finish(run_id, trial_run_name(trial.number, cfg_dict, state="FAIL", digits=digits), "FAILED",
                       tags={names.STATE: "FAIL", names.ERROR: message})
        ctx.failed += 1
        ctx.last_error = f"trial {trial.number}: {message}"
        return "FAIL"


def _failure_rate_exceeded(ctx: Context, complete: int, failed: int) -> str | None:
    ran = complete + failed
    limit = float(ctx.setup.cfg_dict["study"]["max_failure_rate"])
    if ran >= 4 and failed / ran > limit:
        return (f"stopped: {failed} of {ran} trials failed (> study.max_failure_rate={limit}); "
                f"last error: {ctx.last_error or 'see the error tag of the failed trial runs'}")
    return None


def _enqueue_shrink_step(ctx: Context, asked: int) -> int | None:
    """When the trial about to be asked is a shrink step (every ``study.shrink_every``-th; search/shrink.py),
    enqueue it and return its parent's number; ``None`` otherwise. Called under the budget lock."""
    import random

    from search.shrink import SHRINK_ATTR, SHRINK_TOLERANCE_ATTR, level_tolerance, next_child, signature

    setup = ctx.setup
    cfg_study = setup.cfg_dict["study"]
    every = int(cfg_study.get("shrink_every", 0))
    reference_accuracy = ctx.reference.get(names.ACCURACY)
    if (every <= 0 or (asked + 1) % every or reference_accuracy is None
            or not {names.ACCURACY, names.SIZE_BYTES} <= set(setup.objectives)):
        return None
    trials = ctx.study.get_trials(deepcopy=False)
    seen = _finished_trials(ctx)
    seen.update(trials)              # finished trials: read once each; running and waiting ones: every time
    tried = seen.signatures | {signature(t.params) for t in trials if not t.state.is_finished()}
    tolerance = level_tolerance(float(cfg_study["shrink_tolerance"]), int(cfg_study["shrink_levels"]),
                                (asked + 1) // every - 1)
    step = next_child(seen.candidates, {p.key: p.distribution for p in setup.params}, float(reference_accuracy),
                      tolerance, tried, random.Random(f"{cfg_study.get('seed')}-{asked}"))
    if step is None:
        return None
    parent, _, params = step
    ctx.study.enqueue_trial(params, user_attrs={SHRINK_ATTR: parent.number, SHRINK_TOLERANCE_ATTR: tolerance})
    return parent.number


@contextmanager
def worker_threads(n: int | None) -> Iterator[None]:
    """A worker's CPU threads: torch's and the BLAS library's (numpy: the sampler's maths) capped at ``n``
    (``train.threads``; None: as they are) while it runs trials. Left at their defaults (every core), two
    workers on two cores split each big enough operation over both and then wait on each other's threads:
    measured side by side, two compress-only studies ran 60 trials/min each with the defaults and 76 with
    one thread each (OMP_NUM_THREADS=1)."""
    if n is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    from trainers.fit import cpu_threads

    with threadpool_limits(limits=int(n), user_api="blas"), cpu_threads(int(n)):
        yield


def run_trials(ctx: Context, progress: bool = True) -> int:
    """Ask/tell until the budget is used (or timeout / failure rate); returns the exit code."""
    import optuna
    from tqdm.auto import tqdm

    from search.doctor import close_orphan_runs
    from search.ledger import StudyLedger

    cfg_study = ctx.setup.cfg_dict["study"]
    n_trials, timeout = int(cfg_study["n_trials"]), cfg_study["timeout"]
    started = getattr(ctx.setup, "started", time.monotonic())   # the command's start: references count too
    ledger = StudyLedger(ctx.study, ctx.setup.objectives).update()   # counts and front, kept up to date by deltas
    failed_seen = ledger.failed_all
    bar = tqdm(total=n_trials, initial=min(sum(ledger.finished), n_trials), unit="trial",
               desc=cfg_study["name"], dynamic_ncols=True, file=sys.stderr, disable=not progress)
    close_orphan_runs(ctx.study, ctx.tracker)
    with worker_threads(ctx.setup.cfg_dict["train"].get("threads")):
        try:
            while True:
                optuna.storages.fail_stale_trials(ctx.study)          # heartbeat storages: dead workers' trials
                if timeout is not None and time.monotonic() - started > float(timeout):
                    bar.write(f"study.timeout={timeout}s reached")
                    return 0
                with budget_lock(ctx.setup.storage_url, ctx.setup.cfg_dict["study"]["name"]):
                    # check and ask under one lock: the asked trial is RUNNING before another worker counts
                    ledger.update()
                    if ledger.budget_used >= n_trials and not ledger.waiting:
                        return 0
                    shrink_of = None if ledger.waiting else _enqueue_shrink_step(ctx, ledger.budget_used)
                    with warnings.catch_warnings():  # ask/tell with our own heartbeat thread (see heartbeat())
                        warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used with Study.optimize",
                                                UserWarning)
                        trial = ctx.study.ask()
                    first_beat(ctx.study, trial)  # at once: a worker killed before run_trial's heartbeat thread
                                                  # starts (MLflow run creation) would leave a never-stale RUNNING trial
                if ledger.failed_all != failed_seen:                  # someone's trial went stale: close its run
                    close_orphan_runs(ctx.study, ctx.tracker)
                bar.set_postfix_str(f"trial {trial.number} running"
                                    + (f" (shrink step of trial {shrink_of})" if shrink_of is not None else ""))
                run_trial(ctx, trial)
                complete, failed = ledger.update().finished
                failed_seen = ledger.failed_all
                bar.n = min(complete + failed, n_trials)
                bar.set_postfix_str(f"done {complete} failed {failed} pareto {ledger.pareto_size}")
                bar.refresh()
                if (message := _failure_rate_exceeded(ctx, complete, failed)) is not None:
                    bar.close()
                    print(f"squeeze: {message}", file=sys.stderr)
                    return 1
        finally:
            bar.close()
