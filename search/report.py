"""The study's result: which completed trials are Pareto-optimal, their table, CSV, plots and MLflow tags.

Used at the end of a sweep and by ``python -m search.pareto study.name=...`` (same table, from storage).
Pareto maths lives in :mod:`search.pareto` (pure functions), the plots in :mod:`search.plots`; this module
gathers trials and renders.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from search import names
from search.ledger import is_feasible, latency_noise, pareto_mask, read_completed
from search.pareto import format_table, hypervolume

__all__ = ["TrialRow", "FrontView", "collect", "collect_front", "hypervolume_of", "hypervolume_of_values",
           "pareto_table", "pareto_csv", "write_plots", "tag_runs", "HV_MINIMIZE_BOUND", "reproduce_command"]

#: hypervolume reference point: accuracy 0 (and 0 for other maximized objectives), and this multiple of
#: the fp32 reference's value for minimized objectives (size, latency). Minimized objectives count in halvings
#: of the reference (log2 of value / reference), see :func:`hypervolume_of_values`.
HV_MINIMIZE_BOUND = 1.5
RUN_ID_ATTR = "mlflow_run_id"


@dataclass
class TrialRow:
    number: int
    state: str
    run_id: str | None
    values: dict[str, float] = field(default_factory=dict)     # objective name -> value
    metrics: dict[str, float] = field(default_factory=dict)    # user attrs "metrics" (means, ratios)
    params: dict[str, Any] = field(default_factory=dict)
    feasible: bool = True
    pareto: bool = False


def _row(t: Any, objectives: Sequence[str]) -> TrialRow:
    """One Optuna trial as a :class:`TrialRow` (``pareto`` left False)."""
    from optuna.trial import TrialState

    complete = t.state == TrialState.COMPLETE and t.values is not None
    return TrialRow(
        number=t.number, state=t.state.name, run_id=t.user_attrs.get(RUN_ID_ATTR),
        values=dict(zip(objectives, t.values)) if complete else {},
        metrics=dict(t.user_attrs.get("metrics", {})), params=dict(t.params), feasible=is_feasible(t.constraints))


def _directions(objectives: Sequence[str]) -> list[str]:
    return [names.OBJECTIVE_DIRECTIONS[o] for o in objectives]


def collect(study, objectives: Sequence[str]) -> list[TrialRow]:
    """Every trial of ``study`` as a :class:`TrialRow`, with ``pareto`` set for the non-dominated completed
    feasible ones (directions from :data:`search.names.OBJECTIVE_DIRECTIONS`; latencies within the study's
    noise floor are ties: :func:`search.ledger.pareto_mask`).

    Builds every trial: cheap in a worker whose storage cache already holds them (the end of a sweep),
    seconds for a cold process on a large study, where :func:`collect_front` reads only what the table needs.
    """
    rows = [_row(t, objectives) for t in study.get_trials(deepcopy=False)]
    candidates = [r for r in rows if r.state == "COMPLETE" and r.feasible and r.values]
    if candidates:
        values = np.array([[r.values[o] for o in objectives] for r in candidates], dtype=float)
        mask = pareto_mask(values, objectives, latency_noise(study))
        for row, is_front in zip(candidates, mask):
            row.pareto = bool(is_front)
    return rows


@dataclass
class FrontView:
    """What the Pareto table of a stored study needs, read cold (:func:`collect_front`).

    Attributes:
        n_trials: trials in the study, every state.
        front: the Pareto-optimal trials as full rows (``pareto=True``), by trial number.
        values: (k, m) objective values of every completed feasible trial, by trial number, for the
            hypervolume.
    """

    n_trials: int
    front: list[TrialRow]
    values: np.ndarray


def collect_front(study, objectives: Sequence[str]) -> FrontView:
    """The Pareto trials of ``study`` without building all of its trials: the objective values of the
    completed trials (:func:`search.ledger.read_completed`), the front over them, then one storage read
    per front trial. Same front and hypervolume as :func:`collect`."""
    done = read_completed(study)
    ok = done.feasible & ~np.isnan(done.values).any(axis=1)
    values = done.values[ok]
    mask = pareto_mask(values, objectives, latency_noise(study))
    front = []
    for trial_id in done.trial_ids[ok][mask]:
        row = _row(study._storage.get_trial(int(trial_id)), objectives)
        row.pareto = True
        front.append(row)
    return FrontView(n_trials=done.n_trials, front=front, values=values)


def hypervolume_of_values(values: Any, objectives: Sequence[str], reference: Mapping[str, float],
                          log_minimized: bool = True) -> float:
    """Hypervolume of ``values`` (n, m), one column per objective, against the fp32 ``reference``.

    Minimized objectives (size, latency) are taken relative to the reference's value and, by default, on a
    log2 scale: a model's share of the size axis is ``log2(1.5) + log2(reference / size)``, so every halving
    of the file adds the same amount. On a linear axis (``log_minimized=False``, the reference point of
    ``(0, 1.5, 1.5)`` in units of the reference) every model below a tenth of the reference's size gets
    within 6% of the axis' maximum, so compression ratios of 20x and 100x look alike and the volume is
    decided by accuracy and latency alone. Maximized objectives (accuracy) count from 0.

    Example:
        >>> ref = {"accuracy": 0.9, "size_bytes": 1000.0}
        >>> round(hypervolume_of_values([[0.9, 250.0]], ["accuracy", "size_bytes"], ref), 4)  # 0.9 * (log2 1.5 + 2)
        2.3265
    """
    values = np.asarray(values, dtype=float).reshape(-1, len(objectives))
    if len(values) == 0:
        return 0.0
    directions, ref_point, scaled = [], [], []
    for i, o in enumerate(objectives):
        direction = names.OBJECTIVE_DIRECTIONS[o]
        directions.append(direction)
        column = values[:, i]
        if direction == "minimize":
            relative = column / float(reference.get(o) or 1.0)
            if log_minimized:
                with np.errstate(divide="ignore", invalid="ignore"):
                    relative = np.log2(np.where(relative > 0, relative, np.nan))
            ref_point.append(math.log2(HV_MINIMIZE_BOUND) if log_minimized else HV_MINIMIZE_BOUND)
            column = relative
        else:
            ref_point.append(0.0)
        scaled.append(column)
    return float(hypervolume(np.stack(scaled, axis=1), directions, ref_point))


def hypervolume_of(rows: Sequence[TrialRow], objectives: Sequence[str], reference: Mapping[str, float],
                   log_minimized: bool = True) -> float:
    """Hypervolume of the completed feasible trials among ``rows`` (:func:`hypervolume_of_values`)."""
    done = [r for r in rows if r.state == "COMPLETE" and r.feasible and r.values]
    values = np.array([[r.values[o] for o in objectives] for r in done], dtype=float)
    return hypervolume_of_values(values, objectives, reference, log_minimized)


def reproduce_command(row: TrialRow, tracking_uri: str | None = None, data_path: str | None = None) -> str:
    """The command that re-runs ``row``'s trial, runnable when pasted from any directory: this Python, the
    tracking store as an absolute URI and, for a study of a data file, that file's absolute path."""
    import shlex

    from search.tracking import absolute_uri

    if not row.run_id:
        return f"(trial {row.number}: no run id)"
    parts = [sys.executable, "-m", "search.reproduce", f"run_id={row.run_id}"]
    if tracking_uri:
        parts.append(f"mlflow.tracking_uri={absolute_uri(tracking_uri)}")
    if data_path:
        parts.append(f"data.path={Path(data_path).expanduser().absolute()}")
    return shlex.join(parts)


