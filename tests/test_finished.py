"""search.finished: the finished trials the early stop and the shrink steps compare with, read once each.

Checked against the rebuild from every trial that the worker made before (the oracle below)."""

from __future__ import annotations

import random

import numpy as np
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState, create_trial

from search import names
from search.early_stop import Finished, Running, should_stop
from search.finished import FOLD_ACCURACY_ATTR, FinishedTrials, comparable_metrics
from search.shrink import Candidate, next_child, signature

DISTS = {"compress.prune.ratio": FloatDistribution(0.0, 0.97),
         "compress.quant.scheme": CategoricalDistribution(["none", "uniform", "ternary"])}


def _trial(number: int, state: TrialState = TrialState.COMPLETE, accuracy: float | None = 0.9, size: float = 1000.0,
           folds: list[float] | None = None, infeasible: bool = False, prune: float = 0.5):
    metrics = {} if accuracy is None else {names.ACCURACY: accuracy, names.SIZE_BYTES: size,
                                           names.LATENCY_MS: 0.05, names.ACCURACY_STD: 0.01 * (number % 3)}
    attrs = {"metrics": metrics} if state != TrialState.RUNNING else {}
    if folds is not None:
        attrs[FOLD_ACCURACY_ATTR] = folds
    t = create_trial(state=state, params={"compress.prune.ratio": prune, "compress.quant.scheme": "uniform"},
                     distributions=DISTS, values=[accuracy or 0.0, size, 0.05] if state == TrialState.COMPLETE else None,
                     user_attrs=attrs, system_attrs={"constraints:max_size_bytes": 1.0 if infeasible else -1.0})
    t.number = number
    return t


def _rebuilt(trials):
    """What the worker computed from a full read of the study before search.finished existed."""
    finished, spreads, candidates = [], [], []
    for t in trials:
        m = t.user_attrs.get("metrics") or {}
        if t.state == TrialState.COMPLETE and names.ACCURACY in m and all(c <= 0 for c in t.constraints.values()):
            spreads.append(float(m.get(names.ACCURACY_STD, 0.0)))
            finished.append(Finished(t.user_attrs.get(FOLD_ACCURACY_ATTR) or [m[names.ACCURACY]],
                                     m[names.SIZE_BYTES], m[names.LATENCY_MS]))
            candidates.append(Candidate(t.number, float(m[names.ACCURACY]), float(m[names.SIZE_BYTES]), t.params))
    return finished, spreads, candidates, {signature(t.params) for t in trials}


def _study(n: int, seed: int = 0):
    rng = random.Random(seed)
    states = [TrialState.COMPLETE] * 6 + [TrialState.PRUNED, TrialState.FAIL]
    return [_trial(i, rng.choice(states), rng.uniform(0.5, 0.99), float(rng.randint(500, 5000)),
                   [rng.uniform(0.5, 0.99) for _ in range(rng.choice([1, 3]))], infeasible=rng.random() < 0.1,
                   prune=round(rng.uniform(0, 0.97), 3))
            for i in range(n)]


def test_only_complete_feasible_trials_with_an_accuracy_are_compared():
    assert comparable_metrics(_trial(0)) is not None
    assert comparable_metrics(_trial(1, TrialState.PRUNED)) is None
    assert comparable_metrics(_trial(2, TrialState.FAIL)) is None
    assert comparable_metrics(_trial(3, infeasible=True)) is None
    assert comparable_metrics(_trial(4, accuracy=None)) is None


def test_a_trial_is_folded_in_once_and_only_when_finished():
    seen = FinishedTrials(use_size=True, use_latency=True)
    running = _trial(1, TrialState.RUNNING, prune=0.7)
    seen.update([_trial(0), running])
    seen.update([_trial(0), running])                          # looked at again: nothing added twice
    assert len(seen) == 1 and len(seen.comparisons) == 1 and [c.number for c in seen.candidates] == [0]
    assert signature(running.params) not in seen.signatures   # a running trial's params may still grow
    seen.update([_trial(0), _trial(1, prune=0.7)])             # it finished since
    assert len(seen) == 2 and [c.number for c in seen.candidates] == [0, 1]
    assert signature(running.params) in seen.signatures


def test_pruned_and_failed_trials_count_as_tried_but_are_never_compared():
    seen = FinishedTrials(use_size=True, use_latency=True)
    seen.update([_trial(0, TrialState.PRUNED, prune=0.1), _trial(1, TrialState.FAIL, accuracy=None, prune=0.2)])
    assert len(seen) == 2 and not seen.candidates and not len(seen.comparisons) and not seen.spreads
    assert len(seen.signatures) == 2


def test_looks_in_any_order_give_what_a_full_rebuild_gives():
    trials = _study(60)
    finished, spreads, candidates, tried = _rebuilt(trials)
    seen = FinishedTrials(use_size=True, use_latency=True)
    order = list(range(len(trials)))
    random.Random(1).shuffle(order)                  # other workers finish trials out of number order
    for start in range(0, len(order), 7):            # and the worker looks every few trials
        seen.update(sorted((trials[i] for i in order[:start + 7]), key=lambda t: t.number))
    assert seen.candidates == candidates             # same trials, in number order
    assert sorted(seen.spreads) == sorted(spreads) and seen.signatures == tried
    for k in (1, 2, 3):
        want = sorted(map(tuple, [[float(np.mean(f.accuracy_by_fold[:k])), f.size_bytes, f.latency_ms]
                                  for f in finished]))
        assert sorted(map(tuple, seen.comparisons.rows(k).tolist())) == want


def test_early_stop_and_shrink_step_decide_as_with_a_full_rebuild():
    trials = _study(80, seed=3)
    finished, spreads, candidates, tried = _rebuilt(trials)
    seen = FinishedTrials(use_size=True, use_latency=True)
    for start in range(0, 80, 9):
        seen.update(trials[:start + 9])
    rng = random.Random(5)
    for _ in range(200):
        k = rng.choice([1, 2])
        running = Running([rng.uniform(0.4, 1.0) for _ in range(k)], rng.uniform(400, 6000), rng.uniform(0.03, 0.07))
        spread = float(np.median([0.01, *spreads]))
        assert should_stop(running, seen.comparisons, 0.01, float(np.median([0.01, *seen.spreads])), 0.1) == \
            should_stop(running, finished, 0.01, spread, 0.1)
    reference, tolerance = 0.9, 0.2
    assert next_child(seen.candidates, DISTS, reference, tolerance, seen.signatures, random.Random(7)) == \
        next_child(candidates, DISTS, reference, tolerance, tried, random.Random(7))


def test_size_and_latency_count_as_zero_when_not_objectives():
    seen = FinishedTrials(use_size=False, use_latency=False)
    seen.update([_trial(0, size=1234.0)])
    assert seen.comparisons.rows(1).tolist() == [[0.9, 0.0, 0.0]]
    assert seen.candidates[0].size == 1234.0         # the shrink step still reads the logged size


def test_the_study_size_spread_is_each_finished_trials_size_std_over_its_size():
    seen = FinishedTrials(use_size=True, use_latency=True)
    logged = _trial(0, size=500.0)
    logged.user_attrs["metrics"][names.SIZE_BYTES_STD] = 10.0
    older = _trial(1, size=800.0)                   # logged before size_bytes_std existed: no spread to read
    pruned = _trial(2, TrialState.PRUNED, size=400.0)
    pruned.user_attrs["metrics"][names.SIZE_BYTES_STD] = 40.0
    seen.update([logged, older, pruned])
    assert seen.size_spreads == [0.02]
