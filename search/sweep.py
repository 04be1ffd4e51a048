"""``python -m search.sweep [key=value ...]``: one multi-objective Optuna study over compression and training.

The flow (README "How it works"):

1. compose ``conf/`` + overrides, validate every key, the space, the data and the storage: any problem is
   one line naming the key or file, exit code 2, and nothing has been created yet;
2. open (or resume) the Optuna study and its MLflow parent run, evaluate the fp32 reference once;
3. ask -> sample the space -> a complete trial config -> k-fold CV (train, compress, fine-tune, pack, load,
   score, time) -> log the trial run -> tell; a failing trial is recorded FAIL and the study goes on;
4. Pareto front -> ``pareto`` tags, ``pareto.csv``, plots, hypervolume, a terminal table.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search import names
from search.config import CONF_DIR, compose, group_choices, split_args
from trainers.errors import InputError

__all__ = ["main", "prepare", "Setup", "fingerprint"]

USAGE = """\
usage: python -m search.sweep [key=value ...]

Runs a multi-objective Optuna study (accuracy up, size and latency down) over compression settings and
training hyperparameters, every trial scored by k-fold cross-validation on a model loaded back from its
compressed file, every trial logged to MLflow; prints the Pareto-optimal trials at the end.

examples:
  python -m search.sweep                                      # digits + mlp + joint space, 20 trials
  python -m search.sweep data=breast_cancer study.n_trials=40 cv.folds=5
  python -m search.sweep data=csv data.path=my.csv data.target=label study.name=my-study
  python -m search.sweep space=compress_only study.sampler=nsga2
  python -m search.sweep study.name=digits-mlp study.n_trials=40   # same name + storage = resume
  python -m search.pareto study.name=digits-mlp                   # the Pareto table again
  mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db --host 127.0.0.1