#: the params shown first in the terminal table (the rest are in pareto.csv and MLflow)
_KEY_PARAMS = ("compress.quant.scheme", "compress.quant.bits", "compress.prune.ratio", "compress.neurons.ratio",
               "compress.quant.threshold", "model.width", "train.lr", "train.epochs")


def _short_params(params: Mapping[str, Any], limit: int = 5) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)
    ordered = [k for k in _KEY_PARAMS if k in params] + [k for k in params if k not in _KEY_PARAMS]
    items = [f"{k.split('.', 1)[-1]}={fmt(params[k])}" for k in ordered]
    return " ".join(items[:limit]) + (" ..." if len(items) > limit else "")


def pareto_table(rows: Sequence[TrialRow], with_commands: bool = True, tracking_uri: str | None = None,
                 data_path: str | None = None) -> str:
    """The terminal table of Pareto trials (best accuracy first) and, per trial, how to reproduce it
    (:func:`reproduce_command` with ``tracking_uri`` and ``data_path``)."""
    front = sorted((r for r in rows if r.pareto), key=lambda r: -r.metrics.get(names.ACCURACY, 0.0))
    table_rows = []
    for r in front:
        m = r.metrics
        table_rows.append({
            "trial": r.number, "run_id": r.run_id or "-",
            "accuracy": f"{m.get(names.ACCURACY, float('nan')):.4f} ± {m.get(names.ACCURACY_STD, float('nan')):.4f}",
            "size": _bytes(m.get(names.SIZE_BYTES)), "ratio": m.get(names.COMPRESSION_RATIO),
            "latency_ms": m.get(names.LATENCY_MS), "speedup": m.get(names.SPEEDUP),
            "params": _short_params(r.params),
        })
    columns = [("trial", "trial"), ("run_id", "run id"), ("accuracy", "accuracy ± std"), ("size", "size"),
               ("ratio", "ratio"), ("latency_ms", "latency ms"), ("speedup", "speedup"), ("params", "key params")]
    text = format_table(table_rows, columns, formats={"ratio": ".1f", "latency_ms": ".4f", "speedup": ".2f"})
    if not front:
        text += "\n" + empty_front_reason(rows)
    if with_commands and front:
        text += "\n\nReproduce a Pareto trial:\n" + "\n".join(
            f"  trial {r.number}: {reproduce_command(r, tracking_uri, data_path)}" for r in front)
    return text


