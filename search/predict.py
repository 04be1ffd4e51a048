"""``python -m search.predict model=model.sqz data=csv data.path=new.csv [out=preds.csv]``: class labels
from a squeeze artifact file alone (no config, no MLflow, no pickle).

The file's ``meta`` (written by the final fit, see :mod:`search.reproduce`) says how to read the input:

* ``feature_names``: a tabular model's columns in training order. CSV / DataFrame columns are selected and
  reordered by name, so a file with the columns in another order, or with extra columns (the target),
  gives the same predictions; a missing column is an error naming it.
* without names (images, npz data): every column, in order; their count must be the model's input size.
* ``classes``: the label of each class id (predictions are printed as these labels).
* ``runtime``: the runtime the final model was scored on (``fp32_dense``, ``torchscript`` or
  ``int8_dynamic``); predictions use the same one, so they are the predictions of the model whose test
  accuracy was reported.

The helpers here are shared with the MLflow pyfunc (:mod:`search.pyfunc`).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trainers.errors import InputError

__all__ = ["input_shape", "features_from_frame", "runtime_model", "predict_ids", "labels_of", "main"]

USAGE = """\
usage: python -m search.predict model=<file.sqz> data=<source> [data.path=<file>] [data.target=<col>]
                                [out=<preds.csv>]

Predicted class labels from a squeeze artifact (python -m search.export writes one).

  data=csv data.path=new.csv      a CSV of feature columns (selected by name when the model knows its
                                  feature names; other columns, e.g. the target, are ignored)
  data=npz data.path=new.npz      an .npz holding an array X (rows first, like the training data)
  data=digits | breast_cancer     a built-in dataset (all rows)
  data.target=<col>               drop this column of the CSV first (only needed for models without names)
  out=preds.csv                   write a CSV with one column `prediction`; default: one label per line
                                  on stdout

exit codes: 0 done, 2 bad input (the message names the key or file)
"""

#: rows per forward call; the same batching as trainers.measure.accuracy, which scored the model
BATCH = 1024


def input_shape(model: Any) -> list[int]:
    """The shape of one input row the model takes, from the artifact's architecture."""
    meta = getattr(model, "meta", {}) or {}
    return [int(d) for d in (meta.get("input_shape") or model.preprocess.input_shape)]


def features_from_frame(frame: Any, meta: Mapping[str, Any], shape: Sequence[int], source: str) -> np.ndarray:
    """The float32 input array ``(N, *shape)`` of a DataFrame, columns chosen as the module docstring says.

    Raises:
        InputError: at ``source`` for a missing column, a wrong number of columns, or non-numeric /
            non-finite values.
    """
    import pandas as pd

    frame = frame.rename(columns=str)
    names = meta.get("feature_names")
    n_features = math.prod(shape)
    if names:
        missing = [n for n in names if n not in frame.columns]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise InputError(source, f"has no column {missing[0]!r}{more}; the model needs the columns "
                                     f"{', '.join(names)}")
        frame = frame[list(names)]
    elif frame.shape[1] != n_features:
        raise InputError(source, f"has {frame.shape[1]} columns, the model takes {n_features} features "
                                 f"(shape {list(shape)}); drop other columns or give data.target=<column>")
    for col in frame.columns:
        if not (pd.api.types.is_numeric_dtype(frame[col]) or pd.api.types.is_bool_dtype(frame[col])):
            raise InputError(source, f"column {col!r} is not numeric")
    X = frame.to_numpy(dtype=np.float32, na_value=np.nan)
    bad = np.flatnonzero(~np.isfinite(X).all(axis=1))
    if len(bad):
        raise InputError(source, f"row {int(bad[0])} has a missing or infinite value")
    return X.reshape(len(X), *shape)


def features_from_array(X: np.ndarray, shape: Sequence[int], source: str) -> np.ndarray:
    """``X`` (rows first, any trailing shape with the right size) as float32 ``(N, *shape)``."""
    X = np.asarray(X)
    if X.dtype.kind not in "biuf":
        raise InputError(source, f"X must be numeric, got dtype {X.dtype}")
    n_features = math.prod(shape)
    if X.ndim < 2 or math.prod(X.shape[1:]) != n_features:
        raise InputError(source, f"X has shape {X.shape}; the model takes rows of shape {list(shape)}")
    X = X.astype(np.float32).reshape(len(X), *shape)
    if not np.isfinite(X).all():
        raise InputError(source, "X has NaN or infinite values")
    return X