exit codes: 0 done, 1 stopped by study.max_failure_rate, 2 bad input (nothing created), 130 interrupted
"""


def help_text() -> str:
    groups = "\n".join(f"  {g:<8} {', '.join(c)}" for g, c in group_choices().items())
    root = (CONF_DIR / "sweep.yaml").read_text()
    return f"{USAGE}\nconfig groups (pick one: group=choice):\n{groups}\n\nkeys (conf/sweep.yaml):\n{root}"


# --- preparation: everything that can fail on bad input, before anything is created ----------------

#: keys that may change when a study is resumed (they don't change what a trial means)
RESUMABLE_KEYS = ("study.n_trials", "study.timeout", "study.n_workers", "study.max_failure_rate",
                  "study.storage", "mlflow", "device")


@dataclass
class Setup:
    cfg: Any                          # composed DictConfig (interpolations resolved on use)
    cfg_dict: dict[str, Any]          # resolved plain dict
    params: list[Any]                 # search.space.Param
    dataset: Any                      # trainers.data.Dataset
    dev_idx: Any
    test_idx: Any
    folds: list[Any]
    storage_url: str
    objectives: list[str]
    directions: list[str]
    fingerprint: str
    overrides: list[str] = field(default_factory=list)


def fingerprint(cfg_dict: dict[str, Any]) -> str:
    """A hash of everything that defines what a trial of this study means (not budgets or URIs)."""
    from search.tracking import flatten

    flat = {k: v for k, v in flatten(cfg_dict).items()
            if not any(k == r or k.startswith(r + ".") for r in RESUMABLE_KEYS)}
    return hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _check_resume(setup: Setup, storage) -> None:
    """A study of the same name must have the same directions and the same fingerprint."""
    import optuna

    try:
        existing = optuna.load_study(study_name=setup.cfg_dict["study"]["name"], storage=storage)
    except KeyError:
        return
    have = [d.name.lower() for d in existing.directions]
    if have != setup.directions:
        raise InputError("study.objectives", f"study {existing.study_name!r} exists with directions {have}; "
                                             f"{setup.objectives} needs {setup.directions}: use another study.name")
    old = existing.user_attrs.get("fingerprint")
    if old and old != setup.fingerprint:
        raise InputError("study.name", f"study {existing.study_name!r} exists with a different data/model/space/"
                                       "train/compress config: use another study.name to start a new study")


def prepare(argv: list[str]) -> tuple[Setup, Any]:
    """Validate everything; returns the setup and the opened Optuna storage. Raises InputError."""
    from omegaconf import OmegaConf

    from search.space import parse_space
    from search.storage import open_storage, storage_url
    from search.validate import validate_config, validate_space
    from trainers.data import check_dataset, cv_folds, load_dataset, split_test

    overrides = split_args(argv)
    cfg = compose(overrides)
    validate_config(cfg)
    params = parse_space(cfg.space)
    validate_space(cfg, params)
    cfg_dict = OmegaConf.to_container(cfg, resolve=True)
    uri = cfg_dict["mlflow"]["tracking_uri"]
    if not uri.startswith(("sqlite:///", "http://", "https://", "postgresql", "mysql", "file:")):
        raise InputError("mlflow.tracking_uri", f"must be sqlite:///<file>, http(s)://host:port, postgresql://... "
                                                f"or file:<dir>, got {uri!r}")
    dataset = load_dataset(cfg_dict["data"])
    folds_n, test_size = cfg_dict["cv"]["folds"], cfg_dict["data"]["test_size"]
    check_dataset(dataset, folds_n, test_size)
    dev_idx, test_idx = split_test(dataset.y, test_size, cfg_dict["seed"])
    folds = cv_folds(dataset.y[dev_idx], folds_n, cfg_dict["seed"])
    objectives = list(cfg_dict["study"]["objectives"])
    setup = Setup(cfg, cfg_dict, params, dataset, dev_idx, test_idx, folds,
                  storage_url(cfg_dict["study"]["storage"]), objectives,
                  [names.OBJECTIVE_DIRECTIONS[o] for o in objectives], fingerprint(cfg_dict), overrides)
    storage = open_storage(cfg_dict["study"]["storage"])
    _check_resume(setup, storage)
    return setup, storage


# --- the study -----------------------------------------------------------------------------------------

def make_sampler(name: str, seed: int | None, n_trials: int):
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True,
                                              n_startup_trials=max(5, min(10, n_trials // 3)))
        if name == "nsga2":
            return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(8, min(50, n_trials // 4)))
        if name == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        if name == "gp":
            return optuna.samplers.GPSampler(seed=seed)
    raise InputError("study.sampler", f"must be tpe, nsga2, random or gp, got {name!r}")


def _fixed_params(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    from search.tracking import flatten

    return {k: v for k, v in flatten(cfg_dict).items() if not k.startswith("space.")}


@dataclass
class Context:
    setup: Setup
    study: Any
    tracker: Any
    parent_run_id: str
    reference: dict[str, float]
    failed: int = 0
    completed: int = 0
    last_error: str = ""


def open_parent_run(tracker, study, setup: Setup) -> str:
    """The study's MLflow parent run: reused when the study is resumed, created otherwise."""
    name = setup.cfg_dict["study"]["name"]
    run_id = study.user_attrs.get("mlflow_parent_run_id") or tracker.study_run(name)
    if run_id:
        tracker.client.update_run(run_id, status="RUNNING")
    else:
        run_id = tracker.create_run(name, {names.ROLE: "study", names.STUDY_NAME: name,
                                           "optuna_storage": setup.storage_url.split("@")[-1],
                                           "sampler": setup.cfg_dict["study"]["sampler"]})
        tracker.log(run_id, params=_fixed_params(setup.cfg_dict))
        from omegaconf import OmegaConf

        tracker.log_text(run_id, OmegaConf.to_yaml(setup.cfg, resolve=True), names.CONFIG_ARTIFACT)
        tracker.log_text(run_id, json.dumps({"dev": setup.dev_idx.tolist(), "test": setup.test_idx.tolist(),
                                             "folds": [v.tolist() for _, v in setup.folds]}), "split.json")
    study.set_user_attr("mlflow_parent_run_id", run_id)
    study.set_user_attr("fingerprint", setup.fingerprint)
    return run_id


def ensure_reference(ctx_tracker, study, setup: Setup, parent_run_id: str) -> dict[str, float]:
    """The fp32 reference (same data, model, training; no compression), evaluated once per study."""
    if study.user_attrs.get("reference"):
        return dict(study.user_attrs["reference"])
    from search.objective import evaluate_config, reference_config

    print("evaluating the fp32 reference ...", file=sys.stderr, flush=True)
    ds = setup.dataset
    with tempfile.TemporaryDirectory(prefix="squeeze-ref-") as tmp:
        ev = evaluate_config(reference_config(setup.cfg_dict), ds.X[setup.dev_idx], ds.y[setup.dev_idx],
                             setup.folds, tmp, meta={"classes": ds.classes})
    ref = dict(ev.metrics)
    ctx_tracker.log(parent_run_id, metrics={names.REFERENCE_PREFIX + k: v for k, v in ref.items()},
                    tags={"reference_runtime": ev.runtime})
    study.set_user_attr("reference", ref)
    return ref


