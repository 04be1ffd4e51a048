"""Latency you can trust (issue 11): paired speedups, the A/A noise floor and the per-call overhead.

    python benchmarks/latency.py [--out benchmarks/results/latency.json] [--quick]

For mlp and cnn on digits: the fp32 model and compressed ones (trained once on the development rows, one
fold); per artifact and runtime the latency p50 / p90 and the speedup against fp32 in the same runtime, both
timed in alternating blocks with 95% intervals (:func:`trainers.measure.measure_paired`); the A/A noise of
fp32 against itself; an empty forward per runtime (the overhead no compression removes); what pairing
costs (evaluation time of an artifact with and without a reference). Then one artifact pair measured in 5
separate processes, once as the machine is and once with a second process burning a core: the spread of
the paired speedup against the spread of the absolute latency.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks._config import base_config, deep_merge  # noqa: E402

#: the compressed settings per model (fine-tune kept short: this benchmarks latency, not accuracy)
VARIANTS: dict[str, dict[str, Any]] = {
    "int8": {"quant": {"scheme": "fixed_point", "bits": 8}},
    "int4": {"quant": {"scheme": "uniform", "bits": 4}},
    "prune90_int8": {"prune": {"ratio": 0.9}, "quant": {"scheme": "fixed_point", "bits": 8}},
    "neurons50": {"neurons": {"ratio": 0.5}},
    "neurons75_int8": {"neurons": {"ratio": 0.75}, "quant": {"scheme": "fixed_point", "bits": 8}},
    "neurons90_int8": {"neurons": {"ratio": 0.9}, "quant": {"scheme": "fixed_point", "bits": 8}},
}
MODELS = [("digits", "mlp"), ("digits", "cnn")]
PROCESSES = 5


def _build(data: str, model: str, folder: Path, epochs: int) -> dict[str, Any]:
    """Train fp32 once (base cache) and compress it six ways; write every artifact; the validation rows."""
    import numpy as np

    from trainers import artifact
    from trainers.base_cache import BaseCache
    from trainers.data import load_dataset, split_test
    from trainers.measure import accuracy  # noqa: F401  (torch loaded here)
    from trainers.pipeline import fit_and_compress

    cfg = base_config(data, model)
    cfg = deep_merge(cfg, {"train": {"epochs": epochs}, "compress": {"finetune_epochs": 1}})
    ds = load_dataset(cfg["data"])
    tr, va = split_test(ds.y, 0.25, seed=0)
    cfg["n_classes"] = len(ds.classes)
    cache = BaseCache(folder / "cache", 2**30)
    paths = {}
    for name, comp in [("fp32", {}), *VARIANTS.items()]:
        c = deep_merge(cfg, {"compress": comp})
        fitted = fit_and_compress(c, ds.X[tr], ds.y[tr], seed=0, cache=cache)
        path = folder / f"{model}_{name}.sqz"
        artifact.save(fitted.model, path, codec="lzma")
        paths[name] = str(path)
    np.save(folder / f"{data}_val_X.npy", ds.X[va])
    np.save(folder / f"{data}_val_y.npy", ds.y[va])
    return {"cfg": cfg, "paths": paths, "X": str(folder / f"{data}_val_X.npy"), "y": str(folder / f"{data}_val_y.npy")}


def _served(path: str, runtime: str, Xt, protocol):
    from trainers import artifact
    from trainers.measure import build_runtime

    return build_runtime(artifact.load(path), runtime, Xt[:protocol.batch_size], protocol.threads)


def _measure_model(built: dict[str, Any], protocol) -> dict[str, Any]:
    import numpy as np
    import torch

    from trainers import artifact
    from trainers.measure import accuracy, candidate_runtimes, empty_forward_ms, measure_paired
    from trainers.pipeline import ReferenceArtifact, evaluate_artifact

    X, y = np.load(built["X"]), np.load(built["y"])
    Xt = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    lat_cfg = {"threads": protocol.threads, "batch_size": protocol.batch_size, "warmup": protocol.warmup,
               "repeats": protocol.repeats, "throughput_batch": protocol.throughput_batch}
    fp32 = built["paths"]["fp32"]
    ref_eval = evaluate_artifact(fp32, X, y, lat_cfg)           # the reference as a study evaluates it
    ref = ReferenceArtifact(fp32, ref_eval["runtime"], ref_eval["latency_ms"])
    aa = evaluate_artifact(fp32, X, y, lat_cfg, runtime=ref.runtime, reference=ref)
    out: dict[str, Any] = {"reference_runtime": ref.runtime, "reference_latency_ms": ref.latency_ms,
                           "reference_accuracy": ref_eval["accuracy"],
                           "aa_speedup": aa["speedup"], "aa_ci": [aa["speedup_ci_low"], aa["speedup_ci_high"]],
                           "latency_noise": max(aa["speedup_ci_high"] - 1, 1 - aa["speedup_ci_low"], 0.0),
                           "overhead_ms": {}, "artifacts": []}
    for runtime in ("fp32_dense", "torchscript", "onnxruntime"):
        out["overhead_ms"][runtime] = empty_forward_ms(runtime, Xt, protocol)
    refs_by_runtime = {}
    for name, path in built["paths"].items():
        loaded = artifact.load(path)
        quantized = [e.bits for e in loaded.encodings.values() if e.scheme != "fp32"]
        row: dict[str, Any] = {"name": name, "size_bytes": Path(path).stat().st_size, "runtimes": {}}
        for runtime in candidate_runtimes(loaded, max(quantized) if quantized else None):
            base_rt = runtime.replace("_int8", "") if runtime != "int8_dynamic" else "fp32_dense"
            if base_rt not in refs_by_runtime:
                refs_by_runtime[base_rt] = _served(fp32, base_rt, Xt, protocol)
            served = _served(path, runtime, Xt, protocol)
            res = measure_paired(served, refs_by_runtime[base_rt], Xt, protocol, runtime)
            s = res.paired
            row["runtimes"][runtime] = {
                "accuracy": accuracy(served, Xt, yt), "latency_ms": s.latency_ms,
                "latency_ci": [s.latency_ci_low, s.latency_ci_high], "latency_p90_ms": res.latency_p90_ms,
                "speedup_vs_fp32_same_runtime": s.speedup, "speedup_ci": [s.speedup_ci_low, s.speedup_ci_high]}
        # as a study scores it: best runtime, timed against the reference in its runtime; and the cost of pairing
        t0 = time.perf_counter()
        alone = evaluate_artifact(path, X, y, lat_cfg)
        t1 = time.perf_counter()
        paired = evaluate_artifact(path, X, y, lat_cfg, reference=ref)
        t2 = time.perf_counter()
        t3 = time.perf_counter()
        evaluate_artifact(path, X, y, lat_cfg, runtime=alone["runtime"])
        t4 = time.perf_counter()
        evaluate_artifact(path, X, y, lat_cfg, runtime=alone["runtime"], reference=ref)
        t5 = time.perf_counter()
        row.update(best_runtime=paired["runtime"], accuracy=paired["accuracy"], speedup=paired["speedup"],
                   speedup_ci=[paired["speedup_ci_low"], paired["speedup_ci_high"]],
                   unpaired_speedup=ref.latency_ms / alone["latency_ms"],
                   eval_seconds_fold0={"alone": t1 - t0, "paired": t2 - t1},
                   eval_seconds_other_folds={"alone": t4 - t3, "paired": t5 - t4})
        out["artifacts"].append(row)
    return out


def _one_process(args: argparse.Namespace) -> None:
    """Child: time candidate against reference once, print the paired speedup and the absolute latencies."""
    import numpy as np
    import torch

    from trainers.measure import measure_paired

    protocol = _protocol(args)
    Xt = torch.from_numpy(np.ascontiguousarray(np.load(args.X), dtype=np.float32))
    ref = _served(args.reference, args.reference_runtime, Xt, protocol)
    cand = _served(args.candidate, args.runtime, Xt, protocol)
    s = measure_paired(cand, ref, Xt, protocol, args.runtime).paired
    print(json.dumps({"speedup": s.speedup, "speedup_ci": [s.speedup_ci_low, s.speedup_ci_high],
                      "latency_ms": s.latency_ms, "reference_ms": s.reference_ms}))


def _protocol(args: argparse.Namespace):
    """The measurement protocol: LatencyProtocol's defaults (the study's) unless --repeats / --blocks say."""
    from trainers.measure import LatencyProtocol

    given = {k: int(v) for k, v in (("repeats", args.repeats), ("blocks", args.blocks)) if v is not None}
    return LatencyProtocol(**given)


def _protocol_args(args: argparse.Namespace) -> list[str]:
    return [x for k in ("repeats", "blocks") if getattr(args, k) is not None for x in (f"--{k}", str(getattr(args, k)))]


def _spread(values: list[float]) -> float:
    import numpy as np

    return float((max(values) - min(values)) / np.median(values))


def _processes(built: dict[str, Any], cand: str, runtime: str, ref_runtime: str, busy: bool,
               protocol_args: list[str]) -> dict[str, Any]:
    burner = None
    if busy:   # a second process burning a core for the whole measurement
        burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        runs = []
        for _ in range(PROCESSES):
            out = subprocess.run([sys.executable, __file__, "--child", "--reference", built["paths"]["fp32"],
                                  "--reference-runtime", ref_runtime, "--candidate", built["paths"][cand],
                                  "--runtime", runtime, "--X", built["X"], *protocol_args],
                                 capture_output=True, text=True, check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    finally:
        if burner is not None:
            burner.kill()
            burner.wait()
    speedups = [r["speedup"] for r in runs]
    return {"runs": runs, "speedup_spread": _spread(speedups),
            "latency_spread": _spread([r["latency_ms"] for r in runs]),
            "reference_latency_spread": _spread([r["reference_ms"] for r in runs])}


def _spread_rows(out: Path, result: dict[str, Any], protocol) -> list[dict[str, Any]]:
    """The earlier runs' 5-process spreads (kept from ``out``) and this run's, one row per model."""
    rows = json.loads(out.read_text()).get("spread_by_protocol", []) if out.exists() else []
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    for name, res in result["models"].items():
        pr = res["processes"]
        rows.append({"repeats": protocol.repeats, "blocks": protocol.blocks,
                     "model": f"{name} ({time.strftime('%Y-%m-%d')} at {commit or 'unknown'})",
                     "candidate": pr["candidate"], "runtime": pr["runtime"],
                     **{f"{cond}_{what}_spread": pr[cond][f"{what}_spread"] for cond in ("idle", "busy")
                        for what in ("speedup", "latency")},
                     "wall_seconds": result["wall_seconds"]})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "latency.json"))
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per measurement (default: the study's)")
    parser.add_argument("--blocks", type=int, default=None, help="alternating blocks per measurement (default: the study's)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for key in ("reference", "reference-runtime", "candidate", "runtime", "X"):
        parser.add_argument(f"--{key}", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _one_process(args)
        return 0
    import torch

    torch.set_num_threads(1)
    protocol = _protocol(args)
    start = time.perf_counter()
    result: dict[str, Any] = {"cpu_count": os.cpu_count(), "protocol": {**protocol.as_dict(), "blocks": protocol.blocks}, "models": {}}
    with tempfile.TemporaryDirectory(prefix="squeeze-bench-latency-") as tmp:
        for data, model in MODELS:
            folder = Path(tmp) / model
            folder.mkdir()
            print(f"{model}/{data}: training and compressing ...", file=sys.stderr, flush=True)
            built = _build(data, model, folder, args.epochs)
            print(f"{model}/{data}: measuring ...", file=sys.stderr, flush=True)
            res = _measure_model(built, protocol)
            # the spread across processes: the most compressed artifact in its best runtime vs fp32 in its own
            last = res["artifacts"][-1]
            print(f"{model}/{data}: {PROCESSES} processes idle and busy ...", file=sys.stderr, flush=True)
            res["processes"] = {"candidate": last["name"], "runtime": last["best_runtime"],
                                "idle": _processes(built, last["name"], last["best_runtime"], res["reference_runtime"], False,
                                                   _protocol_args(args)),
                                "busy": _processes(built, last["name"], last["best_runtime"], res["reference_runtime"], True,
                                                   _protocol_args(args))}
            result["models"][f"{model}/{data}"] = res
    result["wall_seconds"] = round(time.perf_counter() - start, 1)
    result["spread_by_protocol"] = _spread_rows(Path(args.out), result, protocol)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out} in {result['wall_seconds']} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
