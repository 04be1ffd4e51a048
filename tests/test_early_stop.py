"""The multi-objective early-stopping rule (search.early_stop), on hand-made fronts."""

from __future__ import annotations

import numpy as np
import pytest

from search.early_stop import (
    Finished,
    FinishedRows,
    Running,
    binomial_spread,
    clearly_dominated,
    comparison_rows,
    relative_spread,
    should_stop,
)


def test_clearly_dominated_needs_every_objective_beaten_by_its_slack() -> None:
    others = np.array([[0.95, 1000.0, 0.05]])
    maximize = [True, False, False]
    assert clearly_dominated([0.90, 2000.0, 0.05], others, maximize, [0.02, 0.0, 0.0])
    assert not clearly_dominated([0.94, 2000.0, 0.05], others, maximize, [0.02, 0.0, 0.0])   # within the margin
    assert not clearly_dominated([0.90, 999.0, 0.05], others, maximize, [0.02, 0.0, 0.0])    # smaller
    assert not clearly_dominated([0.90, 2000.0, 0.04], others, maximize, [0.02, 0.0, 0.0])   # faster
    # a negative slack tolerates being that much worse: 0.05 ms is within 0.02 ms of 0.04 ms
    assert clearly_dominated([0.90, 2000.0, 0.04], others, maximize, [0.02, 0.0, -0.02])


def test_clearly_dominated_with_no_others_is_false() -> None:
    assert not clearly_dominated([0.5, 1.0, 1.0], np.empty((0, 3)), [True, False, False], [0, 0, 0])


def test_hopeless_larger_trial_is_stopped() -> None:
    front = [Finished([0.95, 0.96, 0.97], size_bytes=1000, latency_ms=0.05)]
    assert should_stop(Running([0.60], 5000, 0.05), front, margin=0.01, study_spread=0.01)


def test_trial_within_margin_plus_spread_goes_on() -> None:
    front = [Finished([0.95, 0.96], size_bytes=1000, latency_ms=0.05)]
    # 0.95 - 0.93 = 0.02 < margin 0.01 + spread 0.015
    assert not should_stop(Running([0.93], 5000, 0.05), front, margin=0.01, study_spread=0.015)
    # the trial's own spread counts too: folds 0.99 and 0.87 (std 0.06) keep it going
    front2 = [Finished([0.99, 0.99, 0.99], size_bytes=1000, latency_ms=0.05)]
    assert not should_stop(Running([0.99, 0.87], 5000, 0.05), front2, margin=0.01, study_spread=0.0)


def test_comparison_is_on_the_same_folds() -> None:
    # the finished trial was bad on fold 0 and good later: on fold 0 alone it is no better than the candidate
    front = [Finished([0.80, 0.99, 0.99], size_bytes=1000, latency_ms=0.05)]
    assert not should_stop(Running([0.80], 5000, 0.05), front, margin=0.01, study_spread=0.0)
    assert should_stop(Running([0.80, 0.80], 5000, 0.05), front, margin=0.01, study_spread=0.0)


def test_smallest_trial_is_never_stopped_by_accuracy_alone() -> None:
    front = [Finished([0.99], size_bytes=1000, latency_ms=0.05)]
    assert not should_stop(Running([0.30], 500, 0.05), front, margin=0.01, study_spread=0.0)


def test_a_trial_no_better_than_the_constant_predictor_is_stopped_whatever_its_size() -> None:
    front = [Finished([0.99], size_bytes=1000, latency_ms=0.05)]
    assert should_stop(Running([0.10], 500, 0.05), front, margin=0.01, study_spread=0.0, chance_accuracy=0.11)
    assert not should_stop(Running([0.30], 500, 0.05), front, margin=0.01, study_spread=0.0, chance_accuracy=0.11)


@pytest.mark.parametrize("front_latency, stopped", [(0.054, True), (0.06, False)])
def test_latency_noise_within_the_tolerance_does_not_protect_a_trial(front_latency, stopped) -> None:
    front = [Finished([0.99], size_bytes=1000, latency_ms=front_latency)]
    assert should_stop(Running([0.5], 5000, 0.05), front, margin=0.01, study_spread=0.0,
                       latency_tolerance=0.1) is stopped


def test_no_finished_trials_and_no_baseline_never_stops() -> None:
    assert not should_stop(Running([0.0], 5000, 0.05), [], margin=0.0, study_spread=0.0)
    assert not should_stop(Running([], 5000, 0.05), [Finished([1.0], 1, 0.01)], margin=0.0, study_spread=0.0)


def test_the_bar_falls_with_the_folds_seen() -> None:
    """Two standard errors of a k-fold mean: 4 pt below is noise after one fold, a clear loss after four."""
    front = [Finished([0.95, 0.95, 0.95, 0.95, 0.95], size_bytes=1000, latency_ms=0.05)]
    assert not should_stop(Running([0.91], 5000, 0.05), front, margin=0.01, study_spread=0.02)
    assert should_stop(Running([0.91] * 4, 5000, 0.05), front, margin=0.01, study_spread=0.02)


