"""A finished ``search.sweep`` study as a results JSON for ``benchmarks/render.py``'s ``seqrec_study`` renderer.

    PYTHONPATH=. python benchmarks/study_json.py --storage sqlite:////tmp/s20k/optuna.db \\
        --tracking-uri sqlite:////tmp/s20k/mlflow.db --study shop20k-lastpos \\
        --command "PYTHONPATH=. python -m search.sweep ..." --out benchmarks/results/seqrec_study_20000.json

Reads only (nothing is written to the study or its MLflow runs) and writes the format of
``benchmarks/results/seqrec_study_5000.json``: the command, the fp32 reference (study user attr ``reference``),
its runtime (parent run tag ``reference_runtime``), fold artifacts and A/A noise floor (study user attrs
``reference_artifacts``, ``latency_noise``), the long reference, every metric of the study's MLflow parent run,
the number of complete trials, the fastest trial within 1 pt of the reference's HR@10 (and the fastest Pareto
one), and every trial: COMPLETE trials with their params, metrics (user attr ``metrics``), recipe, runtime (run
tag) and Pareto flag; other states as ``{"number", "state"}``. Two keys are added to that format:
``n_pareto`` (how many trials are flagged) and each complete trial's ``shrink_of`` (the trial a shrink step
started from, else null); the renderer ignores them.

The Pareto flags are the study's own: the trial runs' ``pareto`` tags, which the sweep's summary writes
(:func:`search.report.tag_runs`) from :func:`search.report.collect`, the same rows its parent metric
``n_pareto`` counts (the front with latencies tied within the A/A noise floor, :func:`search.ledger.pareto_mask`).
Optuna's ``study.best_trials`` (strict dominance, no ties) is not the study's front. When the summary has not run
yet (no parent ``n_pareto``), the flags come from :func:`search.report.collect` directly; a disagreement between
the tags and ``collect`` is reported on stderr.

Errors (no such storage, study, parent run or reference) are one line on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))     # the `search` package, not benchmarks/search.py beside this file

from search import names  # noqa: E402

#: the fastest trial within this many points of the reference's accuracy (the parent run's description's rule)
WITHIN_PT = 1.0


class StudyJsonError(Exception):
    """Bad input: printed as one line."""


def _open_study(storage: str, study_name: str) -> Any:
    """The Optuna study, read through the project's storage opener (a missing SQLite file is an error, not a
    new empty storage)."""
    import optuna

    from search.storage import open_storage
    from trainers.errors import InputError

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        opened = open_storage(storage, must_exist=True)
    except InputError as err:
        raise StudyJsonError(str(err)) from None
    try:
        return optuna.load_study(study_name=study_name, storage=opened)
    except KeyError:
        known = [s.study_name for s in optuna.get_all_study_summaries(opened)]
        raise StudyJsonError(f"no study {study_name!r} in {storage}; studies: {', '.join(known) or 'none'}") from None


def _client(tracking_uri: str) -> Any:
    """An MLflow client on an existing tracking store (a missing SQLite file is an error, not a new store)."""
    from mlflow import MlflowClient

    if tracking_uri.startswith("sqlite:///"):
        path = Path(tracking_uri[len("sqlite:///"):].split("?", 1)[0])
        if not path.is_file():
            raise StudyJsonError(f"no MLflow tracking database {str(path)!r}")
    return MlflowClient(tracking_uri)


def _trial_runs(client: Any, experiment_id: str, study_name: str) -> dict[str, Any]:
    """The study's trial runs by run id (every page)."""
    runs: dict[str, Any] = {}
    token = None
    flt = f"tags.{names.STUDY_NAME} = '{study_name}' and tags.{names.ROLE} = 'trial'"
    while True:
        page = client.search_runs([experiment_id], filter_string=flt, max_results=5000, page_token=token)
        runs.update((r.info.run_id, r) for r in page)
        token = page.token
        if not token:
            return runs


def _objectives(parent: Any) -> list[str]:
    """The study's objectives as its parent run records them (param ``study.objectives``), else the default."""
    logged = parent.data.params.get("study.objectives")
    if logged:
        return [o.strip() for o in logged.split(",") if o.strip()]
    from search.config import compose

    return list(compose([]).study.objectives)


def _trial_row(row: Any, trial: Any, tags: dict[str, str], reference: dict[str, float]) -> dict[str, Any]:
    """One trial as the results file lists it."""
    from search.recipes import RECIPE_ATTR
    from search.shrink import SHRINK_ATTR

    if row.state != "COMPLETE":
        return {"number": row.number, "state": row.state}
    m = row.metrics
    ci = [m.get(names.SPEEDUP_CI_LOW), m.get(names.SPEEDUP_CI_HIGH)]
    return {"number": row.number, "state": row.state, "pareto": row.pareto,
            "recipe": trial.user_attrs.get(RECIPE_ATTR) or tags.get(names.RECIPE) or None,
            "runtime": tags.get(names.RUNTIME), "params": row.params,
            "hr": m.get(names.ACCURACY), "hr_vs_fp32_pt": 100 * (m[names.ACCURACY] - reference[names.ACCURACY])
            if names.ACCURACY in m else None,
            "size_bytes": m.get(names.SIZE_BYTES), "latency_ms": m.get(names.LATENCY_MS),
            "speedup": m.get(names.SPEEDUP), "speedup_ci": ci, "folds_run": m.get(names.FOLDS_RUN),
            "shrink_of": trial.user_attrs.get(SHRINK_ATTR, tags.get(names.SHRINK_OF))}


