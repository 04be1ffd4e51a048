"""``python -m search.export run_id=<id> out=model.sqz``: write the compact artifact of a trial's final fit.

``run_id`` is a trial run (or ``study.name=<name> trial=<n>``): the newest finished final run of that trial
(``role=final``, ``reproduces=<run id>``, made by ``python -m search.reproduce ... final=true``) provides
``model.sqz``; without one, the final fit runs now (and is logged as that final run). A final run's own id
is accepted too. The file loads with :func:`trainers.artifact.load` alone; ``python -m search.predict``
turns it into predictions.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from search import names
from search.reproduce import (
    NotReproduced,
    find_trial,
    load_record,
    open_client,
    parse_args,
    print_final,
    run_final,
    study_data,
)
from trainers.errors import InputError

__all__ = ["main", "find_final_run"]

USAGE = """\
usage: python -m search.export run_id=<trial run id> out=<model.sqz> [key=value ...]
       python -m search.export study.name=<name> trial=<n> out=<model.sqz> [key=value ...]

Writes the compact artifact of the trial's final fit (all development rows): from its latest final run
(python -m search.reproduce run_id=<id> final=true), or by running the final fit now.

keys: run_id, study.name, trial, out, mlflow.tracking_uri, study.storage, data.path (as search.reproduce)

exit codes: 0 written, 1 the data no longer matches the study's split, 2 bad input
"""

KEYS = ("run_id", "study.name", "trial", "out", "mlflow.tracking_uri", "study.storage", "data.path")


def find_final_run(client, experiment_id: str, trial_run_id: str):
    """The newest finished ``role=final`` run of the trial that holds ``model.sqz``, or ``None``."""
    runs = client.search_runs([experiment_id], filter_string=(
        f"tags.{names.ROLE} = 'final' and tags.{names.REPRODUCES} = '{trial_run_id}' "
        "and attributes.status = 'FINISHED'"), order_by=["attributes.start_time DESC"], max_results=20)
    for run in runs:
        if any(a.path == names.FINAL_ARTIFACT for a in client.list_artifacts(run.info.run_id)):
            return run
    return None


def _download(client, run_id: str, out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="squeeze-export-") as tmp:
        local = client.download_artifacts(run_id, names.FINAL_ARTIFACT, tmp)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, out)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    try:
        args = parse_args(argv, KEYS)
        if not args.get("out"):
            raise InputError("out", "is required: out=<model.sqz>")
        out = Path(args["out"])
        if args.get("run_id"):  # a final run's own id: its file as it is
            from search.reproduce import default_tracking_uri

            uri = args.get("mlflow.tracking_uri") or default_tracking_uri()
            client = open_client(uri)
            try:
                run = client.get_run(args["run_id"])
            except Exception:
                raise InputError("run_id", f"no MLflow run {args['run_id']!r} in this tracking store") from None
            if run.data.tags.get(names.ROLE) == "final":
                _download(client, run.info.run_id, out)
                print(f"wrote {out} ({out.stat().st_size} bytes) from final run {run.info.run_id}")
                return 0
            record = load_record(client, uri, args["run_id"], args.get("data.path") or None)
        else:
            record = find_trial(args)
        final = find_final_run(record.client, record.experiment_id, record.run_id)
        if final is not None:
            _download(record.client, final.info.run_id, out)
            print(f"wrote {out} ({out.stat().st_size} bytes) from final run {final.info.run_id} of trial "
                  f"{record.trial_number} (test accuracy "
                  f"{final.data.metrics.get(names.TEST_PREFIX + names.ACCURACY, float('nan')):.4f})")
            return 0
        data = study_data(record)
    except InputError as err:
        print(f"squeeze: error: {err}", file=sys.stderr)
        return 2
    except NotReproduced as err:
        print(f"squeeze: NOT reproduced: {err}", file=sys.stderr)
        return 1
    print(f"trial {record.trial_number} has no final run yet: running the final fit", file=sys.stderr)
    result = run_final(record, data, out=out)
    print_final(record, data, result)
    print(f"wrote {out} ({out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
