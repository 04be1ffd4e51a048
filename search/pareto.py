"""Pareto front, hypervolume, a terminal table and the two Pareto plots of a study.

The computations (`non_dominated_mask`, `hypervolume`, `format_table`) are pure functions of plain
arrays and dicts, so they are cheap to test and to reuse from notebooks. The drawing functions
(`write_pareto_html`, `write_pareto_png`) are kept apart and import plotly / matplotlib only when
called, so that ``import search.pareto`` stays instant for the sweep workers that never draw.

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

    Args:
        values: array-like of shape (n, m), one row per point, one column per objective.
        directions: m strings, ``"maximize"`` or ``"minimize"``, one per column.

    Returns:
        Boolean array of shape (n,), True for the non-dominated points. Empty when n is 0.

    Raises:
        ValueError: on a bad direction string or a shape that does not match ``directions``.
    """
    v = _as_minimized(values, directions)
    n = v.shape[0]
    valid = ~np.isnan(v).any(axis=1)
    mask = np.zeros(n, dtype=bool)
    idx = np.flatnonzero(valid)
    if len(idx) == 0:
        return mask
    # In lexicographic order a dominating point always comes before the point it dominates, and
    # dominance is transitive, so each point only needs checking against the front found so far.
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


def write_pareto_html(
    points: Iterable[ParetoPoint],
    path: str | Path,
    reference: ParetoPoint | None = None,
    title: str = "",
) -> Path:
    """Write an interactive, self-contained HTML Pareto plot.

    Two panels side by side: accuracy against size (log x axis) and accuracy against latency.
    Pareto trials are highlighted, the others faded, the uncompressed reference drawn as a star;
    hovering shows the trial number and its label. plotly.js is embedded in the file, so it opens
    offline.

    Args:
        points: the trials to draw; may be empty.
        path: the HTML file to write; missing parent folders are created.
        reference: the reference (uncompressed) model, if any.
        title: figure title.

    Returns:
        The path written.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    out = _prepare(path)
    pts = list(points)
    groups = (
        ("Pareto front", [p for p in pts if p.pareto], dict(color=_PARETO_COLOR, size=10, symbol="circle",
                                                             line=dict(color="black", width=1)), 1.0),
        ("other trials", [p for p in pts if not p.pareto], dict(color=_OTHER_COLOR, size=7, symbol="circle"), 0.35),
    )
    fig = make_subplots(rows=1, cols=2, subplot_titles=("accuracy vs size", "accuracy vs latency"),
                        horizontal_spacing=0.08)

    def hover(p: ParetoPoint) -> str:
        return html.escape(p.label).replace("\n", "<br>")

    for col, (attr, axis_title) in enumerate(_PANELS, start=1):
        for name, group, marker, opacity in groups:
            fig.add_trace(
                go.Scatter(
                    x=[getattr(p, attr) for p in group],
                    y=[p.accuracy for p in group],
                    mode="markers",
                    name=name,
                    legendgroup=name,
                    showlegend=col == 1,
                    marker=marker,
                    opacity=opacity,
                    customdata=[[p.trial, hover(p), p.size_bytes, p.latency_ms] for p in group],
                    hovertemplate=(
                        "trial %{customdata[0]}<br>accuracy %{y:.4f}<br>size %{customdata[2]:,.0f} B"
                        "<br>latency %{customdata[3]:.3f} ms<br>%{customdata[1]}<extra></extra>"
                    ),
                ),
                row=1,
                col=col,
            )
        if reference is not None:
            fig.add_trace(
                go.Scatter(
                    x=[getattr(reference, attr)],
                    y=[reference.accuracy],
                    mode="markers",
                    name="reference",
                    legendgroup="reference",
                    showlegend=col == 1,
                    marker=dict(color=_REFERENCE_COLOR, size=18, symbol="star", line=dict(color="black", width=1)),
                    customdata=[[hover(reference) or "reference", reference.size_bytes, reference.latency_ms]],
                    hovertemplate=(
                        "reference<br>accuracy %{y:.4f}<br>size %{customdata[1]:,.0f} B"
                        "<br>latency %{customdata[2]:.3f} ms<br>%{customdata[0]}<extra></extra>"
                    ),
                ),
                row=1,
                col=col,
            )
        fig.update_xaxes(title_text=axis_title, row=1, col=col, type="log" if col == 1 else "linear")
        fig.update_yaxes(title_text="accuracy", row=1, col=col)
    fig.update_layout(title=title or None, template="plotly_white", hovermode="closest",
                      legend=dict(orientation="h", yanchor="bottom", y=1.08, x=0))
    fig.write_html(str(out), include_plotlyjs=True, full_html=True)
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
