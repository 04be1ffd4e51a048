"""Compression benchmark: LeNet-300-100 on digits, one row per compression setting.

Every setting goes through :func:`trainers.pipeline.run_fold` exactly as a search trial does: fit on the
stratified development split (``trainers.data.split_test``), compress, write the artifact, load it back,
then score and time the *loaded* model on the held-out test split. All settings use the same seed, so the
initial fit (before compression) is identical; only what happens after it differs.

    PYTHONPATH=. python benchmarks/compression.py --out benchmarks/results/compression.json
    PYTHONPATH=. python benchmarks/compression.py --out /tmp/quick.json --quick     # a tiny smoke run

The base config is conf/sweep.yaml + conf/data/digits.yaml + conf/model/mlp.yaml (no Hydra), each setting
deep-merges its overrides into it. Latency follows the config's ``latency`` protocol (1 thread, batch 1).
Writes a JSON list (keys: method, settings, accuracy, size_bytes, file_bytes, compression_ratio,
latency_ms, latency_p90_ms, throughput_per_s, runtime, sparsity, avg_bits) and prints a markdown table and
a breakdown of the uncompressed payload of each file (what is left to shrink).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from _config import base_config, deep_merge  # noqa: E402 - benchmarks/ is on sys.path

from trainers import artifact
from trainers.compress.lowrank import Factored
from trainers.data import load_dataset, split_test
from trainers.pipeline import run_fold

REPO = Path(__file__).resolve().parents[1]

# (method, overrides deep-merged into the base config). The fp32 reference must come first.
SETTINGS: list[tuple[str, dict[str, Any]]] = [
    ("fp32", {"compress": {"finetune_epochs": 0}}),
    *[("prune", {"compress": {"prune": {"ratio": r, "schedule": "gradual"}}}) for r in (0.5, 0.8, 0.95)],
    *[("neurons", {"compress": {"neurons": {"ratio": r}}}) for r in (0.25, 0.5, 0.75)],
    *[("fixed_point", {"compress": {"quant": {"scheme": "fixed_point", "bits": b}}}) for b in (8, 4)],
    *[("uniform", {"compress": {"quant": {"scheme": "uniform", "bits": b}}}) for b in (8, 4, 2)],
    ("binary", {"compress": {"quant": {"scheme": "binary"}}}),
    ("ternary", {"compress": {"quant": {"scheme": "ternary", "threshold": 0.7}}}),
    # the reference trained for as long as the compressed models (20 + 20 fine-tune epochs, nothing removed)
    ("fp32+finetune", {"compress": {"finetune_epochs": 20}}),
    # combined: fewer units, then most remaining weights zero, then few bits for the rest. Chosen among
    # ~20 candidates on an inner validation split of the development rows (never on the test rows).
    *[("combined", {"compress": {"finetune_epochs": 20, "finetune_lr": lr, "neurons": {"ratio": 0.6},
                                 "prune": {"ratio": 0.85, "schedule": "gradual"},
                                 "quant": {"scheme": "uniform", "bits": 2}}}) for lr in (0.003, None)],
    ("combined", {"compress": {"finetune_epochs": 20, "neurons": {"ratio": 0.6},
                               "prune": {"ratio": 0.85, "schedule": "gradual"},
                               "quant": {"scheme": "ternary", "threshold": 0.7}}}),
]

QUICK_OVERRIDES = {"train": {"epochs": 2}, "latency": {"warmup": 2, "repeats": 10, "throughput_batch": 32}}


def describe(overrides: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, Any]:
    """The compression settings a row used (the override plus the fine-tune epochs it ran with)."""
    comp = overrides.get("compress", {})
    out = {k: v for k, v in comp.items() if k != "finetune_epochs"}
    out["finetune_epochs"] = comp.get("finetune_epochs", base["compress"]["finetune_epochs"])
    return out


def stored_entries(entry: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The entries of a header tensor entry that hold blobs: the entry itself, or the two factors ``a``, ``b``
    of a factored table (scheme ``lowrank``, docs/artifact-format.md section 2.6)."""
    if entry["scheme"] == Factored.scheme:
        return [entry["factors"]["a"], entry["factors"]["b"]]
    return [entry]


