"""What a person sees of a study in MLflow and in the terminal (issue 12): read the record back, run what the
sweep printed."""

from __future__ import annotations

import json
import math
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from search import names
from search.plots import ParetoPoint, write_pareto_html
from search.tracking import (
    EXPERIMENT_KIND_TRAINING,
    absolute_uri,
    default_artifact_location,
    effective_bits,
    fold_metrics,
    trial_params,
    trial_run_name,
)
from tests.test_sweep import ROOT, TINY, client, runs

#: a trial run's name: t07 binary p30 · 96.6% · 18 KiB (optionally "· stopped early")
NAME = re.compile(r"^t(\d{2,}) [\w ]+ · (\d+\.\d)% · ([\d.]+) (B|KiB|MiB)( · stopped early)?$")


# --- the pieces, without a sweep --------------------------------------------------------------------------

@pytest.mark.parametrize("quant,bits", [({"scheme": "none", "bits": 8}, 32.0), ({"scheme": "binary"}, 1.0),
                                        ({"scheme": "ternary"}, math.log2(3)),
                                        ({"scheme": "uniform", "bits": 4}, 4.0),
                                        ({"scheme": "fixed_point", "bits": 6}, 6.0)])
def test_effective_bits_of_every_scheme(quant, bits):
    assert effective_bits(quant) == pytest.approx(bits)
    assert trial_params({"compress": {"quant": quant}}) == {names.QUANT_SCHEME: quant["scheme"],
                                                            names.EFFECTIVE_BITS: round(bits, 4)}


def test_trial_run_name_says_what_the_trial_is_and_how_it_did():
    cfg = {"compress": {"quant": {"scheme": "uniform", "bits": 4}, "prune": {"ratio": 0.3},
                        "neurons": {"ratio": 0.0}}}
    assert trial_run_name(7, cfg, digits=2) == "t07 uniform4 p30"
    done = trial_run_name(7, cfg, {names.ACCURACY: 0.9661, names.SIZE_BYTES: 18490.5}, "COMPLETE", 3)
    assert done == "t007 uniform4 p30 · 96.6% · 18 KiB"
    assert NAME.match(done)
    assert trial_run_name(3, {"compress": {"quant": {"scheme": "none"}}}, state="FAIL") == "t03 fp32 · failed"
    stopped = trial_run_name(3, {"compress": {"quant": {"scheme": "ternary"}, "neurons": {"ratio": 0.25}}},
                             {names.ACCURACY: 0.5, names.SIZE_BYTES: 900}, "PRUNED")
    assert stopped == "t03 ternary n25 · 50.0% · 900 B · stopped early"


def test_default_artifact_location_is_beside_the_sqlite_database(tmp_path):
    assert default_artifact_location(f"sqlite:///{tmp_path}/db/mlflow.db") == str(tmp_path / "db" / "artifacts")
    assert default_artifact_location("http://127.0.0.1:5000") is None
    assert absolute_uri("sqlite:///mlruns/mlflow.db") == f"sqlite:///{Path.cwd() / 'mlruns' / 'mlflow.db'}"


def test_fold_metrics_are_one_value_per_fold_of_the_objective_columns():
    rows = [{names.ACCURACY: 0.9, names.SIZE_BYTES: 900.0, names.LATENCY_MS: 0.02, names.TRAIN_SECONDS: 1.0},
            {names.ACCURACY: 0.8, names.SIZE_BYTES: 800.0, names.LATENCY_MS: 0.03, names.TRAIN_SECONDS: 2.0}]
    assert fold_metrics(rows) == {"accuracy/fold0": 0.9, "size_bytes/fold0": 900.0, "latency_ms/fold0": 0.02,
                                  "accuracy/fold1": 0.8, "size_bytes/fold1": 800.0, "latency_ms/fold1": 0.03}
    assert fold_metrics([{names.ACCURACY: 0.5}]) == {"accuracy/fold0": 0.5}


