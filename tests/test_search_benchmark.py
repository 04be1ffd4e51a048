"""benchmarks/search.py's measures of a study's front: the paired and above-chance hypervolumes, the points it
keeps, and the summary's ratios. Hand-made trial rows; the volumes are checked against
search.report.hypervolume_of_values on values worked out here."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

from search import names
from search.report import TrialRow, hypervolume_of_values

_SPEC = importlib.util.spec_from_file_location(
    "benchmark_search", Path(__file__).resolve().parents[1] / "benchmarks" / "search.py")
bench = importlib.util.module_from_spec(_SPEC)       # benchmarks/search.py (its name clashes with the package)
_SPEC.loader.exec_module(bench)

OBJ = [names.ACCURACY, names.SIZE_BYTES, names.LATENCY_MS]
REF = {names.ACCURACY: 0.9, names.SIZE_BYTES: 1000.0, names.LATENCY_MS: 1.0}


def _row(number: int, acc: float, size: float, latency: float, speedup: float | None = None,
         state: str = "COMPLETE") -> TrialRow:
    metrics = {names.ACCURACY: acc, names.SIZE_BYTES: size, names.LATENCY_MS: latency}
    if speedup is not None:
        metrics[names.SPEEDUP] = speedup
    values = {names.ACCURACY: acc, names.SIZE_BYTES: size, names.LATENCY_MS: latency} if state == "COMPLETE" else {}
    return TrialRow(number=number, state=state, run_id=None, values=values, metrics=metrics)


def test_the_paired_volume_reads_latency_off_the_speedup() -> None:
    # measured 2.0 ms on a busy machine, but 1.25x faster than the reference timed beside it: 0.8 ms relative
    rows = [_row(0, 0.8, 100.0, 2.0, speedup=1.25)]
    expected = hypervolume_of_values([[0.8, 100.0, 0.8]], OBJ, REF)
    assert bench.paired_hypervolume(rows, OBJ, REF) == pytest.approx(expected)
    assert bench.paired_hypervolume(rows, OBJ, REF) > hypervolume_of_values([[0.8, 100.0, 2.0]], OBJ, REF)


def test_a_trial_without_a_paired_speedup_keeps_its_measured_latency() -> None:
    rows = [_row(0, 0.8, 100.0, 1.2)]
    assert bench.paired_hypervolume(rows, OBJ, REF) == pytest.approx(hypervolume_of_values([[0.8, 100.0, 1.2]], OBJ, REF))


def test_the_above_chance_volume_counts_accuracy_from_chance() -> None:
    rows = [_row(0, 0.8, 100.0, 1.0, speedup=1.0), _row(1, 0.6, 20.0, 1.0, speedup=1.0)]
    expected = hypervolume_of_values([[0.8 - 0.5, 100.0, 1.0], [0.6 - 0.5, 20.0, 1.0]], OBJ, REF)
    assert bench.above_chance_hypervolume(rows, OBJ, REF, 0.5) == pytest.approx(expected)
    assert bench.above_chance_hypervolume(rows, OBJ, REF, 0.5) < bench.paired_hypervolume(rows, OBJ, REF)


def test_a_trial_at_or_below_chance_adds_nothing_above_it() -> None:
    assert bench.above_chance_hypervolume([_row(0, 0.5, 1.0, 0.5, speedup=2.0)], OBJ, REF, 0.5) == 0.0
    assert bench.above_chance_hypervolume([_row(0, 0.3, 1.0, 0.5, speedup=2.0)], OBJ, REF, 0.5) == 0.0
    assert bench.paired_hypervolume([_row(0, 0.3, 1.0, 0.5, speedup=2.0)], OBJ, REF) > 0.0


def test_no_chance_level_is_no_above_chance_volume() -> None:
    assert bench.above_chance_hypervolume([_row(0, 0.8, 100.0, 1.0, speedup=1.0)], OBJ, REF, None) is None


def test_dropping_the_common_block_below_chance_raises_the_ratio_of_a_dominating_front() -> None:
    better = [_row(0, 0.85, 50.0, 1.0, speedup=1.0)]
    worse = [_row(0, 0.80, 100.0, 1.0, speedup=1.0)]
    from_zero = bench.paired_hypervolume(better, OBJ, REF) / bench.paired_hypervolume(worse, OBJ, REF)
    above = (bench.above_chance_hypervolume(better, OBJ, REF, 0.5)
             / bench.above_chance_hypervolume(worse, OBJ, REF, 0.5))
    assert above > from_zero > 1.0


def test_the_points_keep_finished_and_pruned_trials_only() -> None:
    rows = [_row(0, 0.8, 100.0, 1.0, speedup=1.1), _row(1, 0.4, 90.0, 1.0, state="PRUNED"),
            _row(2, 0.0, 0.0, 0.0, state="FAIL")]
    assert bench.trial_points(rows) == [[0, "COMPLETE", 0.8, 100.0, 1.0, 1.1], [1, "PRUNED", 0.4, 90.0, 1.0, None]]


def _study(mode: str, seed: int, ratio: float, hv: float, above: float | None) -> dict:
    return {"space": "compress_only", "dataset": "digits", "mode": mode, "seed": seed,
            "best_ratio_at_0.5pt": ratio, "best_speedup_at_1pt": 1.1, "hypervolume": hv, "hypervolume_linear": hv,
            "hypervolume_paired": hv, "hypervolume_above_chance": above, "trials_per_minute": 10.0,
            "wrong_prunes": None, "ratio_at_0.5pt_by_recipe": {}}


def test_the_summary_divides_the_means_over_seeds() -> None:
    studies = [_study("random", 0, 10.0, 4.0, 2.0), _study("random", 1, 30.0, 6.0, 4.0),
               _study("default", 0, 40.0, 5.0, 3.0), _study("default", 1, 60.0, 7.0, 5.0),
               _study("recipes", 0, 20.0, 1.0, 0.5), _study("recipes", 1, 20.0, 1.0, 0.5)]
    cell = bench.wallclock_summary(studies)["compress_only/digits"]
    assert cell["default_over_recipes_ratio"] == pytest.approx(50.0 / 20.0)
    assert cell["default_over_random_hypervolume"] == pytest.approx(6.0 / 5.0)
    assert cell["default_over_random_hypervolume_above_chance"] == pytest.approx(4.0 / 3.0)


def test_the_summary_has_no_above_chance_ratio_without_a_chance_level() -> None:
    studies = [_study("random", 0, 10.0, 4.0, None), _study("default", 0, 40.0, 5.0, None)]
    cell = bench.wallclock_summary(studies)["compress_only/digits"]
    assert cell["default"]["hypervolume_above_chance"] is None
    assert "default_over_random_hypervolume_above_chance" not in cell
    assert cell["default_over_random_hypervolume"] == pytest.approx(5.0 / 4.0)


# --- front_bound: the union of every stored trial, per seed --------------------------------------------------


def _stored(mode: str, seed: int, points: list[list], reference_size: float = 1000.0, budget: float = 90.0,
            dataset: str = "digits") -> dict:
    """A study as a --wallclock result file stores it (with its file's budget attached, as bound() does)."""
    return {"space": "compress_only", "dataset": dataset, "mode": mode, "seed": seed, "budget_seconds": budget,
            "reference_size_bytes": reference_size, "points": points}


def test_the_volume_of_stored_points_is_the_studys_paired_volume() -> None:
    rows = [_row(0, 0.8, 100.0, 2.0, speedup=1.25), _row(1, 0.6, 20.0, 0.7, speedup=1.1),
            _row(2, 0.3, 5.0, 0.5, state="PRUNED")]
    assert bench.points_hypervolume(bench.trial_points(rows), REF[names.SIZE_BYTES]) == pytest.approx(
        bench.paired_hypervolume(rows, OBJ, REF))
    # without the latency axis: accuracy x (log2 1.5 + log2 of the reference over the size), a staircase
    two_d = bench.points_hypervolume(bench.trial_points(rows), REF[names.SIZE_BYTES], latency=False)
    assert two_d == pytest.approx(0.8 * (math.log2(1.5) + math.log2(10)) + 0.6 * math.log2(100 / 20))


def test_the_union_holds_every_modes_trials_of_a_seed() -> None:
    random_pts = [[0, "COMPLETE", 0.9, 100.0, 1.0, 1.0]]
    default_pts = [[0, "COMPLETE", 0.85, 20.0, 1.0, 1.1]]
    bound = bench.front_bound([_stored("random", 0, random_pts), _stored("default", 0, default_pts)])
    cell = bound["compress_only/digits"]
    union = bench.points_hypervolume(random_pts + default_pts, 1000.0)
    assert cell["seeds"]["0"]["union"]["paired"] == pytest.approx(union)
    assert union > max(c["paired"]["volume"] for c in cell["modes"].values())   # neither dominates: the union is larger
    assert cell["modes"]["random@90s"]["paired"]["union_over"] == pytest.approx(
        union / bench.points_hypervolume(random_pts, 1000.0))
    assert cell["modes"]["random@90s"]["accuracy_size"]["union_over"] == pytest.approx(
        bench.points_hypervolume(random_pts + default_pts, 1000.0, latency=False)
        / bench.points_hypervolume(random_pts, 1000.0, latency=False))
    assert cell["seeds"]["0"]["n_points"] == 2


def test_points_of_another_seed_are_not_pooled() -> None:
    pts = [[0, "COMPLETE", 0.9, 100.0, 1.0, 1.0]]
    alone = bench.front_bound([_stored("random", 0, pts)])["compress_only/digits"]
    beside = bench.front_bound([_stored("random", 0, pts),
                                _stored("default", 1, [[0, "COMPLETE", 0.95, 1.0, 1.0, 2.0]])])["compress_only/digits"]
    assert beside["seeds"]["0"]["union"] == pytest.approx(alone["seeds"]["0"]["union"])
    assert beside["seeds"]["1"]["union"]["paired"] > beside["seeds"]["0"]["union"]["paired"]
    # the ratio over random search's volume uses only the seeds random search ran
    assert beside["modes"]["random@90s"]["seeds"] == ["0"]
    assert beside["modes"]["random@90s"]["paired"]["union_over"] == pytest.approx(1.0)


def test_sizes_are_pooled_relative_to_each_studys_reference() -> None:
    # 100 B of a 1,000 B reference and 200 B of a 2,000 B one are the same point
    a = bench.front_bound([_stored("random", 0, [[0, "COMPLETE", 0.9, 100.0, 1.0, 1.0]], 1000.0)])
    b = bench.front_bound([_stored("random", 0, [[0, "COMPLETE", 0.9, 200.0, 1.0, 1.0]], 2000.0)])
    assert a["compress_only/digits"]["seeds"]["0"]["union"] == pytest.approx(b["compress_only/digits"]["seeds"]["0"]["union"])


def test_a_study_copied_into_two_files_counts_once_but_a_rerun_counts() -> None:
    pts = [[0, "COMPLETE", 0.9, 100.0, 1.0, 1.0]]
    rerun = [[0, "COMPLETE", 0.7, 300.0, 1.0, 1.0]]
    once = bench.front_bound([_stored("random", 0, pts)])["compress_only/digits"]
    copied = bench.front_bound([_stored("random", 0, pts), _stored("random", 0, pts)])["compress_only/digits"]
    assert copied["seeds"]["0"]["n_points"] == 1
    assert copied["modes"]["random@90s"] == once["modes"]["random@90s"]
    both = bench.front_bound([_stored("random", 0, pts), _stored("random", 0, rerun)])["compress_only/digits"]
    assert both["seeds"]["0"]["n_points"] == 2
    assert both["modes"]["random@90s"]["paired"]["volume"] < once["modes"]["random@90s"]["paired"]["volume"]  # mean


def test_budgets_are_told_apart() -> None:
    short = [[0, "COMPLETE", 0.8, 100.0, 1.0, 1.0]]
    long = [[0, "COMPLETE", 0.9, 50.0, 1.0, 1.0]]
    cell = bench.front_bound([_stored("default", 0, short, budget=180.0),
                              _stored("default", 0, long, budget=1800.0)])["compress_only/digits"]
    assert set(cell["modes"]) == {"default@180s", "default@1800s"}
    assert cell["modes"]["default@1800s"]["paired"]["volume"] > cell["modes"]["default@180s"]["paired"]["volume"]
