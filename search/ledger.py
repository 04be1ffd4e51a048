"""What a worker needs to know about its study, kept up to date from cheap delta reads.

The worker loop asks, every trial: how much of ``study.n_trials`` is used, how many trials finished or
failed, whether a trial is waiting, and how large the Pareto front is. Answering each from a full read of
the study costs O(trials) per question; at 10,000 trials that was 0.6 s of bookkeeping per trial.
:class:`StudyLedger` instead remembers every trial it has seen finish (a finished Optuna trial never
changes again) and on :meth:`StudyLedger.update` looks only at the trials it has not seen finished: the
ones numbered after the last it saw, and the ones that were running or waiting last time. On an RDB
storage (SQLite, PostgreSQL, MySQL) that read is three column queries on Optuna's tables; on other
storages it goes through ``study.get_trials(deepcopy=False)``, which they already hold in memory.

Counting rules (one source for the worker loop and the progress bars):

* **budget used** = COMPLETE + PRUNED + RUNNING + WAITING + FAIL, except a FAIL trial that was retried
  (its number is in a later trial's ``retry_history`` system attribute): its retry counts instead;
* **finished** = (COMPLETE + PRUNED, FAIL not retried), as :func:`search.worker.count_finished`;
* **front** = the non-dominated COMPLETE trials that meet every constraint (:func:`is_feasible`), as
  :func:`search.report.collect` marks them.

In the worker loop (two updates per trial)::

    ledger = StudyLedger(study, objectives).update()
    failed_seen = ledger.failed_all
    while True:
        optuna.storages.fail_stale_trials(study)
        with budget_lock(storage_url, study_name):
            ledger.update()                                   # exact under the lock
            if ledger.budget_used >= n_trials and not ledger.waiting:
                break
            trial = study.ask()
        if ledger.failed_all != failed_seen:                  # a trial failed elsewhere (stale worker?)
            close_orphan_runs(study, tracker)
        run_trial(ctx, trial)
        done, failed = ledger.update().finished               # progress bar, failure rate
        failed_seen = ledger.failed_all

:func:`read_completed` is the other cheap read here: the objective values of the completed trials without
building every trial, for commands that start cold (``python -m search.pareto``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from search import names
from search.pareto import tied_non_dominated_mask

__all__ = ["CompletedTrials", "StudyLedger", "is_feasible", "latency_noise", "pareto_mask", "read_completed",
           "reference_artifacts", "RETRY_HISTORY_ATTR", "LATENCY_NOISE_ATTR", "REFERENCE_ARTIFACTS_ATTR"]

#: system attribute in which Optuna's retry callback lists the trial numbers a retry replaces
RETRY_HISTORY_ATTR = "retry_history"


def is_feasible(constraints: Mapping[str, float] | None) -> bool:
    """Whether a trial meets its constraints: every value ``<= 0`` (Optuna's rule; none = feasible)."""
    return all(c <= 0 for c in (constraints or {}).values())


def _directions(objectives: Sequence[str]) -> list[str]:
    return [names.OBJECTIVE_DIRECTIONS[o] for o in objectives]


#: study user attr: the A/A latency noise measured when the study started (absent: latencies compare exactly)
LATENCY_NOISE_ATTR = names.LATENCY_NOISE


def latency_noise(study: Any, attrs: Mapping[str, Any] | None = None) -> float:
    """The study's latency noise floor (relative; 0 for a study that did not measure one). ``attrs``: the study's
    user attributes when the caller has read them already (each read of ``study.user_attrs`` is a storage read)."""
    return float((study.user_attrs if attrs is None else attrs).get(LATENCY_NOISE_ATTR) or 0.0)


#: study user attr: the fp32 reference's fold artifacts, [{path, runtime, latency_ms}, ...] by fold
REFERENCE_ARTIFACTS_ATTR = "reference_artifacts"


def reference_artifacts(study: Any, attrs: Mapping[str, Any] | None = None) -> list[Any] | None:
    """The study's reference artifacts (:class:`trainers.pipeline.ReferenceArtifact`, one per fold) that a
    trial's folds are timed against; None when the study has none (older studies) or a file is gone, so
    trials fall back to unpaired latency. ``attrs``: the study's user attributes when already read."""
    from pathlib import Path

    refs = (study.user_attrs if attrs is None else attrs).get(REFERENCE_ARTIFACTS_ATTR)
    if not refs or not all(Path(r["path"]).is_file() for r in refs):
        return None
    from trainers.pipeline import ReferenceArtifact  # torch-heavy: only where a trial runs

    return [ReferenceArtifact(**r) for r in refs]


def pareto_mask(values: Any, objectives: Sequence[str], noise: float = 0.0) -> np.ndarray:
    """The study's Pareto rule, one place for the table, tags, pareto.csv, plots, the ledger and reproduce:
    non-dominated over ``values`` (n, m) with the timed objectives (:data:`search.names.TIMED_OBJECTIVES`)
    tied within the relative ``noise`` and the others exact (:func:`search.pareto.tied_non_dominated_mask`)."""
    tolerances = [noise if o in names.TIMED_OBJECTIVES else 0.0 for o in objectives]
    return tied_non_dominated_mask(values, _directions(objectives), tolerances)


class _Change(NamedTuple):
    """What the ledger needs of one trial."""

    number: int
    state: Any                        # optuna.trial.TrialState
    values: list[float] | None
    feasible: bool
    retry_history: tuple[int, ...]


def _changes_rdb(storage: Any, study_id: int, seen: int, open_numbers: set[int]) -> list[_Change]:
    """The ledger's delta read on an RDB storage: three column queries on Optuna's tables (trials, values
    and the few system attributes it needs) in one transaction, ~1 ms each, instead of building whole
    trials through the ORM (~15 ms per read on this machine, whatever the study size).

    Like Optuna's own trial cache, it relies on a trial becoming visible no later than the trials
    numbered after it: Optuna numbers a trial by counting the trials committed before it, and workers
    ask under the budget lock."""
    import sqlalchemy as sa
    from optuna.storages._rdb import models
    from optuna.study._constrained_optimization import _get_constraints_from_system_attrs
    from optuna.trial import TrialState

    T, V, S = models.TrialModel, models.TrialValueModel, models.TrialSystemAttributeModel
    picked = sa.and_(T.study_id == study_id,
                     sa.or_(T.number > seen, T.number.in_(sorted(open_numbers))) if open_numbers else T.number > seen)
    with storage.engine.connect() as conn, conn.begin():
        rows = conn.execute(sa.select(T.trial_id, T.number, T.state).where(picked).order_by(T.number)).all()
        value_rows = conn.execute(sa.select(V.trial_id, V.objective, V.value, V.value_type).join(
            T, T.trial_id == V.trial_id).where(picked, T.state == TrialState.COMPLETE)).all() if rows else []
        attr_rows = conn.execute(sa.select(S.trial_id, S.key, S.value_json).join(T, T.trial_id == S.trial_id).where(
            picked, sa.or_(S.key == RETRY_HISTORY_ATTR, S.key == "constraints", S.key.like("constraints:%")))
        ).all() if rows else []
    values: dict[int, dict[int, float]] = {}
    for trial_id, objective, value, value_type in value_rows:
        values.setdefault(trial_id, {})[objective] = V.stored_repr_to_value(value, value_type)
    attrs: dict[int, dict[str, Any]] = {}
    for trial_id, key, value_json in attr_rows:
        attrs.setdefault(trial_id, {})[key] = json.loads(value_json)
    out = []
    for trial_id, number, state in rows:
        v = values.get(trial_id)
        a = attrs.get(trial_id, {})
        out.append(_Change(number, state, [v[k] for k in sorted(v)] if v else None,
                           is_feasible(_get_constraints_from_system_attrs(a)),
                           tuple(a.get(RETRY_HISTORY_ATTR, ()))))
    return out


#: with latency ties, past this many completed points the progress bar's Pareto size is refreshed at most
#: every TIED_REFRESH_SECONDS (the front itself, :attr:`StudyLedger.front`, is always current)
TIED_REFRESH_POINTS = 2000
TIED_REFRESH_SECONDS = 30.0


class StudyLedger:
    """Counts and the Pareto front of a study, updated from the trials that changed since the last look.

    Create one per worker process and call :meth:`update` whenever fresh numbers are needed (before
    the budget check, inside the budget lock, so the check stays exact under concurrency). Every
    other method answers from memory.

    Args:
        study: the :class:`optuna.study.Study` to follow (any storage).
        objectives: the objective names in the study's value order (keys of
            :data:`search.names.OBJECTIVE_DIRECTIONS`), for the front.

    Example:
        >>> ledger = StudyLedger(study, ["accuracy", "size_bytes", "latency_ms"]).update()
        >>> ledger.budget_used >= study.user_attrs.get("n_trials", 0) and not ledger.waiting
    """

    def __init__(self, study: Any, objectives: Sequence[str]) -> None:
        self.study = study
        self.objectives = list(objectives)
        self._noise = latency_noise(study)   # > 0: ties make the front non-transitive; kept from every point
        self._seen = -1                       # highest trial number read so far
        self._open: set[int] = set()          # numbers running or waiting at the last read
        self._running = 0
        self._waiting = 0
        self._complete = 0
        self._pruned = 0
        self._failed: set[int] = set()        # every FAIL trial, retried or not
        self._retried: set[int] = set()       # numbers named in some trial's retry_history
        self._failed_retried = 0              # |failed & retried|, kept incrementally
        self._front_numbers = np.empty(0, dtype=int)
        self._front_values = np.empty((0, len(self.objectives)))
        self._numbers = np.empty(0, dtype=int)            # every feasible COMPLETE trial (ties: see _merge_front)
        self._values = np.empty((0, len(self.objectives)))

    # --- reading ---------------------------------------------------------------------------------
    def update(self) -> StudyLedger:
        """Read the trials not yet seen finished and fold them in; returns ``self`` for chaining."""
        from optuna.trial import TrialState

        changed = self._read_changes()
        self._open.clear()
        self._running = self._waiting = 0
        new_front: list[tuple[int, list[float]]] = []
        for t in changed:
            self._seen = max(self._seen, t.number)
            for number in t.retry_history:
                self._mark_retried(int(number))
            if t.state == TrialState.RUNNING:
                self._open.add(t.number)
                self._running += 1
            elif t.state == TrialState.WAITING:
                self._open.add(t.number)
                self._waiting += 1
            elif t.state == TrialState.COMPLETE:
                self._complete += 1
                if t.values is not None and t.feasible:
                    new_front.append((t.number, list(t.values)))
            elif t.state == TrialState.PRUNED:
                self._pruned += 1
            elif t.state == TrialState.FAIL:
                self._failed.add(t.number)
                self._failed_retried += t.number in self._retried
        if new_front:
            self._merge_front(new_front)
        return self

    def _read_changes(self) -> list[_Change]:
        """The trials numbered after the last seen, and those running or waiting at the last read."""
        from optuna.storages import RDBStorage

        backend = getattr(self.study._storage, "_backend", self.study._storage)
        if isinstance(backend, RDBStorage):
            return _changes_rdb(backend, self.study._study_id, self._seen, self._open)
        trials = self.study.get_trials(deepcopy=False)           # sorted by number
        if not trials or trials[-1].number == len(trials) - 1:   # numbers are 0..n-1: index = number
            picked = [trials[n] for n in sorted(self._open)] + list(trials[self._seen + 1:])
        else:                                                     # never seen with Optuna; kept correct
            picked = [t for t in trials if t.number > self._seen or t.number in self._open]
        return [_Change(t.number, t.state, t.values, is_feasible(t.constraints),
                        tuple(t.system_attrs.get(RETRY_HISTORY_ATTR, ()))) for t in picked]

    def _mark_retried(self, number: int) -> None:
        if number not in self._retried:
            self._retried.add(number)
            self._failed_retried += number in self._failed

    def _merge_front(self, new: list[tuple[int, list[float]]]) -> None:
        """Exact front: front of (old front + new points), since a point the old front dropped stays dominated
        (transitivity). With latency ties the relation is not transitive (a tie can bring a dropped point
        back), so the front is recomputed over every feasible completed point (vectorized: milliseconds at
        10,000 trials)."""
        new_numbers = np.array([n for n, _ in new], dtype=int)
        new_values = np.array([v for _, v in new], dtype=float).reshape(len(new), len(self.objectives))
        if self._noise > 0:
            self._numbers = np.concatenate([self._numbers, new_numbers])
            self._values = np.vstack([self._values, new_values])
            self._tied_stale = True                  # recomputed when asked (see :meth:`_tied_front`)
            return
        else:
            numbers = np.concatenate([self._front_numbers, new_numbers])
            values = np.vstack([self._front_values, new_values])
        keep = pareto_mask(values, self.objectives, self._noise)
        self._front_numbers, self._front_values = numbers[keep], values[keep]

    # --- answers ---------------------------------------------------------------------------------
    @property
    def complete(self) -> int:
        return self._complete

    @property
    def failed(self) -> int:
        """FAIL trials that were not retried (a retried one is replaced by its retry)."""
        return len(self._failed) - self._failed_retried

    @property
    def failed_all(self) -> int:
        """Every FAIL trial, retried or not (a stale trial is failed and re-queued in one call)."""
        return len(self._failed)

    @property
    def pruned(self) -> int:
        return self._pruned

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return self._waiting

    @property
    def finished(self) -> tuple[int, int]:
        """(complete or stopped early, failed and not retried): the pair
        :func:`search.worker.count_finished` returns (PRUNED = stopped early by squeeze's early stopping)."""
        return self._complete + self._pruned, self.failed

    @property
    def budget_used(self) -> int:
        """Trials that count against ``study.n_trials``: complete, pruned, running, waiting and failed
        but not retried."""
        return self._complete + self._pruned + self._running + self._waiting + self.failed

    def _tied_front(self, force: bool) -> None:
        """With latency ties the front is recomputed over every completed point (0.3 s at 10,000 points).
        :attr:`front` always recomputes a stale front; :attr:`pareto_size` (the progress bar, asked after
        every trial) past :data:`TIED_REFRESH_POINTS` points refreshes at most every
        :data:`TIED_REFRESH_SECONDS`, so the bookkeeping per trial stays flat."""
        if not getattr(self, "_tied_stale", False):
            return
        now = time.monotonic()
        if not force and len(self._numbers) > TIED_REFRESH_POINTS and \
                now - getattr(self, "_tied_at", -math.inf) < TIED_REFRESH_SECONDS:
            return
        keep = pareto_mask(self._values, self.objectives, self._noise)
        self._front_numbers, self._front_values = self._numbers[keep], self._values[keep]
        self._tied_stale, self._tied_at = False, now

    @property
    def front(self) -> list[int]:
        """Trial numbers of the current Pareto front (feasible COMPLETE, non-dominated), ascending."""
        self._tied_front(force=True)
        return sorted(int(n) for n in self._front_numbers)

    @property
    def pareto_size(self) -> int:
        """Size of the front (with latency ties and many trials: as of at most TIED_REFRESH_SECONDS ago)."""
        self._tied_front(force=False)
        return len(self._front_numbers)


# --- a cold read of the completed trials ------------------------------------------------------------


@dataclass
class CompletedTrials:
    """The COMPLETE trials of a study, objective values only.

    Attributes:
        n_trials: trials in the study, every state.
        numbers: (k,) trial numbers, ascending.
        trial_ids: (k,) storage trial ids, to fetch a whole trial with ``storage.get_trial``.
        values: (k, m) objective values (m = the study's objectives).
        feasible: (k,) whether each trial meets its constraints (:func:`is_feasible`).
    """

    n_trials: int
    numbers: np.ndarray
    trial_ids: np.ndarray
    values: np.ndarray
    feasible: np.ndarray


def read_completed(study: Any) -> CompletedTrials:
    """The objective values of ``study``'s COMPLETE trials, without building every trial.

    On an RDB storage (SQLite, PostgreSQL, MySQL) this is three column queries on Optuna's tables, a few
    tens of milliseconds at 10,000 trials where building the trials takes seconds; other storages (the
    journal file, in memory) already hold the trials in memory after opening and are read through
    ``study.get_trials``.
    """
    from optuna.storages import RDBStorage

    storage = study._storage
    backend = getattr(storage, "_backend", storage)
    if isinstance(backend, RDBStorage):
        return _read_completed_rdb(backend, study._study_id, len(study.directions))
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.values is not None]
    return CompletedTrials(
        n_trials=storage.get_n_trials(study._study_id),
        numbers=np.array([t.number for t in done], dtype=int),
        trial_ids=np.array([t._trial_id for t in done], dtype=int),
        values=np.array([t.values for t in done], dtype=float).reshape(len(done), len(study.directions)),
        feasible=np.array([is_feasible(t.constraints) for t in done], dtype=bool))