def test_fold_table_is_what_mlflow_log_table_writes(tmp_path):
    """The trial's folds.json and the tag that shows it as a table, written without MlflowClient.log_table's
    extra reads: the same file and the same tag as log_table gives a run, and MLflow reads it back as a table."""
    import pandas as pd

    from search.tracking import Tracker

    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", "e", str(tmp_path / "artifacts"))
    rows = [{names.ACCURACY: 0.9 + k / 300, names.SIZE_BYTES: 1234.0 + k, names.LATENCY_MS: 0.0123456789123,
             names.BASE_CACHED: 1.0} for k in range(3)]
    ours, theirs = tracker.create_run("ours", {}), tracker.create_run("theirs", {})
    tracker.log_folds(ours, rows, ["torchscript"] * 3)
    table = pd.DataFrame([{"fold": k, **row} for k, row in enumerate(rows)])
    table["runtime"] = ["torchscript"] * 3
    tracker.client.log_table(theirs, data=table, artifact_file=names.FOLDS_TABLE)
    c = tracker.client
    files = [Path(c.download_artifacts(r, names.FOLDS_TABLE, str(tmp_path / r))).read_bytes() for r in (ours, theirs)]
    assert files[0] == files[1]
    tag = "mlflow.loggedArtifacts"
    assert c.get_run(ours).data.tags[tag] == c.get_run(theirs).data.tags[tag]
    assert c.get_run(ours).data.metrics == fold_metrics(rows)
    loaded = c.load_table(tracker.experiment_id, names.FOLDS_TABLE, run_ids=[ours])
    assert loaded["fold"].tolist() == [0, 1, 2] and loaded["runtime"].tolist() == ["torchscript"] * 3


def test_pareto_html_of_a_large_study_is_small_and_labelled(tmp_path):
    points = [ParetoPoint(i, 0.8 + (i % 17) / 100, 2e3 * (1 + i % 23), 0.01 + (i % 7) / 1000, i % 10 == 0,
                          "scheme=uniform bits=4 prune.ratio=0.5 neurons.ratio=0.1 finetune_epochs=12 lr=0.003")
              for i in range(200)]
    ref = ParetoPoint(-1, 0.97, 36000, 0.02, False, "fp32 reference")
    text = write_pareto_html(points, tmp_path / "p.html", ref, "s").read_text()
    assert len(text.encode()) < 250_000                               # 200 trials: well under 1 MB
    assert text.count("<title>trial ") == 2 * 200                     # a hover label per point and panel
    legend, plots = text.index('class="legend"'), text.index('class="panels"')
    assert legend < plots                                             # its own row above the plots: covers nothing
    assert text[legend:plots].count("<circle") == 2 and 'class="pt' not in text[legend:plots]


# --- a tiny study, as `make sweep` runs it ----------------------------------------------------------------