def runtime_model(model: Any, runtime: str | None, example: Any) -> Any:
    """The model served on the artifact's recorded ``runtime`` (:func:`trainers.measure.build_runtime`);
    ``example`` (input rows, array or tensor) is what a torchscript runtime is traced on."""
    import torch

    from trainers import measure

    if runtime is None:
        return model
    if runtime not in measure.RUNTIMES:
        raise InputError("runtime", f"unknown runtime {runtime!r} in the artifact meta (this squeeze knows "
                                    f"{', '.join(measure.RUNTIMES)}): upgrade squeeze")
    if not isinstance(example, torch.Tensor):
        example = torch.from_numpy(np.ascontiguousarray(example))
    return measure.build_runtime(model, runtime, example)


def predict_ids(model: Any, X: np.ndarray) -> np.ndarray:
    """Arg-max class ids of ``model`` on ``X``, in batches of :data:`BATCH` rows."""
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, len(X), BATCH):
            out.append(model(torch.from_numpy(np.ascontiguousarray(X[i:i + BATCH]))).argmax(1).numpy())
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def labels_of(ids: np.ndarray, meta: Mapping[str, Any]) -> np.ndarray:
    """Class labels of class ids (the ids as text when the artifact has no ``classes``)."""
    classes = meta.get("classes")
    if not classes:
        return ids.astype(str)
    return np.asarray(classes, dtype=object)[ids]


# --- the command ---------------------------------------------------------------------------------------

KEYS = ("model", "data", "data.path", "data.target", "out")


def _args(argv: list[str]) -> dict[str, str]:
    from search.config import parse_key_values

    args = parse_key_values(argv, KEYS)
    for key in ("model", "data"):
        if not args.get(key):
            raise InputError(key, f"is required: {key}=<{'file.sqz' if key == 'model' else 'csv|npz|digits|breast_cancer'}>")
    return args


def _read_input(args: Mapping[str, str], meta: Mapping[str, Any], shape: list[int]) -> np.ndarray:
    import pandas as pd

    from trainers.data import DATASET_NAMES, load_dataset

    source = args["data"]
    if source in ("csv", "npz"):
        path = args.get("data.path")
        if not path:
            raise InputError("data.path", f"is required for data={source}, e.g. data.path=new.{source}")
        if not Path(path).is_file():
            raise InputError(path, f"file not found (looked for {Path(path).absolute()})")
        if source == "npz":
            try:
                with np.load(path, allow_pickle=False) as npz:
                    if "X" not in npz.files:
                        raise InputError(path, f"has no array 'X' (arrays: {', '.join(npz.files) or 'none'})")
                    return features_from_array(npz["X"], shape, path)
            except (OSError, ValueError) as err:
                if isinstance(err, InputError):
                    raise
                raise InputError(path, f"is not a readable .npz file ({err})") from None
        try:
            frame = pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise InputError(path, f"is not a readable CSV file ({str(err).splitlines()[0]})") from None
        target = args.get("data.target")
        if target:
            if target not in frame.columns:
                raise InputError("data.target", f"column {target!r} is not in {path}")
            frame = frame.drop(columns=[target])
        return features_from_frame(frame, meta, shape, path)
    if source in DATASET_NAMES:
        return features_from_array(load_dataset({"name": source}).X, shape, f"data={source}")
    raise InputError("data", f"must be csv, npz or one of {', '.join(n for n in DATASET_NAMES if n not in ('csv', 'npz'))}, "
                             f"got {source!r}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(USAGE)
        return 0
    try:
        args = _args(argv)
        from trainers import artifact

        model = artifact.load(args["model"])
        meta = dict(model.meta or {})
        X = _read_input(args, meta, input_shape(model))
        labels = labels_of(predict_ids(runtime_model(model, meta.get("runtime"), X[:1]), X), meta)
    except InputError as err:
        print(f"squeeze: error: {err}", file=sys.stderr)
        return 2
    if args.get("out"):
        import pandas as pd

        pd.DataFrame({"prediction": labels}).to_csv(args["out"], index=False)
        print(f"wrote {len(labels)} predictions to {args['out']}", file=sys.stderr)
    else:
        sys.stdout.write("".join(f"{label}\n" for label in labels))
    return 0


if __name__ == "__main__":
    sys.exit(main())
