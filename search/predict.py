"""``python -m search.predict model=model.sqz data=csv data.path=new.csv [out=preds.csv]``: class labels
from a squeeze artifact file alone (no config, no MLflow, no pickle).

The file's ``meta`` (written by the final fit, see :mod:`search.reproduce`) says how to read the input:

* ``feature_names``: a tabular model's columns in training order. CSV / DataFrame columns are selected and
  reordered by name, so a file with the columns in another order, or with extra columns (the target),
  gives the same predictions; a missing column is an error naming it.
* without names (images, npz data): every column, in order; their count must be the model's input size.
* ``classes``: the label of each class id (predictions are printed as these labels).
* ``runtime``: the runtime the final model was scored on (a name of :data:`trainers.measure.RUNTIMES`);
  predictions use the same one, so they are the predictions of the model whose test accuracy was reported
  (a recommender whose item table is stored factored scores from the factors in every runtime, as it was
  scored).

Recommenders (``seqrec`` artifacts): ``data=interactions data.path=events.csv top_k=10`` reads an event log
(any format :mod:`trainers.data._interactions` reads; ``data.format``, ``data.user_col``, ``data.item_col``,
``data.time_col`` as in training, optional ``data.user_features=users.csv``) and writes, for every user of
the file, the ``top_k`` items the user has not interacted with, best first, as original item ids: a CSV with
columns ``user``, ``rank`` (1 = best), ``item``. Each user's most recent events become the model's input row
with the ids the training data used (the meta's ``classes``, ``feature_names`` and ``sequence`` tables; see
:func:`trainers.data._interactions.serving_rows`); the order is :func:`trainers.ranking.top_items`', the
same order the ranking metrics rank items in. Items that are not in the catalog are skipped.

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

__all__ = ["input_shape", "features_from_frame", "runtime_model", "predict_ids", "labels_of", "is_recommender",
           "recommend", "main"]

USAGE = """\
usage: python -m search.predict model=<file.sqz> data=<source> [data.path=<file>] [data.target=<col>]
                                [out=<preds.csv>]
       python -m search.predict model=<seqrec.sqz> data=interactions data.path=<events> [top_k=10]
                                [out=<top.csv>]

Predicted class labels from a squeeze artifact (python -m search.export writes one).

  data=csv data.path=new.csv      a CSV of feature columns (selected by name when the model knows its
                                  feature names; other columns, e.g. the target, are ignored)
  data=npz data.path=new.npz      an .npz holding an array X (rows first, like the training data)
  data=digits | breast_cancer     a built-in dataset (all rows)
  data.target=<col>               drop this column of the CSV first (only needed for models without names)
  out=preds.csv                   write a CSV with one column `prediction`; default: one label per line
                                  on stdout
  allow=my_pkg[,other]            a user's model (model=custom) imports its class from the file's module:
                                  allow that package if you trust its code (without it: exit 2)

Recommenders (model=seqrec):
  data=interactions data.path=events.csv
                                  an event log (MovieLens u.data / ratings.dat, or a CSV with a header;
                                  data.format, data.user_col, data.item_col, data.time_col as in training)
  data.user_features=users.csv    the users' profile columns, when the model was trained with them
  top_k=10                        items per user, never one the user already interacted with
  out=top.csv                     CSV columns user,rank,item (original item ids); default: the same CSV
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
    """The model served on the artifact's recorded ``runtime`` (:func:`trainers.measure.build_runtime`; none
    recorded: ``fp32_dense``, the model itself, except that a recommender's factored item table scores from its
    factors as in every runtime); ``example`` (input rows, array or tensor) is what a torchscript runtime is
    traced on."""
    import torch

    from trainers import measure

    if runtime is None:
        return measure.factored_scores(model)
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

KEYS = ("model", "allow", "data", "data.path", "data.target", "out", "top_k", "data.format", "data.user_col",
        "data.item_col", "data.time_col", "data.user_features")
#: data keys of a recommender's event log (their defaults: conf/data/interactions.yaml)
LOG_KEYS = ("format", "user_col", "item_col", "time_col", "user_features")
DEFAULT_TOP_K = 10


def _args(argv: list[str]) -> dict[str, str]:
    from search.config import parse_key_values

    args = parse_key_values(argv, KEYS, {"top_k": int, "data.time_col": str | None})
    if args.get("top_k") is not None and args["top_k"] < 1:
        raise InputError("top_k", f"must be an integer >= 1, got {args['top_k']}")
    for key in ("model", "data"):
        if not args.get(key):
            raise InputError(key, f"is required: {key}=<{'file.sqz' if key == 'model' else 'csv|npz|digits|breast_cancer'}>")
    if args.get("out"):  # before the model is loaded and run
        from search.preflight import check_output_path

        check_output_path("out", args["out"])
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


# --- recommenders -------------------------------------------------------------------------------------