def empty_front_reason(rows: Sequence[TrialRow]) -> str:
    """Why no trial is on the front: none finished, or every finished one broke a constraint."""
    complete = [r for r in rows if r.state == "COMPLETE"]
    if not complete:
        states = ", ".join(f"{n} {s}" for s, n in sorted(_count_states(rows).items())) or "no trials"
        return f"(no Pareto trial: no trial completed — {states})"
    return (f"(no Pareto trial: all {len(complete)} completed trials break a constraint "
            "(study.min_accuracy / max_size_bytes / max_latency_ms): loosen it or run more trials)")


def _count_states(rows: Sequence[TrialRow]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    return counts


def _bytes(n: float | None) -> str:
    if n is None or not math.isfinite(n):
        return "-"
    return f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n:.0f} B"


def pareto_csv(rows: Sequence[TrialRow]) -> str:
    """CSV of the Pareto trials: trial, run_id, every metric, every param (dotted keys)."""
    front = [r for r in rows if r.pareto]
    metric_keys = sorted({k for r in front for k in r.metrics})
    param_keys = sorted({k for r in front for k in r.params})
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["trial", "run_id", *metric_keys, *param_keys])
    for r in sorted(front, key=lambda r: r.number):
        writer.writerow([r.number, r.run_id or "", *[r.metrics.get(k, "") for k in metric_keys],
                         *[json.dumps(r.params[k]) if isinstance(r.params.get(k), (list, dict)) else r.params.get(k, "")
                           for k in param_keys]])
    return out.getvalue()


def write_plots(rows: Sequence[TrialRow], reference: Mapping[str, float], folder: Path, title: str) -> list[Path]:
    """pareto.html (interactive) and pareto.png in ``folder`` (:mod:`search.plots`)."""
    from search.plots import plot_points, write_pareto_html, write_pareto_png

    points, ref = plot_points(rows, reference, label=lambda r: _short_params(r.params, 20))
    html = write_pareto_html(points, folder / names.PARETO_HTML, reference=ref, title=title)
    png = write_pareto_png(points, folder / names.PARETO_PNG, reference=ref, title=title)
    return [Path(html), Path(png)]


def tag_runs(tracker, rows: Sequence[TrialRow]) -> int:
    """Tag the trial runs ``pareto=true`` for the non-dominated feasible trials and ``pareto=false`` for the
    others; returns how many runs were written.

    Only runs whose tag changes are written: one search reads the runs tagged ``pareto=true`` now, then
    ``true`` goes on front runs not tagged so and ``false`` on runs that left the front (one batched call
    per changed run). At the end of a sweep that is the front, tens of runs, not every trial; calling it
    again writes nothing. This relies on workers tagging each run ``pareto=false`` when they create it;
    runs created without the tag (older studies) are detected by looking at the oldest and newest run off
    the front, and then every run off the front is written once, as before.
    """
    ids = {r.run_id for r in rows if r.run_id}
    front = {r.run_id for r in rows if r.run_id and r.pareto}
    tagged = {run.info.run_id for run in tracker.find_runs(**{names.PARETO: "true"})} & ids
    writes = [(run_id, "true") for run_id in sorted(front - tagged)]
    others = [r.run_id for r in sorted(rows, key=lambda r: r.number) if r.run_id and r.run_id not in front]
    untagged = others and any(names.PARETO not in tracker.run(run_id).data.tags for run_id in {others[0], others[-1]})
    writes += [(run_id, "false") for run_id in (others if untagged else sorted(tagged - front))]
    for run_id, value in writes:
        tracker.set_tags(run_id, {names.PARETO: value})
    return len(writes)


USAGE = ("usage: python -m search.pareto study.name=<name> [study.storage=<url>] [key=value ...]\n\n"
         "Prints the Pareto-optimal trials of a study (from its Optuna storage) with their MLflow run ids\n"
         "and the command that reproduces each. Other keys are those of python -m search.sweep --help.")


def main(argv: list[str] | None = None) -> int:
    """``python -m search.pareto study.name=... [study.storage=...]``: the Pareto table from storage."""
    from search.cli import run_command

    return run_command("pareto", USAGE, _pareto, argv)


def _pareto(argv: list[str]) -> int:
    import optuna

    from search.config import compose, split_args
    from search.storage import open_storage
    from trainers.errors import InputError

    cfg = compose(split_args(argv))
    name, objectives = cfg.study.name, list(cfg.study.objectives)
    storage = open_storage(cfg.study.storage, cfg.study.heartbeat_seconds, cfg.study.grace_seconds, must_exist=True)
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        known = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise InputError("study.name", f"no study {name!r} in this storage; studies: {', '.join(known) or 'none'}") from None
    view = collect_front(study, objectives)
    ref = dict(study.user_attrs.get("reference", {}))
    print(f"study {name!r}: {view.n_trials} trials, {len(view.front)} Pareto-optimal, "
          f"hypervolume {hypervolume_of_values(view.values, objectives, ref):.4f}")
    print(pareto_table(view.front, tracking_uri=cfg.mlflow.tracking_uri, data_path=cfg.data.get("path")))
    return 0