def test_a_tie_on_size_does_not_stop_a_trial_whose_files_vary_by_fold() -> None:
    """The breast_cancer case: 543 bytes after two folds, a finished trial at 542.7 and far more accurate; the
    third fold's file came out smaller and the trial ended at 516 bytes, on the front."""
    front = [Finished([0.9671, 0.9803, 0.9605], size_bytes=542.7, latency_ms=0.0075)]
    running = Running([0.9408, 0.9539], 543.0, 0.0076, size_by_fold=[543.0, 543.0])
    assert should_stop(running, front, margin=0.01, study_spread=0.0082)                 # size taken as exact
    assert not should_stop(running, front, margin=0.01, study_spread=0.0082, study_size_spread=0.002)
    # a finished trial clearly smaller (beyond two standard errors of the size) still stops it
    smaller = [Finished([0.9671, 0.9803, 0.9605], size_bytes=530.0, latency_ms=0.0075)]
    assert should_stop(running, smaller, margin=0.01, study_spread=0.0082, study_size_spread=0.002)


def test_the_trials_own_size_spread_counts_when_it_is_the_larger() -> None:
    front = [Finished([0.99, 0.99], size_bytes=900.0, latency_ms=0.05)]
    steady = Running([0.60, 0.60], 1000.0, 0.05, size_by_fold=[1000.0, 1000.0])
    varying = Running([0.60, 0.60], 1000.0, 0.05, size_by_fold=[1100.0, 900.0])           # 10% spread
    assert should_stop(steady, front, margin=0.01, study_spread=0.0, study_size_spread=0.01)
    assert not should_stop(varying, front, margin=0.01, study_spread=0.0, study_size_spread=0.01)


def test_the_size_slack_falls_with_the_folds_seen() -> None:
    front = [Finished([0.99] * 4, size_bytes=960.0, latency_ms=0.05)]
    # 2 * 0.03 / sqrt(k) of 1000 bytes: 60 after one fold, 30 after four; the finished trial is 40 smaller
    assert not should_stop(Running([0.6], 1000.0, 0.05), front, margin=0.01, study_spread=0.0, study_size_spread=0.03)
    assert should_stop(Running([0.6] * 4, 1000.0, 0.05), front, margin=0.01, study_spread=0.0, study_size_spread=0.03)


def test_an_inaccurate_trial_on_small_folds_is_judged_by_the_binomial_noise_of_its_fold() -> None:
    """60% on a fold of 150 rows is 60% +- 4 points: a finished trial 5 points better on that fold is no clear
    winner; on folds of 5,000 rows (+- 0.7 points) it is."""
    front = [Finished([0.65, 0.60, 0.60], size_bytes=700.0, latency_ms=0.0077)]
    running = Running([0.60], 760.0, 0.0077, size_by_fold=[760.0])
    assert should_stop(running, front, margin=0.01, study_spread=0.008)                    # no floor: stopped
    assert not should_stop(running, front, margin=0.01, study_spread=0.008, fold_rows=150)
    assert should_stop(running, front, margin=0.01, study_spread=0.008, fold_rows=5000)


def test_the_binomial_floor_is_smallest_for_accurate_trials() -> None:
    assert binomial_spread(0.6, 150) == pytest.approx(0.04, abs=1e-4)
    assert binomial_spread(0.97, 150) < binomial_spread(0.8, 150) < binomial_spread(0.5, 150)
    assert binomial_spread(1.0, 150) == 0.0 and binomial_spread(1.2, 150) == 0.0     # clipped to [0, 1]
    # a hopeless trial is still stopped on a small fold: 30% against 95%
    front = [Finished([0.95], size_bytes=700.0, latency_ms=0.0077)]
    assert should_stop(Running([0.30], 900.0, 0.0077), front, margin=0.01, study_spread=0.008, fold_rows=150)


def test_relative_spread() -> None:
    assert relative_spread([90.0, 110.0]) == pytest.approx(0.1)
    assert relative_spread([543.0]) == 0.0 and relative_spread([]) == 0.0 and relative_spread([0.0, 0.0]) == 0.0


def test_finished_rows_decide_as_the_list_they_were_built_from() -> None:
    rng = np.random.default_rng(0)
    finished = [Finished(list(rng.uniform(0.5, 1.0, rng.integers(1, 4))), float(rng.integers(500, 5000)),
                         float(rng.uniform(0.03, 0.07))) for _ in range(40)]
    rows = FinishedRows(finished[:10])
    for more in (finished[10:25], finished[25:]):
        for k in (1, 2, 3):                        # rows kept for k folds, then extended by the new trials only
            assert len(rows.rows(k)) == len(rows)
        rows.extend(more)
    for k in (1, 2, 3):
        np.testing.assert_array_equal(rows.rows(k), comparison_rows(finished, k))
    for _ in range(100):
        k = int(rng.integers(1, 3))
        candidate = Running(list(rng.uniform(0.4, 1.0, k)), float(rng.uniform(400, 6000)),
                            float(rng.uniform(0.03, 0.07)))
        assert should_stop(candidate, rows, 0.01, 0.02, 0.1) == should_stop(candidate, finished, 0.01, 0.02, 0.1)


def test_finished_rows_of_no_trials_never_stop() -> None:
    assert comparison_rows([], 2).shape == (0, 3)
    assert not should_stop(Running([0.5], 5000, 0.05), FinishedRows(), margin=0.01, study_spread=0.0)