def payload_breakdown(path: Path) -> dict[str, int]:
    """Uncompressed bytes of the payload by kind: JSON header, preprocessing, biases, weight codes, masks,
    per-channel parameters (a factored table: its factors'); and ``file`` = the file as stored (after the
    codec)."""
    data = path.read_bytes()
    header = artifact.read_header(path)
    out = {"file": len(data), "header_json": artifact.header_length(path),
           "preprocess": 0, "bias": 0, "codes": 0, "mask": 0, "per_channel": 0}
    for entry in header["tensors"]:
        blobs = [blob for part in stored_entries(entry) for blob in part["blobs"].items()]
        for key, (_, length) in blobs:
            if entry["name"].startswith("preprocess."):
                out["preprocess"] += length
            elif entry["name"].endswith("bias"):
                out["bias"] += length
            elif key in ("scale", "offset"):
                out["per_channel"] += length
            else:
                out[key] += length
    out["raw_payload"] = sum(v for k, v in out.items() if k != "file") + struct.calcsize("<I")
    return out


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    base = base_config("digits", "mlp")
    if args.quick:
        base = deep_merge(base, QUICK_OVERRIDES)
    settings = SETTINGS if not args.quick else [s for s in SETTINGS if s[0] in ("fp32", "prune", "uniform")][:3]
    ds = load_dataset(base["data"])
    dev, test = split_test(ds.y, float(base["data"]["test_size"]), args.seed)
    split = (ds.X[dev], ds.y[dev], ds.X[test], ds.y[test])
    print(f"digits: {len(dev)} development rows (fit + fine-tune), {len(test)} test rows (scored); "
          f"seed {args.seed}; LeNet {base['model']['hidden']}; latency protocol {base['latency']}", file=sys.stderr)

    rows, breakdowns = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (method, overrides) in enumerate(settings):
            cfg = deep_merge(base, overrides)
            path = Path(tmp) / f"{i:02d}-{method}.sqz"
            start = time.perf_counter()
            result = run_fold(cfg, *split, seed=args.seed, artifact_path=path, meta={"benchmark": method})
            file_bytes = os.path.getsize(path)
            fp32_size = rows[0]["size_bytes"] if rows else result.size_bytes
            row = {
                "method": method,
                "settings": describe(overrides, base),
                "accuracy": result.accuracy,
                "size_bytes": result.size_bytes,
                "file_bytes": file_bytes,
                "compression_ratio": fp32_size / result.size_bytes,
                "latency_ms": result.latency_ms,
                "latency_p90_ms": result.latency_p90_ms,
                "throughput_per_s": result.throughput_per_s,
                "runtime": result.runtime,
                "sparsity": result.sparsity,
                "avg_bits": result.avg_bits,
            }
            rows.append(row)
            breakdowns.append(payload_breakdown(path))
            print(f"[{i + 1}/{len(settings)}] {method} {_short(row['settings'])}: acc {row['accuracy']:.4f}, "
                  f"{row['size_bytes']} B, x{row['compression_ratio']:.1f}, {time.perf_counter() - start:.1f} s",
                  file=sys.stderr)
    print_tables(rows, breakdowns)
    return rows


def _short(settings: Mapping[str, Any]) -> str:
    """A compact one-line description of a row's settings for the table."""
    parts = []
    neurons = settings.get("neurons", {})
    if neurons.get("ratio"):
        parts.append(f"neurons {neurons['ratio']}")
    prune = settings.get("prune", {})
    if prune.get("ratio"):
        parts.append(f"prune {prune['ratio']} {prune.get('schedule', 'one_shot')}")
    quant = settings.get("quant", {})
    scheme = quant.get("scheme", "none")
    if scheme in ("fixed_point", "uniform"):
        parts.append(f"{scheme} {quant['bits']}b")
    elif scheme == "ternary":
        parts.append(f"ternary t={quant.get('threshold', 0.7)}")
    elif scheme != "none":
        parts.append(scheme)
    parts.append(f"ft {settings['finetune_epochs']}")
    if settings.get("finetune_lr"):
        parts.append(f"ft lr {settings['finetune_lr']}")
    return ", ".join(parts)


def print_tables(rows: list[dict[str, Any]], breakdowns: list[dict[str, int]]) -> None:
    ref = rows[0]
    print("| method | settings | accuracy | Δacc (pt) | size (B) | ratio | latency ms (p90) | throughput/s "
          "| runtime | sparsity | avg bits |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---|---:|---:|")
    for r in rows:
        print(f"| {r['method']} | {_short(r['settings'])} | {r['accuracy']:.4f} | "
              f"{100 * (r['accuracy'] - ref['accuracy']):+.2f} | {r['size_bytes']} | {r['compression_ratio']:.1f}x | "
              f"{r['latency_ms'] * 1000:.1f} µs ({r['latency_p90_ms'] * 1000:.1f}) | {r['throughput_per_s']:.0f} | "
              f"{r['runtime']} | {r['sparsity']:.3f} | {r['avg_bits']:.2f} |")
    print()
    print("Uncompressed payload by kind (bytes, before the codec) and the stored file:")
    print()
    print("| method | settings | header JSON | preprocess | biases | codes | masks | per-channel | raw payload | file |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r, b in zip(rows, breakdowns):
        print(f"| {r['method']} | {_short(r['settings'])} | {b['header_json']} | {b['preprocess']} | {b['bias']} | "
              f"{b['codes']} | {b['mask']} | {b['per_channel']} | {b['raw_payload']} | {b['file']} |")
    best = max((r for r in rows if r["accuracy"] >= ref["accuracy"] - 0.005), key=lambda r: r["compression_ratio"])
    print()
    print(f"Smallest file within 0.5 pt of fp32 ({ref['accuracy']:.4f}): {best['method']} {_short(best['settings'])} "
          f"-> {best['size_bytes']} B, {best['compression_ratio']:.1f}x, accuracy {best['accuracy']:.4f}")
    if not math.isclose(ref["compression_ratio"], 1.0):
        raise AssertionError("the first row must be the fp32 reference")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="the JSON file to write (one row per setting)")
    parser.add_argument("--seed", type=int, default=0, help="split, training and compression seed (default 0)")
    parser.add_argument("--quick", action="store_true", help="a tiny run: 3 settings, 2 epochs, few timings")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rows = run(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=2) + "\n")
    print(f"\nwrote {len(rows)} rows to {out} in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
