"""Tests of search.pareto (Pareto mask and hypervolume against brute force, table) and search.plots (plot writers)."""

from __future__ import annotations

import itertools
import math
import re
import time

import numpy as np
import pytest

from search.pareto import format_table, hypervolume, non_dominated_mask
from search.plots import ParetoPoint, write_pareto_html, write_pareto_png

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --- brute-force references, written independently of the module -----------------------------------


def _to_min(values, directions):
    v = np.asarray(values, dtype=float)
    signs = np.array([-1.0 if d == "maximize" else 1.0 for d in directions])
    return v * signs, signs


def brute_mask(values, directions):
    v, _ = _to_min(values, directions)
    out = []
    for i in range(len(v)):
        dominated = False
        for j in range(len(v)):
            if j != i and all(v[j] <= v[i]) and any(v[j] < v[i]):
                dominated = True
                break
        out.append(not dominated)
    return np.array(out, dtype=bool)


def previous_mask(values, directions):
    """The former library implementation (a Python loop over lexicographically sorted points), kept as
    a second oracle for the vectorized one."""
    v, _ = _to_min(values, directions)
    n = v.shape[0]
    mask = np.zeros(n, dtype=bool)
    idx = np.flatnonzero(~np.isnan(v).any(axis=1))
    if len(idx) == 0:
        return mask
    cand = v[idx]
    order = np.lexsort(cand.T[::-1])
    front = np.empty_like(cand)
    k = 0
    for i in order:
        p = cand[i]
        f = front[:k]
        if k and ((f <= p).all(axis=1) & (f < p).any(axis=1)).any():
            continue
        front[k] = p
        k += 1
        mask[idx[i]] = True
    return mask


def brute_hypervolume(values, directions, reference):
    """Inclusion-exclusion over all non-empty subsets: sum (-1)^(|S|+1) vol(intersection of boxes)."""
    v, signs = _to_min(values, directions)
    ref = np.asarray(reference, dtype=float) * signs
    v = [p for p in v if np.all(p < ref)]
    total = 0.0
    for k in range(1, len(v) + 1):
        for subset in itertools.combinations(v, k):
            corner = np.max(subset, axis=0)
            total += (-1) ** (k + 1) * float(np.prod(ref - corner))
    return total


# --- non_dominated_mask -------------------------------------------------------------------------------


def test_mask_2d_mixed_directions():
    # (accuracy: maximize, size: minimize)
    pts = [
        [0.90, 100.0],  # front
        [0.95, 300.0],  # front
        [0.85, 150.0],  # dominated by 0
        [0.90, 120.0],  # dominated by 0 (equal accuracy, bigger)
        [0.80, 50.0],  # front
    ]
    mask = non_dominated_mask(pts, ["maximize", "minimize"])
    assert mask.dtype == bool
    assert mask.tolist() == [True, True, False, False, True]


def test_mask_direction_matters():
    pts = [[1.0, 1.0], [2.0, 2.0]]
    assert non_dominated_mask(pts, ["minimize", "minimize"]).tolist() == [True, False]
    assert non_dominated_mask(pts, ["maximize", "maximize"]).tolist() == [False, True]
    assert non_dominated_mask(pts, ["maximize", "minimize"]).tolist() == [True, True]


def test_mask_3d_mixed_and_duplicates():
    # accuracy max, size min, latency min
    pts = [
        [0.9, 10.0, 5.0],
        [0.9, 10.0, 5.0],  # duplicate of 0: both kept
        [0.9, 10.0, 6.0],  # dominated by 0 (worse latency only)
        [0.8, 5.0, 7.0],  # front: smallest
        [0.95, 20.0, 9.0],  # front: most accurate
        [0.7, 6.0, 8.0],  # dominated by 3
        [0.6, 30.0, 1.0],  # front: fastest
    ]
    mask = non_dominated_mask(pts, ["maximize", "minimize", "minimize"])
    assert mask.tolist() == [True, True, False, True, True, False, True]


def test_mask_single_and_empty():
    assert non_dominated_mask([[0.5, 3.0]], ["maximize", "minimize"]).tolist() == [True]
    empty = non_dominated_mask([], ["maximize", "minimize"])
    assert empty.shape == (0,) and empty.dtype == bool
    empty2 = non_dominated_mask(np.empty((0, 3)), ["maximize", "minimize", "minimize"])
    assert empty2.shape == (0,)


