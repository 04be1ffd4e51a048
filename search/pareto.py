"""Pareto front, hypervolume and a terminal table: pure functions of plain arrays and dicts.

`non_dominated_mask`, `tied_non_dominated_mask`, `hypervolume` and `format_table` are cheap to test and to
reuse from notebooks, and ``import search.pareto`` stays instant for the sweep workers. The plots of a study
are drawn apart, in :mod:`search.plots`; ``python -m search.pareto`` is the ``squeeze pareto`` command
(:mod:`search.report` reads the study and prints the table).

Directions are the strings Optuna uses, ``"maximize"`` and ``"minimize"``. Internally every
objective is turned into a minimization by negating the maximized ones.
"""

from __future__ import annotations

import bisect
import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "format_table",
    "hypervolume",
    "non_dominated_mask",
    "tied_non_dominated_mask",
]

_DIRECTIONS = ("maximize", "minimize")



# --- validation -------------------------------------------------------------------------------------


def _signs(directions: Sequence[str]) -> np.ndarray:
    """Return +1 for each minimized and -1 for each maximized objective.

    Multiplying values by these signs turns every objective into a minimization.

    Raises:
        ValueError: if ``directions`` is a bare string or holds anything other than
            ``"maximize"`` / ``"minimize"``.
    """
    if isinstance(directions, str):
        raise ValueError(
            f"directions must be a sequence of 'maximize'/'minimize', one per objective, "
            f"not the single string {directions!r}"
        )
    if len(directions) == 0:
        raise ValueError("directions must name at least one objective, got an empty sequence")
    signs = []
    for i, d in enumerate(directions):
        if d not in _DIRECTIONS:
            raise ValueError(f"directions[{i}] must be 'maximize' or 'minimize', got {d!r}")
        signs.append(-1.0 if d == "maximize" else 1.0)
    return np.asarray(signs, dtype=float)


def _as_minimized(values: Any, directions: Sequence[str]) -> np.ndarray:
    """Validate ``values`` (n, m) against ``directions`` and return a float copy to minimize.

    Raises:
        ValueError: on a bad direction, a non-2-D array or a column count that differs from
            ``len(directions)``.
    """
    signs = _signs(directions)
    m = len(signs)
    try:
        arr = np.array(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"values must be numbers shaped (n, {m}): {exc}") from None
    if arr.size == 0 and arr.ndim <= 1:
        arr = arr.reshape(0, m)
    if arr.ndim != 2:
        raise ValueError(f"values must be 2-D (n points, {m} objectives), got shape {arr.shape}")
    if arr.shape[1] != m:
        raise ValueError(
            f"values have {arr.shape[1]} objective(s) per point (shape {arr.shape}) "
            f"but {m} direction(s) were given: {list(directions)!r}"
        )
    return arr * signs


# --- Pareto front -----------------------------------------------------------------------------------


def non_dominated_mask(values: Any, directions: Sequence[str]) -> np.ndarray:
    """Flag the points that no other point dominates.

    A point ``a`` dominates ``b`` when ``a`` is at least as good as ``b`` in every objective and
    strictly better in at least one. Identical points therefore do not dominate each other and are
    all kept, so duplicated trials stay on the front together. A row containing NaN (a failed or
    unmeasured trial) is never non-dominated and never dominates anything.

    Whole-array operations only (no Python loop per point), so 10,000 trials take milliseconds:
    two objectives are one lexicographic sort and a running minimum; three or more are culled by
    the best few hundred points and then swept in sorted blocks (see :func:`_non_dominated_min`).

    Args:
        values: array-like of shape (n, m), one row per point, one column per objective.
        directions: m strings, ``"maximize"`` or ``"minimize"``, one per column.

    Returns:
        Boolean array of shape (n,), True for the non-dominated points. Empty when n is 0.

    Raises:
        ValueError: on a bad direction string or a shape that does not match ``directions``.

    Example:
        >>> non_dominated_mask([[0.9, 10.0], [0.8, 5.0], [0.7, 6.0]], ["maximize", "minimize"]).tolist()
        [True, True, False]
    """
    v = _as_minimized(values, directions)
    mask = np.zeros(v.shape[0], dtype=bool)
    idx = np.flatnonzero(~np.isnan(v).any(axis=1))
    mask[idx] = _non_dominated_min(v[idx])
    return mask


