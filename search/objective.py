"""Score one complete config by k-fold cross-validation on the development rows.

Knows nothing of Optuna or MLflow: it takes a plain config dict and arrays, runs
:func:`trainers.pipeline.run_fold` on every fold, and returns means, standard deviations and per-fold
values. The held-out test split is never passed in: callers give the development rows only.

Ranking data (:class:`trainers.task.Ranking`): ``accuracy`` is HR@k and the folds also report ``ndcg``
(NDCG@k); the task's :meth:`~trainers.task.Task.baseline` scores the popularity ranking on the same folds.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from search import names

__all__ = ["Evaluation", "evaluate_config", "reference_config", "fold_seed"]

#: per-fold metrics averaged into the trial's values
FOLD_METRICS = (names.ACCURACY, names.SIZE_BYTES, names.LATENCY_MS, names.LATENCY_P90_MS, names.THROUGHPUT,
                names.SPARSITY, names.AVG_BITS, names.FIT_SECONDS, names.TRAIN_SECONDS, names.COMPRESS_SECONDS,
                names.PACK_SECONDS, names.EVAL_SECONDS, names.BASE_CACHED)
#: per-fold metrics of a fold timed against the study's reference (``references`` given), averaged the same way
PAIRED_METRICS = (names.SPEEDUP, names.SPEEDUP_CI_LOW, names.SPEEDUP_CI_HIGH, names.LATENCY_CI_LOW,
                  names.LATENCY_CI_HIGH, names.LATENCY_MEASURED_MS)


@dataclass
class Evaluation:
    metrics: dict[str, float]                     # means over folds + accuracy_std
    folds: list[dict[str, float]]                 # one dict per fold, same keys as FOLD_METRICS
    runtime: str                                  # runtime of the loaded model (fold 0)
    latency_protocol: dict[str, Any] = field(default_factory=dict)
    artifact_path: Path | None = None             # the fold-0 artifact
    runtimes: list[str] = field(default_factory=list)  # the runtime each fold was scored on
    stopped_early: bool = False                   # ``after_fold`` stopped it before the last fold

    @property
    def folds_run(self) -> int:
        return len(self.folds)


def fold_seed(seed: int, fold: int) -> int:
    """The training seed of ``fold``: fixed by the study seed, different per fold."""
    return int(seed) * 1000 + fold


def reference_config(cfg: Mapping[str, Any], train_epochs: int | None = None,
                     finetune_epochs: int = 0) -> dict[str, Any]:
    """The fp32 reference of a study: the same data, model and training, no compression, no fine-tune.

    The long reference trains as long as the longest trial can: ``train_epochs`` instead of
    ``train.epochs``, then ``finetune_epochs`` more of the uncompressed model, exactly as a trial's
    fine-tune continues from its base (fresh optimizer, ``compress.finetune_lr``).
    """
    ref = copy.deepcopy(dict(cfg))
    comp = ref["compress"]
    comp["finetune_epochs"] = int(finetune_epochs)
    comp["prune"]["ratio"] = 0.0
    comp["neurons"]["ratio"] = 0.0
    comp["quant"]["scheme"] = "none"
    comp.setdefault("lowrank", {})["rank"] = 0        # dense tables: a factored table is compression too
    if train_epochs is not None:
        ref["train"]["epochs"] = int(train_epochs)
    return ref


def evaluate_config(cfg: Mapping[str, Any], X: np.ndarray, y: np.ndarray,
                    folds: list[tuple[np.ndarray, np.ndarray]], workdir: str | Path,
                    meta: Mapping[str, Any] | None = None,
                    runtimes: Sequence[str | None] | None = None, cache: Any = None,
                    after_fold: Callable[[list[dict[str, float]]], bool] | None = None,
                    references: Sequence[Any] | None = None) -> Evaluation:
    """Cross-validate ``cfg`` on the development rows ``X, y`` with the study's ``folds``.

    ``cfg`` comes through :func:`trainers.task.configure` (the data's task and output size, the same for every
    fold and for the final fit); a config without ``n_classes`` gets one score per class of ``meta["classes"]``.
    Each fold trains on its training rows (or takes the fp32 base from ``cache``, a
    :class:`trainers.base_cache.BaseCache`), writes ``workdir/fold<k>.sqz`` and scores the model loaded
    from that file on its validation rows. ``after_fold(rows so far)`` is asked after every fold but the
    last; when it returns true the remaining folds are skipped (early stopping) and the evaluation says so.
    ``references``: the study's fp32 reference artifact of each fold (:class:`trainers.pipeline.ReferenceArtifact`);
    each fold is then timed against its reference (paired speedup and intervals, :data:`PAIRED_METRICS`).
    """
    from trainers.pipeline import run_fold  # torch-heavy: imported when a trial runs, not at start-up

    workdir = Path(workdir)
    cfg = dict(cfg)
    if not cfg.get("n_classes") and meta and meta.get("classes"):   # a caller that did not configure()
        cfg["n_classes"] = len(meta["classes"])
    rows, results, stopped = [], [], False
    for k, (train_idx, val_idx) in enumerate(folds):
        # the runtime is chosen by measurement on the first fold and serves the others (same architecture and
        # encoding, so the same runtime wins; measuring every candidate again would double a fold's cost)
        runtime = runtimes[k] if runtimes and k < len(runtimes) else (results[0].runtime if results else None)
        result = run_fold(cfg, X[train_idx], y[train_idx], X[val_idx], y[val_idx],
                          seed=fold_seed(cfg["seed"], k), artifact_path=workdir / f"fold{k}.sqz", meta=meta,
                          runtime=runtime, cache=cache, reference=references[k] if references else None)
        row = {m: float(getattr(result, m)) for m in FOLD_METRICS}
        row.update({m: float(getattr(result, m)) for m in PAIRED_METRICS if getattr(result, m) is not None})
        if getattr(result, "ndcg", None) is not None:     # ranking: NDCG@k next to HR@k (= accuracy)
            row[names.NDCG] = float(result.ndcg)
        rows.append(row)
        results.append(result)
        if after_fold is not None and k < len(folds) - 1 and after_fold(rows):
            stopped = True
            break
    first = results[0]
    metrics = {m: float(np.mean([r[m] for r in rows])) for m in rows[0]}
    metrics[names.ACCURACY_STD] = float(np.std([r[names.ACCURACY] for r in rows]))
    metrics[names.SIZE_BYTES_STD] = float(np.std([r[names.SIZE_BYTES] for r in rows]))
    return Evaluation(metrics, rows, first.runtime, first.latency_protocol, Path(first.artifact_path),
                      [r.runtime for r in results], stopped)

