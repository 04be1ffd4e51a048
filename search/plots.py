"""The two Pareto plots of a study, ``pareto.html`` and ``pareto.png``, and the points both draw.

:func:`plot_points` builds the one list of :class:`ParetoPoint` that both writers take: the completed trials
(accuracy, size, latency, whether on the front, a hover label) and the fp32 reference. The HTML is plain
SVG written here (no library, no network); the PNG imports matplotlib only when called, so that
``import search.plots`` stays instant. The Pareto maths lives in :mod:`search.pareto`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search import names

__all__ = ["ParetoPoint", "plot_points", "write_pareto_html", "write_pareto_png"]


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


def plot_points(rows: Iterable[Any], reference: Mapping[str, float],
                label: Callable[[Any], str] = lambda row: "") -> tuple[list[ParetoPoint], ParetoPoint | None]:
    """The points both plots draw: every completed trial with an accuracy, and the fp32 reference.

    Args:
        rows: the study's trials (:class:`search.report.TrialRow`: ``number``, ``state``, ``metrics``,
            ``pareto``, ``params``).
        reference: the fp32 reference's metrics (:data:`search.names.ACCURACY`, ``SIZE_BYTES``,
            ``LATENCY_MS``); ``None`` is returned for it when it has no accuracy.
        label: a trial's hover text, e.g. its parameters.

    Returns:
        ``(points, reference point or None)``.
    """
    points = [ParetoPoint(r.number, r.metrics[names.ACCURACY], r.metrics[names.SIZE_BYTES],
                          r.metrics[names.LATENCY_MS], r.pareto, label(r))
              for r in rows if r.state == "COMPLETE" and names.ACCURACY in r.metrics]
    ref = None
    if reference.get(names.ACCURACY) is not None:
        ref = ParetoPoint(-1, reference[names.ACCURACY], reference[names.SIZE_BYTES], reference[names.LATENCY_MS],
                          False, "fp32 reference")
    return points, ref


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
