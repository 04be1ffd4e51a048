"""Latency protocol and scores, measured on the model loaded back from its artifact file.

Protocol (returned with the numbers so it can be logged): ``torch.set_num_threads(threads)`` for the
duration of the measurement, inference mode, ``warmup`` untimed calls, then ``repeats`` timed calls of one
request of ``batch_size`` real rows each (cycling through the evaluation rows); ``latency_ms`` is the
median time per request divided by the batch size (per sample; equal to per request at the default
batch size 1), ``latency_p90_ms`` its 90th percentile, ``throughput_per_s`` samples per second at
``throughput_batch`` (median of ``max(5, min(choice_repeats, repeats) // 10)`` calls). A timed call is what
serving the runtime costs (:func:`timed_call`): ``model(x)`` for the torch runtimes, ``InferenceSession.run``
on a numpy input for ONNX Runtime (since session 11; before, the ONNX runtimes' timings also held squeeze's
conversion from and to torch tensors, ~10 µs per call on the 2-core machine of 2026-11-27).

Runtime: the loaded model is dense fp32 after unpacking (physically smaller after neuron pruning), except
that a table the artifact stores as two factors (``compress.lowrank.rank``,
:class:`~trainers.compress.lowrank.Factored`) is served factored wherever the network can use it: every runtime
scores a recommender's items as ``(q @ Bᵀ) @ Aᵀ`` from the decoded factors (the torch runtimes through
:func:`factored_scores`, the ONNX ones through :func:`trainers.onnx_export.to_onnx`), so the latency measured
is that of what the file stores, and accuracy is scored on those scores. The candidates, in the order they are
tried (:data:`RUNTIMES`, a registry: name -> :class:`Runtime`):

* ``fp32_dense``: eager PyTorch;
* ``torchscript``: the same model traced and frozen (the same fp32 arithmetic without Python's per-module
  overhead, which dominates small models at batch 1);
* ``int8_dynamic``: torch's dynamic-quantization kernels for every Linear layer (only where the weights
  were quantized to <= 8 bits);
* ``onnxruntime``: the model exported to ONNX with fp32 weights (:mod:`trainers.onnx_export`) served by
  ONNX Runtime (CPU, ``threads`` intra-op threads, sequential);
* ``onnxruntime_int8``: the ONNX export whose <= 8-bit Linear weights run on ONNX Runtime's int8 kernels
  (``MatMulInteger`` with activations quantized per call; only where some Linear weights are <= 8 bits).

Each candidate is timed at ``batch_size`` with ``choice_repeats`` calls (at most ``repeats``), the candidates in
interleaved rounds so that a burst of machine load hits them alike (:func:`screen_runtimes`), and replaces the
current best only when at least 10% faster; the winner is then timed with the full ``repeats`` (against the
reference when there is one) and the accuracy is scored on it too. Screening with fewer calls keeps the choice as
cheap as it was with 100 calls while the reported latency and speedup get the longer protocol; a single candidate
is not screened. ``runtimes`` (config ``latency.runtimes``, null = all) restricts the candidates, e.g.
``[onnxruntime, onnxruntime_int8]`` for a user who deploys on ONNX Runtime.

Paired latency (:func:`measure_paired`): given a second served model, the study's fp32 reference, the winner
is timed against it in the same process in alternating blocks (reference, candidate, candidate, reference,
... ; ``blocks`` rounds of ``repeats // (2 * blocks)`` calls per side, so the timed calls stay ``repeats``).
Machine load that slows both sides cancels out of the per-block ratio; :func:`paired_stats` (pure) turns the
blocks into the speedup (median over blocks of reference block median / candidate block median) and 95%
bootstrap intervals over blocks (seeded) for the speedup and the candidate's latency. Measured against
itself (A/A) the interval is the noise floor of the protocol on this machine.

Overhead (:func:`empty_forward_ms`): the latency of a forward pass that computes nothing in a runtime, the
per-call cost no compression can remove.
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from trainers.errors import InputError
from trainers.fit import cpu_threads

__all__ = ["RUNTIMES", "LatencyProtocol", "LatencyResult", "PairedStats", "Runtime", "accuracy", "build_runtime",
           "candidate_runtimes", "choose_runtime", "empty_forward_ms", "factored_scores", "int8_dynamic",
           "measure_latency", "measure_paired", "onnxruntime", "paired_stats", "screen_runtimes", "timed_call",
           "torchscript"]


#: a runtime replaces the current best only when at least 10% faster, so timing noise does not flip the
#: choice (and with it the accuracy, for int8) between runs of the same trial
RUNTIME_MARGIN = 0.9


@dataclass(frozen=True)
class LatencyProtocol:
    threads: int = 1
    batch_size: int = 1
    warmup: int = 20
    repeats: int = 400
    choice_repeats: int = 100                   # timed calls per candidate runtime while choosing one
    throughput_batch: int = 256
    runtimes: tuple[str, ...] | None = None     # candidate runtimes (names of RUNTIMES); None = all
    blocks: int = 20                            # paired measurement: alternating rounds (reference, candidate)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> LatencyProtocol:
        """From the ``latency`` config block; ``runtimes`` must be null or a list of :data:`RUNTIMES` names.

        Raises:
            InputError: at ``latency.runtimes`` for an unknown runtime or a value that is not a list.
        """
        kwargs: dict[str, Any] = {k: int(cfg[k]) for k in ("threads", "batch_size", "warmup", "repeats",
                                                           "choice_repeats", "throughput_batch", "blocks") if k in cfg}
        runtimes = cfg.get("runtimes")
        if runtimes is not None:
            if isinstance(runtimes, str) or not isinstance(runtimes, Sequence) or not runtimes \
                    or not all(isinstance(r, str) for r in runtimes):
                raise InputError("latency.runtimes", f"must be null or a non-empty list of runtimes from "
                                                     f"{'|'.join(RUNTIMES)}, got {runtimes!r}")
            unknown = [r for r in runtimes if r not in RUNTIMES]
            if unknown:
                raise InputError("latency.runtimes", f"unknown runtime {unknown[0]!r}; runtimes: {'|'.join(RUNTIMES)}")
            kwargs["runtimes"] = tuple(runtimes)
        return cls(**kwargs)

    @property
    def screen_repeats(self) -> int:
        """Timed calls per candidate runtime while choosing one: ``choice_repeats``, at most ``repeats``."""
        return min(self.choice_repeats, self.repeats)

    def as_dict(self) -> dict[str, Any]:
        """The protocol as logged (``runtimes`` only when restricted; ``blocks`` by :class:`LatencyResult`
        when the measurement was paired)."""
        out = asdict(self)
        del out["blocks"]
        if self.runtimes is None:
            del out["runtimes"]
        else:
            out["runtimes"] = list(self.runtimes)
        return out


@dataclass(frozen=True)
class LatencyResult:
    latency_ms: float
    latency_p90_ms: float
    throughput_per_s: float
    runtime: str
    protocol: LatencyProtocol
    paired: PairedStats | None = None           # set by :func:`measure_paired`

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["protocol"] = self.protocol.as_dict()
        if self.paired is not None:
            out["protocol"]["blocks"] = self.protocol.blocks
        return out


@dataclass(frozen=True)
class PairedStats:
    """A candidate timed against a reference in alternating blocks (:func:`paired_stats`).

    Attributes:
        speedup: reference latency / candidate latency, the median over blocks of the per-block ratio.
        speedup_ci_low, speedup_ci_high: its 95% bootstrap interval over blocks.
        latency_ms: the candidate's latency, the median of its per-block medians (per sample).
        latency_ci_low, latency_ci_high: its 95% bootstrap interval over blocks.
        reference_ms: the reference's latency measured in the same blocks.
        blocks: how many blocks per side.
    """

    speedup: float
    speedup_ci_low: float
    speedup_ci_high: float
    latency_ms: float
    latency_ci_low: float
    latency_ci_high: float
    reference_ms: float
    blocks: int

    @property
    def noise(self) -> float:
        """Relative half-width of the speedup interval around 1: measured A/A (a model against itself), the
        smallest latency difference this protocol can tell from noise."""
        return float(max(self.speedup_ci_high - 1.0, 1.0 - self.speedup_ci_low, 0.0))


def paired_stats(reference_ms: Any, candidate_ms: Any, level: float = 0.95, n_boot: int = 2000,
                 seed: int = 0) -> PairedStats:
    """The paired speedup and latency of per-call times measured in alternating blocks.

    Each block is summarized by its median call (robust to a stray slow call); block ``b``'s ratio is
    ``reference[b] / candidate[b]``, timed seconds apart, so load that slows both sides cancels. The speedup
    is the median ratio over blocks; the intervals are percentile bootstraps over blocks (``n_boot``
    resamples drawn from a generator seeded with ``seed``, so the same times give the same interval).

    Args:
        reference_ms, candidate_ms: per-call times, shape ``(blocks, calls)`` each, same ``blocks``.
        level: coverage of the intervals.

    Raises:
        ValueError: on a shape mismatch, fewer than 2 blocks, or a time that is not positive.

    Example:
        >>> s = paired_stats([[2.0, 2.1], [4.0, 4.2]], [[1.0, 1.0], [2.0, 2.1]])
        >>> round(s.speedup, 2), s.blocks
        (2.02, 2)
    """
    ref = np.asarray(reference_ms, dtype=float)
    cand = np.asarray(candidate_ms, dtype=float)
    if ref.ndim != 2 or cand.ndim != 2 or ref.shape[0] != cand.shape[0] or ref.shape[0] < 2:
        raise ValueError(f"reference_ms and candidate_ms must be (blocks >= 2, calls) with the same blocks, "
                         f"got {ref.shape} and {cand.shape}")
    if not (ref > 0).all() or not (cand > 0).all():
        raise ValueError("call times must be positive")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level=}")
    ref_b, cand_b = np.median(ref, axis=1), np.median(cand, axis=1)
    ratio = ref_b / cand_b
    picks = np.random.default_rng(seed).integers(0, len(ratio), size=(n_boot, len(ratio)))
    tail = 100 * (1 - level) / 2
    s_lo, s_hi = np.percentile(np.median(ratio[picks], axis=1), [tail, 100 - tail])
    l_lo, l_hi = np.percentile(np.median(cand_b[picks], axis=1), [tail, 100 - tail])
    return PairedStats(float(np.median(ratio)), float(s_lo), float(s_hi), float(np.median(cand_b)),
                       float(l_lo), float(l_hi), float(np.median(ref_b)), len(ratio))


def _batches(X: torch.Tensor, batch_size: int, count: int) -> list[torch.Tensor]:
    reps = -(-batch_size * count // len(X))
    pool = X.repeat((reps,) + (1,) * (X.dim() - 1)) if reps > 1 else X
    return [pool[i * batch_size:(i + 1) * batch_size].contiguous() for i in range(count)]


def timed_call(model: nn.Module) -> tuple[Callable[[Any], Any], Callable[[torch.Tensor], Any]]:
    """``(call, prepare)``: what one timed call of a served ``model`` runs, and how its input batch is put in
    the form that call takes, before the clock starts. A runtime that serves outside torch (ONNX Runtime:
    :class:`trainers.onnx_export.OnnxRuntimeModel`, its ``serve`` and ``serve_input``) is timed on its own call
    with its input already in its form, which is what a service calling that runtime pays; the conversion from
    and to torch tensors that lets squeeze score it like a torch module is not part of serving the file. Torch
    runtimes are timed on ``model(x)``, which is how they are served."""
    serve, serve_input = getattr(model, "serve", None), getattr(model, "serve_input", None)
    if callable(serve) and callable(serve_input):
        return serve, serve_input
    return model, lambda xb: xb


@torch.inference_mode()
def _time_calls(model: nn.Module, batches: list[torch.Tensor], warmup: int) -> np.ndarray:
    call, prepare = timed_call(model)
    inputs = [prepare(xb) for xb in batches]
    for xb in inputs[:warmup]:
        call(xb)
    times = []
    for xb in inputs[warmup:]:
        start = time.perf_counter_ns()
        call(xb)
        times.append(time.perf_counter_ns() - start)
    return np.asarray(times, dtype=np.float64) / 1e6        # ms per call


def measure_latency(model: nn.Module, X: torch.Tensor, protocol: LatencyProtocol, runtime: str = "fp32_dense",
                    throughput: bool = True) -> LatencyResult:
    """Time ``model`` on rows of ``X`` following ``protocol`` (see the module docstring). ``throughput=False``
    skips the throughput calls (the result's ``throughput_per_s`` is then NaN): :func:`choose_runtime` measures
    it for the winning runtime only."""
    model.eval()
    p = protocol
    with cpu_threads(p.threads):
        per_call = _time_calls(model, _batches(X, p.batch_size, p.warmup + p.repeats), p.warmup)
        rows_per_s = _throughput(model, X, p) if throughput else float("nan")
    per_sample = per_call / p.batch_size
    return LatencyResult(
        latency_ms=float(np.median(per_sample)),
        latency_p90_ms=float(np.percentile(per_sample, 90)),
        throughput_per_s=rows_per_s,
        runtime=runtime,
        protocol=p,
    )


def _throughput(model: nn.Module, X: torch.Tensor, p: LatencyProtocol) -> float:
    """Rows per second at ``p.throughput_batch`` (median of ``max(5, screen_repeats // 10)`` calls after 2 warm-up
    calls)."""
    tp_calls = _time_calls(model, _batches(X, p.throughput_batch, 2 + max(5, p.screen_repeats // 10)), 2)
    return float(p.throughput_batch / (np.median(tp_calls) / 1e3))


def measure_paired(candidate: nn.Module, reference: nn.Module, X: torch.Tensor, protocol: LatencyProtocol,
                   runtime: str = "fp32_dense", seed: int = 0) -> LatencyResult:
    """Time ``candidate`` against ``reference`` (two served models) on the same rows of ``X``, in alternating
    blocks (see the module docstring); the result's ``paired`` holds the speedup and the intervals.

    The timed calls are ``protocol.repeats`` in all (half per side; at least one call per block), so pairing
    costs the reference's warm-up and no more timed calls than :func:`measure_latency`.
    """
    p = protocol
    calls = max(1, p.repeats // (2 * p.blocks))
    ref_ms = np.empty((p.blocks, calls))
    cand_ms = np.empty((p.blocks, calls))
    candidate.eval()
    reference.eval()
    with cpu_threads(p.threads):
        batches = _batches(X, p.batch_size, max(p.warmup, calls))
        _time_calls(reference, batches[:p.warmup], p.warmup)
        _time_calls(candidate, batches[:p.warmup], p.warmup)
        for b in range(p.blocks):          # ABBA order: a linear drift in load hits both sides alike
            first, second = (reference, candidate) if b % 2 == 0 else (candidate, reference)
            t_first = _time_calls(first, batches[:calls], 0)
            t_second = _time_calls(second, batches[:calls], 0)
            ref_ms[b], cand_ms[b] = (t_first, t_second) if b % 2 == 0 else (t_second, t_first)
        throughput = _throughput(candidate, X, p)
    stats = paired_stats(ref_ms / p.batch_size, cand_ms / p.batch_size, seed=seed)
    return LatencyResult(
        latency_ms=stats.latency_ms,
        latency_p90_ms=float(np.percentile(cand_ms / p.batch_size, 90)),
        throughput_per_s=throughput,
        runtime=runtime,
        protocol=p,
        paired=stats,
    )


class _Empty(nn.Module):
    """A forward pass that computes nothing: one score per row."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1)[:, :1]


def _empty_onnx(example: torch.Tensor, threads: int) -> nn.Module:
    import onnx
    from onnx import TensorProto, helper

    from trainers.onnx_export import OUTPUT_NAME, OnnxRuntimeModel

    elem = TensorProto.INT64 if example.dtype == torch.int64 else TensorProto.FLOAT
    graph = helper.make_graph([helper.make_node("Identity", ["x"], [OUTPUT_NAME])], "empty",
                              [helper.make_tensor_value_info("x", elem, [None] * example.dim())],
                              [helper.make_tensor_value_info(OUTPUT_NAME, elem, [None] * example.dim())])
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = min(proto.ir_version, 8)
    onnx.checker.check_model(proto)
    return OnnxRuntimeModel(proto, threads)


def empty_forward_ms(runtime: str, X: torch.Tensor, protocol: LatencyProtocol) -> float:
    """Latency (ms per sample, same protocol) of a forward pass that computes nothing, served the way
    ``runtime`` serves a model: the per-call overhead that compression cannot remove."""
    example = X[:protocol.batch_size]
    if runtime.startswith("onnxruntime"):
        served = _empty_onnx(example, protocol.threads)
    elif runtime == "torchscript":
        served = torchscript(_Empty(), example)
    else:                                   # fp32_dense, int8_dynamic: eager PyTorch module call
        served = _Empty()
    return measure_latency(served, X, protocol, runtime).latency_ms


#: the state-dict name of the table a network can score from factors (its ``use_item_factors``)
ITEM_TABLE = "net.item_emb.weight"


def factored_scores(model: nn.Module) -> nn.Module:
    """``model`` (a loaded artifact's Pipeline) as the torch runtimes serve it: when the artifact stores its item
    table factored (``model.encodings``, :class:`~trainers.compress.lowrank.Factored`) and the network can score
    from factors (``net.use_item_factors``, :class:`~trainers.models.seqrec.SeqRec`), a copy whose scores are
    ``(q @ Bᵀ) @ Aᵀ`` from the decoded factors; otherwise ``model`` itself. The factors are the file's, decoded:
    nothing but the order of the sums differs from the dense table's product."""
    from trainers.compress.lowrank import Factored

    enc = (getattr(model, "encodings", None) or {}).get(ITEM_TABLE)
    if not isinstance(enc, Factored) or not hasattr(getattr(model, "net", None), "use_item_factors"):
        return model
    served = copy.deepcopy(model)                   # the loaded model stays as the file decodes it (ONNX export)
    served.net.use_item_factors(enc.a.decode(), enc.b.decode())
    return served.eval()


def int8_dynamic(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose Linear layers run torch's int8 dynamic-quantization kernels."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                       # torch.ao.quantization is deprecated
        from torch.ao.quantization import quantize_dynamic
        return quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)


def torchscript(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """``model`` traced on ``example`` and frozen (constants folded): same outputs, less call overhead.

    The trace is not re-run to check it (``check_trace=False``, which halves the build: ~5 instead of ~11 ms
    for an MLP, paid on every fold of every trial): what the served module computes is what gets scored, so
    a trace that differed from the model would show in the accuracy measured on it, not pass unseen."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                       # torch.jit is in maintenance mode
        with torch.inference_mode():
            return torch.jit.freeze(torch.jit.trace(model.eval(), example, check_trace=False))


def onnxruntime(model: nn.Module, example: torch.Tensor, threads: int = 1, weights: str = "fp32") -> nn.Module:
    """``model`` (a loaded artifact's Pipeline) exported to ONNX (:func:`trainers.onnx_export.to_onnx`,
    ``weights`` fp32 or int8) and served by an ONNX Runtime session with ``threads`` intra-op threads."""
    from trainers.onnx_export import OnnxRuntimeModel, to_onnx  # onnx/onnxruntime load only when used

    return OnnxRuntimeModel(to_onnx(model, weights, example), threads)


def _has_int8_linear(model: nn.Module) -> bool:
    from trainers.onnx_export import int8_layers

    return bool(int8_layers(model))


@dataclass(frozen=True)
class Runtime:
    """One way to serve a loaded model.

    Attributes:
        build: ``(model, example rows, threads) -> served module`` (``served(x)`` returns the scores).
        int8: a candidate only when the weights were quantized to <= 8 bits.
        applies: a further condition on the model (e.g. it has Linear layers).
    """

    build: Callable[[nn.Module, torch.Tensor, int], nn.Module]
    int8: bool = False
    applies: Callable[[nn.Module], bool] = lambda model: True


#: the runtimes, in the order :func:`choose_runtime` tries them (the first candidate is the baseline); the torch
#: ones serve :func:`factored_scores` of the model, the ONNX export factors the graph itself
RUNTIMES: dict[str, Runtime] = {
    "fp32_dense": Runtime(lambda model, example, threads: factored_scores(model)),
    "torchscript": Runtime(lambda model, example, threads: torchscript(factored_scores(model), example)),
    "int8_dynamic": Runtime(lambda model, example, threads: int8_dynamic(factored_scores(model)), int8=True,
                            applies=lambda model: any(isinstance(m, nn.Linear) for m in model.modules())),
    "onnxruntime": Runtime(lambda model, example, threads: onnxruntime(model, example, threads)),
    "onnxruntime_int8": Runtime(lambda model, example, threads: onnxruntime(model, example, threads, "int8"),
                                int8=True, applies=_has_int8_linear),
}


def build_runtime(model: nn.Module, runtime: str, example: torch.Tensor, threads: int = 1) -> nn.Module:
    """``model`` served on ``runtime`` (a key of :data:`RUNTIMES`); ``example`` is an input batch to trace,
    ``threads`` the intra-op threads of an ONNX Runtime session."""
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; known: {', '.join(RUNTIMES)}")
    return RUNTIMES[runtime].build(model, example, threads)


def candidate_runtimes(model: nn.Module, quantized_bits: int | None,
                       allowed: tuple[str, ...] | None = None) -> list[str]:
    """The runtimes :func:`choose_runtime` measures for ``model``, in :data:`RUNTIMES` order: those in
    ``allowed`` (None = all) that apply (int8 ones only when ``quantized_bits <= 8``)."""
    int8_ok = quantized_bits is not None and quantized_bits <= 8
    return [name for name, rt in RUNTIMES.items()
            if (allowed is None or name in allowed) and (int8_ok or not rt.int8) and rt.applies(model)]


def choose_runtime(model: nn.Module, X: torch.Tensor, protocol: LatencyProtocol,
                   quantized_bits: int | None, runtime: str | None = None,
                   reference: nn.Module | None = None) -> tuple[nn.Module, LatencyResult]:
    """Measure the runtimes this artifact allows and return the fastest at ``protocol.batch_size``.

    ``quantized_bits``: the widest code width of the model's quantized weights (None = not quantized);
    int8 runtimes are candidates only when it is <= 8. ``protocol.runtimes`` restricts the candidates.
    ``runtime``: serve on this one instead of choosing (a reproduction scores on the runtime the study
    recorded: int8 changes the outputs). ``reference``: a served reference model; the result is then the
    winner timed against it (:func:`measure_paired`) instead of alone.

    Raises:
        InputError: at ``latency.runtimes`` when none of the allowed runtimes applies to this model.
    """
    example = X[:protocol.batch_size]
    if runtime is not None:
        served = build_runtime(model, runtime, example, protocol.threads)
        if reference is not None:
            return served, measure_paired(served, reference, X, protocol, runtime)
        return served, measure_latency(served, X, protocol, runtime)
    names = candidate_runtimes(model, quantized_bits, protocol.runtimes)
    if not names:
        raise InputError("latency.runtimes", f"none of {list(protocol.runtimes or ())} applies to this model "
                                             f"(int8 runtimes need weights quantized to <= 8 bits); add "
                                             f"fp32_dense, torchscript or onnxruntime")
    if len(names) == 1:       # nothing to choose: no screening, straight to the full measurement
        return choose_runtime(model, X, protocol, quantized_bits, names[0], reference)
    served = {name: build_runtime(model, name, example, protocol.threads) for name in names}
    screened = screen_runtimes(served, X, protocol)
    best = names[0]
    for name in names[1:]:    # latency decides; the winner is timed again with the full protocol
        if screened[name] < RUNTIME_MARGIN * screened[best]:
            best = name
    if reference is not None:
        return served[best], measure_paired(served[best], reference, X, protocol, best)
    return served[best], measure_latency(served[best], X, protocol, best)


def screen_runtimes(served: Mapping[str, nn.Module], X: torch.Tensor, protocol: LatencyProtocol) -> dict[str, float]:
    """Median latency (ms per sample) of each served runtime over ``protocol.screen_repeats`` calls, timed in
    interleaved rounds: every round times every candidate for ``screen_repeats / rounds`` calls, the order
    rotating from round to round (``rounds = min(blocks, screen_repeats)``). Timed one after the other, a burst
    of machine load during one candidate's calls alone picks the wrong runtime, and for the study's fp32
    reference that inflates every trial's paired speedup by the gap between the runtimes; interleaved, a burst
    hits every candidate alike."""
    p = protocol
    rounds = max(1, min(p.blocks, p.screen_repeats))
    calls = [p.screen_repeats // rounds + (r < p.screen_repeats % rounds) for r in range(rounds)]
    order = list(served)
    times: dict[str, list[np.ndarray]] = {name: [] for name in order}
    with cpu_threads(p.threads):
        batches = _batches(X, p.batch_size, max(p.warmup, calls[0]))
        for name in order:
            served[name].eval()
            _time_calls(served[name], batches[:p.warmup], p.warmup)
        for r in range(rounds):
            for name in order[r % len(order):] + order[:r % len(order)]:
                times[name].append(_time_calls(served[name], batches[:calls[r]], 0))
    return {name: float(np.median(np.concatenate(t))) / p.batch_size for name, t in times.items()}


@torch.inference_mode()
def accuracy(model: nn.Module, X: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> float:
    """Share of rows whose arg-max logit is the label."""
    model.eval()
    correct = 0
    for i in range(0, len(X), batch_size):
        correct += int((model(X[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
    return correct / max(len(X), 1)
