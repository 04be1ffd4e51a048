"""Fixed-budget studies on digits with TPE and with random sampling (same seeds), compared.

    PYTHONPATH=. python benchmarks/search.py --out benchmarks/results/search.json [--trials 30] [--seeds 0]
    PYTHONPATH=. python benchmarks/search.py --out benchmarks/results/search_wallclock.json --wallclock 60

``--wallclock SECONDS`` runs the wall-clock comparison of issue "the search must beat the expert recipe"
instead (see :func:`wallclock`).

For each (sampler, seed) it runs ``python -m search.sweep``'s own ``main`` (real storage, real MLflow, real
training) into a temporary folder and records, from the study:

* ``best_ratio_at_0.5pt``: highest compression ratio among trials within 0.5 accuracy points of the fp32
  reference (CV accuracy);
* ``best_speedup_at_1pt``: highest latency speedup within 1 point;
* ``hypervolume``: of (accuracy, log2 of size / reference size, log2 of latency / reference latency), reference
  point (0, log2 1.5, log2 1.5) — the same normalisation and point for every study (the first study's reference
  values), as the study summary computes it (search.report.hypervolume_of); ``hypervolume_linear``: the same on
  linear size and latency axes, reference point (0, 1.5, 1.5), as this benchmark reported it before;
* ``hypervolume_paired``: the same as ``hypervolume`` with each trial's latency read off its paired speedup
  (``latency / reference latency = 1 / speedup``, timed against the study's own fp32 reference in alternating
  blocks, so machine load cancels out). The plain ``hypervolume`` divides each study's absolute latencies by the
  *first* study's reference latency: a study that ran while the machine was busier (or whose first
  measurement read high) loses volume on the latency axis for that alone — 15% between two studies of the same
  dataset in one run — which is why the wall-clock comparison reports the paired one beside it;
* ``hypervolume_above_chance``: the paired one with accuracy counted from the chance level (the accuracy of
  always predicting the most frequent class of the development rows, what a model of 0 bytes scores) instead of
  from 0, so trials at or below chance add nothing. Counted from 0, a box from 0 to chance accuracy under every
  front is common to all studies (63% of the accuracy axis on breast_cancer) and pulls every ratio of two
  volumes towards 1; this is a different metric from ``hypervolume``, reported beside it, not instead;
* ``points``: each finished or pruned trial as ``[number, state, accuracy, size_bytes, latency_ms, speedup]``,
  so that any other measure of the front can be computed from the result file later;
* ``overhead_share``: share of trial wall time outside training, packing and evaluation (sampling, storage,
  MLflow logging): ``1 - sum(folds * (fit_seconds + pack_seconds + eval_seconds)) / sum(trial_seconds)``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._config import space_without  # noqa: E402


def run_study(label: str, seed: int, trials: int, folds: int, workdir: Path, extra: list[str]) -> dict:
    """``search.sweep.main`` on a fresh store in ``workdir``; ``label`` names the study (a sampler name
    for the fixed-budget comparison, a mode for the wall-clock one); later overrides in ``extra`` win."""
    import optuna

    from search import names
    from search.report import collect
    from search.sweep import main

    name = f"bench-{label}-{seed}"
    storage = f"sqlite:///{workdir}/optuna.db"
    args = [f"study.name={name}", f"study.seed={seed}", f"seed={seed}",
            f"study.n_trials={trials}", f"cv.folds={folds}", f"study.storage={storage}",
            f"mlflow.tracking_uri=sqlite:///{workdir}/mlflow.db", f"mlflow.artifact_location={workdir}/art",
            "study.max_failure_rate=1.0", *extra]
    start = time.perf_counter()
    code = main(args)
    optuna.load_study(study_name=name, storage=storage).set_user_attr("bench_argv", json.dumps(args))
    wall = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"study {name} exited with {code}")
    study = optuna.load_study(study_name=name, storage=storage)
    rows = collect(study, [names.ACCURACY, names.SIZE_BYTES, names.LATENCY_MS])
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    for r in rows:  # trial_seconds is logged after tell(), so it lives in MLflow only
        if r.run_id:
            r.metrics.setdefault(names.TRIAL_SECONDS, client.get_run(r.run_id).data.metrics.get(names.TRIAL_SECONDS, 0.0))
    from search.recipes import RECIPE_ATTR
    from search.sweep import prepare

    setup, _ = prepare(args)       # the study's own development rows: the chance level of its accuracy
    chance = setup.task.chance_accuracy(setup.dataset.y[setup.dev_idx])
    return {"sampler": label, "seed": seed, "name": name, "wall_seconds": wall, "chance_accuracy": chance,
            "reference": dict(study.user_attrs["reference"]), "rows": rows,
            "recipe_of": {t.number: t.user_attrs[RECIPE_ATTR] for t in study.trials if RECIPE_ATTR in t.user_attrs}}


def paired_hypervolume(rows, objectives, reference: dict) -> float:
    """:func:`search.report.hypervolume_of` with each trial's latency replaced by ``reference latency / paired
    speedup`` (its latency relative to the fp32 model timed beside it; trials without a paired speedup keep
    their measured latency)."""
    from dataclasses import replace

    from search import names
    from search.report import hypervolume_of

    def paired(r):
        speedup = r.metrics.get(names.SPEEDUP)
        if names.LATENCY_MS not in r.values or not speedup:
            return r
        return replace(r, values={**r.values, names.LATENCY_MS: reference[names.LATENCY_MS] / speedup})

    return hypervolume_of([paired(r) for r in rows], objectives, reference)


def above_chance_hypervolume(rows, objectives, reference: dict, chance: float | None) -> float | None:
    """:func:`paired_hypervolume` with accuracy counted from ``chance`` instead of 0 (a trial at or below it
    adds nothing); ``None`` when the task has no chance level."""
    from dataclasses import replace

    from search import names

    if chance is None:
        return None
    shifted = [replace(r, values={**r.values, names.ACCURACY: r.values[names.ACCURACY] - chance})
               if names.ACCURACY in r.values else r for r in rows]
    return paired_hypervolume(shifted, objectives, reference)


def trial_points(rows) -> list[list]:
    """``[number, state, accuracy, size_bytes, latency_ms, speedup]`` of every finished or pruned trial."""
    from search import names

    return [[r.number, r.state, *(r.metrics.get(k) for k in (names.ACCURACY, names.SIZE_BYTES, names.LATENCY_MS,
                                                              names.SPEEDUP))]
            for r in rows if r.state in ("COMPLETE", "PRUNED")]


def points_hypervolume(points: list[list], reference_size: float, latency: bool = True) -> float:
    """:func:`paired_hypervolume` of a study's stored ``points`` (:func:`trial_points`; COMPLETE ones count),
    on axes relative to its own fp32 reference: size over ``reference_size``, latency as ``1 / paired speedup``.
    Points of studies with different reference timings can be pooled this way. ``latency=False``: the volume
    on (accuracy, size) alone."""
    from search import names
    from search.report import hypervolume_of_values

    objectives = [names.ACCURACY, names.SIZE_BYTES] + ([names.LATENCY_MS] if latency else [])
    values = [[acc, size / reference_size] + ([1.0 / speedup] if latency else [])
              for _, state, acc, size, _, speedup in points if state == "COMPLETE" and speedup]
    return hypervolume_of_values(values, objectives, dict.fromkeys(objectives, 1.0))


#: the volumes front_bound reports: the paired one of the wall-clock comparison, and the same on (accuracy, size)
#: alone, which the run-to-run noise of the speedups does not move
BOUND_MEASURES = {"paired": True, "accuracy_size": False}


def front_bound(studies: list[dict]) -> dict:
    """How much volume any search found on the same folds: per (space, dataset, seed), the volume
    (:func:`points_hypervolume`, each of :data:`BOUND_MEASURES`) of the union of every stored trial of every
    study (every mode and budget, from all the result files given) beside each study's own; per (space,
    dataset) and mode, means over the seeds the mode ran and the union's volume over the mode's. A seed fixes
    the folds, the fp32 reference and (for the generated dataset) the data, so points are pooled only within a
    seed.

    The union is the best front seen, not the best there is, and it flatters itself: each point is the best of
    several noisy fold means (and, on the latency axis, of noisy speedup readings)."""
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    volumes = lambda pts: {m: points_hypervolume(pts, 1.0, lat) for m, lat in BOUND_MEASURES.items()}  # noqa: E731
    groups: dict[tuple, dict] = {}
    for s in studies:
        if not s.get("points"):
            continue
        g = groups.setdefault((s["space"], s["dataset"], s["seed"]), {"points": [], "modes": {}, "seen": set()})
        pts = [[n, state, acc, size / s["reference_size_bytes"], latency, speedup]
               for n, state, acc, size, latency, speedup in s["points"]]
        label = f"{s['mode']}@{s['budget_seconds']:g}s"
        key = (label, json.dumps(pts))
        if key in g["seen"]:
            continue                                  # a study copied into a second result file counts once
        g["seen"].add(key)
        g["points"] += pts
        g["modes"].setdefault(label, []).append(volumes(pts))
    out: dict = {}
    for (space, dataset, seed), g in sorted(groups.items(), key=lambda kv: tuple(map(str, kv[0]))):
        cell = out.setdefault(f"{space}/{dataset}", {"seeds": {}})
        cell["seeds"][str(seed)] = {"union": volumes(g["points"]),
                                    "n_points": sum(p[1] == "COMPLETE" for p in g["points"]),
                                    "modes": {m: {k: mean([v[k] for v in vs]) for k in BOUND_MEASURES}
                                              for m, vs in g["modes"].items()}}
    for cell in out.values():
        seeds = cell["seeds"]
        cell["modes"] = {}
        for m in sorted({m for s in seeds.values() for m in s["modes"]}):
            # over the seeds this mode ran, so a seed run by one mode only does not tilt another's ratio
            ran = {k: s for k, s in seeds.items() if m in s["modes"]}
            entry: dict = {"seeds": list(ran)}
            for k in BOUND_MEASURES:
                volume = mean([s["modes"][m][k] for s in ran.values()])
                union = mean([s["union"][k] for s in ran.values()])
                entry[k] = {"volume": volume, "union": union, "union_over": union / volume if volume else None}
            cell["modes"][m] = entry
    return out


def summarize(study: dict, reference: dict, folds: int) -> dict:
    from search import names
    from search.report import hypervolume_of

    done = [r for r in study["rows"] if r.state == "COMPLETE"]
    ref_acc = study["reference"][names.ACCURACY]
    within = lambda pts: [r for r in done if r.metrics[names.ACCURACY] >= ref_acc - pts / 100]  # noqa: E731
    best_ratio = max((r.metrics[names.COMPRESSION_RATIO] for r in within(0.5)), default=None)
    best_speedup = max((r.metrics[names.SPEEDUP] for r in within(1.0)), default=None)
    work = sum(folds * (r.metrics[names.FIT_SECONDS] + r.metrics.get(names.PACK_SECONDS, 0.0)
                         + r.metrics[names.EVAL_SECONDS]) for r in done)
    wall = sum(r.metrics.get(names.TRIAL_SECONDS, 0.0) for r in done)
    best = max(done, key=lambda r: (r.metrics[names.ACCURACY] >= ref_acc - 0.005, r.metrics[names.COMPRESSION_RATIO]),
               default=None)
    return {
        "sampler": study["sampler"], "seed": study["seed"], "n_complete": len(done),
        "n_failed": sum(r.state == "FAIL" for r in study["rows"]), "wall_seconds": round(study["wall_seconds"], 1),
        "reference_accuracy": ref_acc, "reference_size_bytes": study["reference"][names.SIZE_BYTES],
        "reference_latency_ms": study["reference"][names.LATENCY_MS],
        "best_ratio_at_0.5pt": best_ratio, "best_speedup_at_1pt": best_speedup,
        "hypervolume": hypervolume_of(study["rows"], [names.ACCURACY, names.SIZE_BYTES, names.LATENCY_MS], reference),
        "hypervolume_linear": hypervolume_of(study["rows"], [names.ACCURACY, names.SIZE_BYTES, names.LATENCY_MS],
                                             reference, log_minimized=False),
        "overhead_share": (1 - work / wall) if wall else None,
        "n_pareto": sum(r.pareto for r in study["rows"]),
        "best_ratio_trial_params": best.params if best else None,
        # each seed recipe's ratio (None: it finished outside 0.5 pt, or did not finish)
        "ratio_at_0.5pt_by_recipe": {name: next((r.metrics[names.COMPRESSION_RATIO] for r in within(0.5)
                                                 if r.number == number), None)
                                     for number, name in study.get("recipe_of", {}).items()},
    }


# --- the wall-clock comparison ---------------------------------------------------------------------------

#: the four ways to spend the same wall-clock budget; each maps to sweep overrides (and a space filter)
MODES = {
    "recipes": ["study.seed_recipes=[int8,deep_compression,twn,neurons_lowbit,sparse_int8,aggressive]",
                "study.n_trials=6", "study.early_stop=false", "study.timeout=null"],   # all six, however long
    "random": ["study.sampler=random", "study.seed_recipes=[]", "study.base_cache=false", "study.early_stop=false",
               "study.shrink_every=0"],
    "tpe_before": ["study.sampler=tpe", "study.seed_recipes=[]", "study.base_cache=false", "study.early_stop=false",
                   "study.shrink_every=0"],
    "default": [],
    "default_no_shrink": ["study.shrink_every=0"],   # the default as it was before shrink steps
    "default_shrink2": ["study.shrink_every=2"],     # every second trial a shrink step
    "default_shrink3": ["study.shrink_every=3"],     # every third trial a shrink step
    "default_one_level": ["study.shrink_levels=1"],  # shrink steps at shrink_tolerance only (before the levels)
    # the default with another sampler (issue 9 item 5: which sampler fits the budget)
    "default_gp": ["study.sampler=gp"],
    "default_nsga2": ["study.sampler=nsga2"],
    "default_random": ["study.sampler=random"],
}
#: the four modes of the done-means comparison (the sampler variants run with --modes)
MAIN_MODES = ["recipes", "random", "tpe_before", "default"]
#: keys the space samples only since the fine-tune budget (and the grid granularity) became searchable; "tpe_before"
#: leaves them out,
#: as the space was before (the fine-tune then is the config's: 5 epochs at train.lr)
NEW_SPACE_KEYS = ("compress.finetune_epochs", "compress.finetune_lr", "compress.quant.granularity")


def synthetic_csv(path: Path, seed: int) -> Path:
    """A 6-class tabular problem that no one tuned on: 1,800 rows, 30 features (12 informative), made with
    scikit-learn at benchmark time (not a file in the repository)."""
    import numpy as np
    import pandas as pd
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=1800, n_features=30, n_informative=12, n_redundant=6, n_classes=6,
                               n_clusters_per_class=2, class_sep=1.2, flip_y=0.01, random_state=1000 + seed)
    frame = pd.DataFrame(X.astype(np.float32), columns=[f"f{i}" for i in range(X.shape[1])])
    frame["label"] = y
    frame.to_csv(path, index=False)
    return path


def dataset_overrides(name: str, workdir: Path) -> list[str]:
    if name == "synthetic":
        return ["data=csv", f"data.path={synthetic_csv(workdir / 'synthetic.csv', 0)}", "data.target=label"]
    return [f"data={name}"]


def wallclock_study(mode: str, dataset: str, space: str, seed: int, budget: float, folds: int, workdir: Path,
                    extra: list[str]) -> dict:
    """One study of ``mode`` with ``budget`` seconds of wall-clock (``study.timeout``, counted from the
    command's start, fp32 references included)."""
    overrides = [*dataset_overrides(dataset, workdir), f"space={space}", f"study.timeout={budget}",
                 *MODES[mode], *extra]
    if space == "compress_only":
        overrides += ["model.hidden=[300,100]", "model.width=1.0"]
    with space_without(NEW_SPACE_KEYS if mode == "tpe_before" else ()):
        study = run_study(mode, seed, 10000, folds, workdir, overrides)
    study.update(mode=mode, dataset=dataset, space=space)
    return study


def full_cv_of_pruned(study_name: str, workdir: Path, rows, objectives) -> int:
    """How many PRUNED trials would have been on the final front had they run every fold (the rule's
    wrong prunes): each pruned trial's config is re-run on all folds and added to the finished trials."""
    import numpy as np
    import optuna
    from omegaconf import OmegaConf

    from search import names
    from search.ledger import latency_noise, pareto_mask, reference_artifacts
    from search.objective import evaluate_config
    from search.sweep import prepare

    pruned = [r for r in rows if r.state == "PRUNED"]
    if not pruned:
        return 0
    study = optuna.load_study(study_name=study_name, storage=f"sqlite:///{workdir}/optuna.db")
    argv = json.loads(study.user_attrs.get("bench_argv", "[]"))
    setup, _ = prepare(argv)
    done = np.array([[r.values[o] for o in objectives] for r in rows if r.state == "COMPLETE" and r.values])
    # a model no better than always predicting the most frequent class is dominated by that 0-byte predictor
    # (the stopping rule's chance test); it is "on the front" only because nothing that small finished
    chance = setup.task.chance_accuracy(setup.dataset.y[setup.dev_idx])
    chance = -np.inf if chance is None else chance
    margin = float(setup.cfg_dict["study"]["early_stop_margin"])
    wrong = 0
    from search.space import apply_values

    for r in pruned:
        trial = study.trials[r.number]
        cfg = OmegaConf.to_container(apply_values(setup.cfg, {p.key: p.decode(trial.params[p.key])
                                                              for p in setup.params if p.key in trial.params}),
                                     resolve=True)
        with tempfile.TemporaryDirectory() as tmp:
            # timed against the study's reference folds, as its trials were (a lone measurement reads lower)
            ev = evaluate_config(cfg, setup.dataset.X[setup.dev_idx], setup.dataset.y[setup.dev_idx], setup.folds,
                                 tmp, meta={"classes": setup.dataset.classes}, cache=setup.base_cache,
                                 references=reference_artifacts(study))
        point = np.array([[ev.metrics[o] for o in objectives]])
        both = np.vstack([done, point]) if len(done) else point
        if ev.metrics[names.ACCURACY] <= chance + margin:
            continue            # no better than the 0-byte majority-class predictor on every fold either: right
        if pareto_mask(both, objectives, latency_noise(study))[-1]:                # the study's own front rule
            wrong += 1
            print(f"  wrong prune: trial {r.number} stopped at accuracy {r.metrics.get('accuracy', float('nan')):.4f} "
                  f"after {r.metrics.get('folds_run')} fold(s); all folds {[round(ev.metrics[o], 5) for o in objectives]}",
                  flush=True)
    return wrong


def wallclock(args, extra: list[str]) -> None:
    """(a) the seed recipes only, (b) random search, (c) TPE as before (no cache, no recipes, no early stop,
    fine-tune not searched), (d) the new default; the same wall-clock budget for (b)-(d), every dataset
    and seed; modes interleaved so that machine load hits them alike."""
    from search import names
    from search.report import hypervolume_of

    objectives = [names.ACCURACY, names.SIZE_BYTES, names.LATENCY_MS]
    results = []
    for space in args.spaces:
        for dataset in args.datasets:
            reference = None
            for seed in args.seeds:
                for mode in args.modes:
                    with tempfile.TemporaryDirectory(prefix="squeeze-wall-") as tmp:
                        study = wallclock_study(mode, dataset, space, seed, args.wallclock, args.folds, Path(tmp),
                                                extra)
                        reference = reference or {k: study["reference"][k] for k in objectives}
                        row = summarize(study, reference, args.folds)
                        rows = study["rows"]
                        minutes = study["wall_seconds"] / 60
                        row.update(mode=mode, dataset=dataset, space=space,
                                   n_pruned=sum(r.state == "PRUNED" for r in rows),
                                   trials_per_minute=sum(r.state in ("COMPLETE", "PRUNED") for r in rows) / minutes,
                                   hypervolume=hypervolume_of(rows, objectives, reference),
                                   hypervolume_linear=hypervolume_of(rows, objectives, reference, log_minimized=False),
                                   hypervolume_paired=paired_hypervolume(rows, objectives, reference),
                                   chance_accuracy=study["chance_accuracy"],
                                   hypervolume_above_chance=above_chance_hypervolume(rows, objectives, reference,
                                                                                     study["chance_accuracy"]),
                                   points=trial_points(rows),
                                   wrong_prunes=full_cv_of_pruned(study["name"], Path(tmp), rows, objectives)
                                   if args.check_prunes else None)
                        results.append(row)
                        print(f"{space:>13} {dataset:>13} seed {seed} {mode:>10}: ratio@0.5pt "
                              f"{row['best_ratio_at_0.5pt']}, HV {row['hypervolume']:.4f} (paired {row['hypervolume_paired']:.4f}, "
                              f"above chance {row['hypervolume_above_chance'] or 0:.4f}), "
                              f"{row['n_complete']} complete {row['n_pruned']} pruned, "
                              f"{row['trials_per_minute']:.1f}/min, wrong prunes {row['wrong_prunes']}", flush=True)
    out = {"benchmark": "search_wallclock", "budget_seconds": args.wallclock, "folds": args.folds,
           "seeds": args.seeds, "overrides": extra, "studies": results, "summary": wallclock_summary(results)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=str))
    print(json.dumps(out["summary"], indent=2))