def _read_completed_rdb(storage: Any, study_id: int, n_objectives: int) -> CompletedTrials:
    """:func:`read_completed` on Optuna's RDB tables (``trials``, ``trial_values``,
    ``trial_system_attributes``); constraints are decoded by Optuna's own reader."""
    import sqlalchemy as sa
    from optuna.storages._rdb import models
    from optuna.study._constrained_optimization import _get_constraints_from_system_attrs
    from optuna.trial import TrialState

    T, V, S = models.TrialModel, models.TrialValueModel, models.TrialSystemAttributeModel
    done = sa.and_(T.study_id == study_id, T.state == TrialState.COMPLETE)
    with storage.engine.connect() as conn:
        n_trials = conn.execute(sa.select(sa.func.count()).where(T.study_id == study_id)).scalar_one()
        rows = conn.execute(sa.select(T.trial_id, T.number).where(done).order_by(T.number)).all()
        value_rows = conn.execute(sa.select(V.trial_id, V.objective, V.value, V.value_type)
                                  .join(T, T.trial_id == V.trial_id).where(done)).all()
        constraint_rows = conn.execute(
            sa.select(S.trial_id, S.key, S.value_json).join(T, T.trial_id == S.trial_id)
            .where(done, sa.or_(S.key == "constraints", S.key.like("constraints:%")))).all()
    index = {trial_id: i for i, (trial_id, _) in enumerate(rows)}
    values = np.full((len(rows), n_objectives), np.nan)
    counted = np.zeros(len(rows), dtype=int)
    for trial_id, objective, value, value_type in value_rows:
        i = index[trial_id]
        values[i, objective] = V.stored_repr_to_value(value, value_type)
        counted[i] += 1
    attrs: dict[int, dict[str, Any]] = {}
    for trial_id, key, value_json in constraint_rows:
        attrs.setdefault(trial_id, {})[key] = json.loads(value_json)
    keep = counted == n_objectives            # a COMPLETE trial always has its values; be safe anyway
    feasible = np.array([is_feasible(_get_constraints_from_system_attrs(attrs.get(t, {}))) for t, _ in rows],
                        dtype=bool)
    return CompletedTrials(
        n_trials=int(n_trials),
        numbers=np.array([n for _, n in rows], dtype=int)[keep],
        trial_ids=np.array([t for t, _ in rows], dtype=int)[keep],
        values=values[keep], feasible=feasible[keep] if len(rows) else feasible)
