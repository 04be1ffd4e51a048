"""The task the data poses, decided once: :class:`Classification` (a row -> one of the classes) or
:class:`Ranking` (a user's event window -> a score for every item: next-item recommendation).

A task owns everything that differs between the two, so no other module tests a data kind or a model name:

=================  ========================================  ==============================================
                   Classification                            Ranking
=================  ========================================  ==============================================
data kinds         ``tabular``, ``image``                    ``sequence``
networks           every other (``mlp``, ``cnn``, custom)    ``seqrec``
``n_outputs``      one score per class                       one score per item id, padding id 0 included
``input_dtype``    float32 features                          int64 item and feature ids
``build``          standardize / PCA fitted on the rows      no preprocessing; the rows' id vocabularies
``evaluate``       accuracy                                  HR@k (as ``accuracy``) and NDCG@k
``baseline``       none                                      popularity (``popularity_hr`` / ``_ndcg``)
chance level       share of the most frequent class          none
=================  ========================================  ==============================================

Pick the task from the data (:func:`task_of` ``(kind=dataset.kind)``) and carry it in the trainer config
(:func:`configure`); where only an artifact is at hand, pick it from its network (:func:`task_of_net` of its
net spec, or ``task_of(net_type=...)``). The two agree because the preflight checks refuse a model that does
not read the data's kind.

Example:
    >>> task_of(kind="sequence").name, task_of(net_type="mlp").name
    ('ranking', 'classification')
    >>> get_task("regression")
    Traceback (most recent call last):
    ...
    ValueError: unknown task 'regression'; known: classification, ranking
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:  # torch and the models are imported when a task works, not when it is looked up
    import torch

    from trainers.models import Pipeline

__all__ = ["Task", "Classification", "Ranking", "TASKS", "get_task", "task_of", "task_of_net", "config_task",
           "configure"]


class Task:
    """What differs between classification and ranking (see the module docstring); one instance per task,
    in :data:`TASKS`."""

    name: ClassVar[str]
    kinds: ClassVar[tuple[str, ...]]        # the ``Dataset.kind`` values whose rows pose this task
    input_dtype: ClassVar[type[np.generic]]  # what the network reads (``X`` as a tensor of this dtype)

    def n_outputs(self, dataset: Any) -> int:
        """The network's output size for ``dataset`` (a :class:`trainers.data.Dataset`): one score per entry
        of its ``classes``, all of them, so every fold and the final fit get the same size even when their
        rows miss a class (or an item)."""
        return len(dataset.classes)

    def n_outputs_of_rows(self, X: np.ndarray, y: np.ndarray) -> int:
        """The output size read from training rows alone, for a trainer config without ``n_classes``."""
        raise NotImplementedError

    def as_input(self, X: np.ndarray) -> torch.Tensor:
        """``X`` as the tensor the model reads (:attr:`input_dtype`, contiguous)."""
        import torch

        return torch.from_numpy(np.ascontiguousarray(X, dtype=self.input_dtype))

    def build(self, cfg: Mapping[str, Any], X_train: np.ndarray, n_outputs: int) -> Pipeline:
        """The untrained model of ``cfg`` for these training rows: preprocessing fitted on them + a network
        with ``n_outputs`` scores."""
        raise NotImplementedError

    def evaluate(self, model: torch.nn.Module, X: torch.Tensor, y: torch.Tensor, k: int) -> dict[str, float]:
        """The scores of ``model`` on rows ``X, y`` (``X`` from :meth:`as_input`), named as
        :mod:`search.names` names them; ``k`` is the ranking cut-off (``data.top_k``)."""
        raise NotImplementedError

    def baseline(self, X: np.ndarray, y: np.ndarray, folds: Sequence[tuple[np.ndarray, np.ndarray]],
                 n_outputs: int, k: int) -> dict[str, float]:
        """The task's reference baseline, scored like the models on the study's ``folds`` of ``X, y`` (means
        over folds, named as :mod:`search.names` names them); empty when the task has none."""
        return {}

    def chance_accuracy(self, y: np.ndarray) -> float | None:
        """The accuracy of a model of 0 bytes (always the most frequent label of ``y``), or ``None`` when the
        task has no such level; early stopping drops a trial that is no better."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Classification(Task):
    """Rows (tabular features or images) -> one of ``dataset.classes``; scored by accuracy."""

    name = "classification"
    kinds = ("tabular", "image")
    input_dtype = np.float32

    def n_outputs_of_rows(self, X: np.ndarray, y: np.ndarray) -> int:
        return int(np.max(y)) + 1

    def build(self, cfg: Mapping[str, Any], X_train: np.ndarray, n_outputs: int) -> Pipeline:
        """Standardization / PCA (``data.standardize``, ``data.pca``) fitted on the training rows, then the
        network for the preprocessed shape."""
        from trainers.data import Preprocessor
        from trainers.models import Pipeline, Preprocess, build_net, net_spec_from_config

        pre = Preprocessor(standardize=bool(cfg["data"].get("standardize", True)), pca=cfg["data"].get("pca"))
        pre.fit(X_train)
        preprocess = Preprocess.from_state(list(X_train.shape[1:]), pre.state_dict())
        return Pipeline(preprocess, build_net(net_spec_from_config(cfg["model"], preprocess.output_shape(),
                                                                   n_outputs)))

    def evaluate(self, model: torch.nn.Module, X: torch.Tensor, y: torch.Tensor, k: int) -> dict[str, float]:
        from trainers.measure import accuracy

        return {"accuracy": accuracy(model, X, y)}

    def chance_accuracy(self, y: np.ndarray) -> float | None:
        counts = np.bincount(np.asarray(y, dtype=np.int64))
        return float(counts.max() / counts.sum())