def test_mask_nan_rows_never_on_front_and_never_dominate():
    pts = [[np.nan, 1.0], [0.5, 2.0], [0.9, np.nan]]
    # the NaN rows would dominate row 1 if their NaNs were ignored
    assert non_dominated_mask(pts, ["maximize", "minimize"]).tolist() == [False, True, False]


@pytest.mark.parametrize("m", [2, 3])
@pytest.mark.parametrize("seed", range(5))
def test_mask_matches_brute_force(m, seed):
    rng = np.random.default_rng(seed)
    n = 60
    # integer grid values make ties and duplicates common
    values = rng.integers(0, 6, size=(n, m)).astype(float)
    directions = list(rng.choice(["maximize", "minimize"], size=m))
    np.testing.assert_array_equal(non_dominated_mask(values, directions), brute_mask(values, directions))
    cont = rng.random((n, m))
    np.testing.assert_array_equal(non_dominated_mask(cont, directions), brute_mask(cont, directions))


def test_mask_large_input_matches_pairwise():
    rng = np.random.default_rng(7)
    values = rng.integers(0, 10, size=(400, 3)).astype(float)
    directions = ["maximize", "minimize", "minimize"]
    v = values * np.array([-1.0, 1.0, 1.0])
    dominates = (v[:, None, :] <= v[None, :, :]).all(axis=2) & (v[:, None, :] < v[None, :, :]).any(axis=2)
    np.testing.assert_array_equal(non_dominated_mask(values, directions), ~dominates.any(axis=0))


@pytest.mark.parametrize("m", [1, 2, 3, 4, 5])
def test_mask_matches_oracles_on_hundreds_of_random_fronts(m):
    # grids make ties and exact duplicates common; NaN rows, constant columns and fronts where every
    # point is non-dominated (points on a simplex) are mixed in
    rng = np.random.default_rng(m)
    for trial in range(120):
        n = int(rng.integers(0, 400))
        kind = trial % 4
        if kind == 0:
            values = rng.integers(0, 4, size=(n, m)).astype(float)
        elif kind == 1:
            values = rng.random((n, m))
        elif kind == 2:
            values = rng.random((n, m))
            values /= values.sum(axis=1, keepdims=True) if m > 1 else 1.0
            values = np.round(values, 2)
        else:
            values = rng.integers(0, 3, size=(n, m)).astype(float)
            values[:, 0] = 1.0
            values[rng.random(n) < 0.1, int(rng.integers(0, m))] = np.nan
        directions = list(rng.choice(["maximize", "minimize"], size=m))
        got = non_dominated_mask(values, directions)
        np.testing.assert_array_equal(got, previous_mask(values, directions), err_msg=f"trial {trial}")
        if n <= 120:
            np.testing.assert_array_equal(got, brute_mask_nan(values, directions), err_msg=f"trial {trial}")


def brute_mask_nan(values, directions):
    """brute_mask with NaN rows never non-dominated and never dominating."""
    v = np.asarray(values, dtype=float).reshape(-1, len(directions))
    ok = ~np.isnan(v).any(axis=1)
    out = np.zeros(len(v), dtype=bool)
    out[ok] = brute_mask(v[ok], directions) if ok.any() else []
    return out


def test_mask_is_fast_at_ten_thousand_points():
    rng = np.random.default_rng(0)
    values = rng.random((10_000, 3))
    start = time.perf_counter()
    mask = non_dominated_mask(values, ["maximize", "minimize", "minimize"])
    elapsed = time.perf_counter() - start
    np.testing.assert_array_equal(mask, previous_mask(values, ["maximize", "minimize", "minimize"]))
    assert elapsed < 0.5, f"non_dominated_mask took {elapsed:.2f}s for 10,000 points in 3-D"


def test_hypervolume_of_front_equals_hypervolume_of_all_points():
    # the front, taken with the vectorized mask, carries the whole hypervolume (the summation order
    # differs when dominated points are swept too, hence approx)
    rng = np.random.default_rng(3)
    d = ["maximize", "minimize", "minimize"]
    for _ in range(100):
        values = np.round(rng.random((int(rng.integers(1, 300)), 3)), 2)
        front = values[non_dominated_mask(values, d)]
        assert hypervolume(front, d, [0.0, 1.0, 1.0]) == pytest.approx(hypervolume(values, d, [0.0, 1.0, 1.0]), rel=1e-12)


