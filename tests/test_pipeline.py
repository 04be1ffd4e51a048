"""Tests of trainers.pipeline.run_fold: every number comes from the saved file, and a seed fixes everything."""

from __future__ import annotations

import copy
import math
import os
from typing import Any

import numpy as np
import pytest
import torch

from trainers import artifact, measure
from trainers.data import load_dataset, split_test
from trainers.measure import accuracy, build_runtime
from trainers.pipeline import FoldResult, run_fold

BASE_CFG: dict[str, Any] = {
    "device": "cpu",
    "data": {"name": "digits", "test_size": 0.25, "standardize": True, "pca": None},
    "model": {"name": "mlp", "hidden": [32, 16], "width": 1.0, "dropout": 0.0},
    "train": {"optimizer": "adam", "lr": 0.003, "weight_decay": 0.0, "epochs": 4, "batch_size": 64,
              "momentum": 0.9, "threads": 1},
    "compress": {"finetune_epochs": 0, "finetune_lr": None, "codec": "lzma",
                 "prune": {"ratio": 0.0}, "neurons": {"ratio": 0.0}, "quant": {"scheme": "none"}},
    "latency": {"threads": 1, "batch_size": 1, "warmup": 3, "repeats": 15, "throughput_batch": 32},
}


RUNTIMES = set(measure.RUNTIMES)


def _runtime_model(result: FoldResult, X_val: torch.Tensor) -> torch.nn.Module:
    """The model of the artifact as the runtime the fold chose runs it."""
    loaded = artifact.load(result.artifact_path)
    return build_runtime(loaded, result.runtime, X_val[:1])


@pytest.fixture(scope="module")
def split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    ds = load_dataset({"name": "digits"})
    X, y = ds.X[:600], ds.y[:600]
    train_idx, val_idx = split_test(y, 0.25, seed=0)
    return X[train_idx], y[train_idx], X[val_idx], y[val_idx]


def _cfg(**compress: Any) -> dict[str, Any]:
    cfg = copy.deepcopy(BASE_CFG)
    cfg["compress"].update(compress)
    return cfg


def _run(cfg, split, path, seed: int = 0) -> FoldResult:
    return run_fold(cfg, *split, seed=seed, artifact_path=path, meta={"seed": seed})


@pytest.fixture(scope="module")
def fp32_runs(split, tmp_path_factory) -> tuple[FoldResult, FoldResult]:
    d = tmp_path_factory.mktemp("fp32")
    return _run(_cfg(), split, d / "a.sqz"), _run(_cfg(), split, d / "b.sqz")


def _check_result(result: FoldResult) -> None:
    assert result.size_bytes == os.path.getsize(result.artifact_path) > 0
    assert math.isfinite(result.latency_ms) and result.latency_ms > 0
    assert math.isfinite(result.latency_p90_ms) and result.latency_p90_ms >= result.latency_ms
    assert math.isfinite(result.throughput_per_s) and result.throughput_per_s > 0
    assert result.runtime in RUNTIMES
    assert 0.0 <= result.accuracy <= 1.0
    assert 0.0 <= result.sparsity <= 1.0 and result.avg_bits > 0
    assert result.latency_protocol == {"threads": 1, "batch_size": 1, "warmup": 3, "repeats": 15,
                                       "choice_repeats": 100, "throughput_batch": 32}
    assert all(math.isfinite(v) for v in result.metrics().values())


def test_run_fold_numbers_come_from_the_saved_file(fp32_runs, split) -> None:
    result = fp32_runs[0]
    _check_result(result)
    assert result.runtime in {"fp32_dense", "torchscript", "onnxruntime"}          # nothing quantized: no int8 candidate
    assert result.sparsity == 0.0 and result.avg_bits == 32.0
    loaded = artifact.load(result.artifact_path)
    X_val, y_val = torch.from_numpy(split[2]), torch.from_numpy(split[3])
    assert result.accuracy == accuracy(loaded, X_val, y_val)          # both fp32 runtimes: the same outputs
    assert result.accuracy == accuracy(_runtime_model(result, X_val), X_val, y_val)
    assert result.accuracy > 0.5                                   # it did learn something
    assert loaded.meta == {"seed": 0}


def test_same_seed_gives_identical_accuracy_and_identical_file_bytes(fp32_runs) -> None:
    a, b = fp32_runs
    assert a.accuracy == b.accuracy
    with open(a.artifact_path, "rb") as fa, open(b.artifact_path, "rb") as fb:
        assert fa.read() == fb.read()


def test_another_seed_gives_another_model(fp32_runs, split, tmp_path) -> None:
    other = _run(_cfg(), split, tmp_path / "c.sqz", seed=1)
    with open(fp32_runs[0].artifact_path, "rb") as fa, open(other.artifact_path, "rb") as fc:
        assert fa.read() != fc.read()


def test_compressed_fold_is_deterministic_and_scored_on_its_runtime(split, tmp_path) -> None:
    cfg = _cfg(finetune_epochs=2, neurons={"ratio": 0.25},
               prune={"ratio": 0.6, "schedule": "gradual", "scope": "per_layer"},
               quant={"scheme": "uniform", "bits": 4})
    a = _run(cfg, split, tmp_path / "a.sqz")
    # the runtime is chosen by timing (int8 candidates within the margin can swap between runs, and int8 changes
    # the outputs), so the second run scores on the runtime the first chose, as a reproduction does
    b = run_fold(cfg, *split, seed=0, artifact_path=tmp_path / "b.sqz", meta={"seed": 0}, runtime=a.runtime)
    assert b.runtime == a.runtime
    for result in (a, b):
        _check_result(result)
    assert a.units_kept == b.units_kept == [24, 12]
    assert (tmp_path / "a.sqz").read_bytes() == (tmp_path / "b.sqz").read_bytes()
    assert a.accuracy == b.accuracy and a.sparsity == b.sparsity and a.avg_bits == b.avg_bits
    sizes = [64 * 24, 24 * 12, 12 * 10]                         # per-layer floor(0.6 * n) zeros
    assert a.sparsity == sum(math.floor(0.6 * n) for n in sizes) / sum(sizes)
    X_val, y_val = torch.from_numpy(split[2]), torch.from_numpy(split[3])
    assert a.accuracy == accuracy(_runtime_model(a, X_val), X_val, y_val)


def test_compressed_file_is_smaller_than_fp32(fp32_runs, split, tmp_path) -> None:
    cfg = _cfg(finetune_epochs=1, prune={"ratio": 0.8}, quant={"scheme": "uniform", "bits": 4})
    result = _run(cfg, split, tmp_path / "small.sqz")
    assert result.size_bytes * 3 < fp32_runs[0].size_bytes
