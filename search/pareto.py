"""Pareto front, hypervolume, a terminal table and the two Pareto plots of a study.

The computations (`non_dominated_mask`, `hypervolume`, `format_table`) are pure functions of plain
arrays and dicts, so they are cheap to test and to reuse from notebooks. The drawing functions
(`write_pareto_html`, `write_pareto_png`) are kept apart: the HTML is plain SVG written here, and the PNG
imports matplotlib only when called, so that ``import search.pareto`` stays instant for the sweep workers
that never draw.

Directions are the strings Optuna uses, ``"maximize"`` and ``"minimize"``. Internally every
objective is turned into a minimization by negating the maximized ones.
"""

from __future__ import annotations

import bisect
import html
import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "ParetoPoint",
    "format_table",
    "hypervolume",
    "non_dominated_mask",
    "tied_non_dominated_mask",
    "write_pareto_html",
    "write_pareto_png",
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


# --- plots ------------------------------------------------------------------------------------------


@dataclass
class ParetoPoint:
    """One trial as drawn on the Pareto plots.

    Attributes:
        trial: Optuna trial number, shown on hover and as the annotation on the PNG.
        accuracy: the y value of both panels.
        size_bytes: x of the left panel (log axis).
        latency_ms: x of the right panel.
        pareto: whether the trial is on the study's Pareto front (highlighted).
        label: free hover text, e.g. the trial's parameters.
    """

    trial: int
    accuracy: float
    size_bytes: float
    latency_ms: float
    pareto: bool
    label: str = ""


_PARETO_COLOR = "#d62728"
_OTHER_COLOR = "#7f7f7f"
_REFERENCE_COLOR = "#1f77b4"
_PANELS = (("size_bytes", "size (bytes, log)"), ("latency_ms", "latency (ms)"))