@pytest.fixture(scope="module")
def record(tmp_path_factory):
    """A 4-trial study with a tracking store away from the working directory and no
    ``mlflow.artifact_location``: its output, its folder and its experiment."""
    tmp = tmp_path_factory.mktemp("record")
    store = tmp / "store"
    cmd = [sys.executable, "-m", "search.sweep", *TINY, "study.name=rec", "study.n_trials=4",
           f"mlflow.tracking_uri=sqlite:///{store}/mlflow.db", f"study.storage=sqlite:///{tmp}/optuna.db"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    c = client(store)
    return {"tmp": tmp, "store": store, "out": proc.stdout, "err": proc.stderr, "client": c,
            "experiment": c.get_experiment_by_name("squeeze")}


@pytest.mark.slow
def test_experiment_opens_on_training_runs_with_a_description(record):
    tags = record["experiment"].tags
    assert tags[names.EXPERIMENT_KIND] == EXPERIMENT_KIND_TRAINING == "custom_model_development"
    note = tags[names.NOTE]
    assert "tags.pareto = 'true'" in note and "compress.quant.effective_bits" in note and "size_kib" in note


@pytest.mark.slow
def test_parent_run_holds_study_facts_and_the_pareto_summary(record):
    (parent,) = runs(record["store"], "study")
    params = parent.data.params
    assert not [k for k in params if not k.startswith("study.")], params   # no compress.*, train.*, ... columns
    assert params["study.data"] == "digits" and params["study.space"] == "compress_only"
    note = parent.data.tags[names.NOTE]
    n_front = int(parent.data.metrics[names.N_PARETO])
    assert "4 trials" in note and f"{n_front} Pareto-optimal" in note and names.PARETO_PNG in note
    assert "within 0.5 pt" in note and "within 1 pt" in note
    files = {a.path for a in record["client"].list_artifacts(parent.info.run_id)}
    assert {names.CONFIG_ARTIFACT, names.PARETO_PNG, names.PARETO_HTML} <= files


@pytest.mark.slow
def test_every_trial_has_a_telling_name_effective_bits_and_readable_size(record):
    trials = runs(record["store"], "trial")
    assert len(trials) == 4
    for run in trials:
        params, metrics = run.data.params, run.data.metrics
        expected = effective_bits({"scheme": params[names.QUANT_SCHEME],
                                   "bits": int(params.get("compress.quant.bits", 8))})
        assert float(params[names.EFFECTIVE_BITS]) == pytest.approx(expected, abs=1e-4)
        m = NAME.match(run.info.run_name)
        assert m, run.info.run_name
        assert int(m.group(1)) == int(run.data.tags[names.TRIAL_NUMBER])
        assert float(m.group(2)) == pytest.approx(100 * metrics[names.ACCURACY], abs=0.051)
        assert metrics[names.SIZE_KIB] == pytest.approx(metrics[names.SIZE_BYTES] / 1024)


@pytest.mark.slow
def test_fold_values_are_single_values_per_fold(record):
    c = record["client"]
    for run in runs(record["store"], "trial"):
        folds = int(run.data.metrics[names.FOLDS_RUN])
        per_fold = [run.data.metrics[f"accuracy/fold{k}"] for k in range(folds)]
        assert sum(per_fold) / folds == pytest.approx(run.data.metrics[names.ACCURACY])
        assert len(c.get_metric_history(run.info.run_id, "accuracy/fold0")) == 1        # not a time series
        assert not [k for k in run.data.metrics if k.startswith("fold_")]
        path = c.download_artifacts(run.info.run_id, names.FOLDS_TABLE, str(record["tmp"]))
        table = json.loads(Path(path).read_text())
        rows = [dict(zip(table["columns"], r)) for r in table["data"]]
        assert [r["fold"] for r in rows] == list(range(folds))
        assert [r[names.ACCURACY] for r in rows] == pytest.approx(per_fold)
        assert {names.TRAIN_SECONDS, names.COMPRESS_SECONDS, names.BASE_CACHED, "runtime"} <= set(table["columns"])


@pytest.mark.slow
def test_default_artifact_location_follows_the_tracking_uri(record):
    store = record["store"]
    assert record["experiment"].artifact_location == (store / "artifacts").as_uri()
    (parent,) = runs(store, "study")
    assert (store / "artifacts" / parent.info.run_id / "artifacts" / names.PARETO_PNG).is_file()
    assert not (ROOT / "mlruns" / "artifacts" / parent.info.run_id).exists()


@pytest.mark.slow
def test_output_has_no_warnings_and_points_at_the_experiment(record):
    text = record["out"] + record["err"]
    assert "UserWarning" not in text and "Heartbeat" not in text
    exp_id = record["experiment"].experiment_id
    assert f"http://127.0.0.1:5000/#/experiments/{exp_id}/runs?workflowType=machine_learning" in record["out"]
    assert f"ui --backend-store-uri sqlite:///{record['store']}/mlflow.db" in record["out"]


@pytest.mark.slow
def test_printed_reproduce_commands_run_from_another_directory(record, tmp_path):
    commands = [line.split(": ", 1)[1] for line in record["out"].splitlines()
                if line.strip().startswith("trial ") and "search.reproduce" in line]
    front = [r for r in runs(record["store"], "trial") if r.data.tags.get(names.PARETO) == "true"]
    assert commands and len(commands) == len(front)
    for command in commands:
        proc = subprocess.run(shlex.split(command), cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (command, proc.stdout[-2000:], proc.stderr[-2000:])
    assert not (tmp_path / "mlruns").exists()          # nothing written relative to the other directory