def is_recommender(model: Any) -> bool:
    """Whether the artifact's network ranks items rather than classifying rows (its task,
    :func:`trainers.task.task_of`, is :class:`~trainers.task.Ranking`)."""
    from trainers.task import Ranking, task_of

    net = getattr(model, "net", None)
    return net is not None and isinstance(task_of(net_type=str(net.spec().get("type"))), Ranking)


def recommend(model: Any, log: Any, k: int = DEFAULT_TOP_K, users_frame: Any = None, user_col: str = "user",
              source: str = "data.path") -> Any:
    """The top-``k`` items for every user of an event ``log`` (columns ``user``, ``item``, ``time``): a
    DataFrame with columns ``user``, ``rank`` (1 = best), ``item`` (original ids); see the module docstring.

    Raises:
        InputError: an artifact without the meta a recommender needs, or a log without events.
    """
    import pandas as pd
    import torch

    from trainers.data._interactions import serving_rows
    from trainers.ranking import top_items

    meta = dict(model.meta or {})
    shape = input_shape(model)
    names = meta.get("feature_names") or (["item"] if shape[0] == 1 else None)
    serving = meta.get("sequence") or ({} if shape[0] == 1 else None)
    if not meta.get("classes") or names is None or serving is None:
        raise InputError("model", "this recommender artifact has no item ids or feature tables in its meta (a fold "
                                  "file of a study?): ship one with python -m search.export run_id=<trial run id>")
    if len(log) == 0:
        raise InputError(source, "has no events")
    users, X, seen = serving_rows(log, meta["classes"], names, serving, int(shape[1]), users_frame, user_col)
    served = runtime_model(model, meta.get("runtime"), X[:1])
    tops = []
    with torch.inference_mode():
        for i in range(0, len(X), BATCH):
            scores = served(torch.from_numpy(np.ascontiguousarray(X[i:i + BATCH])))
            tops.append(top_items(scores, torch.from_numpy(seen[i:i + BATCH]), k).numpy())
    top = np.concatenate(tops) if tops else np.zeros((0, k), dtype=np.int64)
    rows, ranks = np.nonzero(top)                                     # 0 = fewer candidates than k
    return pd.DataFrame({"user": np.asarray(users, dtype=object)[rows], "rank": ranks + 1,
                         "item": np.asarray(meta["classes"], dtype=object)[top[rows, ranks]]})


def log_config(args: Mapping[str, Any]) -> dict[str, Any]:
    """The event-log keys of conf/data/interactions.yaml, overridden by ``data.<key>=`` arguments."""
    from omegaconf import OmegaConf

    from search.config import CONF_DIR

    cfg = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "data" / "interactions.yaml"))
    out = {key: cfg.get(key) for key in LOG_KEYS}
    out.update({key: args[f"data.{key}"] for key in LOG_KEYS if f"data.{key}" in args})
    return out


def recommend_from_args(model: Any, args: Mapping[str, Any]) -> Any:
    """:func:`recommend` for the command's ``data=interactions data.path=...`` arguments."""
    import pandas as pd

    from trainers.data._interactions import read_log

    if args["data"] != "interactions":
        raise InputError("data", f"a recommender reads an event log: give data=interactions data.path=<events>, "
                                 f"got data={args['data']}")
    path = args.get("data.path")
    if not path:
        raise InputError("data.path", "is required for data=interactions, e.g. data.path=events.csv")
    cfg = log_config(args)
    users_frame = None
    if cfg.get("user_features"):
        from trainers.data._files import existing_file

        users_frame = pd.read_csv(existing_file(str(cfg["user_features"])), dtype=str)
    log = read_log(path, cfg)
    return recommend(model, log, args.get("top_k") or DEFAULT_TOP_K, users_frame,
                     str(cfg.get("user_col") or "user"), path)


def _write_top(args: Mapping[str, Any], top: Any) -> int:
    if args.get("out"):
        Path(args["out"]).parent.mkdir(parents=True, exist_ok=True)
        top.to_csv(args["out"], index=False)
        print(f"wrote {len(top)} recommendations for {top['user'].nunique()} users to {args['out']}", file=sys.stderr)
    else:
        top.to_csv(sys.stdout, index=False)
    return 0


def main(argv: list[str] | None = None) -> int:
    from search.cli import run_command

    return run_command("predict", USAGE, _predict, argv)


def _predict(argv: list[str]) -> int:
    args = _args(argv)
    from trainers import artifact

    model = artifact.load(args["model"], allow=[a for a in str(args.get("allow") or "").split(",") if a])
    meta = dict(model.meta or {})
    if is_recommender(model):
        return _write_top(args, recommend_from_args(model, args))
    X = _read_input(args, meta, input_shape(model))
    labels = labels_of(predict_ids(runtime_model(model, meta.get("runtime"), X[:1]), X), meta)
    if args.get("out"):
        import pandas as pd

        Path(args["out"]).parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"prediction": labels}).to_csv(args["out"], index=False)
        print(f"wrote {len(labels)} predictions to {args['out']}", file=sys.stderr)
    else:
        sys.stdout.write("".join(f"{label}\n" for label in labels))
    return 0


if __name__ == "__main__":
    sys.exit(main())