def _set_constraints(trial, cfg_study: dict[str, Any], metrics: dict[str, float]) -> None:
    checks = [("min_accuracy", lambda lim: lim - metrics[names.ACCURACY]),
              ("max_size_bytes", lambda lim: metrics[names.SIZE_BYTES] - lim),
              ("max_latency_ms", lambda lim: metrics[names.LATENCY_MS] - lim)]
    for key, violation in checks:
        if cfg_study.get(key) is not None:
            trial.set_constraint(key, float(violation(float(cfg_study[key]))))


def run_trial(ctx: Context, trial) -> str:
    """One trial, recorded in Optuna and MLflow; returns the final state name. Never raises for a bad
    trial (only KeyboardInterrupt propagates, after the trial is marked)."""
    import optuna
    from omegaconf import OmegaConf

    from search.objective import evaluate_config
    from search.space import apply_values, sample

    setup, tracker = ctx.setup, ctx.tracker
    study_name = setup.cfg_dict["study"]["name"]
    run_id = tracker.create_run(f"trial-{trial.number}", {
        names.ROLE: "trial", names.TRIAL_NUMBER: trial.number, names.STUDY_NAME: study_name,
        names.STATE: "RUNNING"}, parent_run_id=ctx.parent_run_id)
    trial.set_user_attr("mlflow_run_id", run_id)
    start = time.perf_counter()
    try:
        values = sample(trial, setup.params, setup.cfg)
        trial_cfg = apply_values(setup.cfg, values)
        cfg_dict = OmegaConf.to_container(trial_cfg, resolve=True)
        tracker.log(run_id, params=values)
        tracker.log_text(run_id, OmegaConf.to_yaml(trial_cfg, resolve=True), names.CONFIG_ARTIFACT)
        ds = setup.dataset
        with tempfile.TemporaryDirectory(prefix="squeeze-trial-") as tmp:
            ev = evaluate_config(cfg_dict, ds.X[setup.dev_idx], ds.y[setup.dev_idx], setup.folds, tmp,
                                 meta={"classes": ds.classes, "study": study_name, "trial": trial.number})
            tracker.log_file(run_id, ev.artifact_path)
        metrics = dict(ev.metrics)
        ref = ctx.reference
        metrics[names.COMPRESSION_RATIO] = ref[names.SIZE_BYTES] / metrics[names.SIZE_BYTES]
        metrics[names.SPEEDUP] = ref[names.LATENCY_MS] / metrics[names.LATENCY_MS]
        metrics[names.TRIAL_SECONDS] = time.perf_counter() - start
        tracker.log(run_id, metrics=metrics, tags={names.RUNTIME: ev.runtime,
                                                   "latency_protocol": json.dumps(ev.latency_protocol)})
        tracker.log_series(run_id, ev.folds)
        trial.set_user_attr("metrics", metrics)
        _set_constraints(trial, setup.cfg_dict["study"], metrics)
        ctx.study.tell(trial, [metrics[o] for o in setup.objectives])
        tracker.log(run_id, tags={names.STATE: "COMPLETE"})
        tracker.end_run(run_id, "FINISHED")
        ctx.completed += 1
        return "COMPLETE"
    except KeyboardInterrupt:
        ctx.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        tracker.log(run_id, tags={names.STATE: "FAIL", names.ERROR: "interrupted (Ctrl-C)"})
        tracker.end_run(run_id, "KILLED")
        raise
    except Exception as err:  # a failing trial is recorded and the study goes on
        message = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
        trial.set_user_attr("error", message[:1000])
        ctx.study.tell(trial, state=optuna.trial.TrialState.FAIL)
        tracker.log(run_id, tags={names.STATE: "FAIL", names.ERROR: message})
        tracker.end_run(run_id, "FAILED")
        ctx.failed += 1
        ctx.last_error = f"trial {trial.number}: {message}"
        return "FAIL"


def _finished(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)))


