"""Shrink steps: a local search along the size axis, interleaved with the sampler.

A global sampler (TPE) with a few dozen trials in a dozen dimensions rarely improves on the best seed
recipe: it spends its budget mapping the whole space. What a person does next is local: take the smallest
model that still has the accuracy they need and push one compression knob one step further. Every
``study.shrink_every``-th trial does exactly that:

1. **Parent**: among the COMPLETE feasible trials whose accuracy is at most ``study.shrink_tolerance``
   below the fp32 reference's, the smallest file (ties: the more accurate).
2. **Child**: the parent's parameters with one knob moved one step toward a smaller model
   (:data:`MOVES`: more hidden units removed, more weights pruned, one bit fewer, ternary below 2-bit
   uniform, one grid per tensor). Moves are tried in a seeded order (a parent far above the tolerance tries
   bigger steps first: :data:`BIG_MOVES`); a child that was already tried is
   skipped, unless it missed the tolerance narrowly (by at most :data:`RETRY_BAND` tolerances): then it is
   tried once more with twice the fine-tune epochs at twice the fine-tune learning rate (a longer, stronger
   fine-tune is what lets aggressive settings recover). When every move of the smallest parent is used up the
   next smallest parent is taken.
3. The child is enqueued (``study.enqueue_trial``) and runs like any trial: same folds, early stopping,
   constraints; it counts in ``study.n_trials``. Its run carries the tag ``shrink_of=<parent trial>``.

If the child keeps the accuracy it becomes the next parent, so a chain of shrink steps walks down the
size axis until the tolerance stops it.

**Levels.** One tolerance gives one chain: the smallest model at 0.5 pt below fp32, and nothing on the rest of
the front. With ``study.shrink_levels=n`` (> 1) every other shrink step uses ``study.shrink_tolerance``; the
steps between rotate over :data:`LEVEL_FACTOR` (4), 16, ... times it (default 3 levels: 0.5, 2 and 8 pt), so
the search also walks down the size axis at the accuracy levels a person trades for size, and the front
(and its hypervolume) reaches the small end with models that still work
(:func:`level_tolerance`). Each step's tolerance is recorded with it (trial attr and run tag
``shrink_tolerance``). Nothing is shrunk when accuracy or size is not an objective,
when no trial is within the tolerance yet, or when ``study.shrink_every=0``.

The moves and the parent choice are pure functions of plain values (tested directly); the worker only
reads the study and enqueues.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from search import names

__all__ = ["SHRINK_ATTR", "SHRINK_TOLERANCE_ATTR", "BIG_MOVES", "BIG_STEP_HEADROOM", "LEVEL_FACTOR", "MOVES",
           "Candidate", "parents", "children", "level_tolerance", "longer_finetune", "next_child", "signature"]

SHRINK_ATTR = names.SHRINK_OF                       # trial user attr (and MLflow tag): the parent trial
SHRINK_TOLERANCE_ATTR = names.SHRINK_TOLERANCE      # trial user attr (and MLflow tag): the tolerance of that step


def _numeric(step: Callable[[Any], Any]) -> Callable[[Any, Any], Any]:
    """A move of a numeric key: the new value clipped into its range (``None``: not numeric, or no change)."""
    return lambda old, distribution: _in_range(distribution, step(old))


def _choice(value: Any) -> Callable[[Any, Any], Any]:
    """A move of a categorical key to ``value``, where the space offers it."""
    return lambda old, distribution: value if value in getattr(distribution, "choices", ()) else None


def _more_neurons_removed(step: float) -> Callable[[Any, Any], Any]:
    return _numeric(lambda ratio: ratio + step)


def _fewer_weights_kept(factor: float) -> Callable[[Any, Any], Any]:
    return _numeric(lambda ratio: 1.0 - (1.0 - ratio) * factor)


def _always(params: Mapping[str, Any]) -> bool:
    return True


def _uniform_2bit_only(params: Mapping[str, Any]) -> bool:
    return params.get("compress.quant.scheme") == "uniform" and params.get("compress.quant.bits") == 2


#: (config key, move name, new value from the old one and the key's distribution, when the move applies): each
#: makes the model smaller. Two step sizes per ratio, so that when the big step loses accuracy the small one is
#: still tried. Below 2 bits uniform, ternary (three levels, ~1.6 bits) is the next step; one grid per tensor
#: instead of one per channel drops the per-channel steps and offsets (the larger share of a small pruned
#: layer's bytes).
MOVES: tuple[tuple[str, str, Callable[[Any, Any], Any], Callable[[Mapping[str, Any]], bool]], ...] = (
    ("compress.neurons.ratio", "+0.10", _more_neurons_removed(0.10), _always),
    ("compress.neurons.ratio", "+0.05", _more_neurons_removed(0.05), _always),
    ("compress.prune.ratio", "keep x0.7", _fewer_weights_kept(0.7), _always),
    ("compress.prune.ratio", "keep x0.85", _fewer_weights_kept(0.85), _always),
    ("compress.quant.bits", "-1", _numeric(lambda bits: bits - 1), _always),
    ("compress.quant.scheme", "ternary", _choice("ternary"), _uniform_2bit_only),
    ("compress.quant.granularity", "tensor", _choice("tensor"), _always),
)
#: bigger steps of the same knobs, tried first (in a shuffled order, before the moves above) when the parent keeps
#: at least :data:`BIG_STEP_HEADROOM` tolerances of accuracy above the floor: a parent far above the floor (a
#: longer fine-tune often ends above fp32) would otherwise need many single steps to reach it
BIG_MOVES: tuple[tuple[str, str, Callable[[Any, Any], Any], Callable[[Mapping[str, Any]], bool]], ...] = (
    ("compress.neurons.ratio", "+0.20", _more_neurons_removed(0.20), _always),
    ("compress.prune.ratio", "keep x0.5", _fewer_weights_kept(0.5), _always),
    ("compress.quant.bits", "-2", _numeric(lambda bits: bits - 2), _always),
)
BIG_STEP_HEADROOM = 4.0
#: a child that missed the tolerance by at most this many tolerances is tried once more with this many times
#: the fine-tune epochs (``compress.finetune_epochs``, when the space samples it): aggressive settings often
#: recover with a longer fine-tune (digits, 80% of the units removed: -1.1 pt after 20 epochs, -0.0 after 40)
RETRY_BAND, RETRY_EPOCHS_FACTOR = 3.0, 2.0
EPOCHS_KEY = "compress.finetune_epochs"
#: the retry also runs the fine-tune at this many times the learning rate (``compress.finetune_lr``, when sampled;
#: clipped to the space): a longer fine-tune at the same small rate recovered less than one at a higher rate
#: (generated 6-class set, 90 s studies, 3 seeds: best ratio within 0.5 pt 136x against 103x; digits 88x vs 82x)
RETRY_LR_FACTOR, LR_KEY = 2.0, "compress.finetune_lr"


@dataclass(frozen=True)
class Candidate:
    """A finished trial as the parent choice sees it."""

    number: int
    accuracy: float
    size: float
    params: Mapping[str, Any]

    @cached_property
    def key(self) -> tuple:
        """:func:`signature` of its params, computed once (a worker keeps its candidates from one shrink step to
        the next: search/finished.py)."""
        return signature(self.params)


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


def _moved(parent: Candidate, distributions: Mapping[str, Any], moves: Sequence[tuple], rng: random.Random,
           seen: set[tuple]) -> list[tuple[str, dict]]:
    out = []
    for key, name, move, applies in moves:
        if key not in parent.params or key not in distributions or not applies(parent.params):
            continue
        old = parent.params[key]
        new = move(old, distributions[key])
        if new is None or new == old:
            continue
        child = {**parent.params, key: new}
        if signature(child) not in seen:          # a big step clipped to the bound equals a small one
            seen.add(signature(child))
            out.append((f"{key} {name}", child))
    rng.shuffle(out)
    return out


def children(parent: Candidate, distributions: Mapping[str, Any], rng: random.Random,
             headroom: float = 0.0) -> list[tuple[str, dict]]:
    """``(move name, child params)`` for every move that changes one of the parent's sampled values, in an
    order shuffled by ``rng``; with ``headroom`` (the parent's accuracy above the floor, in tolerances) of at
    least :data:`BIG_STEP_HEADROOM`, the :data:`BIG_MOVES` first."""
    seen: set[tuple] = set()
    big = _moved(parent, distributions, BIG_MOVES, rng, seen) if headroom >= BIG_STEP_HEADROOM else []
    return big + _moved(parent, distributions, MOVES, rng, seen)


def longer_finetune(params: Mapping[str, Any], distributions: Mapping[str, Any]) -> dict | None:
    """``params`` with :data:`RETRY_EPOCHS_FACTOR` times the fine-tune epochs and, where the space samples it,
    :data:`RETRY_LR_FACTOR` times the fine-tune learning rate (both clipped to the space), or
    ``None`` when the space does not sample them or they are at the bound already."""
    if EPOCHS_KEY not in params or EPOCHS_KEY not in distributions:
        return None
    new = _in_range(distributions[EPOCHS_KEY], params[EPOCHS_KEY] * RETRY_EPOCHS_FACTOR)
    if new is None or new == params[EPOCHS_KEY]:
        return None
    out = {**params, EPOCHS_KEY: new}
    if params.get(LR_KEY) and LR_KEY in distributions:
        lr = _in_range(distributions[LR_KEY], params[LR_KEY] * RETRY_LR_FACTOR)
        if lr is not None:
            out[LR_KEY] = lr
    return out


#: the shrink levels' tolerances grow by this factor: 0.5, 2, 8 pt from the default 0.005
LEVEL_FACTOR = 4.0


def level_tolerance(tolerance: float, levels: int, step: int) -> float:
    """The tolerance of the ``step``-th shrink step of a study (0-based): ``tolerance`` for every even step
    (and every step when ``levels`` is 1); the odd steps rotate over ``tolerance * LEVEL_FACTOR**i`` for
    ``i`` in 1..levels-1.

    Example:
        >>> [level_tolerance(0.005, 3, s) for s in range(6)]
        [0.005, 0.02, 0.005, 0.08, 0.005, 0.02]
    """
    if levels <= 1 or step % 2 == 0:
        return tolerance
    return tolerance * LEVEL_FACTOR ** (1 + (step // 2) % (levels - 1))


def signature(params: Mapping[str, Any]) -> tuple:
    """A hashable identity of a parameter set (floats rounded, so a re-read value matches)."""
    return tuple(sorted((k, round(v, 9) if isinstance(v, float) else v) for k, v in params.items()))


def next_child(candidates: Sequence[Candidate], distributions: Mapping[str, Any], reference_accuracy: float,
               tolerance: float, tried: set[tuple], rng: random.Random) -> tuple[Candidate, str, dict] | None:
    """``(parent, move name, child params)`` of the next shrink step, or ``None`` when no parent is within
    the tolerance or every child of every such parent was tried."""
    finished = {c.key: c.accuracy for c in candidates}
    near_miss = reference_accuracy - tolerance * (1.0 + RETRY_BAND)
    floor = reference_accuracy - tolerance
    for parent in parents(candidates, reference_accuracy, tolerance):
        headroom = (parent.accuracy - floor) / tolerance if tolerance > 0 else 0.0
        for move, params in children(parent, distributions, rng, headroom):
            key = signature(params)
            if key not in tried:
                return parent, move, params
            missed = finished.get(key)
            if missed is not None and near_miss <= missed < reference_accuracy - tolerance:
                retry = longer_finetune(params, distributions)
                if retry is not None and signature(retry) not in tried:
                    return parent, f"{move}, fine-tune x{RETRY_EPOCHS_FACTOR:g}", retry
    return None
