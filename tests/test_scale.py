"""The large-study paths give today's answers: the cold listing, the bulk tagging, closing orphan runs,
and the benchmark's synthetic study reads back like one written through the APIs.

Real SQLite Optuna and MLflow stores in tmp dirs, a few hundred trials from benchmarks/scale.py.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import optuna
import pytest

from search import names, report
from search.doctor import close_orphan_runs
from search.storage import open_storage
from search.tracking import Tracker

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import scale  # noqa: E402  (benchmarks/scale.py)

warnings.filterwarnings("ignore", message="Heartbeat of storage")
OBJECTIVES = scale.OBJECTIVES


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("scale")
    urls = scale.synthesize(workdir, 300, seed=0)
    return urls


def _study(urls):
    return optuna.load_study(study_name=scale.STUDY, storage=open_storage(urls["storage"]))


def _tags(tracker, rows):
    """run id -> its pareto tag (None when absent), one search for all runs."""
    tags = {run.info.run_id: run.data.tags.get(names.PARETO) for run in tracker.find_runs(**{names.ROLE: "trial"})}
    return {r.run_id: tags[r.run_id] for r in rows if r.run_id}


def test_synthetic_study_reads_like_api_written_trials(synthetic):
    study = _study(synthetic)
    trials = study.get_trials(deepcopy=False)
    assert len(trials) == 300 and all(t.state.name == "COMPLETE" for t in trials)
    assert [t.number for t in trials] == list(range(300))
    t = trials[7]
    params, cfg = scale._space()
    by_key = {p.key: p for p in params}
    assert set(t.params) <= set(by_key) and "compress.quant.scheme" in t.params
    for key, value in t.params.items():
        assert by_key[key].distribution._contains(by_key[key].distribution.to_internal_repr(value))
    assert set(t.user_attrs) == {"mlflow_run_id", "worker", "metrics", "fold_accuracy"}
    assert t.values == [t.user_attrs["metrics"][o] for o in OBJECTIVES]
    run = Tracker(synthetic["tracking_uri"], "scale").run(t.user_attrs["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags[names.TRIAL_NUMBER] == "7"
    assert run.data.tags["mlflow.parentRunId"] == synthetic["parent_run_id"]
    assert run.data.metrics[names.ACCURACY] == t.values[0]
    assert set(run.data.params) == set(t.params)


def test_collect_front_equals_collect(synthetic):
    study = _study(synthetic)
    rows = report.collect(study, OBJECTIVES)
    view = report.collect_front(_study(synthetic), OBJECTIVES)      # a cold study object
    assert view.n_trials == len(rows)
    assert [(r.number, r.run_id, r.values, r.metrics, r.params) for r in view.front] == \
        [(r.number, r.run_id, r.values, r.metrics, r.params) for r in rows if r.pareto]
    ref = study.user_attrs["reference"]
    assert report.hypervolume_of_values(view.values, OBJECTIVES, ref) == report.hypervolume_of(rows, OBJECTIVES, ref)
    assert report.pareto_table(view.front) == report.pareto_table(rows)


def test_collect_front_skips_infeasible_and_unfinished_trials(tmp_path):
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path}/o.db"),
                                directions=["maximize", "minimize", "minimize"])
    study.add_trials([optuna.trial.create_trial(values=[0.9, 1.0, 1.0], constraints={"min_accuracy": 0.1}),
                      optuna.trial.create_trial(values=[0.5, 2.0, 2.0]),
                      optuna.trial.create_trial(values=[0.4, 3.0, 3.0]),
                      optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL)])
    study.ask()
    view = report.collect_front(study, OBJECTIVES)
    rows = report.collect(study, OBJECTIVES)
    assert view.n_trials == 5 and [r.number for r in view.front] == [r.number for r in rows if r.pareto] == [1]
    assert view.values.shape == (2, 3)


def test_tag_runs_writes_only_changes_and_matches_the_front(synthetic):
    study = _study(synthetic)
    tracker = Tracker(synthetic["tracking_uri"], "scale")
    rows = report.collect(study, OBJECTIVES)
    front = [r for r in rows if r.pareto]
    assert report.tag_runs(tracker, rows) == len(front)   # the runs were created with pareto=false
    expected = {r.run_id: "true" if r.pareto else "false" for r in rows}
    assert _tags(tracker, rows) == expected
    assert report.tag_runs(tracker, rows) == 0           # nothing changed: nothing written
    # a new trial dominates the whole front: those runs flip to false, the new one to true
    moved = [report.TrialRow(r.number, r.state, r.run_id, dict(r.values), pareto=r.pareto) for r in rows]
    newcomer = next(r for r in moved if not r.pareto)
    for r in moved:
        r.pareto = r is newcomer
    assert report.tag_runs(tracker, moved) == len(front) + 1
    assert _tags(tracker, moved) == {r.run_id: "true" if r is newcomer else "false" for r in moved}
    report.tag_runs(tracker, rows)                       # back to the synthetic study's own front
    assert _tags(tracker, rows) == expected


def test_tag_runs_tags_every_run_of_a_study_whose_runs_have_no_tag(tmp_path):
    # runs created before workers tagged pareto=false: every run gets its tag once, as before
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", "e")
    rows = [report.TrialRow(i, "COMPLETE", tracker.create_run(f"trial-{i}", {names.ROLE: "trial"}), pareto=i in (2, 5))
            for i in range(8)]
    assert report.tag_runs(tracker, rows) == 8
    assert _tags(tracker, rows) == {r.run_id: "true" if r.pareto else "false" for r in rows}
    assert report.tag_runs(tracker, rows) == 0


def test_tag_runs_matches_previous_tags_on_runs_created_with_pareto_false(tmp_path):
    # what a worker that tags pareto=false at run creation leaves: every run's tag equals the former
    # "tag every run true|false" result
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", "e")
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        run_id = tracker.create_run(f"trial-{i}", {names.ROLE: "trial", names.PARETO: "false"})
        rows.append(report.TrialRow(i, "COMPLETE", run_id, pareto=bool(rng.random() < 0.4)))
    report.tag_runs(tracker, rows)
    assert _tags(tracker, rows) == {r.run_id: "true" if r.pareto else "false" for r in rows}


def test_close_orphan_runs_closes_only_finished_trials(tmp_path):
    study = optuna.create_study(study_name="o", storage=open_storage(f"sqlite:///{tmp_path}/o.db"),
                                directions=["maximize", "minimize", "minimize"])
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", "e")
    run_ids = {}
    for _ in range(4):
        trial = study.ask()
        run_ids[trial.number] = tracker.create_run(f"trial-{trial.number}", {
            names.ROLE: "trial", names.TRIAL_NUMBER: trial.number, names.STUDY_NAME: "o", names.STATE: "RUNNING"})
    study.tell(0, [0.5, 1.0, 1.0])
    study.tell(1, state=optuna.trial.TrialState.FAIL)
    study.tell(2, state=optuna.trial.TrialState.PRUNED)
    tracker.end_run(run_ids[2], "KILLED")                                      # already closed
    other = tracker.create_run("x", {names.ROLE: "trial", names.TRIAL_NUMBER: 0, names.STUDY_NAME: "other"})
    assert close_orphan_runs(study, tracker) == 2
    status = {n: tracker.run(r).info.status for n, r in run_ids.items()}
    assert status == {0: "FINISHED", 1: "KILLED", 2: "KILLED", 3: "RUNNING"}
    assert tracker.run(run_ids[1]).data.tags[names.ERROR].startswith("worker died")
    assert tracker.run(run_ids[0]).data.tags[names.STATE] == "COMPLETE"
    assert tracker.run(other).info.status == "RUNNING"                         # another study's run
    assert close_orphan_runs(study, tracker) == 0
