"""One fold of one trial, end to end: fit -> compress -> fine-tune -> pack (file) -> load -> score and time.

This is the library's contract: every number comes from the file. ``size_bytes`` is the file's length,
latency is measured on the model loaded from it, accuracy is that same loaded model's score.

    result = run_fold(cfg, X_train, y_train, X_val, y_val, seed=0, artifact_path="fold0.sqz")

``cfg`` is a plain nested dict with the keys of conf/sweep.yaml (``data``, ``model``, ``train``,
``compress``, ``latency``, ``device``).

Ranking (``model=seqrec`` on sequence data, see :mod:`trainers.data._sequence`): rows are users' event
windows ``(C, L)`` and ``y`` their next item. The network trains on its next-item loss at every position
(full softmax over all items), then compresses as any other; the loaded model is scored with HR@k as
``accuracy`` and NDCG@k as ``ndcg`` (``k = data.top_k``, ranking over all items minus the user's history,
:mod:`trainers.ranking`), and latency is the time to score every item for one request (batch 1).
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
from trainers.compress import compress
from trainers.data import Preprocessor
from trainers.fit import seed_everything, train
from trainers.measure import LatencyProtocol, accuracy, choose_runtime
from trainers.models import Pipeline, Preprocess, build_net, net_spec_from_config
from trainers.ranking import rank_model

__all__ = ["FoldResult", "RANKERS", "fit_compressed", "evaluate_artifact", "is_ranking", "run_fold"]

#: network types that rank items (sequence data) instead of classifying rows
RANKERS = ("seqrec",)


@dataclass
class FoldResult:
    accuracy: float
    size_bytes: int
    latency_ms: float
    latency_p90_ms: float
    throughput_per_s: float
    sparsity: float
    avg_bits: float
    fit_seconds: float
    pack_seconds: float            # encode + entropy-code + write the artifact
    eval_seconds: float            # load + runtime choice + latency + accuracy
    runtime: str
    artifact_path: str
    latency_protocol: dict[str, Any] = field(default_factory=dict)
    units_kept: list[int] = field(default_factory=list)
    ndcg: float | None = None      # ranking only: NDCG@k (``accuracy`` is then HR@k)

    def metrics(self) -> dict[str, float]:
        """The numeric fields, named as in :mod:`search.names`."""
        return {k: float(v) for k, v in asdict(self).items() if isinstance(v, (int, float))}


def fit_compressed(cfg: Mapping[str, Any], X_train: np.ndarray, y_train: np.ndarray, seed: int) -> tuple[Pipeline, list[int]]:
    """Fit preprocessing and network on the training rows, then compress; returns the in-memory model."""
    if is_ranking(cfg):
        return _fit_ranker(cfg, X_train, y_train, seed)
    seed_everything(seed)
    data_cfg = cfg["data"]
    pre = Preprocessor(standardize=bool(data_cfg.get("standardize", True)), pca=data_cfg.get("pca"))
    pre.fit(X_train)
    preprocess = Preprocess.from_state(list(X_train.shape[1:]), pre.state_dict())
    with torch.no_grad():
        Xt = preprocess(torch.from_numpy(np.ascontiguousarray(X_train, dtype=np.float32)))
    yt = torch.from_numpy(np.asarray(y_train, dtype=np.int64))
    n_classes = int(cfg.get("n_classes") or (int(yt.max()) + 1))
    net = build_net(net_spec_from_config(cfg["model"], list(Xt.shape[1:]), n_classes))
    device = cfg.get("device", "auto")
    train(net, Xt, yt, cfg["train"], seed, device=device)
    report = compress(net, Xt, yt, cfg["compress"], cfg["train"], seed, device=device)
    model = Pipeline(preprocess, net)
    model.encodings = {f"net.{name}": enc for name, enc in report.encodings.items()}
    return model.eval(), report.units_kept


def evaluate_artifact(path: str | Path, X: np.ndarray, y: np.ndarray, latency_cfg: Mapping[str, Any],
                      k: int = 10, runtime: str | None = None) -> dict[str, Any]:
    """Load the file, pick the fastest runtime it allows (or serve on ``runtime``), score and time it
    (a ranker: HR@k and NDCG@k)."""
    loaded = artifact.load(path)
    if loaded.net.spec()["type"] in RANKERS:
        return _evaluate_ranker(path, loaded, X, y, latency_cfg, k, runtime)
    Xt = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    quantized = [e.bits for e in loaded.encodings.values() if e.scheme != "fp32"]
    runtime_model, lat = choose_runtime(loaded, Xt, LatencyProtocol.from_config(latency_cfg),
                                        max(quantized) if quantized else None, runtime)
    stats = artifact.weight_stats(loaded)
    return {
        "accuracy": accuracy(runtime_model, Xt, yt),
        "size_bytes": Path(path).stat().st_size,
        "latency_ms": lat.latency_ms,
        "latency_p90_ms": lat.latency_p90_ms,
        "throughput_per_s": lat.throughput_per_s,
        "runtime": lat.runtime,
        "latency_protocol": lat.as_dict()["protocol"],
        **stats,
    }


def run_fold(cfg: Mapping[str, Any], X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray,
             y_val: np.ndarray, seed: int, artifact_path: str | Path,
             meta: Mapping[str, Any] | None = None, runtime: str | None = None) -> FoldResult:
    """Train, compress, write the artifact, load it back and measure it (see the module docstring).
    ``runtime``: score on this runtime instead of the fastest (reproductions)."""
    start = time.perf_counter()
    model, units_kept = fit_compressed(cfg, X_train, y_train, seed)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    artifact.save(model, artifact_path, codec=cfg["compress"].get("codec", "lzma"), meta=dict(meta or {}))
    pack_seconds = time.perf_counter() - start
    start = time.perf_counter()
    scores = evaluate_artifact(artifact_path, X_val, y_val, cfg["latency"],
                               k=int(cfg.get("data", {}).get("top_k", 10)), runtime=runtime)
    return FoldResult(fit_seconds=fit_seconds, pack_seconds=pack_seconds, eval_seconds=time.perf_counter() - start,
                      artifact_path=str(artifact_path), units_kept=units_kept, **scores)


# --- ranking (sequence data, model=seqrec) ------------------------------------------------------------

def is_ranking(cfg: Mapping[str, Any]) -> bool:
    """Whether ``cfg`` trains a ranker (next-item recommendation) rather than a classifier."""
    return cfg["model"]["name"] in RANKERS


def _fit_ranker(cfg: Mapping[str, Any], X_train: np.ndarray, y_train: np.ndarray, seed: int) -> tuple[Pipeline, list[int]]:
    """Fit and compress a ranker on event windows ``(N, C, L)``; item ids need no preprocessing."""
    seed_everything(seed)
    Xt = torch.from_numpy(np.ascontiguousarray(X_train, dtype=np.int64))
    yt = torch.from_numpy(np.asarray(y_train, dtype=np.int64))
    n_classes = int(cfg.get("n_classes") or max(int(Xt[:, 0].max()), int(yt.max())) + 1)   # n_items + 1
    side_vocab = [int(Xt[:, c].max()) for c in range(1, Xt.shape[1])]     # ids seen in training; others -> 0
    net = build_net(net_spec_from_config(cfg["model"], list(Xt.shape[1:]), n_classes, side_vocab))
    device = cfg.get("device", "auto")
    train(net, Xt, yt, cfg["train"], seed, device=device)
    report = compress(net, Xt, yt, cfg["compress"], cfg["train"], seed, device=device)
    model = Pipeline(Preprocess(list(Xt.shape[1:]), standardize=False), net)
    model.encodings = {f"net.{name}": enc for name, enc in report.encodings.items()}
    return model.eval(), report.units_kept


def _evaluate_ranker(path: str | Path, loaded: Pipeline, X: np.ndarray, y: np.ndarray,
                     latency_cfg: Mapping[str, Any], k: int, runtime: str | None = None) -> dict[str, Any]:
    """HR@k (as ``accuracy``) and NDCG@k of the loaded ranker; latency = scoring all items for one request."""
    Xt = torch.from_numpy(np.ascontiguousarray(X, dtype=np.int64))
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    quantized = [e.bits for e in loaded.encodings.values() if e.scheme != "fp32"]
    runtime_model, lat = choose_runtime(loaded, Xt, LatencyProtocol.from_config(latency_cfg),
                                        max(quantized) if quantized else None, runtime)
    ranking = rank_model(runtime_model, Xt, yt, k)
    return {
        "accuracy": ranking["hr"],
        "ndcg": ranking["ndcg"],
        "size_bytes": Path(path).stat().st_size,
        "latency_ms": lat.latency_ms,
        "latency_p90_ms": lat.latency_p90_ms,
        "throughput_per_s": lat.throughput_per_s,
        "runtime": lat.runtime,
        "latency_protocol": lat.as_dict()["protocol"],
        **artifact.weight_stats(loaded),
    }
