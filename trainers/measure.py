"""Latency protocol and scores, measured on the model loaded back from its artifact file.

Protocol (returned with the numbers so it can be logged): ``torch.set_num_threads(threads)`` for the
duration of the measurement, inference mode, ``warmup`` untimed calls, then ``repeats`` timed calls of one
request of ``batch_size`` real rows each (cycling through the evaluation rows); ``latency_ms`` is the
median time per request divided by the batch size (per sample; equal to per request at the default
batch size 1), ``latency_p90_ms`` its 90th percentile, ``throughput_per_s`` samples per second at
``throughput_batch`` (median of ``max(5, repeats // 10)`` calls).

Runtime: the loaded model is dense fp32 after unpacking (physically smaller after neuron pruning). The
candidates are ``fp32_dense`` (eager PyTorch), ``torchscript`` (the same model traced and frozen: the same
fp32 arithmetic without Python's per-module overhead, which dominates small models at batch 1) and, where
the weights were quantized to <= 8 bits, ``int8_dynamic`` (torch's dynamic-quantization kernels). Each is
timed at ``batch_size`` and the fastest wins (by a 10% margin); the accuracy is then scored on that runtime too.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["RUNTIMES", "LatencyProtocol", "LatencyResult", "accuracy", "build_runtime", "choose_runtime",
           "int8_dynamic", "measure_latency", "torchscript"]


#: a runtime replaces the current best only when at least 10% faster, so timing noise does not flip the
#: choice (and with it the accuracy, for int8) between runs of the same trial
RUNTIME_MARGIN = 0.9


@dataclass(frozen=True)
class LatencyProtocol:
    threads: int = 1
    batch_size: int = 1
    warmup: int = 20
    repeats: int = 100
    throughput_batch: int = 256

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> LatencyProtocol:
        return cls(**{k: int(cfg[k]) for k in ("threads", "batch_size", "warmup", "repeats", "throughput_batch")
                      if k in cfg})


@dataclass(frozen=True)
class LatencyResult:
    latency_ms: float
    latency_p90_ms: float
    throughput_per_s: float
    runtime: str
    protocol: LatencyProtocol

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["protocol"] = asdict(self.protocol)
        return out


@contextmanager
def _threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _batches(X: torch.Tensor, batch_size: int, count: int) -> list[torch.Tensor]:
    reps = -(-batch_size * count // len(X))
    pool = X.repeat((reps,) + (1,) * (X.dim() - 1)) if reps > 1 else X
    return [pool[i * batch_size:(i + 1) * batch_size].contiguous() for i in range(count)]


@torch.inference_mode()
def _time_calls(model: nn.Module, batches: list[torch.Tensor], warmup: int) -> np.ndarray:
    for xb in batches[:warmup]:
        model(xb)
    times = []
    for xb in batches[warmup:]:
        start = time.perf_counter_ns()
        model(xb)
        times.append(time.perf_counter_ns() - start)
    return np.asarray(times, dtype=np.float64) / 1e6        # ms per call


def measure_latency(model: nn.Module, X: torch.Tensor, protocol: LatencyProtocol, runtime: str = "fp32_dense") -> LatencyResult:
    """Time ``model`` on rows of ``X`` following ``protocol`` (see the module docstring)."""
    model.eval()
    p = protocol
    with _threads(p.threads):
        per_call = _time_calls(model, _batches(X, p.batch_size, p.warmup + p.repeats), p.warmup)
        n_tp = max(5, p.repeats // 10)
        tp_calls = _time_calls(model, _batches(X, p.throughput_batch, 2 + n_tp), 2)
    per_sample = per_call / p.batch_size
    return LatencyResult(
        latency_ms=float(np.median(per_sample)),
        latency_p90_ms=float(np.percentile(per_sample, 90)),
        throughput_per_s=float(p.throughput_batch / (np.median(tp_calls) / 1e3)),
        runtime=runtime,
        protocol=p,
    )


def int8_dynamic(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose Linear layers run torch's int8 dynamic-quantization kernels."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                       # torch.ao.quantization is deprecated
        from torch.ao.quantization import quantize_dynamic
        return quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)


def torchscript(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """``model`` traced on ``example`` and frozen (constants folded): same outputs, less call overhead."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                       # torch.jit is in maintenance mode
        with torch.inference_mode():
            return torch.jit.freeze(torch.jit.trace(model.eval(), example))


RUNTIMES = ("fp32_dense", "torchscript", "int8_dynamic")


def build_runtime(model: nn.Module, runtime: str, example: torch.Tensor) -> nn.Module:
    """``model`` served on ``runtime`` (one of :data:`RUNTIMES`); ``example`` is an input batch to trace."""
    if runtime == "fp32_dense":
        return model
    if runtime == "torchscript":
        return torchscript(model, example)
    if runtime == "int8_dynamic":
        return int8_dynamic(model)
    raise ValueError(f"unknown runtime {runtime!r}; known: {', '.join(RUNTIMES)}")


def choose_runtime(model: nn.Module, X: torch.Tensor, protocol: LatencyProtocol,
                   quantized_bits: int | None, runtime: str | None = None) -> tuple[nn.Module, LatencyResult]:
    """Measure the runtimes this artifact allows and return the fastest at ``protocol.batch_size``.

    ``quantized_bits``: the widest code width of the model's quantized weights (None = not quantized);
    the int8 runtime is a candidate only when it is <= 8. ``runtime``: serve on this one instead of
    choosing (a reproduction scores on the runtime the study recorded: int8 changes the outputs).
    """
    if runtime is not None:
        served = build_runtime(model, runtime, X[:protocol.batch_size])
        return served, measure_latency(served, X, protocol, runtime)
    best_model, best = model, measure_latency(model, X, protocol, "fp32_dense")
    scripted = torchscript(model, X[:protocol.batch_size])
    result = measure_latency(scripted, X, protocol, "torchscript")
    if result.latency_ms < RUNTIME_MARGIN * best.latency_ms:
        best_model, best = scripted, result
    has_linear = any(isinstance(m, nn.Linear) for m in model.modules())
    if quantized_bits is not None and quantized_bits <= 8 and has_linear:
        candidate = int8_dynamic(model)
        result = measure_latency(candidate, X, protocol, "int8_dynamic")
        if result.latency_ms < RUNTIME_MARGIN * best.latency_ms:
            best_model, best = candidate, result
    return best_model, best


@torch.inference_mode()
def accuracy(model: nn.Module, X: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Share of rows whose arg-max logit is the label."""
    model.eval()
    correct = 0
    for i in range(0, len(X), batch_size):
        correct += int((model(X[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
    return correct / max(len(X), 1)