@pytest.mark.parametrize(
    ("values", "directions", "match"),
    [
        ([[1.0, 2.0]], ["maximise", "minimize"], "maximise"),
        ([[1.0, 2.0]], ["MAXIMIZE", "minimize"], "MAXIMIZE"),
        ([[1.0, 2.0]], "minimize", "minimize"),
        ([[1.0, 2.0, 3.0]], ["maximize", "minimize"], r"\(1, 3\)"),
        ([1.0, 2.0], ["maximize", "minimize"], r"\(2,\)"),
    ],
)
def test_mask_rejects_bad_input(values, directions, match):
    with pytest.raises(ValueError, match=match):
        non_dominated_mask(values, directions)


# --- hypervolume ----------------------------------------------------------------------------------------


def test_hypervolume_2d_staircase():
    pts = [[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]]
    # strips: 3*1 + 2*1 + 1*1
    assert hypervolume(pts, ["minimize", "minimize"], [4.0, 4.0]) == pytest.approx(6.0)


def test_hypervolume_maximize_direction():
    # accuracy maximize, size minimize; reference accuracy 0.6, size 4
    pts = [[0.9, 3.0], [0.8, 2.0], [0.7, 1.0]]
    # strips: 0.3*1 + 0.2*1 + 0.1*1
    assert hypervolume(pts, ["maximize", "minimize"], [0.6, 4.0]) == pytest.approx(0.6)
    # both maximized: mirror of the minimize staircase above
    mirrored = [[-1.0, -3.0], [-2.0, -2.0], [-3.0, -1.0]]
    assert hypervolume(mirrored, ["maximize", "maximize"], [-4.0, -4.0]) == pytest.approx(6.0)


