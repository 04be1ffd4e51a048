"""The MLflow pyfunc of a squeeze model: a thin wrapper over :func:`trainers.artifact.load`.

Nothing is pickled: the model is logged "from code" (:mod:`search.pyfunc_model`, a file that MLflow
runs to build a stateless :class:`SqueezeModel`), and the compact ``.sqz`` file travels as the pyfunc
artifact ``model``, loaded by :func:`trainers.artifact.load` in :meth:`SqueezeModel.load_context`. The
packages ``search`` and ``trainers`` travel with the model (``code_paths``), so it loads outside this
repository too, given the pip requirements it lists (torch, numpy, pandas, mlflow).

A user's model (``model=custom``): the package of its class travels as a code path too, and the pyfunc's
``model_config`` allows that package, so the registered model loads wherever MLflow loads it (whoever logs
it has run that code already; see :func:`trainers.artifact.load` on why loading asks).

A recommender (``seqrec``) takes a DataFrame of events instead (columns ``user``, ``item`` and
``timestamp``, or those named by the params ``user_col``, ``item_col``, ``time_col``; ``time_col=None`` = row
order) and returns the top-k items of every user as :func:`search.predict.recommend` does: a DataFrame with
columns ``user``, ``rank``, ``item``; ``params={"top_k": 10}`` sets k.

Example:
    >>> model = mlflow.pyfunc.load_model("models:/squeeze-digits-mlp/1")   # doctest: +SKIP
    >>> model.predict(frame)        # DataFrame of feature columns -> array of class labels  # doctest: +SKIP
    >>> recommender.predict(events, params={"top_k": 5})   # -> DataFrame user, rank, item  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd

from search import names

__all__ = ["SqueezeModel", "log_pyfunc"]

ROOT = Path(__file__).resolve().parents[1]


class SqueezeModel(mlflow.pyfunc.PythonModel):
    """``predict(DataFrame) -> labels`` of the artifact ``context.artifacts["model"]`` (a recommender: events
    -> top-k items per user)."""

    def load_context(self, context) -> None:
        from search.predict import input_shape
        from trainers import artifact

        self._model = artifact.load(context.artifacts["model"], allow=(getattr(context, "model_config", None) or {}).get("allow"))
        self._meta = dict(self._model.meta or {})
        self._shape = input_shape(self._model)

    def predict(self, context, model_input: pd.DataFrame, params=None):
        import numpy as np

        from search.predict import (
            features_from_array,
            features_from_frame,
            is_recommender,
            labels_of,
            predict_ids,
            runtime_model,
        )

        if is_recommender(self._model):
            return self._recommend(model_input, dict(params or {}))
        if isinstance(model_input, pd.DataFrame):
            X = features_from_frame(model_input, self._meta, self._shape, "model_input")
        else:
            X = features_from_array(np.asarray(model_input), self._shape, "model_input")
        served = runtime_model(self._model, self._meta.get("runtime"), X[:1])
        return labels_of(predict_ids(served, X), self._meta)

    def _recommend(self, events: pd.DataFrame, params: dict[str, Any]) -> pd.DataFrame:
        from search.predict import DEFAULT_TOP_K, recommend
        from trainers.data._interactions import log_from_frame
        from trainers.errors import InputError

        if not isinstance(events, pd.DataFrame):
            raise InputError("model_input", f"a recommender takes a DataFrame of events, got {type(events).__name__}")
        cfg = {"user_col": params.get("user_col", "user"), "item_col": params.get("item_col", "item"),
               "time_col": params.get("time_col", "timestamp")}
        log = log_from_frame(events, cfg, "model_input")
        # user features may ride along as columns of the events (one value per user: the first is used)
        profile = [n.split(":", 1)[1] for n in self._meta.get("feature_names") or [] if n.startswith("user:")]
        given = [c for c in profile if c in events.columns]
        users = (events[[cfg["user_col"], *given]].astype(str).drop_duplicates(cfg["user_col"]) if given else None)
        return recommend(self._model, log, int(params.get("top_k", DEFAULT_TOP_K)), users, cfg["user_col"],
                         source="model_input")


def log_pyfunc(artifact_path: str | Path) -> Any:
    """Log the pyfunc of ``artifact_path`` into the active MLflow run; returns mlflow's ``ModelInfo``."""
    import numpy
    import pandas
    import torch

    requirements = [f"mlflow=={mlflow.__version__}", f"torch=={torch.__version__.split('+')[0]}",
                    f"numpy=={numpy.__version__}", f"pandas=={pandas.__version__}"]
    user_code, allow = _user_code(artifact_path)
    # no signature on purpose: columns are matched by name (tabular) or position (images) by our own code,
    # with errors naming the column; silence mlflow's "failed to infer model signature" warning about it
    quiet = _DropMessage("Failed to infer model signature")
    logger = logging.getLogger("mlflow.pyfunc")
    logger.addFilter(quiet)
    try:
        return mlflow.pyfunc.log_model(
            signature=_recommender_signature(artifact_path),
            name=names.PYFUNC_ARTIFACT,
            python_model=str(Path(__file__).with_name("pyfunc_model.py")),   # models from code: no pickle
            artifacts={"model": str(artifact_path)},
            code_paths=[str(ROOT / "search"), str(ROOT / "trainers"), *user_code],
            model_config={"allow": allow} if allow else None,
            pip_requirements=requirements,          # explicit: no slow inference of requirements
        )
    finally:
        logger.removeFilter(quiet)


def _user_code(artifact_path: str | Path) -> tuple[list[str], list[str]]:
    """``([folder or file of the user's top-level package], [its name])`` for a user's model, else empty."""
    import importlib.util

    from trainers import artifact

    net = artifact.read_header(artifact_path)["arch"]["net"]
    if net.get("type") != "custom":
        return [], []
    top = str(net["target"]).split(".")[0]
    spec = importlib.util.find_spec(top)
    if spec is not None and spec.submodule_search_locations:          # a package: its folder
        return [str(list(spec.submodule_search_locations)[0])], [top]
    if spec is not None and spec.origin and Path(spec.origin).is_file():   # a single module: its file
        return [spec.origin], [top]
    return [], [top]            # nothing to copy: the serving environment must provide it


def _recommender_signature(artifact_path: str | Path) -> Any:
    """A recommender's signature: no input schema (our code reads the columns), but the ``params`` its
    predict takes (MLflow drops params a signature does not declare); None for a classifier."""
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec

    from search.predict import DEFAULT_TOP_K
    from trainers import artifact
    from trainers.task import Ranking, task_of_net

    if not isinstance(task_of_net(artifact.read_header(artifact_path)["arch"]["net"]), Ranking):
        return None
    return ModelSignature(inputs=None, outputs=None, params=ParamSchema([
        ParamSpec("top_k", "long", DEFAULT_TOP_K), ParamSpec("user_col", "string", "user"),
        ParamSpec("item_col", "string", "item"), ParamSpec("time_col", "string", "timestamp")]))


class _DropMessage(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)
