"""search/preflight.py and the first start of the stores: every problem found before anything is created.

Each bad input of issue 10 that used to be found late (inside the fp32 reference, while opening MLflow, after
a final fit) runs the real command here with every store under ``tmp_path`` and must give exit code 2, one
``squeeze: error:`` line naming the key or file, and no study, run, database or file. Stores are real: a dead
MLflow server is a port nothing listens on, or a socket that accepts and never answers.
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from search import preflight
from trainers.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


def stores(out: Path) -> list[str]:
    return [f"mlflow.tracking_uri=sqlite:///{out}/mlflow.db", f"mlflow.artifact_location={out}/artifacts",
            f"study.storage=sqlite:///{out}/optuna.db"]


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``folder`` with its size and mtime, to prove nothing was created or touched."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def one_error(capsys, code: int, fragment: str) -> str:
    """Exit 2 and exactly one ``squeeze: error:`` line (containing ``fragment``) on stderr."""
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("squeeze: error:")]
    assert code == 2, err
    assert len(errors) == 1, err
    assert fragment in errors[0], errors[0]
    assert all(line.startswith("squeeze: ") for line in err.splitlines() if line.strip()), err  # no traceback
    return errors[0]


def refused(tmp: Path, capsys, overrides: list[str], fragment: str, store_overrides: list[str] | None = None) -> str:
    """Run ``search.sweep`` with stores in ``tmp/out``; it must refuse and leave ``tmp`` exactly as it was."""
    from search.sweep import main

    before = snapshot(tmp)
    out = tmp / "out"
    code = main([*(stores(out) if store_overrides is None else store_overrides), *overrides])
    line = one_error(capsys, code, fragment)
    assert not out.exists()
    assert snapshot(tmp) == before, "the refused sweep created or changed files"
    return line


def csv_file(tmp: Path, name: str, text: str) -> Path:
    path = tmp / name
    path.write_text(text)
    return path


def table(n: int = 40, sep: str = ",", target: str = "y") -> str:
    rng = np.random.default_rng(0)
    rows = [sep.join([f"{rng.normal():.4f}", f"{rng.normal():.4f}", f"{rng.normal():.4f}", str(i % 2)])
            for i in range(n)]
    return sep.join(["a", "b", "c", target]) + "\n" + "\n".join(rows) + "\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- data <-> model, PCA, device, float32 ------------------------------------------------------------


def test_cnn_on_a_csv_is_refused_before_anything_is_created(tmp_path, capsys):
    path = csv_file(tmp_path, "t.csv", table())
    refused(tmp_path, capsys, ["data=csv", f"data.path={path}", "data.target=y", "model=cnn"], "model")


def test_cnn_on_flat_npz_features_is_refused_by_the_loaded_shape(tmp_path, capsys):
    path = tmp_path / "flat.npz"
    np.savez(path, X=np.random.default_rng(0).random((60, 5)), y=np.arange(60) % 2)
    line = refused(tmp_path, capsys, ["data=npz", f"data.path={path}", "model=cnn"], "model")
    assert "model=mlp" in line


def test_seqrec_on_rows_is_refused(tmp_path, capsys):
    refused(tmp_path, capsys, ["model=seqrec", "space=seqrec"], "model")


def test_data_model_check_reads_the_dataset_kind():
    from trainers.data import load_dataset

    ds = load_dataset({"name": "breast_cancer"})
    with pytest.raises(InputError, match=r"^model: seqrec ranks items"):
        preflight.check_data_model("seqrec", "breast_cancer", ds)
    with pytest.raises(InputError, match=r"^model: cnn needs image data"):
        preflight.check_data_model("cnn", "breast_cancer", ds)
    preflight.check_data_model("mlp", "breast_cancer", ds)


def test_pca_larger_than_the_features_is_refused(tmp_path, capsys):
    path = csv_file(tmp_path, "t.csv", table())
    line = refused(tmp_path, capsys, ["data=csv", f"data.path={path}", "data.target=y", "data.pca=1000"], "data.pca")
    assert "3 features" in line and "at most 3" in line


def test_pca_larger_than_a_folds_training_rows_is_refused(tmp_path, capsys):
    # digits has 64 features; 3 folds of ~1438 dev rows train on ~958 rows: 64 is fine, but a 30-row csv is not
    wide = "\n".join([",".join([f"f{i}" for i in range(50)] + ["y"])]
                     + [",".join([str((r * 7 + i) % 11) for i in range(50)] + [str(r % 2)]) for r in range(30)])
    path = csv_file(tmp_path, "wide.csv", wide + "\n")
    line = refused(tmp_path, capsys, ["data=csv", f"data.path={path}", "data.target=y", "data.pca=40", "cv.folds=2"],
                   "data.pca")
    assert "CV fold trains on" in line


def test_pca_the_space_can_sample_is_checked_too():
    from trainers.data import Dataset

    ds = Dataset(X=np.zeros((20, 4), np.float32), y=np.arange(20) % 2, classes=["0", "1"], kind="tabular", name="t")
    with pytest.raises(InputError, match=r"^space.params.data.pca: asks for 8 PCA components"):
        preflight.check_pca(0.9, ds, [16, 16], space_values=[2, 8])
    preflight.check_pca(4, ds, [16, 16], space_values=[2, 3])


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="this machine has CUDA")
def test_device_cuda_without_cuda_is_refused(tmp_path, capsys):
    refused(tmp_path, capsys, ["device=cuda"], "device: cuda")


def test_values_beyond_float32_are_refused_naming_column_and_line(tmp_path, capsys):
    text = table().replace("\n", "\n1e39,0,0,1\n", 1)  # finite in float64, inf in float32
    path = csv_file(tmp_path, "big.csv", text)
    line = refused(tmp_path, capsys, ["data=csv", f"data.path={path}", "data.target=y"], "float32")
    assert "'a'" in line and "line 2" in line


def test_float32_guard_on_any_loaded_dataset():
    from trainers.data import Dataset

    X = np.ones((4, 2), np.float32)
    X[2, 1] = np.inf
    ds = Dataset(X=X, y=np.arange(4) % 2, classes=["0", "1"], kind="tabular", name="t")
    with pytest.raises(InputError, match=r"^x.npz: has 1 feature value\(s\) that are infinite in float32.*row 2"):
        preflight.check_float32_range(ds, {"path": "x.npz"})


# --- the MLflow tracking store and the artifact folder -----------------------------------------------


def test_mlflow_server_that_refuses_is_reported_at_once(tmp_path, capsys):
    start = time.monotonic()
    line = refused(tmp_path, capsys, [f"mlflow.tracking_uri=http://127.0.0.1:{free_port()}"], "mlflow.tracking_uri",
                   store_overrides=[f"study.storage=sqlite:///{tmp_path}/out/optuna.db"])
    assert "did not answer" in line and "mlflow server" in line
    assert time.monotonic() - start < 60


def test_mlflow_server_that_never_answers_times_out_quickly(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(preflight, "PROBE_SECONDS", 1.0)
    with socket.socket() as silent:  # accepts connections (kernel backlog), never answers a request
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        start = time.monotonic()
        line = refused(tmp_path, capsys, [f"mlflow.tracking_uri=http://127.0.0.1:{port}"], "mlflow.tracking_uri",
                       store_overrides=[f"study.storage=sqlite:///{tmp_path}/out/optuna.db"])
        probe = time.monotonic() - start
    assert "within 1 s" in line
    assert probe < 30


def test_sqlite_tracking_path_under_a_regular_file_is_refused(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    line = refused(tmp_path, capsys, [f"mlflow.tracking_uri=sqlite:///{tmp_path}/afile/mlflow.db"],
                   "mlflow.tracking_uri")
    assert "is a regular file" in line


def test_artifact_location_under_a_regular_file_is_refused(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    line = refused(tmp_path, capsys, [f"mlflow.artifact_location={tmp_path}/afile/artifacts"],
                   "mlflow.artifact_location")
    assert "is a regular file" in line


def test_artifact_location_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    refused(tmp_path, capsys, [f"mlflow.artifact_location={tmp_path}/afile"], "mlflow.artifact_location")


def test_tracking_uri_on_a_file_that_is_not_sqlite_is_refused(tmp_path, capsys):
    (tmp_path / "notes.db").write_text("not a database")
    refused(tmp_path, capsys, [f"mlflow.tracking_uri=sqlite:///{tmp_path}/notes.db"], "not an SQLite database")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes everywhere")
def test_unwritable_folders_are_refused(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        refused(tmp_path, capsys, [f"mlflow.tracking_uri=sqlite:///{locked}/mlflow.db"], "not writable")
        with pytest.raises(InputError, match="not writable"):
            preflight.check_output_path("out", locked / "preds.csv")
    finally:
        locked.chmod(0o700)


# --- the Optuna storage --------------------------------------------------------------------------------


def test_optuna_sqlite_under_a_regular_file_is_refused(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    refused(tmp_path, capsys, [], "study.storage",
            store_overrides=[*stores(tmp_path / "out")[:2], f"study.storage=sqlite:///{tmp_path}/afile/optuna.db"])


def test_journal_storage_that_is_a_folder_is_refused(tmp_path, capsys):
    (tmp_path / "j").mkdir()
    refused(tmp_path, capsys, [], "is a folder",
            store_overrides=[*stores(tmp_path / "out")[:2], f"study.storage=journal:{tmp_path}/j"])


def test_postgres_storage_nobody_listens_on_is_refused(tmp_path, capsys):
    line = refused(tmp_path, capsys, [], "study.storage: cannot open",
                   store_overrides=[*stores(tmp_path / "out")[:2],
                                    f"study.storage=postgresql://u:secret@127.0.0.1:{free_port()}/db"])
    assert "secret" not in line


# --- first start of an MLflow SQLite store ---------------------------------------------------------------


@pytest.fixture(scope="module")
def complete_store(tmp_path_factory) -> Path:
    """One complete MLflow SQLite store, created by our first-start code (copied by each test that needs one)."""
    from search.tracking import Tracker

    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    Tracker(f"sqlite:///{path}", "squeeze", str(path.parent / "artifacts"))
    return path


def test_first_start_creates_a_complete_store_and_leaves_no_temporary_file(complete_store):
    from search.tracking import sqlite_store_problem

    con = sqlite3.connect(complete_store)
    try:
        (rev,) = con.execute("SELECT version_num FROM alembic_version").fetchone()
        names = {r[0] for r in con.execute("SELECT name FROM experiments")}
    finally:
        con.close()
    assert rev and names == {"Default", "squeeze"}
    assert sqlite_store_problem(complete_store) is None
    assert [p.name for p in complete_store.parent.iterdir() if p.name.endswith(".creating")] == []


def test_half_migrated_store_gives_one_clear_line_and_nothing_is_created(tmp_path, capsys, complete_store):
    broken = tmp_path / "mlflow.db"
    shutil.copyfile(complete_store, broken)
    con = sqlite3.connect(broken)
    con.execute("DROP TABLE alembic_version")  # what a kill between create_all and the version stamp leaves
    con.commit()
    con.close()
    line = refused(tmp_path, capsys, [], "half-created MLflow database",
                   store_overrides=[f"mlflow.tracking_uri=sqlite:///{broken}", f"study.storage=sqlite:///{tmp_path}/out/o.db",
                                    f"mlflow.artifact_location={tmp_path}/out/a"])
    assert str(broken) in line and "delete it" in line


def test_half_migrated_store_is_refused_by_the_tracker_too(tmp_path, complete_store):
    from search.tracking import Tracker

    broken = tmp_path / "mlflow.db"
    shutil.copyfile(complete_store, broken)
    con = sqlite3.connect(broken)
    con.execute("UPDATE alembic_version SET version_num = '451aebb31d03'")  # an early revision, no runs
    con.commit()
    con.close()
    with pytest.raises(InputError, match=r"^mlflow.tracking_uri: .*unfinished MLflow database.*delete it"):
        Tracker(f"sqlite:///{broken}", "squeeze")


def test_an_optuna_database_as_tracking_store_is_refused(tmp_path, capsys):
    import optuna

    db = tmp_path / "optuna.db"
    optuna.create_study(storage=f"sqlite:///{db}", study_name="s")
    capsys.readouterr()  # optuna's "A new study created" log line
    line = refused(tmp_path, capsys, [], "not an MLflow tracking database",
                   store_overrides=[f"mlflow.tracking_uri=sqlite:///{db}", f"study.storage=sqlite:///{tmp_path}/out/o.db",
                                    f"mlflow.artifact_location={tmp_path}/out/a"])
    assert "optuna.db" in line


def test_an_mlflow_database_as_optuna_storage_is_refused(tmp_path, capsys, complete_store):
    db = tmp_path / "mlflow.db"
    shutil.copyfile(complete_store, db)
    refused(tmp_path, capsys, [], "is an MLflow tracking database, not an Optuna storage",
            store_overrides=[*stores(tmp_path / "out")[:2], f"study.storage=sqlite:///{db}"])


_CREATE = textwrap.dedent("""
    import sys
    from search.tracking import Tracker
    t = Tracker("sqlite:///" + sys.argv[1], "squeeze")
    print(t.experiment_id)