def test_hypervolume_1d_and_3d_hand_values():
    assert hypervolume([[1.0], [3.0]], ["minimize"], [5.0]) == pytest.approx(4.0)
    assert hypervolume([[0.7], [0.9]], ["maximize"], [0.5]) == pytest.approx(0.4)
    # two 2x1x1 boxes overlapping in a unit cube: 2 + 2 - 1
    pts = [[0.0, 1.0, 1.0], [1.0, 0.0, 1.0]]
    assert hypervolume(pts, ["minimize"] * 3, [2.0, 2.0, 2.0]) == pytest.approx(3.0)
    # two boxes at different heights, summed layer by layer along z
    pts = [[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    # z in [0,1): 1x1 square; z in [1,2): 2x2 square
    assert hypervolume(pts, ["minimize"] * 3, [2.0, 2.0, 2.0]) == pytest.approx(1.0 + 4.0)


def test_hypervolume_ignores_points_outside_reference_box():
    ref = [4.0, 4.0]
    base = [[1.0, 3.0], [2.0, 2.0], [3.0, 1.0]]
    outside = [[0.0, 5.0], [5.0, 0.0], [4.0, 0.0], [0.0, 4.0], [np.nan, 0.0], [10.0, 10.0]]
    assert hypervolume(base + outside, ["minimize", "minimize"], ref) == pytest.approx(6.0)
    # maximize: accuracy at or below the reference accuracy contributes nothing
    pts = [[0.5, 1.0], [0.6, 0.0], [0.7, 1.0]]  # only the last is strictly better than the reference
    assert hypervolume(pts, ["maximize", "minimize"], [0.6, 2.0]) == pytest.approx(0.1 * 1.0)
    assert hypervolume([[0.5, 1.0]], ["maximize", "minimize"], [0.6, 2.0]) == 0.0


def test_hypervolume_empty_duplicates_and_dominated():
    d = ["maximize", "minimize", "minimize"]
    ref = [0.0, 10.0, 10.0]
    assert hypervolume([], d, ref) == 0.0
    pts = [[0.9, 2.0, 3.0], [0.5, 1.0, 5.0]]
    hv = hypervolume(pts, d, ref)
    assert hv == pytest.approx(brute_hypervolume(pts, d, ref))
    more = pts + pts + [[0.4, 3.0, 6.0], [0.9, 2.0, 3.5]]  # duplicates and dominated points
    assert hypervolume(more, d, ref) == pytest.approx(hv)


@pytest.mark.parametrize("m", [2, 3, 4, 5])
@pytest.mark.parametrize("seed", range(6))
def test_hypervolume_matches_inclusion_exclusion(m, seed):
    rng = np.random.default_rng(100 * m + seed)
    n = int(rng.integers(1, 9 if m <= 3 else 7))
    directions = list(rng.choice(["maximize", "minimize"], size=m))
    # some points fall outside the reference box, ties are likely with the rounding
    values = np.round(rng.random((n, m)) * 1.2 - 0.1, 1)
    reference = [0.0 if d == "maximize" else 1.0 for d in directions]
    got = hypervolume(values, directions, reference)
    assert got == pytest.approx(brute_hypervolume(values, directions, reference), abs=1e-12)
    # invariant under row order
    assert hypervolume(values[::-1], directions, reference) == pytest.approx(got, abs=1e-12)


def test_hypervolume_rejects_bad_reference():
    with pytest.raises(ValueError, match="reference"):
        hypervolume([[1.0, 2.0]], ["minimize", "minimize"], [3.0])
    with pytest.raises(ValueError, match="finite"):
        hypervolume([[1.0, 2.0]], ["minimize", "minimize"], [3.0, np.inf])
    with pytest.raises(ValueError, match="minimise"):
        hypervolume([[1.0, 2.0]], ["minimise", "minimize"], [3.0, 3.0])


def test_hypervolume_fast_on_large_4d_front():
    # every point on the unit sphere's positive orthant is non-dominated: the worst case for slicing
    rng = np.random.default_rng(0)
    pts = np.abs(rng.normal(size=(300, 4)))
    pts /= np.linalg.norm(pts, axis=1, keepdims=True)
    start = time.perf_counter()
    hv = hypervolume(pts, ["minimize"] * 4, [1.0] * 4)
    elapsed = time.perf_counter() - start
    assert 0.0 < hv < 1.0
    assert elapsed < 3.0, f"hypervolume took {elapsed:.2f}s for 300 points in 4-D"


# --- format_table ---------------------------------------------------------------------------------------


def test_format_table_alignment_and_missing():
    rows = [
        {"trial": 3, "accuracy": 0.912345, "size_bytes": 123456.0, "method": "prune"},
        {"trial": 12, "accuracy": 0.8, "method": "quantize+prune"},
        {"trial": 7, "accuracy": None, "size_bytes": 99.5},
    ]
    columns = [("trial", "#"), ("accuracy", "acc"), ("size_bytes", "size"), ("method", "method")]
    text = format_table(rows, columns, formats={"accuracy": ".3f"})
    lines = text.split("\n")
    assert len(lines) == 2 + len(rows)
    assert lines[0].split() == ["#", "acc", "size", "method"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2].split() == ["3", "0.912", "123456", "prune"]
    assert lines[3].split() == ["12", "0.800", "-", "quantize+prune"]
    assert lines[4].split() == ["7", "-", "99.5", "-"]
    # numeric columns right-aligned: each column ends at the same position in every line
    for token_index in range(3):
        ends = set()
        for line in [lines[0]] + lines[2:]:
            pos, end = 0, 0
            for tok in line.split()[: token_index + 1]:
                pos = line.index(tok, pos)
                end = pos + len(tok)
                pos = end
            ends.add(end)
        assert len(ends) == 1, f"column {token_index} not right-aligned:\n{text}"
    # text column left-aligned: starts at the same position
    starts = {line.index(tok) for line, tok in zip(lines[2:4], ["prune", "quantize+prune"], strict=True)}
    assert len(starts) == 1
    assert all(line == line.rstrip() for line in lines)
    # dashed rule as wide as the columns
    assert len(lines[1]) == max(len(line) for line in lines)


def test_format_table_defaults_and_empty():
    text = format_table(
        [{"a": 0.123456789, "b": 1234567.0, "c": 1.5e-6, "d": True}],
        [("a", "A"), ("b", "B"), ("c", "C"), ("d", "D")],
    )
    assert text.split("\n")[2].split() == ["0.1235", "1234567", "1.500e-06", "True"]
    empty = format_table([], [("a", "alpha"), ("b", "beta")])
    assert empty.split("\n") == ["alpha  beta", "-----  ----"]


# --- plot writers ---------------------------------------------------------------------------------------


def _points():
    return [
        ParetoPoint(trial=0, accuracy=0.91, size_bytes=2.0e5, latency_ms=1.2, pareto=True, label="bits=8"),
        ParetoPoint(
            trial=1, accuracy=0.85, size_bytes=5.0e4, latency_ms=0.9, pareto=True, label="bits=4\nprune=0.5"
        ),
        ParetoPoint(trial=2, accuracy=0.80, size_bytes=3.0e5, latency_ms=2.0, pareto=False, label="<b>x</b>"),
    ]


REFERENCE = ParetoPoint(trial=-1, accuracy=0.93, size_bytes=1.0e6, latency_ms=3.0, pareto=False, label="fp32")


@pytest.mark.parametrize("n", [0, 1, 3])
def test_write_pareto_html(tmp_path, n):
    path = write_pareto_html(
        _points()[:n],
        tmp_path / "deep" / "dir" / "pareto.html",
        reference=REFERENCE if n else None,
        title="study x",
    )
    assert path.is_file()
    text = path.read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]*\bsrc=|<link|https?://(?!www\.w3\.org)", text)  # nothing to fetch: offline
    assert len(text) < 20_000                                       # small: fits MLflow's artifact viewer
    assert "study x" in text
    if n:
        assert "bits=8" in text and "<title>trial 0 · accuracy 91.00%" in text   # hover labels
        assert "&lt;b&gt;x&lt;/b&gt;" in text or n < 3                       # labels are escaped


@pytest.mark.parametrize("n", [0, 1, 3])
def test_write_pareto_png(tmp_path, n):
    path = write_pareto_png(
        _points()[:n],
        tmp_path / "deep" / "dir" / "pareto.png",
        reference=REFERENCE if n else None,
        title="study x",
    )
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC)
    assert len(data) > 1000