class Ranking(Task):
    """Users' event windows ``(C, L)`` -> a score per item id (``seqrec``), see
    :mod:`trainers.data._sequence`; scored by HR@k (as ``accuracy``) and NDCG@k over all items minus the
    user's history (:mod:`trainers.ranking`)."""

    name = "ranking"
    kinds = ("sequence",)
    input_dtype = np.int64
    #: network types (``net.spec()["type"]``, the ``model.name`` that builds them) that rank items
    nets: ClassVar[tuple[str, ...]] = ("seqrec",)

    def n_outputs(self, dataset: Any) -> int:
        """``n_items + 1``: ``dataset.classes`` are the item names with the padding id 0 first."""
        return len(dataset.classes)

    def n_outputs_of_rows(self, X: np.ndarray, y: np.ndarray) -> int:
        """The largest item id among the input events (channel 0) and the targets, + 1."""
        return max(int(np.max(X[:, 0])), int(np.max(y))) + 1

    def build(self, cfg: Mapping[str, Any], X_train: np.ndarray, n_outputs: int) -> Pipeline:
        """No preprocessing (the rows are ids); the network embeds the side- and user-feature ids seen in
        the training rows (ids beyond them read as 0, unknown)."""
        from trainers.data._sequence import user_channels
        from trainers.models import Pipeline, Preprocess, build_net, net_spec_from_config

        shape = list(X_train.shape[1:])                                       # (C, L)
        vocab = [int(X_train[:, c].max()) for c in range(1, shape[0])]     # largest id per feature channel
        n_side = len(vocab) - user_channels(cfg["data"])                    # user features: the last channels
        assert n_side >= 0, f"data={cfg['data'].get('name')} gives more user channels than X has {shape[0]}"
        net = build_net(net_spec_from_config(cfg["model"], shape, n_outputs, vocab[:n_side], vocab[n_side:]))
        return Pipeline(Preprocess(shape, standardize=False), net)

    def evaluate(self, model: torch.nn.Module, X: torch.Tensor, y: torch.Tensor, k: int) -> dict[str, float]:
        from trainers.ranking import rank_model

        ranking = rank_model(model, X, y, k)
        return {"accuracy": ranking["hr"], "ndcg": ranking["ndcg"]}

    def baseline(self, X: np.ndarray, y: np.ndarray, folds: Sequence[tuple[np.ndarray, np.ndarray]],
                 n_outputs: int, k: int) -> dict[str, float]:
        """Popularity: every request gets the training rows' item counts as scores
        (:func:`trainers.ranking.rank_popularity`)."""
        from trainers.ranking import rank_popularity

        scores = [rank_popularity(X[tr], y[tr], X[va], y[va], n_outputs, k) for tr, va in folds]
        return {"popularity_hr": float(np.mean([s["hr"] for s in scores])),
                "popularity_ndcg": float(np.mean([s["ndcg"] for s in scores]))}


#: every task by name
TASKS: dict[str, Task] = {task.name: task for task in (Classification(), Ranking())}


def get_task(name: str) -> Task:
    """The task registered as ``name``.

    Raises:
        ValueError: no task has that name (the message lists the known ones).
    """
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(TASKS)}")
    return TASKS[name]


def task_of(*, kind: str | None = None, net_type: str | None = None) -> Task:
    """The task of a dataset's ``kind`` (``Dataset.kind``), or, where only a model is at hand, of its network
    type (``net.spec()["type"]``, the artifact header's ``arch.net.type``, or the ``model.name`` that builds
    it): ``seqrec`` ranks, every other network classifies. Give exactly one of the two.

    Raises:
        ValueError: both or neither given, or a kind no task reads.
    """
    if (kind is None) == (net_type is None):
        raise ValueError(f"task_of needs exactly one of kind= and net_type=, got kind={kind!r}, "
                         f"net_type={net_type!r}")
    if net_type is not None:
        return task_of_net({"type": net_type})
    for task in TASKS.values():
        if kind in task.kinds:
            return task
    raise ValueError(f"no task reads data of kind {kind!r}; kinds: "
                     f"{', '.join(k for t in TASKS.values() for k in t.kinds)}")


def task_of_net(net: Mapping[str, Any]) -> Task:
    """The task of a network spec: ``net.spec()`` of a built network, or ``header["arch"]["net"]`` of an
    artifact (:func:`trainers.artifact.read_header`), the same dict. Its ``type`` picks it: a type in
    :attr:`Ranking.nets` ranks; every other type, or none, classifies.

    The one place that tells a ranking network from a classifier; :func:`task_of` ``(net_type=...)`` asks it.

    Example:
        >>> task_of_net({"type": "seqrec", "n_items": 40}).name, task_of_net({"type": "mlp"}).name
        ('ranking', 'classification')
    """
    ranking = TASKS["ranking"]
    return ranking if net.get("type") in ranking.nets else TASKS["classification"]


def configure(cfg: Mapping[str, Any], dataset: Any) -> dict[str, Any]:
    """A copy of the trainer config ``cfg`` with what the data decides: ``task`` (the name of its task) and
    ``n_classes`` (:meth:`Task.n_outputs`). Values ``cfg`` already has are kept.

    Every caller that trains on a dataset (the CV folds, the references, the final fit) configures through
    here, so they all build the same output layer.
    """
    task = task_of(kind=dataset.kind)
    out = dict(cfg)
    out.setdefault("task", task.name)
    out.setdefault("n_classes", task.n_outputs(dataset))
    return out


def config_task(cfg: Mapping[str, Any]) -> Task:
    """The task a trainer config trains: ``cfg["task"]`` (set by :func:`configure`), else, for a config a
    library caller wrote without it, the task of its model's network."""
    if cfg.get("task"):
        return get_task(str(cfg["task"]))
    return task_of(net_type=str(cfg["model"]["name"]))