def _prepare(path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round tick values (1, 2, 5 x 10^k steps) covering ``[lo, hi]``."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo] if math.isfinite(lo) else []
    raw = (hi - lo) / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 12) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks of a log axis over ``[lo, hi]`` (powers of ten only when the range spans many decades)."""
    mantissas = (1,) if math.log10(hi / lo) > 4 else (1, 2, 5)
    ticks = [m * 10.0 ** e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1) for m in mantissas]
    return [t for t in ticks if lo <= t <= hi]


def _tick_label(v: float) -> str:
    return f"{v:g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.1e}"


class _Axis:
    """Maps data values to pixels along one axis (linear or log), with a little padding around the data."""

    def __init__(self, values: Sequence[float], start: float, end: float, log: bool = False) -> None:
        vals = [v for v in values if math.isfinite(v) and (v > 0 or not log)]
        self.log = log
        if log:
            lo, hi = (min(vals), max(vals)) if vals else (1.0, 10.0)
            lo, hi = (lo / 2, hi * 2) if hi / lo < 4 else (lo / 1.4, hi * 1.4)
            self.lo, self.hi = math.log10(lo), math.log10(hi)
            self.ticks = _log_ticks(lo, hi)
        else:
            lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
            pad = (hi - lo) * 0.08 or abs(hi) * 0.05 or 0.5
            self.lo, self.hi = lo - pad, hi + pad
            self.ticks = _nice_ticks(self.lo, self.hi)
        self.start, self.end = start, end

    def __call__(self, v: float) -> float:
        t = math.log10(v) if self.log else v
        return self.start + (t - self.lo) / (self.hi - self.lo) * (self.end - self.start)

    def shows(self, v: float) -> bool:
        return math.isfinite(v) and (v > 0 or not self.log)


_W, _H, _M = 520, 360, (16, 16, 52, 62)  # panel width, height, margins (top, right, bottom, left)


def _hover(p: ParetoPoint, name: str) -> str:
    head = (f"{name} · accuracy {100 * p.accuracy:.2f}% · {p.size_bytes / 1024:.1f} KiB "
            f"({p.size_bytes:,.0f} B) · {p.latency_ms:.4g} ms")
    return html.escape(head + (f"\n{p.label}" if p.label else ""))


def _svg_panel(pts: Sequence[ParetoPoint], reference: ParetoPoint | None, attr: str, x_title: str, log: bool,
               y_axis: _Axis) -> str:
    """One panel (accuracy against ``attr``) as an SVG element; every point carries its hover text."""
    top, right, bottom, left = _M
    everything = [*pts, *([reference] if reference else [])]
    scale = 1024.0 if attr == "size_bytes" else 1.0     # sizes drawn in KiB

    def value(p: ParetoPoint) -> float:
        return getattr(p, attr) / scale

    x = _Axis([value(p) for p in everything], left, _W - right, log=log)
    out = [f'<svg viewBox="0 0 {_W} {_H}" width="{_W}" height="{_H}" role="img" aria-label="accuracy vs {attr}">',
           f'<rect x="{left}" y="{top}" width="{_W - left - right}" height="{_H - top - bottom}" class="frame"/>']
    for t in x.ticks:
        px = x(t)
        out.append(f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{top}" y2="{_H - bottom}" class="grid"/>'
                   f'<text x="{px:.1f}" y="{_H - bottom + 16}" class="tick" text-anchor="middle">{_tick_label(t)}</text>')
    for t in y_axis.ticks:
        py = y_axis(t)
        out.append(f'<line x1="{left}" x2="{_W - right}" y1="{py:.1f}" y2="{py:.1f}" class="grid"/>'
                   f'<text x="{left - 6}" y="{py + 4:.1f}" class="tick" text-anchor="end">{100 * t:g}%</text>')
    out.append(f'<text x="{(left + _W - right) / 2}" y="{_H - 12}" class="axis" text-anchor="middle">{x_title}</text>'
               f'<text transform="translate(16 {(top + _H - bottom) / 2}) rotate(-90)" class="axis" '
               f'text-anchor="middle">accuracy (CV mean)</text>')
    # others first, the front on top of them, the reference last
    for p in sorted(pts, key=lambda p: p.pareto):
        vx, vy = value(p), p.accuracy
        if not (x.shows(vx) and math.isfinite(vy)):
            continue
        cls, r = ("front", 6) if p.pareto else ("other", 4.5)
        out.append(f'<g class="pt {cls}" data-t="{p.trial}"><circle cx="{x(vx):.1f}" cy="{y_axis(vy):.1f}" r="{r}"/>'
                   f'<title>{_hover(p, f"trial {p.trial}")}</title></g>')
        if p.pareto:
            out.append(f'<text x="{x(vx) + 7:.1f}" y="{y_axis(vy) - 6:.1f}" class="num">{p.trial}</text>')
    if reference is not None and x.shows(value(reference)) and math.isfinite(reference.accuracy):
        cx, cy = x(value(reference)), y_axis(reference.accuracy)
        star = " ".join(f"{cx + (10 if k % 2 == 0 else 4.2) * math.sin(k * math.pi / 5):.1f},"
                        f"{cy - (10 if k % 2 == 0 else 4.2) * math.cos(k * math.pi / 5):.1f}" for k in range(10))
        out.append(f'<g class="pt ref"><polygon points="{star}"/><title>{_hover(reference, "fp32 reference")}</title></g>')
    if not everything:
        out.append(f'<text x="{(left + _W - right) / 2}" y="{(top + _H - bottom) / 2}" class="axis" '
                   'text-anchor="middle">no trials</text>')
    return "".join(out) + "</svg>"


_HTML_STYLE = """body{font:14px system-ui,sans-serif;margin:16px;color:#222}h1{font-size:18px;margin:0 0 6px}
.legend{display:flex;gap:18px;margin:0 0 8px;font-size:13px}.legend span{display:flex;align-items:center;gap:5px}
.panels{display:flex;flex-wrap:wrap;gap:8px}.frame{fill:none;stroke:#bbb}.grid{stroke:#eee}
.tick{font-size:11px;fill:#555}.axis{font-size:12px;fill:#333}.num{font-size:10px;fill:#333;pointer-events:none}
.front circle{fill:%(front)s;stroke:#000;stroke-width:1}.other circle{fill:%(other)s;fill-opacity:.45}
.ref polygon{fill:%(ref)s;stroke:#000;stroke-width:1}.pt{cursor:pointer}
.pt:hover circle,.pt.on circle{stroke:#000;stroke-width:2.5;fill-opacity:1}
table{border-collapse:collapse;margin-top:12px;font-size:13px}td,th{padding:3px 10px;text-align:right}
th{border-bottom:1px solid #999}td:last-child,th:last-child{text-align:left;font-family:monospace;font-size:12px}
tr.on{background:#fde9e9}"""

# hovering a point (or a table row) highlights that trial in both panels and in the table
_HTML_SCRIPT = """document.querySelectorAll('[data-t]').forEach(function(el){
function mark(on){document.querySelectorAll('[data-t="'+el.dataset.t+'"]').forEach(function(o){
o.classList.toggle('on',on)})}el.addEventListener('mouseenter',function(){mark(true)});
el.addEventListener('mouseleave',function(){mark(false)})});"""


def write_pareto_html(
    points: Iterable[ParetoPoint],
    path: str | Path,
    reference: ParetoPoint | None = None,
    title: str = "",
) -> Path:
    """Write the Pareto plot as one small, self-contained HTML file (inline SVG, no library, no network).

    Two panels side by side: accuracy against size (log x axis, KiB) and accuracy against latency. Pareto
    trials are red and numbered, the others faded grey, the uncompressed reference a star. Hovering a point
    shows its trial, accuracy, size, latency and label (an SVG ``<title>``, so it works with scripts off)
    and highlights the same trial in the other panel and in the table of Pareto trials below. The legend
    sits above the panels, outside every plot area. The file is a few hundred bytes per trial (a
    200-trial study: about 150 KB), small enough for MLflow's artifact viewer, and opens offline.

    Args:
        points: the trials to draw; may be empty.
        path: the HTML file to write; missing parent folders are created.
        reference: the reference (uncompressed) model, if any.
        title: page title.

    Returns:
        The path written.
    """
    out = _prepare(path)
    pts = list(points)
    everything = [*pts, *([reference] if reference else [])]
    top, _, bottom, _ = _M
    y_axis = _Axis([p.accuracy for p in everything], _H - bottom, top)
    panels = [_svg_panel(pts, reference, "size_bytes", "size (KiB, log scale)", True, y_axis),
              _svg_panel(pts, reference, "latency_ms", "latency (ms per request)", False, y_axis)]
    front = sorted((p for p in pts if p.pareto), key=lambda p: -p.accuracy)
    rows = "".join(f'<tr data-t="{p.trial}"><td>{p.trial}</td><td>{100 * p.accuracy:.2f}%</td>'
                   f"<td>{p.size_bytes / 1024:.1f}</td><td>{p.latency_ms:.4g}</td>"
                   f"<td>{html.escape(p.label)}</td></tr>" for p in front)
    table = ("<table><tr><th>trial</th><th>accuracy</th><th>KiB</th><th>latency ms</th><th>params</th></tr>"
             f"{rows}</table>") if front else ""
    legend = (f'<div class="legend"><span><svg width="14" height="14"><circle cx="7" cy="7" r="6" fill="{_PARETO_COLOR}" '
              f'stroke="#000"/></svg>Pareto front ({len(front)})</span><span><svg width="14" height="14"><circle cx="7" '
              f'cy="7" r="4.5" fill="{_OTHER_COLOR}" fill-opacity=".45"/></svg>other trials ({len(pts) - len(front)})'
              f'</span><span><svg width="14" height="14"><polygon points="7,0 9,5 14,5 10,9 12,14 7,11 2,14 4,9 0,5 5,5" '
              f'fill="{_REFERENCE_COLOR}" stroke="#000"/></svg>fp32 reference</span></div>')
    style = _HTML_STYLE % {"front": _PARETO_COLOR, "other": _OTHER_COLOR, "ref": _REFERENCE_COLOR}
    page = (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{html.escape(title or "Pareto front")}</title>'
            f"<style>{style}</style></head><body><h1>{html.escape(title or 'Pareto front')}</h1>{legend}"
            f'<div class="panels">{"".join(panels)}</div>{table}<script>{_HTML_SCRIPT}</script></body></html>\n')
    out.write_text(page, encoding="utf-8")
    return out


def write_pareto_png(
    points: Iterable[ParetoPoint],
    path: str | Path,
    reference: ParetoPoint | None = None,
    title: str = "",
) -> Path:
    """Write the same two-panel Pareto plot as a static PNG, for reports and MLflow artifacts.

    Pareto trials are annotated with their trial numbers. Drawing uses matplotlib's Agg canvas
    directly (no pyplot), so it needs no screen and does not change the caller's backend.

    Args:
        points: the trials to draw; may be empty.
        path: the PNG file to write; missing parent folders are created.
        reference: the reference (uncompressed) model, if any.
        title: figure title.

    Returns:
        The path written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = _prepare(path)
    pts = list(points)
    front = [p for p in pts if p.pareto]
    others = [p for p in pts if not p.pareto]
    fig = Figure(figsize=(12, 5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, (attr, axis_title) in zip(axes, _PANELS, strict=True):
        if attr == "size_bytes":
            ax.set_xscale("log", nonpositive="mask")
        if others:
            ax.scatter([getattr(p, attr) for p in others], [p.accuracy for p in others],
                       s=20, c=_OTHER_COLOR, alpha=0.35, label="other trials")
        if front:
            ax.scatter([getattr(p, attr) for p in front], [p.accuracy for p in front],
                       s=45, c=_PARETO_COLOR, edgecolors="black", linewidths=0.6, label="Pareto front", zorder=3)
            for p in front:
                x = getattr(p, attr)
                if math.isfinite(x) and math.isfinite(p.accuracy) and (attr != "size_bytes" or x > 0):
                    ax.annotate(str(p.trial), (x, p.accuracy), textcoords="offset points",
                                xytext=(4, 4), fontsize=7)
        if reference is not None:
            ax.scatter([getattr(reference, attr)], [reference.accuracy], s=220, marker="*",
                       c=_REFERENCE_COLOR, edgecolors="black", linewidths=0.6, label="reference", zorder=4)
        if not pts and reference is None:
            ax.text(0.5, 0.5, "no trials", transform=ax.transAxes, ha="center", va="center", color="gray")
        ax.set_xlabel(axis_title)
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel("accuracy")
    axes[0].set_title("accuracy vs size")
    axes[1].set_title("accuracy vs latency")
    if pts or reference is not None:
        axes[0].legend(loc="best", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.savefig(out, format="png")
    return out


if __name__ == "__main__":  # python -m search.pareto study.name=...: the table of a stored study
    import sys

    from search.report import main

    sys.exit(main(sys.argv[1:]))
