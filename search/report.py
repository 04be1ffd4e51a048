"""The study's result: which completed trials are Pareto-optimal, their table, CSV, plots and MLflow tags.

Used at the end of a sweep and by ``python -m search.pareto study.name=...`` (same table, from storage).
Pareto maths lives in :mod:`search.pareto` (pure functions); this module gathers trials and renders.
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
from search.pareto import ParetoPoint, format_table, hypervolume, non_dominated_mask

__all__ = ["TrialRow", "collect", "hypervolume_of", "pareto_table", "pareto_csv", "write_plots",
           "tag_runs", "HV_MINIMIZE_BOUND", "reproduce_command"]

#: hypervolume reference point: accuracy 0 (and 0 for other maximized objectives), and this multiple of
#: the fp32 reference's value for minimized objectives (size, latency), in units of that reference.
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


def collect(study, objectives: Sequence[str]) -> list[TrialRow]:
    """Every trial of ``study`` as a :class:`TrialRow`, with ``pareto`` set for the non-dominated completed
    feasible ones (directions from :data:`search.names.OBJECTIVE_DIRECTIONS`)."""
    from optuna.trial import TrialState

    rows = []
    for t in study.get_trials(deepcopy=False):
        complete = t.state == TrialState.COMPLETE and t.values is not None
        rows.append(TrialRow(
            number=t.number, state=t.state.name, run_id=t.user_attrs.get(RUN_ID_ATTR),
            values=dict(zip(objectives, t.values)) if complete else {},
            metrics=dict(t.user_attrs.get("metrics", {})), params=dict(t.params),
            feasible=all(c <= 0 for c in (t.constraints or {}).values()) if hasattr(t, "constraints") else True,
        ))
    candidates = [r for r in rows if r.state == "COMPLETE" and r.feasible and r.values]
    if candidates:
        values = np.array([[r.values[o] for o in objectives] for r in candidates], dtype=float)
        mask = non_dominated_mask(values, [names.OBJECTIVE_DIRECTIONS[o] for o in objectives])
        for row, is_front in zip(candidates, mask):
            row.pareto = bool(is_front)
    return rows


def _normalized(rows: Sequence[TrialRow], objectives: Sequence[str], reference: Mapping[str, float]):
    directions, ref_point, cols = [], [], []
    for o in objectives:
        direction = names.OBJECTIVE_DIRECTIONS[o]
        base = float(reference.get(o) or 1.0) if direction == "minimize" else 1.0
        cols.append([r.values[o] / base for r in rows])
        directions.append(direction)
        ref_point.append(HV_MINIMIZE_BOUND if direction == "minimize" else 0.0)
    return np.array(cols, dtype=float).T.reshape(len(rows), len(objectives)), directions, ref_point


def hypervolume_of(rows: Sequence[TrialRow], objectives: Sequence[str], reference: Mapping[str, float]) -> float:
    """Hypervolume of the completed feasible trials, minimized objectives divided by the fp32 reference's
    value, reference point ``(0, 1.5, 1.5)`` for (accuracy, size, latency)."""
    done = [r for r in rows if r.state == "COMPLETE" and r.feasible and r.values]
    if not done:
        return 0.0
    values, directions, ref_point = _normalized(done, objectives, reference)
    return float(hypervolume(values, directions, ref_point))


def reproduce_command(row: TrialRow) -> str:
    return f"python -m search.reproduce run_id={row.run_id}" if row.run_id else f"(trial {row.number}: no run id)"


#: the params shown first in the terminal table (the rest are in pareto.csv and MLflow)
_KEY_PARAMS = ("compress.quant.scheme", "compress.quant.bits", "compress.prune.ratio", "compress.neurons.ratio",
               "compress.quant.threshold", "model.width", "train.lr", "train.epochs")


def _short_params(params: Mapping[str, Any], limit: int = 5) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)
    ordered = [k for k in _KEY_PARAMS if k in params] + [k for k in params if k not in _KEY_PARAMS]
    items = [f"{k.split('.', 1)[-1]}={fmt(params[k])}" for k in ordered]
    return " ".join(items[:limit]) + (" ..." if len(items) > limit else "")


def pareto_table(rows: Sequence[TrialRow], with_commands: bool = True) -> str:
    """The terminal table of Pareto trials (best accuracy first) and, per trial, how to reproduce it."""
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
    if with_commands and front:
        text += "\n\nReproduce a Pareto trial:\n" + "\n".join(f"  trial {r.number}: {reproduce_command(r)}" for r in front)
    return text


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
    """pareto.html (interactive) and pareto.png in ``folder``."""
    from search.pareto import write_pareto_html, write_pareto_png

    points = [ParetoPoint(r.number, r.metrics[names.ACCURACY], r.metrics[names.SIZE_BYTES],
                          r.metrics[names.LATENCY_MS], r.pareto, _short_params(r.params, 20))
              for r in rows if r.state == "COMPLETE" and names.ACCURACY in r.metrics]
    ref = None
    if reference.get(names.ACCURACY) is not None:
        ref = ParetoPoint(-1, reference[names.ACCURACY], reference[names.SIZE_BYTES], reference[names.LATENCY_MS],
                          False, "fp32 reference")
    html = write_pareto_html(points, folder / names.PARETO_HTML, reference=ref, title=title)
    png = write_pareto_png(points, folder / names.PARETO_PNG, reference=ref, title=title)
    return [Path(html), Path(png)]


def tag_runs(tracker, rows: Sequence[TrialRow]) -> None:
    """Tag every trial run ``pareto=true|false`` (true exactly for the non-dominated feasible trials)."""
    for r in rows:
        if r.run_id:
            tracker.set_tags(r.run_id, {names.PARETO: "true" if r.pareto else "false"})


def main(argv: list[str]) -> int:
    """``python -m search.pareto study.name=... [study.storage=...]``: the Pareto table from storage."""
    import optuna

    from search.config import compose, split_args
    from search.storage import open_storage
    from trainers.errors import InputError

    if any(a in ("-h", "--help") for a in argv):
        print("usage: python -m search.pareto study.name=<name> [study.storage=<url>] [key=value ...]\n\n"
              "Prints the Pareto-optimal trials of a study (from its Optuna storage) with their MLflow run ids\n"
              "and the command that reproduces each. Other keys are those of python -m search.sweep --help.")
        return 0
    try:
        cfg = compose(split_args(argv))
        name, objectives = cfg.study.name, list(cfg.study.objectives)
        storage = open_storage(cfg.study.storage, cfg.study.heartbeat_seconds, cfg.study.grace_seconds)
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            known = [s.study_name for s in optuna.get_all_study_summaries(storage)]
            raise InputError("study.name", f"no study {name!r} in this storage; studies: {', '.join(known) or 'none'}") from None
    except InputError as err:
        print(f"squeeze: error: {err}", file=sys.stderr)
        return 2
    rows = collect(study, objectives)
    ref = dict(study.user_attrs.get("reference", {}))
    print(f"study {name!r}: {len(rows)} trials, {sum(r.pareto for r in rows)} Pareto-optimal, "
          f"hypervolume {hypervolume_of(rows, objectives, ref):.4f}")
    print(pareto_table(rows))
    return 0
