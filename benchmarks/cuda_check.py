"""Smoke check of training on CUDA (``device=cuda``): every model and every compression technique, one fold.

    python benchmarks/cuda_check.py --out cuda_check.json [--device cuda]

Needs only torch, numpy, scikit-learn, pandas and pyyaml (no Optuna/MLflow/Hydra), so it runs on a bare GPU
machine. Training and the compression fine-tune run on the device; packing, loading, scoring and latency
run on the CPU as always. Writes one JSON row per setting; exits 1 if any setting fails.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
import traceback
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SETTINGS = [
    ("digits", "mlp", {"prune": {"ratio": 0.8, "schedule": "gradual"}, "quant": {"scheme": "uniform", "bits": 3, "learn_step": True}}),
    ("digits", "mlp", {"neurons": {"ratio": 0.5}, "prune": {"ratio": 0.5, "scope": "global", "criterion": "random"},
                       "quant": {"scheme": "fixed_point", "bits": 4, "rounding": "stochastic"}}),
    ("digits", "cnn", {"neurons": {"ratio": 0.3, "importance": "apoz"}, "quant": {"scheme": "ternary"}}),
    ("digits", "cnn", {"quant": {"scheme": "binary"}}),
    ("ecommerce", "seqrec", {"neurons": {"ratio": 0.5}, "quant": {"scheme": "uniform", "bits": 4, "clip": 0.99}}),
]


def config(data: str, model: str, compress: dict, device: str) -> dict:
    conf = REPO / "conf"
    cfg = yaml.safe_load((conf / "sweep.yaml").read_text())
    cfg.pop("defaults")
    cfg["data"] = yaml.safe_load((conf / "data" / f"{data}.yaml").read_text())
    cfg["model"] = yaml.safe_load((conf / "model" / f"{model}.yaml").read_text())
    cfg["device"] = device
    cfg["train"]["epochs"] = 5
    for key, value in compress.items():
        cfg["compress"][key] = {**cfg["compress"][key], **value}
    cfg["latency"].update(repeats=20, warmup=5)
    return cfg


def main() -> None:
    import numpy as np
    import torch

    from trainers.data import load_dataset, split_dataset
    from trainers.pipeline import run_fold

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    rows, failed = [], 0
    print(f"torch {torch.__version__}, cuda available: {torch.cuda.is_available()}", flush=True)
    for data, model, compress in SETTINGS:
        cfg = config(data, model, copy.deepcopy(compress), args.device)
        ds = load_dataset(cfg["data"])
        dev, _, folds = split_dataset(ds, cfg["data"].get("test_size"), 2, 0)
        tr, va = folds[0]
        X, y = ds.X[dev], ds.y[dev]
        cfg["n_classes"] = len(ds.classes)
        start = time.perf_counter()
        try:
            with tempfile.TemporaryDirectory() as tmp:
                r = run_fold(cfg, X[tr], y[tr], X[va], y[va], seed=0, artifact_path=Path(tmp) / "f.sqz",
                             meta={"classes": ds.classes})
            row = {"data": data, "model": model, "compress": compress, "ok": True, "accuracy": r.accuracy,
                   "size_bytes": r.size_bytes, "sparsity": r.sparsity, "avg_bits": r.avg_bits,
                   "runtime": r.runtime, "fit_seconds": round(r.fit_seconds, 2)}
            assert np.isfinite(r.accuracy) and r.size_bytes > 0
        except Exception:  # noqa: BLE001 - report every failure, keep going
            failed += 1
            row = {"data": data, "model": model, "compress": compress, "ok": False, "error": traceback.format_exc()}
        row["seconds"] = round(time.perf_counter() - start, 2)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "error"}), flush=True)
        if not row["ok"]:
            print(row["error"], flush=True)
    Path(args.out).write_text(json.dumps({"device": args.device, "torch": torch.__version__,
                                          "cuda": torch.cuda.is_available(), "rows": rows}, indent=2))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
