"""Scale-out and crash recovery against real storages: journal file, PostgreSQL, an MLflow tracking server.

The PostgreSQL tests need the server on 127.0.0.1:5432 (trust auth, database ``test``); each test creates
and drops its own databases. Outside CI they skip with a loud message when no server answers; with
``CI=true`` they fail instead.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from search import names
from tests import conftest

ROOT = Path(__file__).resolve().parents[1]
PG = "postgresql://postgres@127.0.0.1:5432"
#: the shared tiny study (tests/conftest.py) without early stopping (trial counts are exact), named "scale"
TINY = [*conftest.TINY, "study.early_stop=false", "study.name=scale"]

pytestmark = pytest.mark.slow


def sweep_cmd(*overrides: str) -> list[str]:
    return [sys.executable, "-m", "search.sweep", *TINY, *overrides]


def run(*overrides: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(sweep_cmd(*overrides), cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def pg_databases():
    """Two fresh PostgreSQL databases (Optuna, MLflow), dropped afterwards."""
    try:
        import psycopg2

        conn = psycopg2.connect(f"{PG}/test", connect_timeout=3)
    except Exception as err:  # noqa: BLE001 - any failure to connect means "no server"
        message = f"PostgreSQL on 127.0.0.1:5432 (database test) does not answer: {err}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip("!!! SKIPPED: " + message)
    conn.autocommit = True
    names_ = [f"sq_{kind}_{uuid.uuid4().hex[:10]}" for kind in ("optuna", "mlflow")]
    with conn.cursor() as cur:
        for n in names_:
            cur.execute(f"CREATE DATABASE {n}")
    yield [f"{PG}/{n}" for n in names_]
    with conn.cursor() as cur:
        for n in names_:
            cur.execute(f"DROP DATABASE IF EXISTS {n} WITH (FORCE)")
    conn.close()


def mlflow_runs(uri: str, role: str, all_states: bool = True):
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    c = MlflowClient(uri)
    exp = c.get_experiment_by_name("squeeze")
    return c.search_runs([exp.experiment_id], filter_string=f"tags.role = '{role}'", max_results=1000,
                         run_view_type=ViewType.ACTIVE_ONLY)


def load_study(storage: str):
    import optuna

    from search.storage import open_storage

    return optuna.load_study(study_name="scale", storage=open_storage(storage))


def assert_one_to_one(study, trial_runs) -> None:
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers))
    run_numbers = sorted(int(r.data.tags[names.TRIAL_NUMBER]) for r in trial_runs)
    assert run_numbers == sorted(numbers)
    assert not [r for r in trial_runs if r.info.status == "RUNNING"]


def test_two_local_workers_on_a_journal_file(tmp_path):
    journal = f"journal:{tmp_path}/optuna.journal"
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = run("study.n_trials=4", "study.n_workers=2", f"study.storage={journal}", f"mlflow.tracking_uri={uri}",
               f"mlflow.artifact_location={tmp_path}/art")
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = load_study(journal)
    assert [t.state.name for t in study.trials].count("COMPLETE") == 4 and len(study.trials) == 4
    workers = {t.user_attrs["worker"] for t in study.trials}
    assert len(workers) == 2                                   # both processes ran trials
    assert len(mlflow_runs(uri, "study")) == 1
    assert_one_to_one(study, mlflow_runs(uri, "trial"))


def test_three_machines_join_one_postgres_study(pg_databases, tmp_path):
    optuna_db, mlflow_db = pg_databases
    args = ["study.n_trials=6", f"study.storage={optuna_db}", f"mlflow.tracking_uri={mlflow_db}",
            f"mlflow.artifact_location={tmp_path}/art"]
    # fresh Optuna and MLflow databases: the three workers race to create the schemas (retried)
    procs = [subprocess.Popen(sweep_cmd(*args), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    study = load_study(optuna_db)
    assert len(study.trials) == 6
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    assert len(mlflow_runs(mlflow_db, "study")) == 1              # duplicates from the race were removed
    assert_one_to_one(study, mlflow_runs(mlflow_db, "trial"))


def _wait_for_running_trial(storage: str, proc: subprocess.Popen, mlflow_uri: str, timeout: float = 300):
    """The first RUNNING trial once all its parameters are sampled. The run is opened before sampling starts
    and the storage gets one parameter at a time, so a trial with some params may still be sampling (on a
    busy machine long enough to be killed with half of them); its MLflow run gets the params after the last."""
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_uri)
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        try:
            study = load_study(storage)
            running = [t for t in study.trials if t.state.name == "RUNNING" and "mlflow_run_id" in t.user_attrs]
            if running and client.get_run(running[0].user_attrs["mlflow_run_id"]).data.params:
                return load_study(storage).trials[running[0].number]     # read again: every param is stored
        except KeyError:
            pass
        time.sleep(0.5)
    raise AssertionError("no trial started")


def test_sigkilled_worker_trial_is_retried_and_counts_stay_exact(pg_databases, tmp_path):
    optuna_db, mlflow_db = pg_databases
    args = ["study.n_trials=3", f"study.storage={optuna_db}", f"mlflow.tracking_uri={mlflow_db}",
            f"mlflow.artifact_location={tmp_path}/art", "study.heartbeat_seconds=1", "study.grace_seconds=3",
            "train.epochs=30"]                                  # long enough to be killed mid-trial
    victim = subprocess.Popen(sweep_cmd(*args), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = _wait_for_running_trial(optuna_db, victim, mlflow_db)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    time.sleep(4)                                              # past the grace period
    proc = run(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = load_study(optuna_db)
    states = {t.number: t.state.name for t in study.trials}
    assert states[killed.number] == "FAIL"
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed.number]
    stored_killed = study.trials[killed.number]
    assert killed.params and stored_killed.params.items() >= killed.params.items()
    assert len(retries) == 1 and retries[0].params == stored_killed.params
    assert sum(s == "COMPLETE" for s in states.values()) == 3   # exactly n_trials finished
    trial_runs = mlflow_runs(mlflow_db, "trial")
    assert_one_to_one(study, trial_runs)
    (killed_run,) = [r for r in trial_runs if int(r.data.tags[names.TRIAL_NUMBER]) == killed.number]
    assert killed_run.info.status == "KILLED" and killed_run.data.tags[names.STATE] == "FAIL"
    doctor = subprocess.run([sys.executable, "-m", "search.doctor", "study.name=scale", f"study.storage={optuna_db}",
                             f"mlflow.tracking_uri={mlflow_db}"], cwd=ROOT, capture_output=True, text=True)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "healthy" in doctor.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_tracking_server_receives_a_study_from_two_workers(tmp_path):
    port = _free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{tmp_path}/server.db", "--artifacts-destination", str(tmp_path / "art"),
         "--workers", "1"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, server.stderr.read()[-3000:]
                assert time.time() < deadline, "mlflow server did not start"
                time.sleep(0.5)
        journal = f"journal:{tmp_path}/optuna.journal"
        proc = run("study.n_trials=4", "study.n_workers=2", f"study.storage={journal}", f"mlflow.tracking_uri={uri}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        study = load_study(journal)
        assert len(mlflow_runs(uri, "study")) == 1
        trial_runs = mlflow_runs(uri, "trial")
        assert_one_to_one(study, trial_runs)
        from mlflow import MlflowClient

        files = {a.path for a in MlflowClient(uri).list_artifacts(trial_runs[0].info.run_id)}
        assert names.CONFIG_ARTIFACT in files                  # artifacts went through the server
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