def tied_non_dominated_mask(values: Any, directions: Sequence[str], tolerances: Sequence[float]) -> np.ndarray:
    """Flag the points no other point dominates once differences within a relative tolerance are ties.

    Timed objectives are noisy: a latency 3% below another's is no evidence of a faster model when
    repeated measurements of one model spread by 5%. With ``tolerances[j] = eps`` (relative; 0 = exact,
    as for size and accuracy), objective ``j`` of two points counts as

    * a tie when the values differ by at most a factor ``1 + eps``;
    * better only when better by more than that factor (``a * (1 + eps) < b`` for a minimized one).

    A point is dominated when another is at least tied in every objective and better in one. Two
    measurements of the same model (equal exact objectives, tolerant ones chained within ``eps``: each
    within ``eps`` of the next) first get the same values (their best), so they are on or off the front
    together whatever else the study holds. With every tolerance 0 this is :func:`non_dominated_mask`.

    Values of a tolerant objective must be > 0 (latencies, speedups, throughputs); rows with NaN are
    never on the front and never dominate.

    Args:
        values: array-like (n, m).
        directions: m strings, ``"maximize"`` or ``"minimize"``.
        tolerances: m relative tolerances >= 0.

    Raises:
        ValueError: on bad directions or shapes, a negative or non-finite tolerance, or a value <= 0 in a
            tolerant column.

    Example:
        >>> tied_non_dominated_mask([[0.9, 1.00], [0.9, 1.03], [0.9, 1.20]], ["maximize", "minimize"],
        ...                         [0.0, 0.05]).tolist()
        [True, True, False]
    """
    v = _as_minimized(values, directions)
    tol = np.asarray(tolerances, dtype=float).reshape(-1)
    if tol.shape != (v.shape[1],) or not np.isfinite(tol).all() or (tol < 0).any():
        raise ValueError(f"tolerances must be {v.shape[1]} finite numbers >= 0, one per objective, "
                         f"got {list(tolerances)!r}")
    if not tol.any():
        return non_dominated_mask(values, directions)
    mask = np.zeros(v.shape[0], dtype=bool)
    idx = np.flatnonzero(~np.isnan(v).any(axis=1))
    if len(idx) == 0:
        return mask
    v = v[idx]
    tolerant = tol > 0
    raw = np.abs(v[:, tolerant])
    if (v[:, tolerant] * _signs(directions)[tolerant] <= 0).any():
        bad = [i for i, t in enumerate(tol) if t > 0]
        raise ValueError(f"values of the objectives with a tolerance (columns {bad}) must be > 0")
    v[:, tolerant] = np.sign(v[:, tolerant]) * np.log(raw)      # minimized log scale: ties are within log1p(eps)
    v = _merge_repeats(v, np.log1p(tol))
    mask[idx] = _tied_non_dominated_min(v, np.log1p(tol))
    return mask


