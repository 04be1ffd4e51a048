"""The task object (trainers.task): picked once from the data's kind (or an artifact's network), it decides the
output size, the input dtype, the scores, the baseline and the chance level; every fit of a trial, the CV
folds and the final fit alike, builds the same output layer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from search import names
from search.config import compose
from trainers import artifact
from trainers.data import from_histories, load_dataset, split_dataset
from trainers.data._dataset import KINDS
from trainers.task import (
    TASKS,
    Classification,
    Ranking,
    config_task,
    configure,
    get_task,
    task_of,
    task_of_net,
)

TINY_SHOP = {"name": "ecommerce", "n_users": 60, "n_items": 40, "max_len": 10, "min_events": 5, "max_events": 12}
LATENCY = ["latency.repeats=3", "latency.warmup=1", "latency.throughput_batch=8", "device=cpu"]


def trainer_cfg(*overrides: str) -> dict:
    """The real config, composed and shrunk to seconds of training."""
    return OmegaConf.to_container(compose([*overrides, "train.epochs=1", "compress.finetune_epochs=0", *LATENCY]),
                                  resolve=True)


def net_of(path: Path) -> dict:
    return artifact.read_header(path)["arch"]["net"]


# ---------------------------------------------------------------- the registry


def test_tabular_and_image_data_are_classification_and_sequences_are_ranking(tmp_path):
    csv = tmp_path / "t.csv"
    csv.write_text("a,b,label\n" + "".join(f"{i},{i % 3},{'xy'[i % 2]}\n" for i in range(20)))
    for data in ({"name": "digits"}, {"name": "breast_cancer"}, {"name": "csv", "path": str(csv), "target": "label"}):
        ds = load_dataset(data)
        assert isinstance(task_of(kind=ds.kind), Classification), data["name"]
    shop = load_dataset(TINY_SHOP)
    assert shop.kind == "sequence" and task_of(kind=shop.kind) is TASKS["ranking"]
    assert {k: task_of(kind=k).name for k in KINDS} == {"tabular": "classification", "image": "classification",
                                                        "sequence": "ranking"}


def test_an_artifacts_network_type_picks_its_task():
    assert isinstance(task_of(net_type="seqrec"), Ranking)
    assert all(isinstance(task_of(net_type=t), Classification) for t in ("mlp", "cnn", "custom"))


def test_unknown_task_name_kind_or_ambiguous_question_raises_a_clear_error():
    with pytest.raises(ValueError, match=r"^unknown task 'regression'; known: classification, ranking$"):
        get_task("regression")
    with pytest.raises(ValueError, match="unknown task 'regression'"):
        config_task({"task": "regression", "model": {"name": "mlp"}})
    with pytest.raises(ValueError, match=r"no task reads data of kind 'audio'; kinds: tabular, image, sequence"):
        task_of(kind="audio")
    with pytest.raises(ValueError, match="exactly one of kind= and net_type="):
        task_of(kind="tabular", net_type="mlp")
    with pytest.raises(ValueError, match="exactly one of kind= and net_type="):
        task_of()


def test_configure_carries_the_datas_task_and_output_size_and_keeps_given_values():
    digits, shop = load_dataset({"name": "digits"}), load_dataset(TINY_SHOP)
    cfg = {"model": {"name": "mlp"}}
    assert configure(cfg, digits) == {"model": {"name": "mlp"}, "task": "classification", "n_classes": 10}
    assert cfg == {"model": {"name": "mlp"}}                                     # a copy
    assert configure({"n_classes": 12}, digits)["n_classes"] == 12
    assert configure({}, shop) == {"task": "ranking", "n_classes": 41}          # 40 items + padding id 0
    assert config_task(configure({"model": {"name": "mlp"}}, shop)) is TASKS["ranking"]     # the data's, carried
    assert config_task({"model": {"name": "seqrec"}}) is TASKS["ranking"]       # without it: the model's network


def test_input_dtype_chance_level_and_baseline_differ_by_task():
    classification, ranking = TASKS["classification"], TASKS["ranking"]
    assert classification.as_input(np.zeros((2, 3), dtype=np.float64)).dtype.is_floating_point
    assert str(ranking.as_input(np.zeros((2, 1, 3), dtype=np.int32)).dtype) == "torch.int64"
    assert classification.chance_accuracy(np.array([0, 1, 1, 1])) == 0.75
    assert ranking.chance_accuracy(np.array([1, 2, 2])) is None                  # no "most frequent class" model
    X = np.array([[[0, 1, 2]], [[1, 2, 3]], [[0, 2, 3]], [[0, 1, 3]]])
    y = np.array([3, 1, 2, 1])
    folds = [(np.array([0, 1]), np.array([2, 3])), (np.array([2, 3]), np.array([0, 1]))]
    assert classification.baseline(X, y, folds, 5, k=2) == {}
    assert set(ranking.baseline(X, y, folds, 5, k=2)) == {names.POPULARITY_HR, names.POPULARITY_NDCG}


# ---------------------------------------------------------------- one output size for every fit of a trial


def test_cv_folds_build_the_datasets_output_size_even_when_their_rows_miss_a_class(tmp_path):
    from search.objective import evaluate_config

    ds = load_dataset({"name": "digits"})
    rows = np.flatnonzero(ds.y != 9)[:240]                      # no row of class 9 anywhere in the search
    X, y = ds.X[rows], ds.y[rows]
    folds = [(np.arange(0, 240, 2), np.arange(1, 240, 2)), (np.arange(1, 240, 2), np.arange(0, 240, 2))]
    cfg = configure(trainer_cfg("data=digits", "model.hidden=[8]"), ds)
    evaluate_config(cfg, X, y, folds, tmp_path, runtimes=["fp32_dense"] * 2)
    task = task_of(kind=ds.kind)
    assert task.n_outputs(ds) == 10 != task.n_outputs_of_rows(X, y)
    assert [net_of(tmp_path / f"fold{k}.sqz")["n_classes"] for k in range(2)] == [task.n_outputs(ds)] * 2


def sentinel_shop() -> tuple:
    """Histories whose last events (the test rows' targets) use items 51.. that occur nowhere else: the
    development rows see fewer items than the catalog holds."""
    rng = np.random.default_rng(0)
    histories = []
    for u in range(12):
        body = rng.choice(np.arange(1, 51), size=int(rng.integers(3, 9)), replace=False)
        items = np.append(body, 51 + u)
        histories.append(np.stack([items, items % 7 + 1], axis=1).astype(np.int64))
    classes = ["<pad>", *map(str, range(1, 51 + len(histories)))]
    return from_histories(histories, classes, ["item", "category"], "sentinel", max_len=5)


def test_final_fit_of_a_seqrec_trial_uses_the_same_item_vocabulary_as_its_cv_folds(tmp_path):
    from search.final import final_fit
    from search.record import StudyData, TrialRecord
    from search.reproduce import cross_validate

    ds = sentinel_shop()
    dev, test, folds = split_dataset(ds, None, 2, seed=0)
    assert int(ds.y[test].max()) > max(int(ds.X[dev][:, 0].max()), int(ds.y[dev].max()))  # teeth: unseen items
    cfg = trainer_cfg("data=ecommerce", "model=seqrec", "model.d_model=8", "model.max_len=5")
    cfg["data"] = {"name": "sentinel", "top_k": 5}
    record = TrialRecord(client=None, tracking_uri="", run_id="r0", experiment_id="0", parent_run_id="p0",
                         study_name="task", trial_number=0, cfg=cfg, config_text="", logged={},
                         runtime="fp32_dense", fold_runtimes=["fp32_dense"] * 2)
    data = StudyData(ds, dev, test, folds)
    cross_validate(record, data, tmp_path)
    final_fit(record, data, tmp_path / "final.sqz")
    n_items = len(ds.classes) - 1
    assert Ranking().n_outputs(ds) == n_items + 1
    assert [net_of(tmp_path / f"fold{k}.sqz")["n_items"] for k in range(2)] == [n_items, n_items]
    assert net_of(tmp_path / "final.sqz")["n_items"] == n_items


# ---------------------------------------------------------------- a network's task (task_of_net): the one rule


def tiny_pipelines() -> dict[str, object]:
    """An untrained mlp (8 features -> 3 classes) and seqrec (3-channel windows of 6 events, 10 items)."""
    from trainers.models import Pipeline, Preprocess, build_net, net_spec_from_config

    mlp = net_spec_from_config({"name": "mlp", "hidden": [4]}, [8], 3)
    seqrec = net_spec_from_config({"name": "seqrec", "d_model": 8, "heads": 2, "max_len": 6}, [3, 6], 11,
                                  side_vocab=[5, 4])
    return {"mlp": Pipeline(Preprocess([8], standardize=False), build_net(mlp)),
            "seqrec": Pipeline(Preprocess([3, 6], standardize=False), build_net(seqrec))}


def test_a_net_spec_and_the_artifact_header_of_it_pick_the_same_task(tmp_path):
    expected = {"mlp": Classification, "seqrec": Ranking}
    for name, model in tiny_pipelines().items():
        spec = model.net.spec()
        assert type(task_of_net(spec)) is expected[name], name
        assert task_of_net(spec) is task_of(net_type=spec["type"])             # task_of asks the same rule
        artifact.save(model, tmp_path / f"{name}.sqz")
        assert net_of(tmp_path / f"{name}.sqz") == spec
        assert task_of_net(net_of(tmp_path / f"{name}.sqz")) is task_of_net(spec), name


def test_a_net_spec_of_another_type_or_none_classifies():
    assert task_of_net({"type": "custom", "target": "pkg.Net", "kwargs": {}, "kept": []}) is TASKS["classification"]
    assert task_of_net({"type": "cnn"}) is TASKS["classification"]
    assert task_of_net({}) is TASKS["classification"]
    assert task_of_net({"type": "seqrec"}) is TASKS["ranking"]


def test_onnx_input_spec_takes_the_dtype_of_the_networks_task():
    from trainers.onnx_export import input_spec

    pipelines = tiny_pipelines()
    assert input_spec(pipelines["mlp"]) == ([8], np.dtype(np.float32))
    assert input_spec(pipelines["seqrec"]) == ([3, 6], np.dtype(np.int64))


def test_only_a_recommender_artifact_gets_the_serving_params_signature(tmp_path):
    pytest.importorskip("mlflow")
    from search.pyfunc import _recommender_signature

    for name, model in tiny_pipelines().items():
        artifact.save(model, tmp_path / f"{name}.sqz")
    assert _recommender_signature(tmp_path / "mlp.sqz") is None
    params = _recommender_signature(tmp_path / "seqrec.sqz").params
    assert [p.name for p in params.params] == ["top_k", "user_col", "item_col", "time_col"]
