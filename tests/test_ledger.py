"""Tests of search.ledger: the incremental counts and front agree with the full reads they replace.

Real SQLite / journal studies in tmp dirs; the oracles are the full-read functions of search.worker and
search.report.collect, on the same study after every wave of changes.
"""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState, create_trial

from search import worker
from search.ledger import StudyLedger, is_feasible, read_completed
from search.report import collect
from search.storage import open_storage

OBJECTIVES = ["accuracy", "size_bytes", "latency_ms"]
DIRECTIONS = ["maximize", "minimize", "minimize"]

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _open(url: str, name: str = "s") -> optuna.Study:
    return optuna.create_study(study_name=name, storage=open_storage(url), directions=DIRECTIONS,
                               load_if_exists=True, sampler=optuna.samplers.RandomSampler(seed=0))


def _values(rng: np.random.Generator) -> list[float]:
    """(accuracy, size, latency) on a coarse grid, more accuracy costing more size: a front of several
    points, with ties and exact duplicates."""
    accuracy = int(rng.integers(0, 9))
    return [accuracy / 8, float(accuracy + rng.integers(0, 3)), float(rng.integers(1, 4))]


def _finished(rng: np.random.Generator, n: int) -> list[optuna.trial.FrozenTrial]:
    """Finished trials of every kind; integer-grid values make ties and exact duplicates common."""
    out = []
    for _ in range(n):
        kind = rng.choice(["complete"] * 6 + ["infeasible", "fail", "pruned"])
        values = _values(rng)
        if kind == "complete":
            out.append(create_trial(values=values, user_attrs={"mlflow_run_id": "r"},
                                    constraints={"min_accuracy": -0.1} if rng.random() < 0.5 else None))
        elif kind == "infeasible":
            out.append(create_trial(values=values, constraints={"min_accuracy": 0.2, "max_size_bytes": -1.0}))
        elif kind == "fail":
            out.append(create_trial(state=TrialState.FAIL))
        else:
            out.append(create_trial(state=TrialState.PRUNED))
    return out


def _expected(study: optuna.Study) -> dict:
    """What the ledger must say, from the full reads it replaces."""
    pruned = len(study.get_trials(deepcopy=False, states=(TrialState.PRUNED,)))
    return {
        "budget_used": worker.budget_used(study),
        "finished": worker.count_finished(study),
        "failed_all": worker._n_failed(study),
        "waiting": worker._has_waiting(study),
        "running": len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))),
        "pruned": pruned,
        "front": sorted(r.number for r in collect(study, OBJECTIVES) if r.pareto),
    }


def _actual(ledger: StudyLedger) -> dict:
    return {"budget_used": ledger.budget_used, "finished": ledger.finished, "failed_all": ledger.failed_all,
            "waiting": bool(ledger.waiting), "running": ledger.running, "pruned": ledger.pruned,
            "front": ledger.front}