def _merge_repeats(v: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Give rows with equal exact columns (``t == 0``) whose tolerant columns chain within ``t`` the same
    tolerant values (the chain's minimum), column by column."""
    v = v.copy()
    exact = t == 0
    _, group = np.unique(v[:, exact], axis=0, return_inverse=True) if exact.any() else (None, np.zeros(len(v), int))
    group = np.asarray(group).reshape(-1)
    for j in np.flatnonzero(~exact):
        order = np.lexsort((v[:, j], group))
        g, x = group[order], v[order, j]
        start = np.ones(len(x), dtype=bool)
        start[1:] = (g[1:] != g[:-1]) | (x[1:] - x[:-1] > t[j])
        chain = np.cumsum(start) - 1
        v[order, j] = x[start][chain]                       # sorted ascending: a chain's first is its minimum
    return v


def _eps_dominated_by(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """For each row of ``b``: whether some row of ``a`` dominates it with ties within ``t`` (minimized)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros(len(b), dtype=bool)
    out = np.zeros(len(b), dtype=bool)
    for lo in range(0, len(a), _BLOCK):
        d = a[lo:lo + _BLOCK, None, :] - b[None, :, :]
        out |= ((d <= t).all(axis=2) & (d < -t).any(axis=2)).any(axis=0)
    return out


def _tied_non_dominated_min(v: np.ndarray, t: np.ndarray) -> np.ndarray:
    """:func:`tied_non_dominated_mask` of NaN-free minimized rows (tolerant columns on a log scale).

    The relation is not transitive, so no sort sweeps it; instead the exact front (cheap) culls every row
    it dominates with ties, and each survivor is checked against every row."""
    seed = v[_non_dominated_min(v)]
    alive = np.flatnonzero(~np.concatenate([_eps_dominated_by(seed, v[lo:lo + 16 * _BLOCK], t)
                                            for lo in range(0, len(v), 16 * _BLOCK)]))
    out = np.zeros(len(v), dtype=bool)
    out[alive] = ~_eps_dominated_by(v, v[alive], t)
    return out


def _dominated_by(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each row of ``b`` (k, m): whether some row of ``a`` (j, m) dominates it (all minimized)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros(len(b), dtype=bool)
    le = (a[:, None, :] <= b[None, :, :]).all(axis=2)
    lt = (a[:, None, :] < b[None, :, :]).any(axis=2)
    return (le & lt).any(axis=0)


#: points per block of the m >= 3 sweep (and size of the culling set): block**2 * m comparisons per step
_BLOCK = 128


def _non_dominated_min(v: np.ndarray) -> np.ndarray:
    """Non-dominated flags of the NaN-free rows ``v`` (n, m), every objective minimized.

    * m = 1: the rows equal to the minimum.
    * m = 2: after a lexicographic sort, a row is non-dominated iff it has the lowest y of its
      same-x group and a y strictly below every y of a strictly smaller x (running minimum).
    * m >= 3: first drop every row dominated by the non-dominated subset of the ``_BLOCK`` rows of
      lowest rank sum (cheap, and it removes almost everything on real fronts; safe because a
      dropped row's dominator is itself dominated by, or is, a kept row). Then sweep the survivors
      in lexicographic order, ``_BLOCK`` rows at a time: a dominator always sorts before what it
      dominates, so a row is non-dominated iff neither the front found so far nor a row of its
      own block dominates it.
    """
    n, m = v.shape
    if n == 0:
        return np.zeros(0, dtype=bool)
    if m == 1:
        return v[:, 0] == v[:, 0].min()
    if m == 2:
        order = np.lexsort((v[:, 1], v[:, 0]))
        x, y = v[order, 0], v[order, 1]
        new_x = np.ones(n, dtype=bool)
        new_x[1:] = x[1:] != x[:-1]
        group = np.cumsum(new_x) - 1
        group_min = y[new_x]                      # sorted by y within x: a group's first y is its lowest
        smaller_x_min = np.concatenate(([np.inf], np.minimum.accumulate(group_min)[:-1]))
        out = np.zeros(n, dtype=bool)
        out[order] = (y == group_min[group]) & (y < smaller_x_min[group])
        return out
    rank_sum = v.argsort(axis=0).argsort(axis=0).sum(axis=1)
    seed = v[np.argsort(rank_sum, kind="stable")[:_BLOCK]]
    seed = seed[~_dominated_by(seed, seed)]
    alive = np.flatnonzero(~np.concatenate([_dominated_by(seed, v[lo:lo + 16 * _BLOCK])
                                            for lo in range(0, n, 16 * _BLOCK)]))
    order = alive[np.lexsort(v[alive].T[::-1])]
    out = np.zeros(n, dtype=bool)
    front = np.empty((0, m))
    for lo in range(0, len(order), _BLOCK):
        rows = order[lo:lo + _BLOCK]
        cand = rows[~_dominated_by(front, v[rows])]
        cand = cand[~_dominated_by(v[cand], v[cand])]
        out[cand] = True
        front = np.vstack([front, v[cand]])
    return out


# --- hypervolume ------------------------------------------------------------------------------------


def hypervolume(values: Any, directions: Sequence[str], reference: Sequence[float]) -> float:
    """Exact volume of the objective space dominated by the points and bounded by ``reference``.

    The hypervolume is the standard single-number quality of a Pareto front: it grows when the
    front moves towards the ideal or spreads out, and it is comparable between studies sharing a
    reference point. Only points strictly better than ``reference`` in every objective contribute;
    the others (and rows with NaN) are dropped. Dominated points and duplicates are harmless.

    Algorithm: after turning every objective into a minimization, the volume is computed by
    slicing along the last objective (the HSO / dimension-sweep scheme). For three objectives the
    slices are swept in one pass that keeps the 2-D staircase of the points seen so far and its
    area up to date, O(n log n) searches plus list edits; for four or more objectives each slice
    is the (m-1)-D hypervolume of the non-dominated projections seen so far, recomputed only when
    that set changes. One and two objectives are closed formulas. A few hundred points with four
    objectives take a fraction of a second.

    Args:
        values: array-like of shape (n, m).
        directions: m strings, ``"maximize"`` or ``"minimize"``.
        reference: m finite numbers, the worst corner of the measured box (in the original,
            un-negated units, e.g. accuracy 0.0 for a maximized accuracy).

    Returns:
        The hypervolume, 0.0 when no point is strictly better than ``reference``.

    Raises:
        ValueError: on a bad direction, mismatched shapes or a non-finite reference.
    """
    v = _as_minimized(values, directions)
    m = v.shape[1]
    signs = _signs(directions)
    ref = np.array(reference, dtype=float).reshape(-1)
    if ref.shape != (m,):
        raise ValueError(f"reference must have {m} number(s), one per objective, got {list(reference)!r}")
    if not np.isfinite(ref).all():
        raise ValueError(f"reference must be finite, got {list(reference)!r}")
    ref = ref * signs
    inside = (v < ref).all(axis=1)  # NaN compares False, so NaN rows drop out here
    pts = v[inside]
    if len(pts) == 0 or m == 0:
        return 0.0
    return float(_hv_min(pts, ref))


def _hv_min(pts: np.ndarray, ref: np.ndarray) -> float:
    """Hypervolume of ``pts`` (all strictly below ``ref``), every objective minimized."""
    n, m = pts.shape
    if n == 0:
        return 0.0
    if m == 1:
        return float(ref[0] - pts[:, 0].min())
    if m == 2:
        return _hv2(pts, ref)
    if m == 3:
        return _hv3(pts, ref)
    return _hv_slices(pts, ref)


def _hv2(pts: np.ndarray, ref: np.ndarray) -> float:
    """Area of a 2-D staircase: sort by x, keep the running minimum of y, sum the strips."""
    order = np.lexsort((pts[:, 1], pts[:, 0]))
    x = pts[order, 0]
    y = np.minimum.accumulate(pts[order, 1])
    x_next = np.append(x[1:], ref[0])
    return float(np.sum((x_next - x) * (ref[1] - y)))


def _hv3(pts: np.ndarray, ref: np.ndarray) -> float:
    """3-D hypervolume by one sweep along z with an incrementally updated 2-D staircase.

    The staircase holds the non-dominated (x, y) projections seen so far, x ascending and y
    strictly descending. Inserting a point adds exactly the area between its box and the
    staircase, computed while walking the steps it removes, so each step is visited once.
    """
    order = np.argsort(pts[:, 2], kind="stable")
    p = pts[order]
    rx, ry, rz = (float(r) for r in ref)
    xs: list[float] = []
    ys: list[float] = []
    area = 0.0
    volume = 0.0
    n = len(p)
    for i in range(n):
        px, py, pz = float(p[i, 0]), float(p[i, 1]), float(p[i, 2])
        j = bisect.bisect_right(xs, px) - 1  # rightmost step with x <= px has the lowest such y
        if not (j >= 0 and ys[j] <= py):  # not weakly dominated: add its exclusive area
            k = bisect.bisect_left(xs, px)
            cur_x = px
            cur_h = ys[k - 1] if k > 0 else ry
            e = k
            added = 0.0
            while e < len(xs) and ys[e] >= py:  # steps the new point dominates
                added += (xs[e] - cur_x) * (cur_h - py)
                cur_x, cur_h = xs[e], ys[e]
                e += 1
            stop = xs[e] if e < len(xs) else rx
            added += (stop - cur_x) * (cur_h - py)
            area += added
            xs[k:e] = [px]
            ys[k:e] = [py]
        z_next = float(p[i + 1, 2]) if i + 1 < n else rz
        volume += area * (z_next - pz)
    return volume


def _hv_slices(pts: np.ndarray, ref: np.ndarray) -> float:
    """m-D hypervolume (m >= 4) as a sum of slabs along the last objective.

    Between consecutive last-objective values the cross-section is the (m-1)-D hypervolume of the
    projections of the points seen so far; only their non-dominated subset matters, and the
    cross-section is recomputed only when a new point enters that subset.
    """
    order = np.argsort(pts[:, -1], kind="stable")
    p = pts[order]
    sub_ref = ref[:-1]
    front = np.empty((0, pts.shape[1] - 1))
    section = 0.0
    changed = False
    volume = 0.0
    n = len(p)
    for i in range(n):
        q = p[i, :-1]
        if not (front <= q).all(axis=1).any():
            front = np.vstack([front[~(q <= front).all(axis=1)], q])
            changed = True
        z_next = p[i + 1, -1] if i + 1 < n else ref[-1]
        height = float(z_next - p[i, -1])
        if height > 0:
            if changed:
                section = _hv_min(front, sub_ref)
                changed = False
            volume += section * height
    return volume


# --- terminal table ---------------------------------------------------------------------------------


def _format_value(value: Any, spec: str | None) -> str:
    """Render one cell: ``spec`` when given and applicable, else a compact default."""
    if value is None:
        return "-"
    if spec is not None:
        try:
            return format(value, spec)
        except (TypeError, ValueError):
            pass
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        x = float(value)
        if not math.isfinite(x):
            return str(x)
        ax = abs(x)
        if ax >= 1e15 or (0 < ax < 1e-4):
            return f"{x:.3e}"
        if ax >= 1000:
            return f"{x:.0f}"
        return f"{x:.4g}"
    return str(value).replace("\n", " ")


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def format_table(
    rows: list[dict],
    columns: list[tuple[str, str]],
    formats: dict[str, str] | None = None,
) -> str:
    """Render rows as a plain-text table with aligned columns, for printing in a terminal.

    Numeric columns are right-aligned so digits line up; other columns are left-aligned. A key
    missing from a row (or set to None) shows as ``-`` so partial trials still print.

    Args:
        rows: one dict per table row.
        columns: ``(key, header)`` pairs, in display order.
        formats: optional key -> format spec (e.g. ``{"accuracy": ".4f"}``); keys without one get
            a compact default (4 significant digits, whole numbers for values of 1000 and more).

    Returns:
        Header line, a dashed rule, then one line per row; no trailing newline or spaces.
    """
    formats = formats or {}
    cells = [[_format_value(row.get(key), formats.get(key)) for key, _ in columns] for row in rows]
    lines_cols: list[tuple[list[str], bool]] = []
    for c, (key, header) in enumerate(columns):
        present = [row[key] for row in rows if row.get(key) is not None]
        numeric = bool(present) and all(_is_number(v) for v in present)
        lines_cols.append(([str(header)] + [r[c] for r in cells], numeric))
    widths = [max(len(s) for s in col) for col, _ in lines_cols]

    def line(i: int) -> str:
        parts = []
        for (col, numeric), w in zip(lines_cols, widths, strict=True):
            parts.append(col[i].rjust(w) if numeric else col[i].ljust(w))
        return "  ".join(parts).rstrip()

    out = [line(0), "  ".join("-" * w for w in widths)]
    out.extend(line(i + 1) for i in range(len(rows)))
    return "\n".join(out)


if __name__ == "__main__":  # python -m search.pareto study.name=...: the command `squeeze pareto` (search.cli)
    import sys

    from search.cli import main

    sys.exit(main(["pareto", *sys.argv[1:]]))
