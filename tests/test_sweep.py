"""End-to-end sweeps (real Optuna storage, real MLflow store, real training) and the bad-input contract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from search import names
from search.pareto import non_dominated_mask
from tests import conftest

ROOT = Path(__file__).resolve().parents[1]

#: the shared tiny study (tests/conftest.py) without early stopping: these tests count trials exactly
TINY = [*conftest.TINY, "study.early_stop=false"]


def stores(tmp: Path) -> list[str]:
    return [f"mlflow.tracking_uri=sqlite:///{tmp}/mlflow.db", f"mlflow.artifact_location={tmp}/artifacts",
            f"study.storage=sqlite:///{tmp}/optuna.db"]


def sweep(tmp: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "search.sweep", *TINY, *stores(tmp), *overrides]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def client(tmp: Path):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{tmp}/mlflow.db")


def runs(tmp: Path, role: str):
    c = client(tmp)
    exp = c.get_experiment_by_name("squeeze")
    return c.search_runs([exp.experiment_id], filter_string=f"tags.role = '{role}'", max_results=1000)


def load_study(tmp: Path, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp}/optuna.db")


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sweep")
    proc = sweep(tmp, "study.name=e2e", "study.n_trials=4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (tmp / "stdout.txt").write_text(proc.stdout)
    return tmp


@pytest.mark.slow
def test_sweep_records_one_parent_run_with_reference_and_front(study_dir):
    (parent,) = runs(study_dir, "study")
    assert parent.info.status == "FINISHED"
    assert parent.data.tags[names.STUDY_NAME] == "e2e"
    for key in ("reference_accuracy", "reference_size_bytes", "reference_latency_ms", names.N_PARETO,
                names.HYPERVOLUME):
        assert key in parent.data.metrics, key
    assert parent.data.params["study.cv_folds"] == "2" and parent.data.params["study.data"] == "digits"
    files = {a.path for a in client(study_dir).list_artifacts(parent.info.run_id)}
    assert {names.PARETO_CSV, names.PARETO_HTML, names.PARETO_PNG, names.CONFIG_ARTIFACT, "split.json"} <= files


@pytest.mark.slow
def test_every_trial_has_a_nested_run_with_params_config_and_metrics(study_dir):
    (parent,) = runs(study_dir, "study")
    trials = runs(study_dir, "trial")
    study = load_study(study_dir, "e2e")
    assert len(trials) == len(study.trials) == 4
    by_number = {int(r.data.tags[names.TRIAL_NUMBER]): r for r in trials}
    c = client(study_dir)
    for t in study.trials:
        run = by_number[t.number]
        assert run.info.run_name.startswith(f"t{t.number:02d} ")
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags[names.STATE] == "COMPLETE" and run.info.status == "FINISHED"
        # every sampled key, and the scheme and effective bits every trial has; nothing else
        assert set(run.data.params) == set(t.params) | {names.QUANT_SCHEME, names.EFFECTIVE_BITS}
        for key, value in t.params.items():
            assert run.data.params[key] == (json.dumps(value) if isinstance(value, bool) else str(value))
        for m in (names.ACCURACY, names.ACCURACY_STD, names.SIZE_BYTES, names.SIZE_BYTES_STD, names.LATENCY_MS,
                  names.LATENCY_P90_MS,
                  names.COMPRESSION_RATIO, names.SPEEDUP, names.SPARSITY, names.AVG_BITS, names.FIT_SECONDS):
            assert m in run.data.metrics, m
        assert run.data.metrics[names.ACCURACY] == pytest.approx(t.values[0])
        assert run.data.metrics[names.SIZE_BYTES] == pytest.approx(t.values[1])
        ratio = parent.data.metrics["reference_size_bytes"] / run.data.metrics[names.SIZE_BYTES]
        assert run.data.metrics[names.COMPRESSION_RATIO] == pytest.approx(ratio)
        assert {"accuracy/fold0", "accuracy/fold1"} <= set(run.data.metrics)
        files = {a.path for a in c.list_artifacts(run.info.run_id)}
        assert names.CONFIG_ARTIFACT in files and "fold0.sqz" in files


@pytest.mark.slow
def test_pareto_tags_are_exactly_the_non_dominated_trials(study_dir):
    trials = runs(study_dir, "trial")
    values = np.array([[r.data.metrics[names.ACCURACY], r.data.metrics[names.SIZE_BYTES],
                        r.data.metrics[names.LATENCY_MS]] for r in trials])
    # brute force: i is dominated when some j is at least as good everywhere and better somewhere
    signed = values * np.array([-1, 1, 1])
    expected = [not any(np.all(signed[j] <= signed[i]) and np.any(signed[j] < signed[i])
                        for j in range(len(trials))) for i in range(len(trials))]
    assert expected == list(non_dominated_mask(values, ["maximize", "minimize", "minimize"]))
    # the study's front ties latencies within its A/A noise (search.ledger.pareto_mask, brute-forced in
    # tests/test_latency.py): the tags are exactly that front, a subset of the exact one (equal at zero noise)
    from search.ledger import latency_noise, pareto_mask

    noise = latency_noise(load_study(study_dir, "e2e"))
    tagged = [r.data.tags[names.PARETO] == "true" for r in trials]
    assert tagged == list(pareto_mask(values, [names.ACCURACY, names.SIZE_BYTES, names.LATENCY_MS], noise))
    assert all(e for t, e in zip(tagged, expected) if t) and (noise > 0 or tagged == expected)
    (parent,) = runs(study_dir, "study")
    assert parent.data.metrics[names.N_PARETO] == sum(tagged)        # the study's front, as tagged


@pytest.mark.slow
def test_terminal_table_lists_pareto_trials_with_reproduce_commands(study_dir):
    out = (study_dir / "stdout.txt").read_text()
    front = [r for r in runs(study_dir, "trial") if r.data.tags[names.PARETO] == "true"]
    assert "Pareto-optimal" in out
    for r in front:
        assert f"python -m search.reproduce run_id={r.info.run_id}" in out


@pytest.mark.slow
def test_test_split_is_disjoint_from_every_fold(study_dir):
    (parent,) = runs(study_dir, "study")
    path = client(study_dir).download_artifacts(parent.info.run_id, "split.json", str(study_dir))
    split = json.loads(Path(path).read_text())
    dev, test = set(split["dev"]), set(split["test"])
    assert dev and test and not dev & test
    assert len(dev) + len(test) == 1797                       # digits: every row is dev or test
    val_positions = [i for fold in split["folds"] for i in fold]
    assert sorted(val_positions) == list(range(len(dev)))      # folds index the dev rows only, each once


@pytest.mark.slow
def test_resume_adds_trials_to_the_same_study_and_parent_run(study_dir):
    proc = sweep(study_dir, "study.name=e2e", "study.n_trials=6")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(runs(study_dir, "study")) == 1
    assert len(load_study(study_dir, "e2e").trials) == 6
    assert len(runs(study_dir, "trial")) == 6
    assert "evaluating the fp32 reference" not in proc.stderr   # evaluated once per study


@pytest.mark.slow
def test_failing_trials_are_recorded_failed_and_the_study_goes_on(tmp_path):
    # lr 1e12 diverges in the fine-tune; the reference has no fine-tune, so only trials fail (train_only: the
    # space does not sample the fine-tune, which compress_only now does)
    proc = sweep(tmp_path, "study.name=bad", "study.n_trials=3", "study.max_failure_rate=1.0", "space=train_only",
                 "train.optimizer=sgd", "compress.finetune_lr=1e12", "compress.finetune_epochs=1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = load_study(tmp_path, "bad")
    assert [t.state.name for t in study.trials] == ["FAIL"] * 3
    for r in runs(tmp_path, "trial"):
        assert r.info.status == "FAILED"
        assert r.data.tags[names.STATE] == "FAIL"
        assert "TrainingDiverged" in r.data.tags[names.ERROR]


@pytest.mark.slow
def test_failure_rate_stops_the_study_with_exit_code_1(tmp_path):
    proc = sweep(tmp_path, "study.name=bad", "study.n_trials=10", "study.max_failure_rate=0.5", "space=train_only",
                 "train.optimizer=sgd", "compress.finetune_lr=1e12", "compress.finetune_epochs=1")
    assert proc.returncode == 1
    assert "study.max_failure_rate" in proc.stderr
    assert len(load_study(tmp_path, "bad").trials) == 4


# --- bad input: exit 2, one line naming the key or file, nothing created ------------------------------

BAD_INPUTS = [
    (["data=nope"], "data: unknown choice 'nope'"),
    (["model=transformer9"], "model: unknown choice"),
    (["space=nope"], "space: unknown choice"),
    (["no.such.key=1"], "no.such.key: no such config key"),
    (["compress.quant.bits=0"], "compress.quant.bits"),
    (["compress.prune.ratio=1.5"], "compress.prune.ratio"),
    (["cv.folds=1"], "cv.folds"),
    (["train.lr=abc"], "train.lr"),
    (["study.sampler=grid"], "study.sampler"),
    (["data=csv"], "data.path: is required"),
    (["data=csv", "data.path=/no/such.csv", "data.target=y"], "/no/such.csv"),
    (["study.n_workers=4"], "study.storage"),
    (["data.pca=8", "model=cnn"], "data.pca"),
    (["cv.folds=500"], "cv.folds"),
]


@pytest.mark.parametrize("overrides,fragment", BAD_INPUTS)
def test_bad_input_exits_2_with_one_line_and_creates_nothing(tmp_path, capsys, overrides, fragment):
    from search.sweep import main

    # stores() would fix study.storage; the n_workers case must keep the default sqlite storage
    store_args = [s for s in stores(tmp_path) if not (s.startswith("study.storage") and "study.n_workers=4" in overrides)]
    code = main([*store_args, *overrides])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert fragment in err
    assert list(tmp_path.iterdir()) == []


def test_bad_csv_inputs_exit_2(tmp_path, capsys):
    from search.sweep import main

    data = tmp_path / "data"
    data.mkdir()
    cases = {
        "missing_target.csv": ("a,b\n1,2\n3,4\n", "data.target"),
        "text_feature.csv": ("a,b,y\n" + "1,x,0\n2,y,1\n" * 10, "'b'"),
        "nan.csv": ("a,b,y\n" + "1,,0\n2,3,1\n" * 10, "NaN"),
        "small_class.csv": ("a,y\n" + "".join(f"{i},{i % 2}\n" for i in range(40)) + "5,2\n", "cv.folds"),
    }
    for name, (text, fragment) in cases.items():
        (data / name).write_text(text)
        code = main([*stores(tmp_path / "out"), "data=csv", f"data.path={data / name}", "data.target=y"])
        err = capsys.readouterr().err.strip()
        assert code == 2, name
        assert fragment in err and len(err.splitlines()) == 1, (name, err)
    assert not (tmp_path / "out").exists()


def test_help_lists_groups_and_choices(capsys):
    from search.sweep import main

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for text in ("data", "digits", "compress_only", "cnn", "study:", "cv:"):
        assert text in out


def _write_npz(path: Path, X, y) -> Path:
    np.savez(path, X=np.asarray(X), y=np.asarray(y))
    return path


def _data_and_storage_cases(tmp: Path) -> list[tuple[list[str], str]]:
    rng = np.random.default_rng(0)
    y = np.arange(60) % 2
    return [
        (["data=npz", f"data.path={_write_npz(tmp / 'rank5.npz', rng.random((60, 1, 2, 2, 2)), y)}"], "rank"),
        (["data=npz", f"data.path={_write_npz(tmp / 'inf.npz', np.full((60, 3), np.inf), y)}"], "inf"),
        (["data=npz", f"data.path={_write_npz(tmp / 'len.npz', rng.random((60, 3)), y[:50])}"], "differ in length"),
        (["data=csv", f"data.path={tmp / 'empty.csv'}", "data.target=y"], "empty.csv"),
        (["data=csv", f"data.path={tmp / 'one_class.csv'}", "data.target=y"], "single class"),
        (["study.storage=postgresql://postgres@127.0.0.1:1/nope"], "study.storage: cannot open"),
        (["study.name=resumed", f"study.storage=sqlite:///{tmp}/existing.db"], "study.objectives"),
    ]


def test_data_and_storage_bad_inputs_exit_2_and_create_nothing(tmp_path, capsys):
    import optuna

    from search.sweep import main

    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "one_class.csv").write_text("a,y\n" + "".join(f"{i},1\n" for i in range(30)))
    # a study of the same name with other directions: resuming it must be refused
    optuna.create_study(study_name="resumed", storage=f"sqlite:///{tmp_path}/existing.db", directions=["maximize"])
    capsys.readouterr()
    cases = _data_and_storage_cases(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    for overrides, fragment in cases:
        out = tmp_path / "out"
        args = [f"mlflow.tracking_uri=sqlite:///{out}/mlflow.db", f"mlflow.artifact_location={out}/art"]
        if not any(o.startswith("study.storage") for o in overrides):
            args.append(f"study.storage=sqlite:///{out}/optuna.db")
        code = main([*args, *overrides])
        err = capsys.readouterr().err.strip()
        assert code == 2, (overrides, err)
        assert fragment in err and len(err.splitlines()) == 1, (overrides, err)
        assert not out.exists(), overrides                       # no study, no MLflow store, no artifact
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert len(optuna.load_study(study_name="resumed", storage=f"sqlite:///{tmp_path}/existing.db").trials) == 0


# --- the worker's bookkeeping, without a sweep ------------------------------------------------------------

@pytest.mark.parametrize("values", [{}, {"compress.quant.scheme": "uniform", "compress.quant.bits": 4,
                                         "compress.prune.ratio": 0.31, "compress.finetune_lr": 3e-4},
                                    {"compress.include": ["layers.0", "*.fc*"], "study.name": "yes"}])
def test_a_trial_config_resolves_once_to_the_same_dict_and_yaml(values):
    from omegaconf import OmegaConf

    from search.config import compose, resolved
    from search.space import apply_values

    cfg = apply_values(compose(["space=compress_only", "data=digits"]), values)
    plain, text = resolved(cfg)
    assert plain == OmegaConf.to_container(cfg, resolve=True)
    assert text == OmegaConf.to_yaml(cfg, resolve=True)               # the trial's config.yaml, byte for byte
    assert plain["study"]["name"] == values.get("study.name", "digits-mlp")   # interpolations resolved


class _BeatStorage:
    """A storage with heartbeats every ``interval`` seconds that records when each beat arrived."""

    def __init__(self, interval: float) -> None:
        self.interval, self.beats = interval, []

    def get_heartbeat_interval(self) -> float:
        return self.interval

    def record_heartbeat(self, trial_id: int) -> None:
        import time

        self.beats.append((trial_id, time.monotonic()))


def test_the_heartbeat_thread_beats_first_one_interval_after_first_beat():
    import time
    from types import SimpleNamespace

    from search.worker import first_beat, heartbeat

    storage = _BeatStorage(0.5)
    study = SimpleNamespace(_storage=storage)
    asked, other = SimpleNamespace(_trial_id=1, number=1), SimpleNamespace(_trial_id=2, number=2)
    first_beat(study, asked)
    with heartbeat(study, asked):
        time.sleep(0.2)
        assert [t for t, _ in storage.beats] == [1]                     # first_beat's only: no second write at once
        time.sleep(0.6)
    beats = [at for t, at in storage.beats if t == 1]
    assert len(beats) == 2 and 0.45 <= beats[1] - beats[0] <= 0.75     # the next one, an interval later
    with heartbeat(study, other):                                        # no first_beat: the thread beats at once
        time.sleep(0.1)
    assert [t for t, _ in storage.beats].count(2) == 1