def test_ledger_matches_full_reads_through_concurrent_waves(tmp_path):
    url = f"sqlite:///{tmp_path}/optuna.db"
    study = _open(url)                        # this worker
    other = _open(url)                        # another worker on the same storage, its own cache
    ledger = StudyLedger(study, OBJECTIVES).update()
    assert _actual(ledger) == _expected(study)
    rng = np.random.default_rng(0)
    running: list[optuna.Trial] = []
    for wave in range(6):
        other.add_trials(_finished(rng, 50))                       # others' finished trials
        for trial in running[: len(running) // 2 + 1]:            # ours finish
            if rng.random() < 0.3:
                study.tell(trial, state=TrialState.FAIL)
                # a stale trial is failed and re-queued with its retry history, as the worker does
                RetryHeartbeatStaleTrialCallback(max_retry=2)(study, study._storage.get_trial(trial._trial_id))
            else:
                study.tell(trial, _values(rng))
            running.remove(trial)
        running += [study.ask() for _ in range(3)]                # picks up WAITING retries first
        if wave % 2:
            study.enqueue_trial({})
        ledger.update()
        assert _actual(ledger) == _expected(study), f"wave {wave}"
        assert _actual(ledger.update()) == _expected(study), f"second update, wave {wave}"
    assert ledger.failed < ledger.failed_all                      # some failures were retried
    assert ledger.pareto_size == len(ledger.front) > 1
    fresh = StudyLedger(_open(url), OBJECTIVES).update()          # one read of everything: same answer
    assert _actual(fresh) == _actual(ledger)


def test_ledger_counts_pruned_trials_as_used_budget(tmp_path):
    study = _open(f"sqlite:///{tmp_path}/optuna.db")
    study.add_trials([create_trial(state=TrialState.PRUNED)] * 3 + [create_trial(values=[0.5, 1.0, 1.0])])
    ledger = StudyLedger(study, OBJECTIVES).update()
    assert (ledger.budget_used, ledger.pruned, ledger.complete, ledger.finished) == (4, 3, 1, (4, 0))
    assert ledger.front == [3]


def test_ledger_front_keeps_duplicates_and_drops_newly_dominated(tmp_path):
    study = _open(f"sqlite:///{tmp_path}/optuna.db")
    study.add_trials([create_trial(values=[0.8, 2.0, 2.0]), create_trial(values=[0.8, 2.0, 2.0]),
                      create_trial(values=[0.5, 1.0, 3.0])])
    ledger = StudyLedger(study, OBJECTIVES).update()
    assert ledger.front == [0, 1, 2]
    study.add_trials([create_trial(values=[0.9, 2.0, 2.0])])     # dominates the two duplicates
    assert ledger.update().front == [2, 3]
    study.add_trials([create_trial(values=[1.0, 0.5, 0.5], constraints={"max_latency_ms": 0.1})])
    assert ledger.update().front == [2, 3]                        # infeasible: never on the front


def test_ledger_on_journal_storage(tmp_path):
    study = _open(f"journal:{tmp_path}/study.journal")
    rng = np.random.default_rng(1)
    ledger = StudyLedger(study, OBJECTIVES)
    for _ in range(3):
        study.add_trials(_finished(rng, 30))
        assert _actual(ledger.update()) == _expected(study)


def test_is_feasible():
    assert is_feasible(None) and is_feasible({}) and is_feasible({"a": 0.0, "b": -1.0})
    assert not is_feasible({"a": 0.0, "b": 1e-9})


@pytest.mark.parametrize("scheme", ["sqlite", "journal"])
def test_read_completed_matches_get_trials(tmp_path, scheme):
    url = f"sqlite:///{tmp_path}/o.db" if scheme == "sqlite" else f"journal:{tmp_path}/o.journal"
    study = _open(url)
    rng = np.random.default_rng(2)
    study.add_trials(_finished(rng, 80) + [create_trial(values=[0.5, math.inf, 1.0]),
                                           create_trial(values=[-math.inf, 1.0, 1.0])])
    study.ask()
    got = read_completed(_open(url))                              # cold: a fresh storage object
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    assert got.n_trials == len(study.get_trials(deepcopy=False))
    assert got.numbers.tolist() == [t.number for t in done]
    assert got.trial_ids.tolist() == [t._trial_id for t in done]
    np.testing.assert_array_equal(got.values, np.array([t.values for t in done]))
    assert got.feasible.tolist() == [is_feasible(t.constraints) for t in done]
    assert 0 < got.feasible.sum() < len(done)


def test_read_completed_of_empty_study(tmp_path):
    got = read_completed(_open(f"sqlite:///{tmp_path}/o.db"))
    assert got.n_trials == 0 and got.values.shape == (0, 3) and got.numbers.shape == (0,)


def test_with_latency_ties_the_bar_refreshes_lazily_and_the_front_is_always_current(tmp_path, monkeypatch):
    import search.ledger as ledger_module

    study = _open(f"sqlite:///{tmp_path}/optuna.db")
    study.set_user_attr(ledger_module.LATENCY_NOISE_ATTR, 0.05)
    study.add_trials([create_trial(values=[0.8, 2.0, 2.0])])
    monkeypatch.setattr(ledger_module, "TIED_REFRESH_POINTS", 0)      # "many trials" from the first one
    ledger = StudyLedger(study, OBJECTIVES).update()
    assert ledger.pareto_size == 1                                     # first computation
    study.add_trials([create_trial(values=[0.5, 1.0, 3.0])])
    assert ledger.update().pareto_size == 1                            # within TIED_REFRESH_SECONDS: as before
    assert ledger.front == [0, 1]                                      # the front itself is recomputed
    assert ledger.pareto_size == 2


def test_study_attrs_read_once_answer_as_the_study(tmp_path):
    from search.ledger import latency_noise, reference_artifacts

    study = _open(f"sqlite:///{tmp_path}/o.db")
    assert latency_noise(study) == 0.0 and reference_artifacts(study) is None     # an older study: neither
    ref = tmp_path / "fold0.sqz"
    ref.write_bytes(b"x")
    study.set_user_attr("latency_noise", 0.04)
    study.set_user_attr("reference_artifacts", [{"path": str(ref), "runtime": "torchscript", "latency_ms": 0.02}])
    attrs = study.user_attrs
    assert latency_noise(study, attrs) == latency_noise(study) == 0.04
    assert reference_artifacts(study, attrs) == reference_artifacts(study)
    assert [r.runtime for r in reference_artifacts(study, attrs)] == ["torchscript"]
    ref.unlink()                                      # a reference file is gone: unpaired latency, as before
    assert reference_artifacts(study, attrs) is None
