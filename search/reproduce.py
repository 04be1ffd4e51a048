"""``python -m search.reproduce``: get a trial of a study back, check its numbers, ship its final model.

Two modes, two MLflow runs, never mixed:

* **reproduce** (default): downloads the trial's resolved ``config.yaml``, rebuilds the study's data split
  and CV folds from it (and checks them against the study's ``split.json``), re-runs the same k-fold CV
  (same fold seeds, same artifact meta, each fold scored on the runtime it was scored on in the study) and
  prints logged vs reproduced metrics. Accuracy, its std and size_bytes must match exactly; latency within
  ``latency_rel_tol`` (default 50 %) or ``latency_abs_tol_ms`` (default 0.1 ms), since latency on a shared
  CPU is noisy. Exit 0 when it reproduces, 1 when it does not (the difference is printed). Logs a run with
  ``role=reproduce``, ``reproduces=<trial run id>``, nested under the study's parent run.
* **final=true**: the final fit and the Model Registry, :mod:`search.final` (``test_*`` metrics on the
  held-out TEST split, a ``role=final`` run holding ``model.sqz``; ``register=true`` registers it).

Reading the trial's record (MLflow run, config, split) is :mod:`search.record`; this module re-runs the CV
and holds the command.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search import names
from search.config import parse_key_values
from search.final import print_final, run_final
from search.record import (
    NotReproduced,
    StudyData,
    TrialRecord,
    find_trial,
    new_run,
    record_tracker,
    study_data,
)
from trainers.errors import InputError

__all__ = ["main", "Check", "cross_validate", "compare", "run_reproduce", "parse_args", "LATENCY_REL_TOL",
           "LATENCY_ABS_TOL_MS"]

USAGE = """\
usage: python -m search.reproduce run_id=<mlflow run id> [key=value ...]
       python -m search.reproduce study.name=<name> trial=<n> [key=value ...]

Re-runs a trial's k-fold CV from what the study logged and prints logged vs reproduced metrics
(accuracy, accuracy_std and size_bytes must match exactly; latency within a tolerance). With final=true,
trains the trial's config on all development rows instead and reports its TEST-split numbers (test_*),
logging the artifact model.sqz.

