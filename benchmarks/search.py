"""Fixed-budget studies on digits with TPE and with random sampling (same seeds), compared.

    PYTHONPATH=. python benchmarks/search.py --out benchmarks/results/search.json [--trials 30] [--seeds 0]

For each (sampler, seed) it runs ``python -m search.sweep``'s own ``main`` (real storage, real MLflow, real
training) into a temporary folder and records, from the study:

* ``best_ratio_at_0.5pt``: highest compression ratio among trials within 0.5 accuracy points of the fp32
  reference (CV accuracy);
* ``best_speedup_at_1pt``: highest latency speedup within 1 point;
* ``hypervolume``: of (accuracy, size / reference size, latency / reference latency), reference point
  (0, 1.5, 1.5) — the same normalisation and point for every study (the first study's reference values);
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


def run_study(sampler: str, seed: int, trials: int, folds: int, workdir: Path, extra: list[str]) -> dict:
    import optuna

    from search import names
    from search.report import collect
    from search.sweep import main

    name = f"bench-{sampler}-{seed}"
    storage = f"sqlite:///{workdir}/optuna.db"
    args = [f"study.name={name}", f"study.sampler={sampler}", f"study.seed={seed}", f"seed={seed}",
            f"study.n_trials={trials}", f"cv.folds={folds}", f"study.storage={storage}",
            f"mlflow.tracking_uri=sqlite:///{workdir}/mlflow.db", f"mlflow.artifact_location={workdir}/art",
            "study.max_failure_rate=1.0", *extra]
    start = time.perf_counter()
    code = main(args)
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
    return {"sampler": sampler, "seed": seed, "name": name, "wall_seconds": wall,
            "reference": dict(study.user_attrs["reference"]), "rows": rows}


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
        "overhead_share": (1 - work / wall) if wall else None,
        "n_pareto": sum(r.pareto for r in study["rows"]),
        "best_ratio_trial_params": best.params if best else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--samplers", nargs="+", default=["tpe", "random"])
    parser.add_argument("--quick", action="store_true", help="tiny budget, to check the script runs")
    parser.add_argument("overrides", nargs="*", help="extra sweep overrides, e.g. space=compress_only")
    args = parser.parse_args()
    extra = list(args.overrides)
    if args.quick:
        args.trials, args.folds = 4, 2
        extra += ["train.epochs=3", "compress.finetune_epochs=1", "latency.repeats=10"]
    from search import names

    results, reference = [], None
    with tempfile.TemporaryDirectory(prefix="squeeze-bench-") as tmp:
        for seed in args.seeds:
            for sampler in args.samplers:
                study = run_study(sampler, seed, args.trials, args.folds, Path(tmp), extra)
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
