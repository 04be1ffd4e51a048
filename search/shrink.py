"""Shrink steps: a local search along the size axis, interleaved with the sampler.

A global sampler (TPE) with a few dozen trials in a dozen dimensions rarely improves on the best seed
recipe: it spends its budget mapping the whole space. What a person does next is local: take the smallest
model that still has the accuracy they need and push one compression knob one step further. Every
``study.shrink_every``-th trial does exactly that:

1. **Parent**: among the COMPLETE feasible trials whose accuracy is at most ``study.shrink_tolerance``
   below the fp32 reference's, the smallest file (ties: the more accurate).
2. **Child**: the parent's parameters with one knob moved one step toward a smaller model
   (:data:`MOVES`: more hidden units removed, more weights pruned, one bit fewer). Moves are tried in
   a seeded order; a child that was already tried (in this worker) is skipped; when every move of the
   smallest parent is used up the next smallest parent is taken.
3. The child is enqueued (``study.enqueue_trial``) and runs like any trial: same folds, early stopping,
   constraints; it counts in ``study.n_trials``. Its run carries the tag ``shrink_of=<parent trial>``.

If the child keeps the accuracy it becomes the next parent, so a chain of shrink steps walks down the
size axis until the tolerance stops it. Nothing is shrunk when accuracy or size is not an objective,
when no trial is within the tolerance yet, or when ``study.shrink_every=0``.

The moves and the parent choice are pure functions of plain values (tested directly); the worker only
reads the study and enqueues.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["SHRINK_ATTR", "MOVES", "Candidate", "parents", "children", "next_child", "signature"]

SHRINK_ATTR = "shrink_of"     # trial user attr (and MLflow tag): the parent trial a shrink step started from


def _more_neurons_removed(step: float) -> Callable[[float], float]:
    return lambda ratio: ratio + step


def _fewer_weights_kept(factor: float) -> Callable[[float], float]:
    return lambda ratio: 1.0 - (1.0 - ratio) * factor


#: (config key, move name, new value from the old one): each makes the model smaller. Two step sizes per
#: ratio, so that when the big step loses accuracy the small one is still tried.
MOVES: tuple[tuple[str, str, Callable[[Any], Any]], ...] = (
    ("compress.neurons.ratio", "+0.10", _more_neurons_removed(0.10)),
    ("compress.neurons.ratio", "+0.05", _more_neurons_removed(0.05)),
    ("compress.prune.ratio", "keep x0.7", _fewer_weights_kept(0.7)),
    ("compress.prune.ratio", "keep x0.85", _fewer_weights_kept(0.85)),
    ("compress.quant.bits", "-1", lambda bits: bits - 1),
)


@dataclass(frozen=True)
class Candidate:
    """A finished trial as the parent choice sees it."""

    number: int
    accuracy: float
    size: float
    params: Mapping[str, Any]


def parents(candidates: Iterable[Candidate], reference_accuracy: float, tolerance: float) -> list[Candidate]:
    """The trials within ``tolerance`` of ``reference_accuracy``, smallest file first (ties: more accurate,
    then lower trial number)."""
    floor = reference_accuracy - tolerance
    kept = [c for c in candidates if c.accuracy >= floor]
    return sorted(kept, key=lambda c: (c.size, -c.accuracy, c.number))


def _in_range(distribution: Any, value: Any) -> Any | None:
    """``value`` clipped into a numeric distribution's range, or ``None`` when the move is not possible
    (a categorical, or the old value is already at the bound)."""
    from optuna.distributions import FloatDistribution, IntDistribution

    if isinstance(distribution, IntDistribution):
        value = int(round(value))
    elif not isinstance(distribution, FloatDistribution):
        return None
    return min(max(value, distribution.low), distribution.high)


def children(parent: Candidate, distributions: Mapping[str, Any], rng: random.Random) -> list[tuple[str, dict]]:
    """``(move name, child params)`` for every move that changes one of the parent's sampled values, in an
    order shuffled by ``rng``."""
    out = []
    for key, name, move in MOVES:
        if key not in parent.params or key not in distributions:
            continue
        old = parent.params[key]
        new = _in_range(distributions[key], move(old))
        if new is None or new == old:
            continue
        out.append((f"{key} {name}", {**parent.params, key: new}))
    rng.shuffle(out)
    return out


def signature(params: Mapping[str, Any]) -> tuple:
    """A hashable identity of a parameter set (floats rounded, so a re-read value matches)."""
    return tuple(sorted((k, round(v, 9) if isinstance(v, float) else v) for k, v in params.items()))


def next_child(candidates: Sequence[Candidate], distributions: Mapping[str, Any], reference_accuracy: float,
               tolerance: float, tried: set[tuple], rng: random.Random) -> tuple[Candidate, str, dict] | None:
    """``(parent, move name, child params)`` of the next shrink step, or ``None`` when no parent is within
    the tolerance or every child of every such parent was tried."""
    for parent in parents(candidates, reference_accuracy, tolerance):
        for move, params in children(parent, distributions, rng):
            if signature(params) not in tried:
                return parent, move, params
    return None
