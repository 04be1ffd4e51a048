"""``python -m search.doctor study.name=... [fix=true]``: check that Optuna and MLflow tell the same story.

A study is healthy when every Optuna trial has exactly one MLflow trial run (tag ``trial_number``), every
finished trial's run is finished with the same state, no run is left RUNNING for a finished trial, and
the study has one parent run. Workers killed at the wrong moment can break this; the sweep repairs the
common case (:func:`close_orphan_runs`) as it goes, and this command reports — and with ``fix=true``
repairs — the rest.
"""

from __future__ import annotations

import sys
from typing import Any

from search import names

__all__ = ["close_orphan_runs", "diagnose", "requeue", "main"]

_RUN_STATUS = {"COMPLETE": "FINISHED", "FAIL": "KILLED", "PRUNED": "KILLED"}


def requeue(study, trial) -> None:
    """Fail a RUNNING trial whose worker is gone and queue a retry with the same parameters."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState

    try:
        study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
    except UpdateFinishedTrialError:
        return  # someone else finished it
    from search.storage import MAX_RETRY

    RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)(study, study._storage.get_trial(trial._trial_id))


def _trial_runs(study, tracker) -> list[Any]:
    return tracker.find_runs(**{names.ROLE: "trial", names.STUDY_NAME: study.study_name})


def _running_trial_runs(study, tracker) -> list[Any]:
    """The study's trial runs still RUNNING in MLflow: one filtered search, not every run of the study."""
    flt = (f"attributes.status = 'RUNNING' and tags.{names.ROLE} = 'trial' "
           f"and tags.{names.STUDY_NAME} = '{study.study_name}'")
    return list(tracker.client.search_runs([tracker.experiment_id], filter_string=flt, max_results=50000))


def _finished_trials(study, numbers: set[int]) -> dict[int, Any]:
    """The finished trials among ``numbers``: one storage read each for a few, one read of the study for
    many (a worker start after a crash of many workers)."""
    if len(numbers) > 50:
        return {t.number: t for t in study.get_trials(deepcopy=False) if t.number in numbers and t.state.is_finished()}
    storage, out = study._storage, {}
    for number in numbers:
        try:
            trial = storage.get_trial(storage.get_trial_id_from_study_id_trial_number(study._study_id, number))
        except KeyError:
            continue
        if trial.state.is_finished():
            out[number] = trial
    return out


def close_orphan_runs(study, tracker, runs: list[Any] | None = None) -> int:
    """Close MLflow trial runs left RUNNING although their Optuna trial finished; returns how many.

    Reads only the RUNNING trial runs of the study and the trials they name (milliseconds at any study
    size; it runs at every worker start). ``runs``, when given, are the candidate runs instead.
    """
    runs = [r for r in (runs if runs is not None else _running_trial_runs(study, tracker))
            if r.info.status == "RUNNING"]
    finished = _finished_trials(study, {int(r.data.tags.get(names.TRIAL_NUMBER, -1)) for r in runs})
    closed = 0
    for run in runs:
        trial = finished.get(int(run.data.tags.get(names.TRIAL_NUMBER, -1)))
        if trial is None:
            continue
        state = trial.state.name
        tags = {names.STATE: state}
        if state == "FAIL" and names.ERROR not in run.data.tags:
            tags[names.ERROR] = trial.user_attrs.get("error") or "worker died during the trial (heartbeat stale)"
        tracker.set_tags(run.info.run_id, tags)
        tracker.end_run(run.info.run_id, _RUN_STATUS.get(state, "FAILED"))
        closed += 1
    return closed


def diagnose(study, tracker) -> list[str]:
    """Problems found, one line each (empty = healthy)."""
    problems = []
    runs = _trial_runs(study, tracker)
    by_number: dict[int, list[Any]] = {}
    for run in runs:
        by_number.setdefault(int(run.data.tags.get(names.TRIAL_NUMBER, -1)), []).append(run)
    for t in study.get_trials(deepcopy=False):
        found = by_number.get(t.number, [])
        if t.state.name == "WAITING":
            continue
        if not found:
            problems.append(f"trial {t.number} ({t.state.name}) has no MLflow run")
        elif len(found) > 1:
            problems.append(f"trial {t.number} has {len(found)} MLflow runs")
        for run in found:
            if t.state.is_finished() and run.info.status == "RUNNING":
                problems.append(f"trial {t.number} is {t.state.name} but its run {run.info.run_id} is RUNNING")
    numbers = {t.number for t in study.get_trials(deepcopy=False)}
    for number, found in by_number.items():
        if number not in numbers:
            problems.append(f"run {found[0].info.run_id} names trial {number}, which the study does not have")
    parents = tracker.find_runs(**{names.ROLE: "study", names.STUDY_NAME: study.study_name})
    if len(parents) != 1:
        problems.append(f"{len(parents)} parent runs (role=study) for this study, expected 1")
    return problems


def _fix(study, tracker) -> None:
    close_orphan_runs(study, tracker)
    runs = _trial_runs(study, tracker)
    have = {int(r.data.tags.get(names.TRIAL_NUMBER, -1)) for r in runs}
    parent = study.user_attrs.get("mlflow_parent_run_id")
    for t in study.get_trials(deepcopy=False):
        if t.state.is_finished() and t.number not in have:
            run_id = tracker.create_run(f"trial-{t.number}", {
                names.ROLE: "trial", names.TRIAL_NUMBER: t.number, names.STUDY_NAME: study.study_name,
                names.STATE: t.state.name, names.PARETO: "false",
                names.ERROR: "no run was recorded (worker died before logging)"},
                parent_run_id=parent)
            tracker.end_run(run_id, _RUN_STATUS.get(t.state.name, "FAILED"))


USAGE = ("usage: python -m search.doctor study.name=<name> [study.storage=...] [mlflow.tracking_uri=...] "
         "[fix=true]\n\nReports mismatches between the study's Optuna trials and its MLflow runs "
         "(orphan RUNNING runs,\nmissing or duplicate runs, duplicate parent runs); fix=true repairs "
         "what can be repaired.\nExit code 0 when healthy (or repaired), 1 when problems remain.")


def main(argv: list[str] | None = None) -> int:
    from search.cli import run_command

    return run_command("doctor", USAGE, _doctor, argv)


def _doctor(argv: list[str]) -> int:
    import optuna

    from search.config import compose, parse_key_values, split_args
    from search.storage import open_storage
    from search.tracking import Tracker
    from trainers.errors import InputError

    fixes = [a for a in argv if a.startswith("fix=")]
    fix = bool(parse_key_values(fixes[-1:], ("fix",), {"fix": bool}).get("fix", False))  # fix=True is true
    cfg = compose(split_args([a for a in argv if not a.startswith("fix=")]))
    storage = open_storage(cfg.study.storage, cfg.study.heartbeat_seconds, cfg.study.grace_seconds, must_exist=True)
    try:
        study = optuna.load_study(study_name=cfg.study.name, storage=storage)
    except KeyError:
        raise InputError("study.name", f"no study {cfg.study.name!r} in this storage") from None
    tracker = Tracker(cfg.mlflow.tracking_uri, cfg.mlflow.experiment, cfg.mlflow.artifact_location)
    if fix:
        _fix(study, tracker)
    problems = diagnose(study, tracker)
    for line in problems:
        print(line)
    print(f"study {study.study_name!r}: {len(study.trials)} trials, "
          f"{'healthy' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
