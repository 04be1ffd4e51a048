"""Pick, reproduce, ship: search.reproduce, search.export, search.predict, the pyfunc and the notebook.

One tiny study (a CSV table, so the model knows its feature names) is shared by the module: swept once with
``mlflow.register=true`` in a subprocess, then reproduced, finalized, exported and predicted in-process.
The artifact loader's rejection of truncated / corrupt / newer files is covered in tests/test_artifact.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from search import names
from tests import conftest

ROOT = Path(__file__).resolve().parents[1]
STUDY = "repro"
#: the shared tiny study (tests/conftest.py), three trials, all run to the end: the tests reproduce, export and
#: compare COMPLETE trials (the third is a shrink step, which the early stop may end after one fold)
TINY = ["study.n_trials=3", "study.early_stop=false", *conftest.TINY]


class Study:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.csv = tmp / "table.csv"
        self.uri = f"sqlite:///{tmp}/mlflow.db"
        self.storage = f"sqlite:///{tmp}/optuna.db"

    @property
    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(self.uri)

    def runs(self, role: str, **tags: str):
        exp = self.client.get_experiment_by_name("squeeze")
        flt = " and ".join([f"tags.role = '{role}'", *(f"tags.{k} = '{v}'" for k, v in tags.items())])
        return self.client.search_runs([exp.experiment_id], filter_string=flt, max_results=1000,
                                       order_by=["attributes.start_time ASC"])

    def trial_run(self, pareto: bool | None = None):
        runs = sorted(self.runs("trial"), key=lambda r: int(r.data.tags[names.TRIAL_NUMBER]))
        if pareto is not None:
            runs = [r for r in runs if (r.data.tags[names.PARETO] == "true") == pareto] or runs
        return runs[0]

    def split(self) -> dict:
        (parent,) = self.runs("study")
        path = self.client.download_artifacts(parent.info.run_id, names.SPLIT_ARTIFACT, str(self.tmp))
        return json.loads(Path(path).read_text())

    def dataset(self):
        from trainers.data import load_dataset

        return load_dataset({"name": "csv", "path": str(self.csv), "target": "label"})

    def args(self, *more: str) -> list[str]:
        return [f"mlflow.tracking_uri={self.uri}", f"study.storage={self.storage}", *more]


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Study:
    from sklearn.datasets import load_breast_cancer

    s = Study(tmp_path_factory.mktemp("reproduce"))
    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.data.copy()
    frame["label"] = [str(bunch.target_names[t]) for t in bunch.target]
    frame.to_csv(s.csv, index=False)
    cmd = [sys.executable, "-m", "search.sweep", *TINY, f"study.name={STUDY}", "data=csv", f"data.path={s.csv}",
           "data.target=label", f"mlflow.artifact_location={s.tmp}/artifacts", "mlflow.register=true",
           f"mlflow.tracking_uri={s.uri}", f"study.storage={s.storage}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (s.tmp / "sweep.out").write_text(proc.stdout)
    return s


def run_cli(module: str, argv: list[str], capsys) -> tuple[int, str, str]:
    """``python -m <module> <argv>`` in this process (no torch/mlflow start-up per call)."""
    import importlib

    capsys.readouterr()
    code = importlib.import_module(module).main(argv)
    out, err = capsys.readouterr()
    return code, out, err


class StageSpy:
    """Records the rows each stage of trainers.pipeline trained on and was scored on (as dataset row ids)."""

    def __init__(self, monkeypatch, X_all: np.ndarray) -> None:
        import trainers.pipeline

        self.row_id = {row.tobytes(): i for i, row in enumerate(X_all)}
        assert len(self.row_id) == len(X_all)                      # every row is distinct: ids are exact
        self.trained, self.scored, self.models = [], [], []
        fit, score = trainers.pipeline.fit_and_compress, trainers.pipeline.evaluate_artifact

        def spy_fit(cfg, X, y, seed, cache=None):
            self.trained.append(self.ids(X))
            fitted = fit(cfg, X, y, seed, cache)
            self.models.append(fitted.model)
            return fitted

        def spy_score(path, X, y, *args, **kwargs):
            self.scored.append(self.ids(X))
            return score(path, X, y, *args, **kwargs)

        monkeypatch.setattr(trainers.pipeline, "fit_and_compress", spy_fit)
        monkeypatch.setattr(trainers.pipeline, "evaluate_artifact", spy_score)

    def ids(self, X: np.ndarray) -> list[int]:
        return [self.row_id[row.tobytes()] for row in np.ascontiguousarray(X, dtype=np.float32)]


# --- reproduce ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_reproduce_matches_exactly_and_cv_stages_see_dev_rows_only(study, capsys, monkeypatch):
    trial = study.trial_run()
    split = study.split()
    spy = StageSpy(monkeypatch, study.dataset().X)
    code, out, err = run_cli("search.reproduce", study.args(f"run_id={trial.info.run_id}"), capsys)
    assert code == 0, out + err
    assert "DIFFERS" not in out and "reproduced:" in out
    for metric in (names.ACCURACY, names.ACCURACY_STD, names.SIZE_BYTES, names.LATENCY_MS):
        assert metric in out
    (run,) = study.runs("reproduce", reproduces=trial.info.run_id)
    assert run.data.tags["mlflow.parentRunId"] == trial.data.tags["mlflow.parentRunId"]
    assert run.data.tags[names.REPRODUCED] == "true"
    assert run.data.metrics[names.ACCURACY] == trial.data.metrics[names.ACCURACY]
    assert run.data.metrics[names.SIZE_BYTES] == trial.data.metrics[names.SIZE_BYTES]
    # each fold trained on dev rows and was scored on that fold's validation rows: never a test row
    dev = np.asarray(split["dev"])
    assert len(spy.trained) == len(spy.scored) == 2
    for k, (trained, scored) in enumerate(zip(spy.trained, spy.scored)):
        assert sorted(scored) == sorted(dev[split["folds"][k]].tolist())
        assert set(trained) == set(dev.tolist()) - set(scored)
        assert not (set(trained) | set(scored)) & set(split["test"])


@pytest.mark.slow
def test_reproduce_fails_loudly_when_a_logged_metric_differs(study, capsys):
    trial = study.trial_run()
    logged = trial.data.metrics[names.ACCURACY]
    now = int(time.time() * 1000)
    study.client.log_metric(trial.info.run_id, names.ACCURACY, logged + 0.0123, timestamp=now + 1000, step=0)
    try:
        code, out, err = run_cli("search.reproduce", study.args(f"run_id={trial.info.run_id}"), capsys)
    finally:  # the latest value wins: put the true one back for the other tests
        study.client.log_metric(trial.info.run_id, names.ACCURACY, logged, timestamp=now + 2000, step=0)
    assert code == 1
    assert "DIFFERS" in out
    assert "NOT reproduced" in err and "accuracy" in err and "-0.0123" in err
    runs = study.runs("reproduce", reproduces=trial.info.run_id)
    assert runs[-1].data.tags[names.REPRODUCED] == "false"


@pytest.mark.slow
def test_reproduce_by_study_name_and_trial_number(study, capsys):
    trial = study.trial_run()
    n = trial.data.tags[names.TRIAL_NUMBER]
    code, out, err = run_cli("search.reproduce", study.args(f"study.name={STUDY}", f"trial={n}"), capsys)
    assert code == 0, out + err
    assert f"reproducing trial {n} of study '{STUDY}' (run {trial.info.run_id})" in out


@pytest.mark.slow
@pytest.mark.parametrize(("argv", "key"), [
    (["run_id=0123456789abcdef0123456789abcdef"], "run_id"),
    ([], "run_id"),
    ([f"study.name={STUDY}"], "trial"),
    (["study.name=nope", "trial=0"], "study.name"),
    ([f"study.name={STUDY}", "trial=99"], "trial"),
    (["run_id=x", "bogus=1"], "bogus"),
    (["run_id=x", "final=maybe"], "final"),
])
def test_bad_input_is_one_line_naming_the_key_exit_2(study, capsys, argv, key):
    code, out, err = run_cli("search.reproduce", study.args(*argv), capsys)
    assert code == 2
    assert err.startswith(f"squeeze: error: {key}:") and err.count("\n") == 1


@pytest.mark.parametrize("uri", ["sqlite:///{tmp}/none.db", "http://127.0.0.1:9"])
def test_unreachable_store_is_one_line_naming_the_key_in_seconds(tmp_path, capsys, uri):
    start = time.monotonic()
    code, _, err = run_cli("search.reproduce", [f"mlflow.tracking_uri={uri.format(tmp=tmp_path)}", "run_id=abc"],
                           capsys)
    assert code == 2 and err.startswith("squeeze: error: mlflow.tracking_uri:") and err.count("\n") == 1
    assert time.monotonic() - start < 30                        # not MLflow's minutes of HTTP retries
    assert not (tmp_path / "none.db").exists()                  # nothing created


def test_compare_needs_exact_accuracy_and_size_and_tolerates_latency_noise():
    from search.reproduce import compare

    logged = {names.ACCURACY: 0.9, names.ACCURACY_STD: 0.01, names.SIZE_BYTES: 1000.0, names.LATENCY_MS: 0.02}
    assert all(c.ok for c in compare(logged, {**logged, names.LATENCY_MS: 0.06}))     # within 0.05 ms
    assert all(c.ok for c in compare(logged | {names.LATENCY_MS: 1.0}, {**logged, names.LATENCY_MS: 1.4}))
    assert not compare(logged | {names.LATENCY_MS: 1.0}, {**logged, names.LATENCY_MS: 1.6})[-1].ok
    bad = {c.metric for c in compare(logged, {**logged, names.ACCURACY: 0.9 + 1e-12, names.SIZE_BYTES: 1001.0})
           if not c.ok}
    assert bad == {names.ACCURACY, names.SIZE_BYTES}


def test_run_fold_serves_on_the_runtime_it_is_given(tmp_path):
    from omegaconf import OmegaConf
    from sklearn.datasets import load_breast_cancer

    from search.config import compose
    from trainers.pipeline import run_fold

    cfg = OmegaConf.to_container(compose(["data=breast_cancer", "model.hidden=[8]", "train.epochs=1",
                                          "compress.finetune_epochs=0", "compress.quant.scheme=uniform",
                                          "latency.repeats=3", "latency.warmup=1", "latency.throughput_batch=8"]),
                                 resolve=True)
    X, y = load_breast_cancer(return_X_y=True)
    X = X.astype(np.float32)
    for runtime in ("int8_dynamic", "torchscript", "fp32_dense"):
        result = run_fold(cfg, X[:300], y[:300], X[300:400], y[300:400], 0, tmp_path / "fold.sqz", runtime=runtime)
        assert result.runtime == runtime


# --- final, export, predict, registry ----------------------------------------------------------------

@pytest.mark.slow
def test_final_trains_on_all_dev_rows_scores_test_rows_and_registers(study, capsys, monkeypatch):
    import mlflow

    trial = study.trial_run()
    split = study.split()
    dev, test = set(split["dev"]), set(split["test"])
    assert dev and test and not dev & test and len(dev | test) == 569         # search: dev rows only ...
    assert sorted(i for fold in split["folds"] for i in fold) == list(range(len(dev)))   # ... folds index dev
    spy = StageSpy(monkeypatch, study.dataset().X)
    code, out, err = run_cli("search.reproduce", study.args(f"run_id={trial.info.run_id}", "final=true",
                                                            "register=true", "registry_name=squeeze-final-test"),
                             capsys)
    assert code == 0, out + err
    assert "TEST-split numbers" in out and "test_accuracy" in out
    assert spy.trained == [split["dev"]] and spy.scored == [split["test"]]      # one fit on dev, scored on test
    final = study.runs("final", reproduces=trial.info.run_id)[-1]
    assert final.data.tags["mlflow.parentRunId"] == trial.data.tags["mlflow.parentRunId"]
    metrics = final.data.metrics
    for m in (names.ACCURACY, names.SIZE_BYTES, names.LATENCY_MS):
        assert names.TEST_PREFIX + m in metrics and m not in metrics             # test numbers, labelled
    files = {a.path for a in study.client.list_artifacts(final.info.run_id)}
    assert {names.FINAL_ARTIFACT, names.ROWS_ARTIFACT, names.CONFIG_ARTIFACT} <= files
    rows = json.loads(Path(study.client.download_artifacts(final.info.run_id, names.ROWS_ARTIFACT,
                                                           str(study.tmp))).read_text())
    assert rows == {"train": split["dev"], "test": split["test"]}
    # the registered version: tagged, and it loads and predicts through mlflow.pyfunc
    version = study.client.get_model_version("squeeze-final-test", "1")
    assert version.tags["trial_run_id"] == trial.info.run_id
    assert float(version.tags["test_accuracy"]) == metrics["test_accuracy"]
    mlflow.set_tracking_uri(study.uri)
    model = mlflow.pyfunc.load_model("models:/squeeze-final-test/1")
    ds = study.dataset()
    labels = model.predict(pd.DataFrame(ds.X[split["test"]], columns=ds.feature_names))
    truth = np.asarray(ds.classes, dtype=object)[ds.y[split["test"]]]
    assert np.mean(labels == truth) == metrics["test_accuracy"]


@pytest.mark.slow
def test_sweep_register_true_registers_every_pareto_trial(study):
    import mlflow

    front = [r for r in study.runs("trial") if r.data.tags[names.PARETO] == "true"]
    versions = study.client.search_model_versions(f"name = 'squeeze-{STUDY}'")
    assert sorted(v.tags["trial_run_id"] for v in versions) == sorted(r.info.run_id for r in front)
    for v in versions:
        assert {"test_accuracy", "test_size_bytes", "test_latency_ms", "cv_accuracy", "study", "trial_number",
                "final_run_id"} <= set(v.tags)
        assert v.tags["study"] == STUDY
    mlflow.set_tracking_uri(study.uri)
    model = mlflow.pyfunc.load_model(f"models:/squeeze-{STUDY}/1")
    ds = study.dataset()
    frame = pd.DataFrame(ds.X[:7], columns=ds.feature_names)
    assert set(model.predict(frame)) <= set(ds.classes)


@pytest.mark.slow
def test_export_load_predict_equals_the_scored_model(study, capsys, monkeypatch, tmp_path):
    from search.final import final_fit
    from search.predict import predict_ids, runtime_model
    from search.record import find_trial, study_data
    from trainers import artifact

    trial = study.trial_run(pareto=False)
    out = tmp_path / "model.sqz"
    code, stdout, err = run_cli("search.export", study.args(f"run_id={trial.info.run_id}", f"out={out}"), capsys)
    assert code == 0, stdout + err
    final = study.runs("final", reproduces=trial.info.run_id)[-1]                # found or made by export
    logged = study.client.download_artifacts(final.info.run_id, names.FINAL_ARTIFACT, str(tmp_path / "dl"))
    assert out.read_bytes() == Path(logged).read_bytes()
    # the final fit again, in-process: same file, and the in-memory model that was scored
    spy = StageSpy(monkeypatch, study.dataset().X)
    record = find_trial({"run_id": trial.info.run_id, "mlflow.tracking_uri": study.uri})
    data = study_data(record)
    fit = final_fit(record, data, tmp_path / "again.sqz")
    assert (tmp_path / "again.sqz").read_bytes() == out.read_bytes()             # deterministic final fit
    ds = data.dataset
    X_test = ds.X[data.test_idx]
    scored = predict_ids(runtime_model(spy.models[0], fit["runtime"], X_test[:1]), X_test)
    assert np.mean(scored == ds.y[data.test_idx]) == final.data.metrics["test_accuracy"]
    loaded = artifact.load(out)
    assert loaded.meta["feature_names"] == ds.feature_names and loaded.meta["classes"] == ds.classes
    # the predict CLI on a CSV whose columns are in another order, with the target column still in it
    frame = pd.DataFrame(X_test, columns=ds.feature_names)[ds.feature_names[::-1]]
    frame.insert(3, "label", "?")
    frame.to_csv(tmp_path / "new.csv", index=False)
    proc = subprocess.run([sys.executable, "-m", "search.predict", f"model={out}", "data=csv",
                           f"data.path={tmp_path / 'new.csv'}", f"out={tmp_path / 'preds.csv'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    predicted = pd.read_csv(tmp_path / "preds.csv", dtype=str)["prediction"].tolist()
    assert predicted == [ds.classes[i] for i in scored]
    # a missing feature column: one line naming the file and the column
    frame.drop(columns=[ds.feature_names[5]]).to_csv(tmp_path / "short.csv", index=False)
    code, _, err = run_cli("search.predict", [f"model={out}", "data=csv", f"data.path={tmp_path / 'short.csv'}"],
                           capsys)
    assert code == 2 and f"has no column {ds.feature_names[5]!r}" in err and err.count("\n") == 1


def test_features_are_selected_by_name_or_taken_by_position():
    from search.predict import features_from_frame
    from trainers.errors import InputError

    frame = pd.DataFrame({"b": [2.0, 20.0], "target": ["x", "y"], "a": [1.0, 10.0]})
    X = features_from_frame(frame, {"feature_names": ["a", "b"]}, [2], "f.csv")
    assert X.tolist() == [[1.0, 2.0], [10.0, 20.0]] and X.dtype == np.float32
    images = features_from_frame(pd.DataFrame(np.arange(8.0).reshape(2, 4)), {}, [1, 2, 2], "f.csv")
    assert images.shape == (2, 1, 2, 2) and images[1, 0, 1, 1] == 7.0
    with pytest.raises(InputError, match="has 3 columns, the model takes 4"):
        features_from_frame(pd.DataFrame(np.zeros((2, 3))), {}, [1, 2, 2], "f.csv")
    with pytest.raises(InputError, match="column 'target' is not numeric"):
        features_from_frame(frame[["b", "target"]], {}, [2], "f.csv")


# --- the notebook ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_compare_study_notebook_executes_top_to_bottom(study, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    # a kernel spec of this very interpreter in a private JUPYTER_PATH: works in a fresh clone after
    # `pip install -e .[dev]`, whatever kernels the user has installed
    spec = tmp_path / "jupyter" / "kernels" / "squeeze-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "squeeze test", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("SQUEEZE_STUDY", STUDY)
    monkeypatch.setenv("SQUEEZE_TRACKING_URI", study.uri)
    path = ROOT / "notebooks" / "compare_study.ipynb"
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") and not c.get("execution_count") for c in nb.cells if c.cell_type == "code")
    client = NotebookClient(nb, kernel_name="squeeze-test", timeout=180,
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()                                                # raises CellExecutionError on any error
    text = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert f"study '{STUDY}': 3 completed trials" in text