""")


def _tracker_process(db: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", _CREATE, str(db)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_two_processes_creating_the_store_at_once_both_succeed(tmp_path):
    db = tmp_path / "mlflow.db"
    procs = [_tracker_process(db), _tracker_process(db)]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err[-2000:]
    assert results[0][0].strip() == results[1][0].strip()  # the same experiment
    con = sqlite3.connect(db)
    try:
        assert con.execute("SELECT COUNT(*) FROM experiments WHERE name = 'squeeze'").fetchone() == (1,)
    finally:
        con.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db"]


def test_a_kill_while_the_store_is_created_leaves_no_broken_database(tmp_path):
    from search.tracking import Tracker

    db = tmp_path / "mlflow.db"
    proc = _tracker_process(db)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".mlflow.db.*.creating")):  # the schema is being migrated now
        assert proc.poll() is None and time.monotonic() < deadline, "the tracker never started creating the store"
        time.sleep(0.01)
    time.sleep(0.3)
    proc.kill()
    proc.communicate()
    assert not db.exists()  # a killed first start leaves no mlflow.db at all, never half a one
    Tracker(f"sqlite:///{db}", "squeeze")  # the next start simply works
    con = sqlite3.connect(db)
    try:
        assert con.execute("SELECT COUNT(*) FROM experiments WHERE name = 'squeeze'").fetchone() == (1,)
    finally:
        con.close()


def test_an_empty_store_file_is_filled_in_place_and_stale_temporary_files_are_removed(tmp_path):
    from search.tracking import STALE_CREATING_SECONDS, Tracker, sqlite_store_problem

    db = tmp_path / "mlflow.db"
    db.touch()
    stale = tmp_path / ".mlflow.db.123-abcd.creating"  # left by a process killed an hour ago
    fresh = tmp_path / ".mlflow.db.456-ef01.creating"  # another process creating the store right now
    stale.write_bytes(b"")
    fresh.write_bytes(b"")
    old = time.time() - STALE_CREATING_SECONDS - 60
    os.utime(stale, (old, old))
    Tracker(f"sqlite:///{db}", "squeeze")
    assert db.stat().st_size > 0 and sqlite_store_problem(db) is None
    assert not stale.exists() and fresh.exists()


# --- export / predict output paths -----------------------------------------------------------------------


@pytest.mark.parametrize("case", ["under_a_file", "a_folder", "trailing_slash"])
def test_export_out_is_checked_before_anything_runs(tmp_path, capsys, case):
    from search.export import main

    (tmp_path / "afile").write_text("x")
    (tmp_path / "folder").mkdir()
    out = {"under_a_file": f"{tmp_path}/afile/model.sqz", "a_folder": f"{tmp_path}/folder",
           "trailing_slash": f"{tmp_path}/new/"}[case]
    before = snapshot(tmp_path)
    code = main(["run_id=0123456789abcdef", f"out={out}", f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db"])
    one_error(capsys, code, "squeeze: error: out:")
    assert snapshot(tmp_path) == before  # no mlflow.db, no file


@pytest.mark.parametrize("case", ["under_a_file", "a_folder"])
def test_predict_out_is_checked_before_the_model_is_loaded(tmp_path, capsys, case):
    from search.predict import main

    (tmp_path / "afile").write_text("x")
    out = f"{tmp_path}/afile/preds.csv" if case == "under_a_file" else str(tmp_path)
    before = snapshot(tmp_path)
    code = main([f"model={tmp_path}/no-such-model.sqz", "data=digits", f"out={out}"])
    one_error(capsys, code, "squeeze: error: out:")
    assert snapshot(tmp_path) == before


def test_check_output_path_accepts_new_files_in_new_folders(tmp_path):
    assert preflight.check_output_path("out", tmp_path / "a" / "b" / "model.sqz") == tmp_path / "a" / "b" / "model.sqz"
    (tmp_path / "old.sqz").write_text("x")
    preflight.check_output_path("out", tmp_path / "old.sqz")  # overwriting a file is fine
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.sqz"]


# --- commands that read a study never create one ---------------------------------------------------------


@pytest.mark.parametrize("command", ["search.report", "search.doctor"])
@pytest.mark.parametrize("storage", ["sqlite:///{tmp}/typo.db", "journal:{tmp}/typo.log"])
def test_reading_a_mistyped_storage_creates_no_database(tmp_path, capsys, command, storage):
    import importlib

    main = importlib.import_module(command).main
    before = snapshot(tmp_path)
    code = main(["study.name=s", f"study.storage={storage.format(tmp=tmp_path)}",
                 f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db"])
    one_error(capsys, code, "study.storage: no storage file")
    assert snapshot(tmp_path) == before


# --- CSV files as a user writes them (weak messages of issue 10) ------------------------------------------


@pytest.mark.parametrize("text,fragment", [
    ("a,b,a,y\n" + "".join(f"{i},{i},{i},{i % 2}\n" for i in range(40)), "two columns named 'a'"),
    ("a,y\n" + "".join(f"{i},{np.cos(i):.5f}\n" for i in range(40)), "looks like a regression target"),
    ("a,b,y\n" + "".join(f"{i},{i * 1e38:g},{i % 2}\n" for i in range(40)), "beyond float32's range"),
])
def test_bad_csv_files_are_named_for_what_they_are(tmp_path, capsys, text, fragment):
    path = csv_file(tmp_path, "t.csv", text)
    refused(tmp_path, capsys, ["data=csv", f"data.path={path}", "data.target=y"], fragment)


def test_semicolon_csv_with_an_index_column_and_target_by_index_prepares(tmp_path, capsys):
    from search.sweep import prepare

    rows = "".join(f"{i};{i % 7 * 0.5};{(i * 3) % 5};{'ab'[i % 2]}\n" for i in range(40))
    path = csv_file(tmp_path, "t.csv", ";a;b;label\n" + rows)  # df.to_csv(sep=";") with its index
    setup, _ = prepare([*stores(tmp_path / "out"), "data=csv", f"data.path={path}", "data.target=3",
                        "space=compress_only"])
    assert setup.dataset.feature_names == ["a", "b"] and setup.dataset.classes == ["a", "b"]
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("squeeze: note:")]
    assert len(notes) == 1 and "row index" in notes[0]