def build(storage: str, tracking_uri: str, study_name: str, command: str) -> dict[str, Any]:
    """The results dict of study ``study_name`` (see the module docstring)."""
    from search import report

    study = _open_study(storage, study_name)
    attrs = study.user_attrs
    reference = dict(attrs.get("reference") or {})
    if names.ACCURACY not in reference:
        raise StudyJsonError(f"study {study_name!r} has no fp32 reference yet (study user attr 'reference')")
    parent_id = attrs.get("mlflow_parent_run_id")
    if not parent_id:
        raise StudyJsonError(f"study {study_name!r} has no MLflow parent run (study user attr 'mlflow_parent_run_id')")
    client = _client(tracking_uri)
    try:
        parent = client.get_run(parent_id)
    except Exception as err:  # MlflowException: not in this store
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise StudyJsonError(f"parent run {parent_id} of study {study_name!r} not in {tracking_uri}: {first}") from None
    runs = _trial_runs(client, parent.info.experiment_id, study_name)

    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    rows = report.collect(study, _objectives(parent))
    run_tags = {r.number: dict(runs[r.run_id].data.tags) if r.run_id in runs else {} for r in rows}
    tagged = {r.number for r in rows if run_tags[r.number].get(names.PARETO) == "true"}
    computed = {r.number for r in rows if r.pareto}
    summarized = names.N_PARETO in parent.data.metrics
    if summarized:
        if tagged != computed:
            print(f"study_json: warning: the runs' pareto tags {sorted(tagged)} differ from search.report.collect's "
                  f"front {sorted(computed)}; using the tags", file=sys.stderr)
        for r in rows:
            r.pareto = r.number in tagged
    else:
        print("study_json: warning: the study has no summary yet (no parent n_pareto): Pareto flags from "
              "search.report.collect", file=sys.stderr)
    n_pareto = sum(r.pareto for r in rows)
    logged = parent.data.metrics.get(names.N_PARETO)
    if logged is not None and int(logged) != n_pareto:
        print(f"study_json: warning: parent metric n_pareto {logged:g} != {n_pareto} flagged trials", file=sys.stderr)

    out_rows = [_trial_row(r, trials[r.number], run_tags[r.number], reference)
                for r in sorted(rows, key=lambda r: r.number)]
    feasible = {r.number for r in rows if r.feasible}
    ref_acc = reference[names.ACCURACY]
    within = [t for t in out_rows if t["state"] == "COMPLETE" and t["number"] in feasible and t["speedup"] is not None
              and t["hr"] is not None and t["hr"] >= ref_acc - WITHIN_PT / 100]
    best = max(within, key=lambda t: t["speedup"], default=None)
    best_pareto = max((t for t in within if t["pareto"]), key=lambda t: t["speedup"], default=None)
    return {
        "command": command, "study": study_name, "reference": reference,
        "reference_runtime": parent.data.tags.get("reference_runtime"),
        "reference_artifacts": attrs.get("reference_artifacts"),
        "latency_noise_a_a": attrs.get(names.LATENCY_NOISE),
        "reference_long_accuracy": attrs.get(names.REFERENCE_LONG_ACCURACY,
                                             parent.data.metrics.get(names.REFERENCE_LONG_ACCURACY)),
        "parent_metrics": dict(parent.data.metrics),
        "n_complete": sum(r.state == "COMPLETE" for r in rows),
        "n_pareto": n_pareto,
        "best_speedup_within_1pt": best, "best_pareto_speedup_within_1pt": best_pareto,
        "trials": out_rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--storage", required=True, help="Optuna storage URL of the study")
    parser.add_argument("--tracking-uri", required=True, help="MLflow tracking URI of the study's runs")
    parser.add_argument("--study", required=True, help="study name (study.name of the sweep)")
    parser.add_argument("--command", required=True, help="the sweep command line, recorded as is")
    parser.add_argument("--out", required=True, type=Path, help="results JSON to write")
    args = parser.parse_args(argv)
    try:
        data = build(args.storage, args.tracking_uri, args.study, args.command)
    except StudyJsonError as err:
        print(f"study_json: error: {err}", file=sys.stderr)
        return 2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1, default=str))
    best = data["best_speedup_within_1pt"]
    print(f"{args.out}: {len(data['trials'])} trials, {data['n_complete']} complete, {data['n_pareto']} Pareto; "
          f"fastest within {WITHIN_PT:g} pt: " + (f"trial {best['number']}, {best['speedup']:.2f}x" if best else "none"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