def run_trials(ctx: Context) -> int:
    """Ask/tell until ``study.n_trials`` trials are finished (or timeout / failure rate); returns exit code."""
    from tqdm.auto import tqdm

    cfg_study = ctx.setup.cfg_dict["study"]
    n_trials, timeout = int(cfg_study["n_trials"]), cfg_study["timeout"]
    max_fail = float(cfg_study["max_failure_rate"])
    started = time.monotonic()
    bar = tqdm(total=n_trials, initial=min(_finished(ctx.study), n_trials), unit="trial",
               desc=cfg_study["name"], dynamic_ncols=True, file=sys.stderr)
    try:
        while _finished(ctx.study) < n_trials:
            if timeout is not None and time.monotonic() - started > float(timeout):
                bar.write(f"study.timeout={timeout}s reached")
                break
            trial = ctx.study.ask()
            bar.set_postfix_str(f"trial {trial.number} running")
            run_trial(ctx, trial)
            bar.update(1)
            bar.set_postfix_str(f"done {ctx.completed} failed {ctx.failed}")
            ran = ctx.completed + ctx.failed
            if ran >= 4 and ctx.failed / ran > max_fail:
                bar.close()
                print(f"squeeze: stopped: {ctx.failed} of {ran} trials failed (> study.max_failure_rate="
                      f"{max_fail}); last error: {ctx.last_error}", file=sys.stderr)
                return 1
    finally:
        bar.close()
    return 0


def summarize(ctx: Context) -> str:
    """Pareto front -> tags, parent metrics, pareto.csv + plots on the parent run; returns the table."""
    from search import report

    setup = ctx.setup
    rows = report.collect(ctx.study, setup.objectives)
    report.tag_runs(ctx.tracker, rows)
    front = [r for r in rows if r.pareto]
    hv = report.hypervolume_of(rows, setup.objectives, ctx.reference)
    ctx.tracker.log(ctx.parent_run_id, metrics={names.N_PARETO: len(front), names.HYPERVOLUME: hv,
                                                "n_complete": sum(r.state == "COMPLETE" for r in rows),
                                                "n_failed": sum(r.state == "FAIL" for r in rows)})
    ctx.tracker.log_text(ctx.parent_run_id, report.pareto_csv(rows), names.PARETO_CSV)
    with tempfile.TemporaryDirectory(prefix="squeeze-plots-") as tmp:
        for path in report.write_plots(rows, ctx.reference, Path(tmp), setup.cfg_dict["study"]["name"]):
            ctx.tracker.log_file(ctx.parent_run_id, path)
    ref = ctx.reference
    head = (f"\nstudy {setup.cfg_dict['study']['name']!r}: {len(rows)} trials, {len(front)} Pareto-optimal, "
            f"hypervolume {hv:.4f}\nfp32 reference: accuracy {ref[names.ACCURACY]:.4f}, "
            f"size {ref[names.SIZE_BYTES]:.0f} B, latency {ref[names.LATENCY_MS]:.4f} ms\n")
    uri = setup.cfg_dict["mlflow"]["tracking_uri"]
    tail = f"\n\nMLflow: mlflow ui --backend-store-uri {uri} --host 127.0.0.1  (parent run {ctx.parent_run_id})"
    return head + report.pareto_table(rows) + tail


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(help_text())
        return 0
    try:
        setup, storage = prepare(argv)
    except InputError as err:
        print(f"squeeze: error: {err}", file=sys.stderr)
        return 2
    import optuna

    from search.tracking import Tracker

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = setup.cfg_dict
    tracker = Tracker(cfg["mlflow"]["tracking_uri"], cfg["mlflow"]["experiment"], cfg["mlflow"]["artifact_location"])
    study = optuna.create_study(study_name=cfg["study"]["name"], storage=storage, directions=setup.directions,
                                sampler=make_sampler(cfg["study"]["sampler"], cfg["study"]["seed"],
                                                     int(cfg["study"]["n_trials"])),
                                load_if_exists=True)
    parent = open_parent_run(tracker, study, setup)
    try:
        reference = ensure_reference(tracker, study, setup, parent)
    except KeyboardInterrupt:
        tracker.end_run(parent, "KILLED")
        print("\nsqueeze: interrupted; run the same command again to resume the study", file=sys.stderr)
        return 130
    except Exception as err:  # the reference uses the study's own training config: report, don't trace
        tracker.log(parent, tags={names.ERROR: f"reference failed: {err}"})
        tracker.end_run(parent, "FAILED")
        print(f"squeeze: error: the fp32 reference (train.*, model.*, data.* without compression) failed: "
              f"{type(err).__name__}: {err}", file=sys.stderr)
        return 1
    ctx = Context(setup, study, tracker, parent, reference)
    try:
        code = run_trials(ctx)
    except KeyboardInterrupt:
        code = 130
        print("\nsqueeze: interrupted; run the same command again to resume the study", file=sys.stderr)
    print(summarize(ctx))
    tracker.end_run(parent, "FINISHED" if code == 0 else ("KILLED" if code == 130 else "FAILED"))
    return code


if __name__ == "__main__":
    sys.exit(main())
