"""Multi-objective early stopping across CV folds: stop a trial that the study's results already beat.

Optuna's pruners take one objective (``trial.report`` / ``should_prune`` refuse multi-objective studies),
so squeeze decides itself, after every fold but the last:

    the trial is stopped when some finished trial (or the constant predictor) is smaller by more than
    ``2 * size_spread / sqrt(k)`` of the trial's size so far, at most ``latency_tolerance`` slower, and more
    accurate **on the same k folds** by more than ``margin + 2 * spread / sqrt(k)``,

where ``spread`` is the fold-to-fold spread of accuracy: the largest of the trial's own spread so far, the
typical ``accuracy_std`` of the study's finished trials, and the binomial standard error of an accuracy ``p``
measured on a fold of ``n`` validation rows, ``sqrt(p (1 - p) / n)`` (two standard errors of a k-fold mean).
The study's typical spread is that of its accurate trials, which are most of them; an inaccurate trial's folds
spread far more (at 60% on 150 rows, 4 points), and without that floor a trial unlucky on its first fold was
stopped by a finished one lucky on it, and ended on the front's small, inaccurate end. Comparing on the same folds removes the
difference in difficulty between folds; the margin and the spread keep a trial that is only unlucky on
its first fold. ``size_spread`` is the same for the file size, relative to it: each fold writes its own file,
and a fold's file can be smaller than the ones before it (other masks, other bytes for LZMA), so a trial whose
size so far merely ties a finished trial's may end smaller than it, and on the front. Near the smallest files
a study reaches, where many trials are within a few bytes of each other, a tie on size decided stops that
the trial's full result would not have justified (breast_cancer, joint space: a trial at 543 bytes after two
folds, stopped by a finished one at 542.7, ended at 516 and on the front). A trial that is smaller than
everything finished is never stopped this way (it may be on the front however inaccurate) unless its accuracy
is within ``margin`` of predicting the most frequent class, which a model of zero bytes does.

Everything here is a pure function of numbers (no Optuna, no MLflow), tested directly.

Example:
    >>> front = [Finished(accuracy_by_fold=[0.95, 0.96], size_bytes=1000, latency_ms=0.05)]
    >>> candidate = Running(accuracy_by_fold=[0.60], size_bytes=5000, latency_ms=0.05)
    >>> should_stop(candidate, front, margin=0.01, study_spread=0.01)
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Finished", "FinishedRows", "Running", "binomial_spread", "clearly_dominated", "comparison_rows",
           "relative_spread", "should_stop", "LATENCY_TOLERANCE"]

#: the most a finished trial may be slower (relative) and still count as "no slower": latency at batch 1
#: moves by several percent between repeated measurements of the same file. The sweep passes the study's
#: A/A latency noise (the tolerance its Pareto front ties latencies within), capped at this value, so a stop
#: never removes a trial that the front would keep for being faster
LATENCY_TOLERANCE = 0.10


@dataclass(frozen=True)
class Finished:
    """A finished (COMPLETE, feasible) trial as the rule sees it."""
    accuracy_by_fold: Sequence[float]
    size_bytes: float
    latency_ms: float


@dataclass(frozen=True)
class Running:
    """The folds a running trial has finished so far (means of size and latency over them; its file size per
    fold, when known, gives its own relative size spread)."""
    accuracy_by_fold: Sequence[float]
    size_bytes: float
    latency_ms: float
    size_by_fold: Sequence[float] = ()


def relative_spread(values: Sequence[float]) -> float:
    """Standard deviation over mean of positive ``values`` (0 for fewer than two, or a mean of 0).

    Example:
        >>> relative_spread([90.0, 110.0])
        0.1
    """
    if len(values) < 2:
        return 0.0
    mean = float(np.mean(values))
    return float(np.std(values)) / mean if mean > 0 else 0.0


def binomial_spread(accuracy: float, rows: float) -> float:
    """Standard error of an accuracy measured on ``rows`` rows, ``sqrt(p (1 - p) / rows)`` (``p`` clipped to [0, 1]).

    Example:
        >>> round(binomial_spread(0.6, 150), 4)
        0.04
    """
    p = min(max(float(accuracy), 0.0), 1.0)
    return math.sqrt(p * (1.0 - p) / float(rows))


def comparison_rows(finished: Sequence[Finished], k: int) -> np.ndarray:
    """``(n, 3)`` rows the rule compares a trial that ran ``k`` folds with: each finished trial's mean accuracy on
    the same first ``k`` folds (all of its folds when it has fewer), its size and its latency.

    Example:
        >>> comparison_rows([Finished([0.9, 0.8, 0.7], 1000, 0.05)], 2).tolist()
        [[0.8500000000000001, 1000.0, 0.05]]
    """
    rows = []
    for f in finished:
        folds = list(f.accuracy_by_fold)
        same_folds = folds[:k] if len(folds) >= k else folds
        rows.append([float(np.mean(same_folds)), float(f.size_bytes), float(f.latency_ms)])
    return np.asarray(rows, dtype=float).reshape(len(rows), 3)


class FinishedRows:
    """Finished trials kept as :func:`comparison_rows`, extended as trials finish.

    A finished trial never changes, so its row for ``k`` folds is computed once: a check after every fold of
    every trial then costs the trials that finished since the last one, not the whole study (at 3,000 finished
    trials rebuilding the rows took ~30 ms per check). :func:`should_stop` takes it in place of a list.

    Example:
        >>> rows = FinishedRows([Finished([0.95, 0.96], 1000, 0.05)])
        >>> rows.extend([Finished([0.90, 0.91], 500, 0.04)])
        >>> len(rows), rows.rows(1)[:, 0].tolist()
        (2, [0.95, 0.9])
    """

    def __init__(self, finished: Sequence[Finished] = ()) -> None:
        self._finished: list[Finished] = list(finished)
        self._rows: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._finished)

    def extend(self, finished: Sequence[Finished]) -> None:
        self._finished.extend(finished)

    def rows(self, k: int) -> np.ndarray:
        """:func:`comparison_rows` of every finished trial for ``k`` folds (in the order they were added)."""
        have = self._rows.get(k)
        done = 0 if have is None else len(have)
        if have is None or done < len(self._finished):
            new = comparison_rows(self._finished[done:], k)
            have = new if have is None else np.vstack([have, new])
            self._rows[k] = have
        return have


def clearly_dominated(candidate: Sequence[float], others: np.ndarray, maximize: Sequence[bool],
                      slack: Sequence[float]) -> bool:
    """Whether some row of ``others`` beats ``candidate`` on every objective by at least ``slack``.

    Row ``f`` beats ``c`` on objective ``i`` when ``s_i * (f_i - c_i) >= slack_i`` with ``s_i = +1`` for a
    maximized and ``-1`` for a minimized objective: a positive slack asks for a clear improvement, zero for
    "at least as good", a negative one tolerates being that much worse.
    """
    rows = np.asarray(others, dtype=float).reshape(-1, len(candidate))
    if rows.size == 0:
        return False
    sign = np.where(np.asarray(maximize, dtype=bool), 1.0, -1.0)
    gain = sign * (rows - np.asarray(candidate, dtype=float))
    return bool(np.any(np.all(gain >= np.asarray(slack, dtype=float), axis=1)))


def should_stop(candidate: Running, finished: Sequence[Finished] | FinishedRows, margin: float, study_spread: float,
                chance_accuracy: float | None = None, latency_tolerance: float = LATENCY_TOLERANCE,
                study_size_spread: float = 0.0, fold_rows: float | None = None) -> bool:
    """The early-stopping rule of the module docstring.

    Args:
        candidate: the running trial's per-fold accuracies so far and mean size / latency.
        finished: finished feasible trials, each with its per-fold accuracies (the first ``k`` are compared
            with the candidate's ``k`` folds; a shorter list compares its mean); a list, or
            :class:`FinishedRows` that keeps their rows from one check to the next.
        margin: ``study.early_stop_margin`` (accuracy, e.g. 0.01 = 1 point).
        study_spread: the typical fold-to-fold standard deviation of accuracy in this study.
        chance_accuracy: accuracy of always predicting the most frequent class (a model of size 0), or
            ``None`` when there is no such baseline (ranking).
        latency_tolerance: relative latency a finished trial may exceed the candidate's by.
        study_size_spread: the typical relative fold-to-fold spread of file size in this study (std / mean);
            with the candidate's own (from ``size_by_fold``) it sets how much smaller a finished trial must be.
        fold_rows: validation rows per fold (mean over the folds run), for the binomial floor of the accuracy
            spread; ``None``: no floor.
    """
    k = len(candidate.accuracy_by_fold)
    if k == 0:
        return False
    acc = float(np.mean(candidate.accuracy_by_fold))
    own_spread = float(np.std(candidate.accuracy_by_fold)) if k > 1 else 0.0
    sampling = binomial_spread(acc, fold_rows) if fold_rows else 0.0
    # two standard errors of a k-fold mean, the fold-to-fold spread taken as one fold's noise
    need = float(margin) + 2.0 * max(own_spread, float(study_spread), sampling) / math.sqrt(k)
    if chance_accuracy is not None and acc <= float(chance_accuracy) + float(margin):
        return True                  # no better than predicting the most frequent class (a model of 0 bytes)
    rows = finished.rows(k) if isinstance(finished, FinishedRows) else comparison_rows(finished, k)
    size_spread = max(relative_spread(candidate.size_by_fold), float(study_size_spread))
    point = [acc, float(candidate.size_bytes), float(candidate.latency_ms)]
    slack = [need, 2.0 * size_spread / math.sqrt(k) * float(candidate.size_bytes),
             -latency_tolerance * float(candidate.latency_ms)]
    return clearly_dominated(point, rows, [True, False, False], slack)
