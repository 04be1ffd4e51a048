"""Trials per minute with 1 and with 2 local worker processes (journal-file storage), same study settings.

    PYTHONPATH=. python benchmarks/workers.py --out benchmarks/results/workers.json [--trials 16]

Each run is a fresh ``python -m search.sweep`` (subprocess, as a user runs it) with ``study.n_workers=K``;
trials/min is measured from the Optuna trials' own start/complete timestamps (first start to last
completion), so interpreter start-up and the fp32 reference are not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))     # the `search` package, not benchmarks/search.py beside this file
SETTINGS = ["space=compress_only", "cv.folds=3",
            "study.max_failure_rate=1.0"]


def run(workers: int, trials: int, workdir: Path) -> dict:
    import optuna

    journal = workdir / f"w{workers}.journal"
    cmd = [sys.executable, "-m", "search.sweep", *SETTINGS, f"study.name=workers-{workers}",
           f"study.n_trials={trials}", f"study.n_workers={workers}", f"study.storage=journal:{journal}",
           f"mlflow.tracking_uri=sqlite:///{workdir}/mlflow-{workers}.db", f"mlflow.artifact_location={workdir}/art"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    from search.storage import open_storage

    study = optuna.load_study(study_name=f"workers-{workers}", storage=open_storage(f"journal:{journal}"))
    done = [t for t in study.trials if t.datetime_complete is not None]
    span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
    return {"workers": workers, "trials": len(done), "span_seconds": round(span, 1),
            "trials_per_minute": round(60 * len(done) / span, 2), "command_wall_seconds": round(wall, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="squeeze-workers-") as tmp:
        rows = [run(k, args.trials, Path(tmp)) for k in args.workers]
    base = rows[0]["trials_per_minute"]
    for r in rows:
        r["scaling_vs_first"] = round(r["trials_per_minute"] / base, 2)
    out = {"benchmark": "workers", "cpu_count": os.cpu_count(), "settings": SETTINGS, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    for r in rows:
        print(f"{r['workers']} worker(s): {r['trials_per_minute']} trials/min ({r['trials']} trials in "
              f"{r['span_seconds']} s, x{r['scaling_vs_first']})")


if __name__ == "__main__":
    main()