def test_import_is_light():
    import subprocess
    import sys

    code = "import sys, search.pareto; print('plotly' in sys.modules, 'matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_an_empty_front_says_why():
    from search.report import TrialRow, pareto_table

    infeasible = [TrialRow(number=i, state="COMPLETE", run_id=None, values={"accuracy": 0.5}, feasible=False)
                  for i in range(3)]
    assert "all 3 completed trials break a constraint" in pareto_table(infeasible)
    failed = [TrialRow(number=0, state="FAIL", run_id=None), TrialRow(number=1, state="PRUNED", run_id=None)]
    assert "no trial completed — 1 FAIL, 1 PRUNED" in pareto_table(failed)


# --- the study's hypervolume (search.report.hypervolume_of_values) ------------------------------------


def test_study_hypervolume_counts_halvings_of_size_and_latency():
    from search.report import hypervolume_of_values

    ref = {"accuracy": 0.9, "size_bytes": 1000.0, "latency_ms": 0.2}
    objectives = ["accuracy", "size_bytes", "latency_ms"]
    one = [[0.9, 250.0, 0.1]]                          # a quarter of the size, half the latency
    expected = 0.9 * (math.log2(1.5) + 2) * (math.log2(1.5) + 1)
    assert hypervolume_of_values(one, objectives, ref) == pytest.approx(expected)
    assert hypervolume_of_values(one, objectives, ref, log_minimized=False) == pytest.approx(0.9 * 1.25 * 1.0)
    # 20x and 100x smaller at the same accuracy: the log axis tells them apart, the linear one hardly
    small, tiny = [[0.9, 50.0, 0.2]], [[0.9, 10.0, 0.2]]
    log_gain = hypervolume_of_values(tiny, objectives, ref) / hypervolume_of_values(small, objectives, ref)
    linear_gain = (hypervolume_of_values(tiny, objectives, ref, log_minimized=False)
                   / hypervolume_of_values(small, objectives, ref, log_minimized=False))
    assert log_gain > 1.3 and linear_gain < 1.03
    # beyond 1.5x the reference, or without a positive size, a point adds nothing
    assert hypervolume_of_values([[0.9, 1600.0, 0.1]], objectives, ref) == 0.0
    assert hypervolume_of_values([[0.9, 0.0, 0.1]], objectives, ref) == 0.0
    assert hypervolume_of_values(np.empty((0, 3)), objectives, ref) == 0.0
