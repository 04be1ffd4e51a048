"""``python -m search.export run_id=<id> out=model.sqz``: write the compact artifact of a trial's final fit.

``format=onnx out=model.onnx`` writes the same model as ONNX instead (:mod:`trainers.onnx_export`: the graph
takes the raw rows ``search.predict`` takes and returns the scores; ``weights=auto|fp32|int8``, auto = the
form of the runtime the model was scored on); ``model=<file.sqz>`` converts an artifact file already at hand.

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
from search.final import print_final, run_final
from search.preflight import check_output_path
from search.record import NotReproduced, find_trial, load_record, open_client, study_data
from search.reproduce import parse_args
from trainers.errors import InputError

__all__ = ["main", "find_final_run"]

USAGE = """\
usage: python -m search.export run_id=<trial run id> out=<model.sqz> [format=sqz|onnx] [key=value ...]
       python -m search.export study.name=<name> trial=<n> out=<model.sqz> [format=sqz|onnx] [key=value ...]
       python -m search.export model=<file.sqz> format=onnx out=<model.onnx> [weights=auto|fp32|int8]

Writes the compact artifact of the trial's final fit (all development rows): from its latest final run
(python -m search.reproduce run_id=<id> final=true), or by running the final fit now.

  format=sqz         (default) the squeeze artifact, loads with trainers.artifact.load / search.predict
  format=onnx        an ONNX model for ONNX Runtime: input = the raw feature rows (float32; int64 event
                     windows for seqrec), first output = class / item scores
  weights=auto       onnx only: fp32 (dequantized weights, the same scores as the artifact) or int8
                     (<= 8-bit Linear weights on ONNX Runtime's integer kernels); auto = int8 when the
                     model was scored on an int8 runtime, else fp32
  model=<file.sqz>   convert this artifact file instead of a trial's (format=onnx)

keys: run_id, study.name, trial, out, format, weights, model, mlflow.tracking_uri, study.storage, data.path
(as search.reproduce)

exit codes: 0 written, 1 the data no longer matches the study's split, 2 bad input
"""

KEYS = ("run_id", "study.name", "trial", "out", "format", "weights", "model", "mlflow.tracking_uri",
        "study.storage", "data.path")
FORMATS = ("sqz", "onnx")
WEIGHTS = ("auto", "fp32", "int8")


def find_final_run(client, experiment_id: str, trial_run_id: str):
    """The newest finished ``role=final`` run of the trial that holds ``model.sqz``, or ``None``."""
    runs = client.search_runs([experiment_id], filter_string=(
        f"tags.{names.ROLE} = 'final' and tags.{names.REPRODUCES} = '{trial_run_id}' "
        "and attributes.status = 'FINISHED'"), order_by=["attributes.start_time DESC"], max_results=20)
    for run in runs:
        if any(a.path == names.FINAL_ARTIFACT for a in client.list_artifacts(run.info.run_id)):
            return run
    return None


def _check_output(args: dict[str, str]) -> tuple[Path, str, str | None]:
    """``(out, format, weights)`` after the checks that need no work: InputError naming the key."""
    fmt = args.get("format") or "sqz"
    if fmt not in FORMATS:
        raise InputError("format", f"must be one of {'|'.join(FORMATS)}, got {fmt!r}")
    weights = args.get("weights") or None
    if weights is not None and weights not in WEIGHTS:
        raise InputError("weights", f"must be one of {'|'.join(WEIGHTS)}, got {weights!r}")
    if weights is not None and fmt != "onnx":
        raise InputError("weights", f"applies to format=onnx only (an .sqz file keeps its encodings), got {weights!r}")
    if not args.get("out"):
        raise InputError("out", f"is required: out=<model.{fmt}>")
    out = check_output_path("out", args["out"])  # before any download or final fit (search/preflight.py)
    if args.get("model"):
        if fmt != "onnx":
            raise InputError("format", "must be onnx with model=<file.sqz> (the file already is the artifact)")
        if args.get("run_id") or args.get("study.name"):
            raise InputError("model", "give either model=<file.sqz> or a trial (run_id= / study.name= trial=), not both")
    return out, fmt, None if weights == "auto" else weights


def _write(artifact_file: Path, out: Path, fmt: str, weights: str | None) -> str:
    """Copy the artifact to ``out`` or convert it to ONNX; returns what was written, for the message."""
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "sqz":
        shutil.copyfile(artifact_file, out)
        return f"{out} ({out.stat().st_size} bytes)"
    from trainers import artifact, onnx_export

    model = artifact.load(artifact_file)
    form = weights or onnx_export.default_weights(model)
    size = onnx_export.save(model, out, form)
    return f"{out} ({size} bytes, ONNX, {form} weights)"


def _download(client, run_id: str, out: Path, fmt: str = "sqz", weights: str | None = None) -> str:
    with tempfile.TemporaryDirectory(prefix="squeeze-export-") as tmp:
        local = client.download_artifacts(run_id, names.FINAL_ARTIFACT, tmp)
        return _write(Path(local), out, fmt, weights)


def main(argv: list[str] | None = None) -> int:
    from search.cli import run_command

    return run_command("export", USAGE, _export, argv)


def _export(argv: list[str]) -> int:
    try:
        args = parse_args(argv, KEYS)
        out, fmt, weights = _check_output(args)
        if args.get("model"):
            print(f"wrote {_write(Path(args['model']), out, fmt, weights)} from {args['model']}")
            return 0
        if args.get("run_id"):  # a final run's own id: its file as it is
            from search.record import default_tracking_uri

            uri = args.get("mlflow.tracking_uri") or default_tracking_uri()
            client = open_client(uri)
            try:
                run = client.get_run(args["run_id"])
            except Exception:
                raise InputError("run_id", f"no MLflow run {args['run_id']!r} in this tracking store") from None
            if run.data.tags.get(names.ROLE) == "final":
                print(f"wrote {_download(client, run.info.run_id, out, fmt, weights)} from final run "
                      f"{run.info.run_id}")
                return 0
            record = load_record(client, uri, args["run_id"], args.get("data.path") or None)
        else:
            record = find_trial(args)
        final = find_final_run(record.client, record.experiment_id, record.run_id)
        if final is not None:
            written = _download(record.client, final.info.run_id, out, fmt, weights)
            print(f"wrote {written} from final run {final.info.run_id} of trial "
                  f"{record.trial_number} (test accuracy "
                  f"{final.data.metrics.get(names.TEST_PREFIX + names.ACCURACY, float('nan')):.4f})")
            return 0
        data = study_data(record)
    except NotReproduced as err:
        print(f"squeeze: NOT reproduced: {err}", file=sys.stderr)
        return 1
    print(f"trial {record.trial_number} has no final run yet: running the final fit", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="squeeze-export-") as tmp:
        sqz = Path(tmp) / names.FINAL_ARTIFACT
        result = run_final(record, data, out=sqz)
        print_final(record, data, result)
        print(f"wrote {_write(sqz, out, fmt, weights)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
