"""One fold of one trial, end to end: fit -> compress -> fine-tune -> pack (file) -> load -> score and time.

This is the library's contract: every number comes from the file. ``size_bytes`` is the file's length,
latency is measured on the model loaded from it, accuracy is that same loaded model's score.

    result = run_fold(cfg, X_train, y_train, X_val, y_val, seed=0, artifact_path="fold0.sqz")

``cfg`` is a plain nested dict with the keys of conf/sweep.yaml (``data``, ``model``, ``train``,
``compress``, ``latency``, ``device``).

What differs between classification and ranking is the task's (:mod:`trainers.task`): the config's
``task`` (set with ``n_classes`` by :func:`trainers.task.configure`; else its model's) builds the model, and the
artifact's network picks how it is scored. Ranking (``model=seqrec`` on sequence data, see
:mod:`trainers.data._sequence`): rows are users' event windows ``(C, L)`` and ``y`` their next item. The network
trains on its next-item loss at every position (full softmax over all items), then compresses as any other;
the loaded model is scored with HR@k as ``accuracy`` and NDCG@k as ``ndcg`` (``k = data.top_k``, ranking over
all items minus the user's history, :mod:`trainers.ranking`), and latency is the time to score every item for
one request (batch 1).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainers import artifact
from trainers.base_cache import BaseCache, base_key
from trainers.compress import compress
from trainers.fit import cpu_threads, resolve_device, seed_everything, train
from trainers.measure import LatencyProtocol, LatencyResult, build_runtime, choose_runtime
from trainers.models import Pipeline, build_pipeline
from trainers.task import Task, config_task, task_of

__all__ = ["FoldResult", "Fitted", "ReferenceArtifact", "fit_base", "fit_and_compress", "fit_compressed",
           "evaluate_artifact", "run_fold"]


@dataclass
class FoldResult:
    accuracy: float
    size_bytes: int
    latency_ms: float
    latency_p90_ms: float
    throughput_per_s: float
    sparsity: float
    avg_bits: float
    fit_seconds: float             # train_seconds + compress_seconds
    pack_seconds: float            # encode + entropy-code + write the artifact
    eval_seconds: float            # load + runtime choice + latency + accuracy
    runtime: str
    artifact_path: str
    latency_protocol: dict[str, Any] = field(default_factory=dict)
    units_kept: list[int] = field(default_factory=list)
    ndcg: float | None = None      # ranking only: NDCG@k (``accuracy`` is then HR@k)
    train_seconds: float = 0.0     # fp32 base: preprocessing + training, or loading it from the base cache
    compress_seconds: float = 0.0  # compression + fine-tune + encoding
    base_cached: bool = False      # the fp32 base came from the base cache
    # timed against the study's fp32 reference (``reference`` given; None otherwise), see evaluate_artifact
    speedup: float | None = None
    speedup_ci_low: float | None = None
    speedup_ci_high: float | None = None
    latency_ci_low: float | None = None
    latency_ci_high: float | None = None
    latency_measured_ms: float | None = None

    def metrics(self) -> dict[str, float]:
        """The numeric fields, named as in :mod:`search.names`."""
        return {k: float(v) for k, v in asdict(self).items() if isinstance(v, (int, float))}


@dataclass
class Fitted:
    """A compressed in-memory model and how it was made."""
    model: Pipeline
    units_kept: list[int]
    base_cached: bool              # the fp32 base model came from the :class:`~trainers.base_cache.BaseCache`
    train_seconds: float           # fitting preprocessing + training the fp32 base (or loading it from the cache)
    compress_seconds: float        # neuron pruning, weight pruning, quantization, fine-tune, encoding


def _n_outputs(cfg: Mapping[str, Any], task: Task, X_train: np.ndarray, y_train: np.ndarray) -> int:
    """The output size training builds: ``cfg["n_classes"]`` (:func:`trainers.task.configure` sets it from the
    dataset), else what the training rows show."""
    return int(cfg["n_classes"]) if cfg.get("n_classes") else task.n_outputs_of_rows(X_train, y_train)


def fit_base(cfg: Mapping[str, Any], X_train: np.ndarray, y_train: np.ndarray, seed: int,
             cache: BaseCache | None = None) -> tuple[Pipeline, torch.Tensor, torch.Tensor, bool]:
    """The trained fp32 pipeline of ``cfg`` on these rows (from ``cache`` when it holds it), with the
    preprocessed training inputs and labels; the last value says whether it came from the cache.

    A cached base is bit-identical to a freshly trained one (same seed, same rows, same config), so what
    follows does not depend on where it came from.
    """
    seed_everything(seed)
    task = config_task(cfg)
    yt = torch.from_numpy(np.asarray(y_train, dtype=np.int64))
    n_outputs = _n_outputs(cfg, task, X_train, y_train)
    device = cfg.get("device", "auto")
    key = base_key(cfg, X_train, y_train, seed, n_outputs, resolve_device(device).type) if cache else ""
    hit = cache.get(key) if cache else None
    if hit is not None:
        spec, state = hit
        model = build_pipeline(spec)
        model.load_state_dict(state)
    else:
        model = task.build(cfg, X_train, n_outputs)
    with torch.no_grad():        # the training rows as the network sees them (a ranker has no preprocessing)
        Xt = model.preprocess(task.as_input(X_train))
    if hit is not None:
        return model.eval(), Xt, yt, True
    train(model.net, Xt, yt, cfg["train"], seed, device=device)
    model.eval()
    if cache is not None:
        cache.put(key, model.spec(), model.state_dict())
    return model, Xt, yt, False


def fit_and_compress(cfg: Mapping[str, Any], X_train: np.ndarray, y_train: np.ndarray, seed: int,
                     cache: BaseCache | None = None) -> Fitted:
    """Fit (or load from ``cache``) the fp32 base on the training rows, then compress it in memory."""
    start = time.perf_counter()
    model, Xt, yt, cached = fit_base(cfg, X_train, y_train, seed, cache)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    seed_everything(seed + 1)       # compression draws the same random numbers whether the base was cached or not
    report = compress(model.net, Xt, yt, cfg["compress"], cfg["train"], seed, device=cfg.get("device", "auto"))
    model.encodings = {f"net.{name}": enc for name, enc in report.encodings.items()}
    return Fitted(model.eval(), report.units_kept, cached, train_seconds, time.perf_counter() - start)


def fit_compressed(cfg: Mapping[str, Any], X_train: np.ndarray, y_train: np.ndarray, seed: int,
                   cache: BaseCache | None = None) -> tuple[Pipeline, list[int]]:
    """Fit preprocessing and network on the training rows, then compress; returns the in-memory model."""
    fitted = fit_and_compress(cfg, X_train, y_train, seed, cache)
    return fitted.model, fitted.units_kept


@dataclass(frozen=True)
class ReferenceArtifact:
    """The study's fp32 reference artifact of one fold, to time a trial's fold against.

    Attributes:
        path: the reference's ``fold<k>.sqz``.
        runtime: the runtime the reference was served on.
        latency_ms: the reference's latency of that fold measured when the study started.
    """

    path: str
    runtime: str
    latency_ms: float


#: served references by (file, runtime, threads, batch): a worker times many trials against the same few
_SERVED_REFERENCES: dict[tuple[Any, ...], torch.nn.Module] = {}


def _served_reference(ref: ReferenceArtifact, example: torch.Tensor, threads: int) -> torch.nn.Module:
    stat = Path(ref.path).stat()
    key = (str(Path(ref.path).resolve()), stat.st_mtime_ns, stat.st_size, ref.runtime, threads, tuple(example.shape))
    if key not in _SERVED_REFERENCES:
        if len(_SERVED_REFERENCES) >= 16:
            _SERVED_REFERENCES.pop(next(iter(_SERVED_REFERENCES)))
        _SERVED_REFERENCES[key] = build_runtime(artifact.load(ref.path), ref.runtime, example, threads).eval()
    return _SERVED_REFERENCES[key]


def _timed(loaded: Pipeline, Xt: torch.Tensor, latency_cfg: Mapping[str, Any], runtime: str | None,
           reference: ReferenceArtifact | None) -> tuple[torch.nn.Module, LatencyResult, dict[str, Any]]:
    """Serve and time ``loaded`` (against ``reference`` when given); the latency fields of the result."""
    protocol = LatencyProtocol.from_config(latency_cfg)
    quantized = [e.bits for e in loaded.encodings.values() if e.scheme != "fp32"]
    served_ref = _served_reference(reference, Xt[:protocol.batch_size], protocol.threads) if reference else None
    runtime_model, lat = choose_runtime(loaded, Xt, protocol, max(quantized) if quantized else None, runtime,
                                        served_ref)
    out = {"latency_ms": lat.latency_ms, "latency_p90_ms": lat.latency_p90_ms,
           "throughput_per_s": lat.throughput_per_s, "runtime": lat.runtime,
           "latency_protocol": lat.as_dict()["protocol"]}
    if lat.paired is not None:      # timed against the reference in alternating blocks: a paired speedup
        # latency_ms stays what was measured in this process (a measured name carries a measured number); the
        # speedup is the paired ratio that machine load cancels out of
        s = lat.paired
        out.update(latency_measured_ms=lat.latency_ms, speedup=s.speedup, speedup_ci_low=s.speedup_ci_low,
                   speedup_ci_high=s.speedup_ci_high, latency_ci_low=s.latency_ci_low,
                   latency_ci_high=s.latency_ci_high)
    return runtime_model, lat, out


def evaluate_artifact(path: str | Path, X: np.ndarray, y: np.ndarray, latency_cfg: Mapping[str, Any],
                      k: int = 10, runtime: str | None = None,
                      reference: ReferenceArtifact | None = None) -> dict[str, Any]:
    """Load the file, pick the fastest runtime it allows (or serve on ``runtime``), score and time it
    as its network's task scores it (:meth:`trainers.task.Task.evaluate`: accuracy; a ranker: HR@k as
    ``accuracy`` and NDCG@k, latency = scoring every item for one request). With ``reference`` the chosen
    runtime is timed against the study's fp32 reference in alternating blocks
    (:func:`trainers.measure.measure_paired`): ``speedup`` and its interval are paired; ``latency_ms`` and its
    interval are measured in this process, as without it."""
    loaded = artifact.load(path)
    task = task_of(net_type=loaded.net.spec()["type"])        # only the file is at hand: its network says
    Xt = task.as_input(X)
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    runtime_model, _, timing = _timed(loaded, Xt, latency_cfg, runtime, reference)
    return {
        **task.evaluate(runtime_model, Xt, yt, k),
        "size_bytes": Path(path).stat().st_size,
        **timing,
        **artifact.weight_stats(loaded),
    }


def run_fold(cfg: Mapping[str, Any], X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray,
             y_val: np.ndarray, seed: int, artifact_path: str | Path,
             meta: Mapping[str, Any] | None = None, runtime: str | None = None,
             cache: BaseCache | None = None, reference: ReferenceArtifact | None = None) -> FoldResult:
    """Train (or take the fp32 base from ``cache``), compress, write the artifact, load it back and measure
    it (see the module docstring). ``runtime``: score on this runtime instead of the fastest (reproductions).
    ``reference``: time it against the study's fp32 reference of this fold (paired speedup).
    The result does not depend on ``cache``: a cached base is bit-identical to a trained one. Everything runs
    with ``train.threads`` CPU threads (:func:`~trainers.fit.cpu_threads`), the timing with ``latency.threads``."""
    with cpu_threads(cfg["train"].get("threads")):
        fitted = fit_and_compress(cfg, X_train, y_train, seed, cache)
        start = time.perf_counter()
        artifact.save(fitted.model, artifact_path, codec=cfg["compress"].get("codec", "lzma"),
                      meta=dict(meta or {}))
        pack_seconds = time.perf_counter() - start
        start = time.perf_counter()
        scores = evaluate_artifact(artifact_path, X_val, y_val, cfg["latency"],
                                   k=int(cfg.get("data", {}).get("top_k", 10)), runtime=runtime,
                                   reference=reference)
    return FoldResult(fit_seconds=fitted.train_seconds + fitted.compress_seconds, pack_seconds=pack_seconds,
                      eval_seconds=time.perf_counter() - start, artifact_path=str(artifact_path),
                      units_kept=fitted.units_kept, train_seconds=fitted.train_seconds,
                      compress_seconds=fitted.compress_seconds, base_cached=fitted.base_cached, **scores)

