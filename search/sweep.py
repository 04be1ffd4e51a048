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
  python -m search.sweep data=ecommerce model=seqrec space=seqrec  # recommender: accuracy = HR@10, ndcg logged
  python -m search.sweep data=interactions data.path=ml-100k/u.data model=seqrec space=seqrec
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
                  "study.heartbeat_seconds", "study.grace_seconds", "study.base_cache", "study.base_cache_gb",
                  "study.base_cache_dir", "study.seed_recipes", "study.early_stop", "study.early_stop_margin",
                  "study.shrink_every", "study.shrink_tolerance", "study.shrink_levels",
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
    base_cache: Any = None            # trainers.base_cache.BaseCache, or None (study.base_cache=false)
    started: float = field(default_factory=time.monotonic)   # study.timeout counts from here (references included)

    @property
    def task(self) -> Any:
        """The data's :class:`trainers.task.Task` (classification or ranking), from ``Dataset.kind``."""
        from trainers.task import task_of

        return task_of(kind=self.dataset.kind)


def base_cache_dir(cfg_dict: dict[str, Any], storage_url: str) -> Path:
    """``study.base_cache_dir``, or ``base-cache/<study.name>`` beside the SQLite / journal storage file
    (``mlruns/`` for server storages)."""
    study = cfg_dict["study"]
    if study.get("base_cache_dir"):
        return Path(study["base_cache_dir"]) / study["name"]
    for prefix in ("sqlite:///", "journal:"):
        if storage_url.startswith(prefix):
            return Path(storage_url[len(prefix):]).parent / "base-cache" / study["name"]
    return Path("mlruns") / "base-cache" / study["name"]


def make_base_cache(cfg_dict: dict[str, Any], storage_url: str):
    """The study's :class:`~trainers.base_cache.BaseCache` (nothing is created on disk until a write)."""
    if not cfg_dict["study"].get("base_cache", True):
        return None
    from trainers.base_cache import BaseCache

    return BaseCache(base_cache_dir(cfg_dict, storage_url), int(float(cfg_dict["study"]["base_cache_gb"]) * 2**30))


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

    from search.preflight import check_all
    from search.space import parse_space
    from search.storage import open_storage, storage_url
    from search.validate import validate_config, validate_space
    from trainers.data import check_dataset, load_dataset, split_dataset

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
    folds_n, test_size = cfg_dict["cv"]["folds"], cfg_dict["data"].get("test_size")  # none for sequence data
    check_dataset(dataset, folds_n, test_size)
    dev_idx, test_idx, folds = split_dataset(dataset, test_size, folds_n, cfg_dict["seed"])  # leave-last-out for sequences
    objectives = list(cfg_dict["study"]["objectives"])
    setup = Setup(cfg, cfg_dict, params, dataset, dev_idx, test_idx, folds,
                  storage_url(cfg_dict["study"]["storage"]), objectives,
                  [names.OBJECTIVE_DIRECTIONS[o] for o in objectives], fingerprint(cfg_dict), overrides)
    setup.base_cache = make_base_cache(cfg_dict, setup.storage_url)
    check_all(setup)  # search/preflight.py: data <-> model, PCA, device, float32, stores and files
    storage = open_storage(cfg_dict["study"]["storage"], cfg_dict["study"]["heartbeat_seconds"],
                           cfg_dict["study"]["grace_seconds"])
    _check_resume(setup, storage)
    return setup, storage


# --- the study -----------------------------------------------------------------------------------------