def wallclock_summary(results: list[dict]) -> dict:
    """Means over seeds per (space, dataset, mode), and the done-means ratios."""
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    summary: dict = {}
    keys = sorted({(r["space"], r["dataset"]) for r in results})
    for space, dataset in keys:
        group = {m: [r for r in results if (r["space"], r["dataset"], r["mode"]) == (space, dataset, m)]
                 for m in MODES}
        cell = {}
        for mode, rs in group.items():
            if rs:
                cell[mode] = {
                    "best_ratio_at_0.5pt": mean([r["best_ratio_at_0.5pt"] or 0.0 for r in rs]),
                    "best_speedup_at_1pt": mean([r["best_speedup_at_1pt"] or 0.0 for r in rs]),
                    "hypervolume": mean([r["hypervolume"] for r in rs]),
                    "hypervolume_linear": mean([r["hypervolume_linear"] for r in rs]),
                    "hypervolume_paired": mean([r["hypervolume_paired"] for r in rs]),
                    "hypervolume_above_chance": mean([r["hypervolume_above_chance"] for r in rs
                                                      if r.get("hypervolume_above_chance") is not None]),
                    "trials_per_minute": mean([r["trials_per_minute"] for r in rs]),
                    # None when the run did not re-check its pruned trials (--check-prunes): not measured, not 0
                    "wrong_prunes": (None if all(r["wrong_prunes"] is None for r in rs)
                                     else sum(r["wrong_prunes"] or 0 for r in rs)),
                }
        if group.get("recipes"):   # the one-line Deep-Compression recipe alone (issue 9's "Why" compares with it)
            cell["recipes"]["deep_compression_ratio_at_0.5pt"] = mean(
                [r["ratio_at_0.5pt_by_recipe"].get("deep_compression") or 0.0 for r in group["recipes"]])
        if "default" in cell and "recipes" in cell and cell["recipes"]["deep_compression_ratio_at_0.5pt"]:
            cell["default_over_deep_compression_ratio"] = (cell["default"]["best_ratio_at_0.5pt"]
                                                           / cell["recipes"]["deep_compression_ratio_at_0.5pt"])
        if "default" in cell and "recipes" in cell and cell["recipes"]["best_ratio_at_0.5pt"]:
            cell["default_over_recipes_ratio"] = (cell["default"]["best_ratio_at_0.5pt"]
                                                  / cell["recipes"]["best_ratio_at_0.5pt"])
        if "default" in cell and "random" in cell and cell["random"]["hypervolume"]:
            cell["default_over_random_hypervolume"] = cell["default"]["hypervolume"] / cell["random"]["hypervolume"]
            cell["default_over_random_hypervolume_linear"] = (cell["default"]["hypervolume_linear"]
                                                              / cell["random"]["hypervolume_linear"])
            if cell["random"]["hypervolume_paired"]:
                cell["default_over_random_hypervolume_paired"] = (cell["default"]["hypervolume_paired"]
                                                                  / cell["random"]["hypervolume_paired"])
            if cell["random"]["hypervolume_above_chance"] and cell["default"]["hypervolume_above_chance"] is not None:
                cell["default_over_random_hypervolume_above_chance"] = (cell["default"]["hypervolume_above_chance"]
                                                                        / cell["random"]["hypervolume_above_chance"])
        if "default" in cell and "tpe_before" in cell and cell["tpe_before"]["trials_per_minute"]:
            cell["default_over_before_trials_per_minute"] = (cell["default"]["trials_per_minute"]
                                                             / cell["tpe_before"]["trials_per_minute"])
        summary[f"{space}/{dataset}"] = cell
    return summary