keys:
  run_id=<id>                 the trial's MLflow run id (python -m search.pareto lists them)
  study.name=<name> trial=<n> or the study and trial number (looked up in the Optuna storage)
  mlflow.tracking_uri=<uri>   default: the one of conf/sweep.yaml (sqlite:///mlruns/mlflow.db)
  study.storage=<url>         Optuna storage for study.name lookups (default sqlite:///mlruns/optuna.db)
  data.path=<file>            where the csv/npz data file is now, if it moved since the sweep
  latency_rel_tol=0.5         reproduce: latency passes within this relative difference ...
  latency_abs_tol_ms=0.1      ... or within this many milliseconds
  final=true                  fit on all development rows, score the test split, log model.sqz
  register=true               with final=true: register the final model in the MLflow Model Registry
  registry_name=<name>        registered model name (default: the study's mlflow.registry_name,
                              else squeeze-<study name>)

exit codes: 0 reproduced (or final fit done), 1 not reproduced (difference shown), 2 bad input
"""

#: latency passes when within this relative difference of the logged value ...
LATENCY_REL_TOL = 0.5

#: ... or within this absolute difference in milliseconds (tiny models time in microseconds; a sweep times
#: each fold interleaved with the fp32 reference, which adds tens of microseconds a lone reproduction lacks)
LATENCY_ABS_TOL_MS = 0.1

#: metrics that must match exactly (deterministic training, same split, same folds, same file)
EXACT = (names.ACCURACY, names.ACCURACY_STD, names.SIZE_BYTES)

KEYS = ("run_id", "study.name", "trial", "mlflow.tracking_uri", "study.storage", "data.path",
        "latency_rel_tol", "latency_abs_tol_ms", "final", "register", "registry_name")


# --- arguments ---------------------------------------------------------------------------------------

def parse_args(argv: Sequence[str], keys: Sequence[str] = KEYS) -> dict[str, str]:
    """``key=value`` pairs of ``keys`` (default: this command's); see :func:`search.config.parse_key_values`."""
    return parse_key_values(argv, keys)


def flag(args: Mapping[str, str], key: str) -> bool:
    value = args.get(key, "false").strip().lower()
    if value not in ("true", "false"):
        raise InputError(key, f"must be true or false, got {value!r}")
    return value == "true"


def number(args: Mapping[str, str], key: str, default: float) -> float:
    try:
        value = float(args.get(key, default))
    except ValueError:
        raise InputError(key, f"must be a number, got {args[key]!r}") from None
    if not math.isfinite(value) or value < 0:
        raise InputError(key, f"must be a number >= 0, got {args[key]!r}")
    return value


# --- reproduce: the same CV --------------------------------------------------------------------------

def trial_meta(record: TrialRecord, dataset: Any) -> dict[str, Any]:
    """The artifact meta the sweep wrote for this trial's fold files (it is part of size_bytes)."""
    return {"classes": dataset.classes, "study": record.study_name, "trial": record.trial_number}


def cross_validate(record: TrialRecord, data: StudyData, workdir: Path) -> tuple[dict[str, float], list[str]]:
    """The trial's CV again, with :func:`search.objective.evaluate_config` as the sweep ran it, each fold
    scored on its recorded runtime; returns (metrics, runtime of each fold)."""
    from search.objective import evaluate_config

    ds = data.dataset
    runtimes = list(record.fold_runtimes) or [record.runtime]    # older records: fold 0's runtime only
    ev = evaluate_config(data.trainer_config(record.cfg), ds.X[data.dev_idx], ds.y[data.dev_idx], data.folds,
                         workdir,
                         meta=trial_meta(record, ds), runtimes=runtimes)
    return dict(ev.metrics), list(ev.runtimes)


@dataclass
class Check:
    metric: str
    logged: float | None
    reproduced: float
    rule: str
    ok: bool

    @property
    def difference(self) -> float:
        return float("nan") if self.logged is None else self.reproduced - self.logged


def compare(logged: Mapping[str, float], reproduced: Mapping[str, float], rel_tol: float = LATENCY_REL_TOL,
            abs_tol_ms: float = LATENCY_ABS_TOL_MS) -> list[Check]:
    """Exact checks for :data:`EXACT`, the latency tolerance for ``latency_ms``."""
    checks = []
    for m in EXACT:
        got = logged.get(m)
        checks.append(Check(m, got, reproduced[m], "exact", got is not None and got == reproduced[m]))
    got, new = logged.get(names.LATENCY_MS), reproduced[names.LATENCY_MS]
    ok = got is not None and (abs(new - got) <= abs_tol_ms or abs(new - got) <= rel_tol * abs(got))
    checks.append(Check(names.LATENCY_MS, got, new, f"±{rel_tol:.0%} or ±{abs_tol_ms:g} ms", ok))
    return checks


def format_checks(checks: Sequence[Check]) -> str:
    def fmt(v: float | None) -> str:
        return "-" if v is None else f"{v:.10g}"

    lines = [f"{'metric':<14}{'logged':>18}{'reproduced':>18}{'difference':>14}  {'rule':<22}result"]
    for c in checks:
        diff = "-" if c.logged is None else f"{c.difference:+.4g}"
        lines.append(f"{c.metric:<14}{fmt(c.logged):>18}{fmt(c.reproduced):>18}{diff:>14}  {c.rule:<22}"
                     f"{'ok' if c.ok else 'DIFFERS'}")
    return "\n".join(lines)


def run_reproduce(record: TrialRecord, data: StudyData, rel_tol: float, abs_tol_ms: float) -> int:
    """Re-run the CV, print the comparison, log the reproduce run; returns the exit code."""
    tracker = record_tracker(record)
    run_id = new_run(tracker, record, "reproduce")
    print(f"reproducing trial {record.trial_number} of study {record.study_name!r} (run {record.run_id}): "
          f"{len(data.folds)}-fold CV on the {len(data.dev_idx)} development rows; the split matches the "
          f"study's {names.SPLIT_ARTIFACT}", flush=True)
    try:
        with tempfile.TemporaryDirectory(prefix="squeeze-reproduce-") as tmp:
            metrics, runtimes = cross_validate(record, data, Path(tmp))
    except BaseException:
        tracker.end_run(run_id, "FAILED")
        raise
    checks = compare(record.logged, metrics, rel_tol, abs_tol_ms)
    ok = all(c.ok for c in checks)
    tracker.log(run_id, metrics=metrics, tags={names.REPRODUCED: str(ok).lower(),
                                               names.FOLD_RUNTIMES: json.dumps(runtimes)})
    tracker.end_run(run_id, "FINISHED" if ok else "FAILED")
    print(format_checks(checks))
    if ok:
        print(f"reproduced: accuracy and size_bytes match exactly, latency within tolerance (MLflow run {run_id})")
        return 0
    bad = "; ".join(f"{c.metric} logged {c.logged!r}, reproduced {c.reproduced!r} (difference {c.difference:+.6g}, "
                    f"{c.rule})" for c in checks if not c.ok)
    print(f"squeeze: NOT reproduced: {bad} (MLflow run {run_id})", file=sys.stderr)
    return 1


# --- the command -------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    from search.cli import run_command

    return run_command("reproduce", USAGE, _reproduce, argv)


def _reproduce(argv: list[str]) -> int:
    args = parse_args(argv)
    final, register = flag(args, "final"), flag(args, "register")
    rel_tol = number(args, "latency_rel_tol", LATENCY_REL_TOL)
    abs_tol = number(args, "latency_abs_tol_ms", LATENCY_ABS_TOL_MS)
    if register and not final:
        raise InputError("register", "needs final=true (the registry holds final models)")
    try:
        record = find_trial(args)
        data = study_data(record)
    except NotReproduced as err:
        print(f"squeeze: NOT reproduced: {err}", file=sys.stderr)
        return 1
    if final:
        result = run_final(record, data, register=register, name=args.get("registry_name") or None)
        print_final(record, data, result)
        return 0
    return run_reproduce(record, data, rel_tol, abs_tol)


if __name__ == "__main__":
    sys.exit(main())