def _tpe(seed: int | None, n_trials: int):
    """Multi-objective TPE over joint groups of parameters, with a constant liar for parallel workers; at
    least 5 and at most 10 random start-up trials (a third of small budgets)."""
    import optuna

    return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True,
                                      n_startup_trials=max(5, min(10, n_trials // 3)))


def _nsga2(seed: int | None, n_trials: int):
    """NSGA-II with a population of a quarter of the budget (8..50)."""
    import optuna

    return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(8, min(50, n_trials // 4)))


def _random(seed: int | None, n_trials: int):
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


def _gp(seed: int | None, n_trials: int):
    import optuna

    return optuna.samplers.GPSampler(seed=seed)


#: ``study.sampler`` -> ``(seed, n_trials) -> Optuna sampler``; its keys are the schema's choices
#: (:data:`search.schema.SAMPLERS`, which a test holds equal to them)
SAMPLER_BUILDERS = {"tpe": _tpe, "nsga2": _nsga2, "random": _random, "gp": _gp}


def make_sampler(name: str, seed: int | None, n_trials: int):
    """The Optuna sampler ``study.sampler`` names (:data:`SAMPLER_BUILDERS`), seeded with ``seed``.

    Raises:
        InputError: at ``study.sampler`` for a name it does not know.
    """
    import optuna

    if name not in SAMPLER_BUILDERS:
        raise InputError("study.sampler", f"must be one of {'|'.join(SAMPLER_BUILDERS)}, got {name!r}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return SAMPLER_BUILDERS[name](seed, n_trials)


def _study_params(setup: Setup) -> dict[str, Any]:
    """What a study is, as params of its parent run, under ``study.``: no trial samples a ``study.*`` key, so
    the parent never fills a trial's columns. The whole config is the run's ``config.yaml``."""
    from search.config import _chosen

    cfg = setup.cfg_dict
    return {"study.data": cfg["data"]["name"], "study.model": cfg["model"]["name"],
            "study.space": _chosen("space", setup.overrides), "study.sampler": cfg["study"]["sampler"],
            "study.objectives": ",".join(setup.objectives), "study.cv_folds": cfg["cv"]["folds"],
            "study.seed": cfg["seed"], "study.fingerprint": setup.fingerprint}


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
        tracker.log(run_id, params=_study_params(setup),
                    tags={names.NOTE: f"Study `{name}` is running; this description becomes the summary of its "
                                      "Pareto front when it ends."})
        from omegaconf import OmegaConf

        tracker.log_text(run_id, OmegaConf.to_yaml(setup.cfg, resolve=True), names.CONFIG_ARTIFACT)
        tracker.log_text(run_id, json.dumps({"dev": setup.dev_idx.tolist(), "test": setup.test_idx.tolist(),
                                             "folds": [v.tolist() for _, v in setup.folds]}), "split.json")
        # workers started at the same moment on several machines may each have created one: keep the
        # oldest (ties broken by id), delete the others, so every worker converges on the same parent
        parents = tracker.find_runs(**{names.ROLE: "study", names.STUDY_NAME: name})
        keep = min(parents, key=lambda r: (r.info.start_time, r.info.run_id)).info.run_id
        if keep != run_id:
            tracker.client.delete_run(run_id)
            run_id = keep
    study.set_user_attr("mlflow_parent_run_id", run_id)
    study.set_user_attr("fingerprint", setup.fingerprint)
    return run_id


def longest_training(setup: Setup) -> tuple[int, int]:
    """``(train epochs, fine-tune epochs)`` of the longest training a trial of this space can get: the
    largest ``train.epochs`` and ``compress.finetune_epochs`` it can sample (else the configured values)."""
    def high(key: str, configured: int) -> int:
        for p in setup.params:
            if p.key == key and hasattr(p.distribution, "high"):
                return max(int(p.distribution.high), int(configured))
        return int(configured)

    cfg = setup.cfg_dict
    return (high("train.epochs", cfg["train"]["epochs"]),
            high("compress.finetune_epochs", cfg["compress"]["finetune_epochs"]))


def _latency_floor(setup: Setup, ev, ref_dir: Path, X, y, study) -> dict[str, float]:
    """Keep the reference's fold artifacts for the trials (study attr ``reference_artifacts``), time fold 0
    against itself (A/A: ``latency_noise``, the study attr the Pareto ties use) and an empty forward in its
    runtime (``latency_overhead_ms`` and its share of the reference's latency)."""
    from search.ledger import LATENCY_NOISE_ATTR, REFERENCE_ARTIFACTS_ATTR
    from trainers.measure import LatencyProtocol, empty_forward_ms
    from trainers.pipeline import ReferenceArtifact, evaluate_artifact

    cfg = setup.cfg_dict
    refs = [ReferenceArtifact(str((ref_dir / f"fold{k}.sqz").resolve()), ev.runtimes[k], fold[names.LATENCY_MS])
            for k, fold in enumerate(ev.folds)]
    X0, y0 = X[setup.folds[0][1]], y[setup.folds[0][1]]
    aa = evaluate_artifact(refs[0].path, X0, y0, cfg["latency"], k=int(cfg["data"].get("top_k", 10)),
                           runtime=refs[0].runtime, reference=refs[0])
    noise = max(aa[names.SPEEDUP_CI_HIGH] - 1.0, 1.0 - aa[names.SPEEDUP_CI_LOW], 0.0)
    overhead = empty_forward_ms(refs[0].runtime, setup.task.as_input(X0), LatencyProtocol.from_config(cfg["latency"]))
    study.set_user_attr(REFERENCE_ARTIFACTS_ATTR, [vars(r) for r in refs])
    study.set_user_attr(LATENCY_NOISE_ATTR, noise)
    print(f"latency noise floor (A/A): ±{100 * noise:.1f}%; an empty forward in {refs[0].runtime} takes "
          f"{overhead:.4g} ms = {100 * overhead / refs[0].latency_ms:.0f}% of the reference's latency",
          file=sys.stderr, flush=True)
    return {names.LATENCY_NOISE: noise, names.LATENCY_OVERHEAD_MS: overhead,
            names.LATENCY_OVERHEAD_SHARE: overhead / refs[0].latency_ms}


def ensure_reference(ctx_tracker, study, setup: Setup, parent_run_id: str) -> dict[str, float]:
    """The fp32 reference (same data, model, training; no compression), evaluated once per study, and the
    long reference: the same model trained as long as the longest trial trains (``reference_long_*``), so a
    compressed model never looks better than fp32 only because it trained longer."""
    if study.user_attrs.get("reference"):
        return dict(study.user_attrs["reference"])
    from search.objective import evaluate_config, reference_config
    from trainers.task import configure

    print("evaluating the fp32 reference ...", file=sys.stderr, flush=True)
    ds, task = setup.dataset, setup.task
    X, y = ds.X[setup.dev_idx], ds.y[setup.dev_idx]
    # the reference's fold artifacts stay beside the base cache: every trial's fold is timed against its own
    ref_dir = base_cache_dir(setup.cfg_dict, setup.storage_url) / "reference"
    ref_dir.mkdir(parents=True, exist_ok=True)
    ev = evaluate_config(configure(reference_config(setup.cfg_dict), ds), X, y, setup.folds, ref_dir,
                         meta={"classes": ds.classes}, cache=setup.base_cache)
    ref = dict(ev.metrics)
    extra = _latency_floor(setup, ev, ref_dir, X, y, study)
    train_epochs, finetune_epochs = longest_training(setup)
    extra[names.REFERENCE_LONG_ACCURACY] = ref[names.ACCURACY]
    if (train_epochs, finetune_epochs) != (int(setup.cfg_dict["train"]["epochs"]), 0):
        print(f"evaluating the long fp32 reference ({train_epochs} + {finetune_epochs} epochs) ...",
              file=sys.stderr, flush=True)
        try:
            with tempfile.TemporaryDirectory(prefix="squeeze-ref-long-") as tmp:
                long_cfg = configure(reference_config(setup.cfg_dict, train_epochs, finetune_epochs), ds)
                long_ev = evaluate_config(long_cfg, X, y, setup.folds, tmp, meta={"classes": ds.classes},
                                          cache=setup.base_cache)
            extra[names.REFERENCE_LONG_ACCURACY] = long_ev.metrics[names.ACCURACY]
        except Exception as err:  # e.g. the configured fine-tune lr diverges: trials will say so; the study goes on
            message = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
            print(f"squeeze: the long fp32 reference failed ({message}); reference_long_accuracy is not logged",
                  file=sys.stderr)
            ctx_tracker.log(parent_run_id, tags={"reference_long_error": message[:500]})
            del extra[names.REFERENCE_LONG_ACCURACY]
    extra[names.REFERENCE_LONG_EPOCHS] = float(train_epochs + finetune_epochs)
    # the task's baseline on the same folds, scored the same way (recommenders: popularity; classifiers: none)
    extra.update(task.baseline(X, y, setup.folds, task.n_outputs(ds), int(setup.cfg_dict["data"].get("top_k", 10))))
    ctx_tracker.log(parent_run_id, metrics={**{names.REFERENCE_PREFIX + k: v for k, v in ref.items()}, **extra},
                    tags={"reference_runtime": ev.runtime})
    study.set_user_attr("reference", ref)
    if names.REFERENCE_LONG_ACCURACY in extra:
        study.set_user_attr("reference_long_accuracy", extra[names.REFERENCE_LONG_ACCURACY])
    return ref


def seed_with_recipes(study, setup: Setup) -> list[str]:
    """Enqueue ``study.seed_recipes`` once per study (under the budget lock, so concurrent starts agree)."""
    from search.recipes import enqueue_recipes
    from search.worker import budget_lock, budget_used

    cfg = setup.cfg_dict["study"]
    if not cfg.get("seed_recipes"):
        return []
    with budget_lock(setup.storage_url, cfg["name"]):
        left = int(cfg["n_trials"]) - budget_used(study)
        return enqueue_recipes(study, list(cfg["seed_recipes"]), setup.params, setup.cfg, max(0, left))


#: the parent run's description names the best trade-offs within these accuracy losses (in points of %)
NOTE_RATIO_WITHIN_PT, NOTE_SPEEDUP_WITHIN_PT = 0.5, 1.0


def pareto_note(study_name: str, rows, reference: dict[str, float], hv: float) -> str:
    """The parent run's description (markdown): trials by state, the Pareto front, and the best compression
    ratio within 0.5 point and the best speedup within 1 point of the fp32 reference's accuracy."""
    from search.tracking import human_size

    states = {s: sum(r.state == s for r in rows) for s in ("COMPLETE", "PRUNED", "FAIL")}
    n_front = sum(r.pareto for r in rows)
    ref_acc = reference.get(names.ACCURACY)
    lines = [f"**Study `{study_name}`**: {len(rows)} trials ({states['COMPLETE']} complete, "
             f"{states['PRUNED']} stopped early, {states['FAIL']} failed), **{n_front} Pareto-optimal** "
             f"(filter `tags.pareto = 'true'`), hypervolume {hv:.4f}.", ""]
    if ref_acc is not None:
        lines += [f"fp32 reference: accuracy {100 * ref_acc:.1f}%, {human_size(reference[names.SIZE_BYTES])}, "
                  f"latency {reference[names.LATENCY_MS]:.4g} ms.", ""]
        done = [r for r in rows if r.state == "COMPLETE" and r.feasible and names.ACCURACY in r.metrics]
        for metric, within, what in ((names.COMPRESSION_RATIO, NOTE_RATIO_WITHIN_PT, "compression"),
                                     (names.SPEEDUP, NOTE_SPEEDUP_WITHIN_PT, "speedup")):
            close = [r for r in done if r.metrics[names.ACCURACY] >= ref_acc - within / 100 and metric in r.metrics]
            if close:
                best = max(close, key=lambda r: r.metrics[metric])
                m = best.metrics
                lines.append(f"* best {what} within {within:g} pt of the reference accuracy: "
                             f"**{m[metric]:.2f}×**, trial {best.number} ({100 * m[names.ACCURACY]:.1f}%, "
                             f"{human_size(m[names.SIZE_BYTES])}, {m[names.LATENCY_MS]:.4g} ms)")
            else:
                lines.append(f"* best {what} within {within:g} pt of the reference accuracy: no trial is that close")
        lines.append("")
    lines.append(f"The front is drawn in the artifact `{names.PARETO_PNG}` (hover a point in `{names.PARETO_HTML}` "
                 f"for its trial; every number in `{names.PARETO_CSV}`).")
    return "\n".join(lines)


def summarize(ctx) -> str:
    """Pareto front -> tags, parent metrics and description, pareto.csv + plots on the parent run; returns
    the table, the reproduce commands and where to look in the MLflow UI."""
    from search import report
    from search.tracking import experiment_url, ui_command

    setup = ctx.setup
    rows = report.collect(ctx.study, setup.objectives)
    report.tag_runs(ctx.tracker, rows)
    front = [r for r in rows if r.pareto]
    hv = report.hypervolume_of(rows, setup.objectives, ctx.reference)
    name = setup.cfg_dict["study"]["name"]
    ctx.tracker.log(ctx.parent_run_id, metrics={names.N_PARETO: len(front), names.HYPERVOLUME: hv,
                                                "n_complete": sum(r.state == "COMPLETE" for r in rows),
                                                "n_failed": sum(r.state == "FAIL" for r in rows)},
                    tags={names.NOTE: pareto_note(name, rows, ctx.reference, hv)})
    ctx.tracker.log_text(ctx.parent_run_id, report.pareto_csv(rows), names.PARETO_CSV)
    with tempfile.TemporaryDirectory(prefix="squeeze-plots-") as tmp:
        for path in report.write_plots(rows, ctx.reference, Path(tmp), name):
            ctx.tracker.log_file(ctx.parent_run_id, path)
    ref = ctx.reference
    head = (f"\nstudy {name!r}: {len(rows)} trials, {len(front)} Pareto-optimal, "
            f"hypervolume {hv:.4f}\nfp32 reference: accuracy {ref[names.ACCURACY]:.4f}, "
            f"size {ref[names.SIZE_BYTES]:.0f} B, latency {ref[names.LATENCY_MS]:.4f} ms\n")
    uri = setup.cfg_dict["mlflow"]["tracking_uri"]
    table = report.pareto_table(rows, tracking_uri=uri, data_path=setup.cfg_dict["data"].get("path"))
    serve = "" if uri.startswith(("http://", "https://")) else f"  {ui_command(uri)}\n"
    tail = (f"\n\nMLflow UI (parent run {ctx.parent_run_id}; filter tags.pareto = 'true'):\n"
            f"{serve}  {experiment_url(ctx.tracker.experiment_id, uri)}")
    return head + table + tail


def process_seed(study_seed: int | None, n_existing: int, worker_index: int) -> int | None:
    """The sampler seed of this process: the study seed for the first worker of a fresh study (so a
    one-process study is reproducible), a distinct derived seed for resumed studies and other workers
    (a seeded sampler restarted with the same seed would propose the same first trials again)."""
    if study_seed is None:
        return None
    if n_existing == 0 and worker_index == 0:
        return int(study_seed)
    from search.worker import worker_id

    digest = hashlib.sha256(f"{study_seed}:{n_existing}:{worker_index}:{worker_id()}".encode()).hexdigest()
    return int(digest[:8], 16)


def open_study(setup: Setup, storage, worker_index: int = 0):
    import optuna

    cfg = setup.cfg_dict["study"]
    study = optuna.create_study(study_name=cfg["name"], storage=storage, directions=setup.directions,
                                load_if_exists=True)
    seed = process_seed(cfg["seed"], len(study.get_trials(deepcopy=False)), worker_index)
    return optuna.load_study(study_name=cfg["name"], storage=storage,
                             sampler=make_sampler(cfg["sampler"], seed, int(cfg["n_trials"])))


def _worker_process(argv: list[str], worker_index: int) -> None:
    """Entry point of a local worker process (``study.n_workers`` > 1): join the study and run trials."""
    import optuna

    from search.tracking import Tracker
    from search.worker import Context, run_trials

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    setup, storage = prepare(argv)
    cfg = setup.cfg_dict
    tracker = Tracker(cfg["mlflow"]["tracking_uri"], cfg["mlflow"]["experiment"], cfg["mlflow"]["artifact_location"])
    study = open_study(setup, storage, worker_index)
    ctx = Context(setup, study, tracker, study.user_attrs["mlflow_parent_run_id"], dict(study.user_attrs["reference"]))
    try:
        sys.exit(run_trials(ctx, progress=False))
    except KeyboardInterrupt:
        sys.exit(130)


def run_local_workers(ctx, argv: list[str], n_workers: int) -> int:
    """Start ``n_workers`` processes on this machine and follow the study until they are done.

    A worker that dies (killed, crashed) leaves its running trial behind: it is failed and re-queued here
    at once (every storage), or by the heartbeat check of the others (RDB storages).
    """
    import multiprocessing

    from tqdm.auto import tqdm

    from search.doctor import requeue
    from search.ledger import StudyLedger
    from search.worker import WORKER_ATTR, run_trials, worker_id

    spawn = multiprocessing.get_context("spawn")
    procs = [spawn.Process(target=_worker_process, args=(argv, i + 1), name=f"squeeze-worker-{i + 1}")
             for i in range(n_workers)]
    for p in procs:
        p.start()
    n_trials = int(ctx.setup.cfg_dict["study"]["n_trials"])
    bar = tqdm(total=n_trials, unit="trial", desc=f"{ctx.setup.cfg_dict['study']['name']} x{n_workers}",
               dynamic_ncols=True, file=sys.stderr)
    host = worker_id().split(":")[0]
    handled: set[int] = set()
    ledger = StudyLedger(ctx.study, ctx.setup.objectives)
    try:
        while True:
            complete, failed = ledger.update().finished
            bar.n = min(complete + failed, n_trials)
            bar.set_postfix_str(f"done {complete} failed {failed} pareto {ledger.pareto_size} "
                                f"workers {sum(p.is_alive() for p in procs)}")
            bar.refresh()
            for p in procs:
                if not p.is_alive() and p.exitcode not in (0, None) and p.pid not in handled:
                    handled.add(p.pid)
                    for t in ctx.study.get_trials(deepcopy=False):
                        if t.state.name == "RUNNING" and t.user_attrs.get(WORKER_ATTR) == f"{host}:{p.pid}":
                            requeue(ctx.study, t)
            if not any(p.is_alive() for p in procs):
                break
            time.sleep(1.0)
    except KeyboardInterrupt:
        for p in procs:
            p.join(timeout=30)
        raise
    finally:
        bar.close()
    codes = [p.exitcode for p in procs]
    # a worker that died while others finished the budget may have left a re-queued trial: run it here
    code = run_trials(ctx, progress=False)
    return code if code else (1 if 1 in codes else 0)


RESUME_HINT = "; run the same command again to resume the study"


def main(argv: list[str] | None = None) -> int:
    from search.cli import run_command

    return run_command("sweep", help_text, _sweep, argv, interrupted=RESUME_HINT)


def _sweep(argv: list[str]) -> int:
    """The sweep behind :func:`main` (help, InputError -> exit 2 and Ctrl-C -> exit 130 are the wrapper's).

    Once the parent run exists it is always ended: FINISHED (0), FAILED (1, or an unexpected error) or
    KILLED (Ctrl-C, also a second one during the summary); the end itself holds off Ctrl-C."""
    setup, storage = prepare(argv)
    import optuna

    from search.cli import deferred_sigint
    from search.tracking import Tracker

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = setup.cfg_dict
    tracker = Tracker(cfg["mlflow"]["tracking_uri"], cfg["mlflow"]["experiment"], cfg["mlflow"]["artifact_location"])
    study = open_study(setup, storage)
    seed_with_recipes(study, setup)
    with deferred_sigint():  # a run created but not yet recorded as the study's would be left RUNNING
        parent = open_parent_run(tracker, study, setup)
    try:
        code = _run_study(tracker, study, setup, parent, argv)
    except KeyboardInterrupt:
        with deferred_sigint():
            tracker.end_run(parent, "KILLED")
        raise
    except BaseException:
        with deferred_sigint():
            tracker.end_run(parent, "FAILED")
        raise
    with deferred_sigint():
        tracker.end_run(parent, "FINISHED" if code == 0 else ("KILLED" if code == 130 else "FAILED"))
    return code


def _run_study(tracker, study, setup: Setup, parent: str, argv: list[str]) -> int:
    """Reference, trials, summary (and registration) under the open parent run; the exit code."""
    from search.worker import Context, run_trials

    cfg = setup.cfg_dict
    try:
        reference = ensure_reference(tracker, study, setup, parent)
    except Exception as err:  # the reference uses the study's own training config: report, don't trace
        tracker.log(parent, tags={names.ERROR: f"reference failed: {err}"})
        print(f"squeeze: error: the fp32 reference (train.*, model.*, data.* without compression) failed: "
              f"{type(err).__name__}: {err}", file=sys.stderr)
        return 1
    ctx = Context(setup, study, tracker, parent, reference)
    n_workers = int(cfg["study"]["n_workers"])
    try:
        code = run_local_workers(ctx, argv, n_workers) if n_workers > 1 else run_trials(ctx)
    except KeyboardInterrupt:
        code = 130
        print(f"\nsqueeze: interrupted{RESUME_HINT}", file=sys.stderr)
    try:
        print(summarize(ctx))
    except KeyboardInterrupt:
        if code != 130:
            raise
        # a second Ctrl-C while the table and plots are written: skip the rest, still end the run KILLED
        print(f"squeeze: interrupted again: summary skipped (python -m search.pareto "
              f"study.name={cfg['study']['name']} prints the table)", file=sys.stderr)
        return 130
    if cfg["mlflow"]["register"] and code != 130:  # final-fit the Pareto trials, register them (docs/reproduce.md)
        from search.final import register_front

        code = register_front(tracker, study, setup.objectives, setup.dataset, cfg["mlflow"]["registry_name"]) or code
    return code


if __name__ == "__main__":
    sys.exit(main())