def bound(files: list[str], out_path: str) -> None:
    """:func:`front_bound` of the studies in ``files`` (each study labelled with its file's budget), written to
    ``out_path`` and printed."""
    studies = []
    for f in files:
        data = json.loads(Path(f).read_text())
        studies += [{**s, "budget_seconds": data["budget_seconds"]} for s in data.get("studies", [])]
    result = front_bound(studies)
    out = {"benchmark": "search_front_bound", "files": [Path(f).name for f in files], "bound": result}
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    Path(out_path).write_text(json.dumps(out, indent=2))
    for name, cell in result.items():
        ratios = ", ".join(f"{m} {c['paired']['union_over']:.3f} ({c['accuracy_size']['union_over']:.3f})"
                           for m, c in cell["modes"].items())
        print(f"{name}: union of {sum(s['n_points'] for s in cell['seeds'].values())} trials, "
              f"{len(cell['seeds'])} seed(s); union / mode, paired (accuracy and size alone): {ratios}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--samplers", nargs="+", default=["tpe", "random"])
    parser.add_argument("--quick", action="store_true", help="tiny budget, to check the script runs")
    parser.add_argument("--wallclock", type=float, default=None, help="seconds per study: the wall-clock comparison")
    parser.add_argument("--modes", nargs="+", default=MAIN_MODES, choices=list(MODES))
    parser.add_argument("--datasets", nargs="+", default=["digits", "breast_cancer", "synthetic"])
    parser.add_argument("--spaces", nargs="+", default=["compress_only", "joint"])
    parser.add_argument("--check-prunes", action="store_true", help="re-run pruned trials on every fold")
    parser.add_argument("--bound", nargs="+", metavar="RESULT_JSON",
                        help="no study: the volume of the union of every trial in these --wallclock result files, "
                             "per dataset and seed, against each mode's (front_bound)")
    parser.add_argument("overrides", nargs="*", help="extra sweep overrides, e.g. space=compress_only")
    args = parser.parse_args()
    extra = list(args.overrides)
    if args.quick:
        args.trials, args.folds = 4, 2
        extra += ["train.epochs=3", "compress.finetune_epochs=1", "latency.repeats=10"]
    if args.bound:
        bound(args.bound, args.out)
        return
    if args.wallclock:
        wallclock(args, extra)
        return
    from search import names

    results, reference = [], None
    with tempfile.TemporaryDirectory(prefix="squeeze-bench-") as tmp:
        for seed in args.seeds:
            for sampler in args.samplers:
                study = run_study(sampler, seed, args.trials, args.folds, Path(tmp),
                                  [f"study.sampler={sampler}", *extra])
                reference = reference or {k: study["reference"][k] for k in (names.ACCURACY, names.SIZE_BYTES, names.LATENCY_MS)}
                results.append(summarize(study, reference, args.folds))
    by = {s: [r for r in results if r["sampler"] == s] for s in args.samplers}
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    summary = {f"{s}_hypervolume_mean": mean([r["hypervolume"] for r in rs]) for s, rs in by.items()}
    if "tpe" in by and "random" in by and summary.get("random_hypervolume_mean"):
        summary["tpe_over_random_hypervolume"] = summary["tpe_hypervolume_mean"] / summary["random_hypervolume_mean"]
    summary["overhead_share_mean"] = mean([r["overhead_share"] for r in results if r["overhead_share"] is not None])
    out = {"benchmark": "search", "trials": args.trials, "folds": args.folds, "seeds": args.seeds,
           "overrides": extra, "hypervolume_reference": reference, "studies": results, "summary": summary}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2, default=str))
    print(json.dumps(summary, indent=2))
    for r in results:
        print(f"{r['sampler']:>6} seed {r['seed']}: ratio@0.5pt {r['best_ratio_at_0.5pt']}, speedup@1pt "
              f"{r['best_speedup_at_1pt']}, HV {r['hypervolume']:.4f}, overhead {r['overhead_share']}, "
              f"{r['wall_seconds']}s")


if __name__ == "__main__":
    main()
