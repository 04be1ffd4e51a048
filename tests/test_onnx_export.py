"""Tests of trainers.onnx_export, the ONNX Runtime runtimes of trainers.measure and ``search.export format=onnx``.

What "equal" means here (stated once, used by every test):

* ``fp32`` weights: ONNX Runtime computes what PyTorch computes on the loaded artifact: identical labels
  (arg-max) on every validation row and scores within ``FP32_TOL`` (absolute and relative).
* ``int8`` weights: activations are quantized per call (``DynamicQuantizeLinear``), so scores move by up to
  ``INT8_SCORE_TOL`` of the artifact's score range and at least ``INT8_MIN_AGREEMENT`` of the labels agree;
  the int8 graph written to a file and the ``onnxruntime_int8`` runtime that scored the model are the same
  graph, with identical labels.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from trainers import artifact
from trainers.data import load_dataset, split_dataset, split_test
from trainers.errors import InputError
from trainers.measure import RUNTIMES, LatencyProtocol, candidate_runtimes, choose_runtime
from trainers.onnx_export import INPUT_NAME, default_weights, int8_layers, int8_weight, to_onnx
from trainers.pipeline import fit_compressed

FP32_TOL = 1e-4
INT8_SCORE_TOL = 0.05
INT8_MIN_AGREEMENT = 0.95

TRAIN = {"optimizer": "adam", "lr": 0.01, "weight_decay": 0.0, "epochs": 2, "batch_size": 64, "momentum": 0.9,
         "threads": 1}
NO_COMPRESSION = {"finetune_epochs": 0, "prune": {"ratio": 0.0}, "neurons": {"ratio": 0.0}, "quant": {"scheme": "none"}}
LATENCY = {"threads": 1, "batch_size": 1, "warmup": 2, "repeats": 10, "throughput_batch": 16}

#: name -> (data, model, compression): every model type, and the weight encodings the export must carry
CASES: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = {
    "mlp-fp32-pca": ({"name": "digits", "standardize": True, "pca": 16},
                     {"name": "mlp", "hidden": [32, 16]}, {}),
    "mlp-uniform4-pruned": ({"name": "digits", "standardize": True, "pca": None},
                            {"name": "mlp", "hidden": [32, 16]},
                            {"prune": {"ratio": 0.5}, "quant": {"scheme": "uniform", "bits": 4}}),
    "mlp-neurons-fixed6": ({"name": "digits", "standardize": True, "pca": None},
                           {"name": "mlp", "hidden": [32, 16]},
                           {"neurons": {"ratio": 0.5}, "quant": {"scheme": "fixed_point", "bits": 6}}),
    "cnn-ternary": ({"name": "digits", "standardize": True, "pca": None},
                    {"name": "cnn", "channels": [4, 8], "hidden": [16]}, {"quant": {"scheme": "ternary"}}),
    "seqrec-uniform8-neurons": ({"name": "ecommerce", "n_users": 60, "n_items": 40, "max_len": 10,
                                 "min_events": 5, "max_events": 12},
                                {"name": "seqrec", "d_model": 16, "heads": 2, "blocks": 1, "ffn_mult": 2.0,
                                 "max_len": 8, "dropout": 0.0, "side_features": True},
                                {"neurons": {"ratio": 0.25}, "quant": {"scheme": "uniform", "bits": 8}}),
    "seqrec-lowrank8-uniform4": ({"name": "ecommerce", "n_users": 60, "n_items": 40, "max_len": 10,
                                  "min_events": 5, "max_events": 12},
                                 {"name": "seqrec", "d_model": 16, "heads": 2, "blocks": 1, "ffn_mult": 2.0,
                                  "max_len": 8, "dropout": 0.0, "side_features": True},
                                 {"lowrank": {"rank": 8}, "quant": {"scheme": "uniform", "bits": 4}}),
}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, tuple[Path, np.ndarray, np.ndarray]]:
    """Every case trained (2 epochs, no fine-tune), compressed, written and its validation rows."""
    out, folder = {}, tmp_path_factory.mktemp("onnx")
    datasets: dict[str, Any] = {}
    for name, (data, model, compression) in CASES.items():
        key = data["name"]
        if key not in datasets:
            ds = load_dataset(data)
            if ds.kind == "sequence":
                dev, test, _ = split_dataset(ds, None, 2, seed=0)
            else:
                idx = np.arange(400)
                train_idx, val_idx = split_test(ds.y[idx], 0.25, seed=0)
                dev, test = idx[train_idx], idx[val_idx]
            datasets[key] = (ds, dev, test)
        ds, dev, test = datasets[key]
        compress_cfg = copy.deepcopy(NO_COMPRESSION)
        compress_cfg.update(copy.deepcopy(compression))
        cfg = {"data": data, "model": {"width": 1.0, "dropout": 0.0, **model}, "train": TRAIN, "device": "cpu",
               "compress": compress_cfg, "n_classes": getattr(ds, "n_classes", None)}
        fitted, _ = fit_compressed(cfg, ds.X[dev], ds.y[dev], seed=0)
        path = folder / f"{name}.sqz"
        artifact.save(fitted, path, meta={"input_shape": list(ds.X.shape[1:])})
        dtype = np.int64 if ds.kind == "sequence" else np.float32
        out[name] = (path, np.ascontiguousarray(ds.X[test], dtype=dtype), ds.y[test])
    return out


def _artifact_scores(path: Path, X: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return artifact.load(path)(torch.from_numpy(X)).numpy()


def _ort_scores(onnx_file: Path, X: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return session.run(None, {name: X})[0]


def _save(path: Path, weights: str, out: Path) -> Path:
    onnx.save(to_onnx(artifact.load(path), weights), str(out))
    return out


# ---------------------------------------------------------------- fp32: the artifact's numbers


@pytest.mark.parametrize("case", list(CASES))
def test_fp32_export_scores_validation_rows_as_the_artifact_does(built, case, tmp_path) -> None:
    path, X, _ = built[case]
    onnx_file = _save(path, "fp32", tmp_path / "m.onnx")
    onnx.checker.check_model(str(onnx_file))
    expected, got = _artifact_scores(path, X), _ort_scores(onnx_file, X)
    assert got.shape == expected.shape
    assert np.array_equal(got.argmax(1), expected.argmax(1))
    np.testing.assert_allclose(got, expected, rtol=FP32_TOL, atol=FP32_TOL)
    np.testing.assert_allclose(_ort_scores(onnx_file, X[:1]), expected[:1], rtol=FP32_TOL, atol=FP32_TOL)  # batch 1


def test_graph_takes_raw_rows_with_preprocessing_inside(built, tmp_path) -> None:
    path, X, _ = built["mlp-fp32-pca"]
    model = onnx.load(str(_save(path, "fp32", tmp_path / "m.onnx")))
    (graph_input,) = model.graph.input
    assert graph_input.name == INPUT_NAME
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    dims = graph_input.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == list(X.shape[1:])   # raw 1x8x8 rows
    names = {init.name for init in model.graph.initializer}
    assert {"preprocess.mean", "preprocess.scale", "preprocess.pca_components"} <= names
    seq_path, Xs, _ = built["seqrec-uniform8-neurons"]
    seq_input = onnx.load(str(_save(seq_path, "fp32", tmp_path / "s.onnx"))).graph.input[0]
    assert seq_input.type.tensor_type.elem_type == onnx.TensorProto.INT64


def test_neuron_pruned_layers_are_physically_smaller_in_the_graph(built, tmp_path) -> None:
    path, _, _ = built["mlp-neurons-fixed6"]
    model = onnx.load(str(_save(path, "fp32", tmp_path / "m.onnx")))
    shapes = {init.name: list(init.dims) for init in model.graph.initializer}
    assert shapes["net.layers.0.weight"] == [16, 64] and shapes["net.layers.1.weight"] == [8, 16]


# ---------------------------------------------------------------- int8: integer kernels


def test_int8_export_runs_quantized_linear_layers_on_integer_kernels(built, tmp_path) -> None:
    path, X, _ = built["mlp-uniform4-pruned"]
    loaded = artifact.load(path)
    int8_file = _save(path, "int8", tmp_path / "int8.onnx")
    fp32_file = _save(path, "fp32", tmp_path / "fp32.onnx")
    model = onnx.load(str(int8_file))
    ops = [node.op_type for node in model.graph.node]
    assert ops.count("MatMulInteger") == len(int8_layers(loaded)) == 3 and "Gemm" not in ops
    int8_inits = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.INT8]
    assert len(int8_inits) == 3
    assert not any(i.name.startswith("net.layers") and i.name.endswith("weight") for i in model.graph.initializer)
    assert int8_file.stat().st_size < fp32_file.stat().st_size
    expected, got = _artifact_scores(path, X), _ort_scores(int8_file, X)
    span = float(expected.max() - expected.min())
    assert float(np.abs(got - expected).max()) <= INT8_SCORE_TOL * span
    assert float((got.argmax(1) == expected.argmax(1)).mean()) >= INT8_MIN_AGREEMENT


@pytest.mark.parametrize("case", ["mlp-neurons-fixed6", "cnn-ternary"])
def test_int8_codes_are_the_artifacts_own_where_they_fit_7_bits(built, case) -> None:
    loaded = artifact.load(built[case][0])
    state = loaded.state_dict()
    for name in int8_layers(loaded):
        weight = state[name].numpy()
        q, scale, exact = int8_weight(weight, loaded.encodings[name])
        assert exact and q.min() >= -64 and q.max() <= 63
        assert np.array_equal(q.astype(np.float32) * scale[:, None], weight)       # bit for bit


def test_int8_requantizes_uniform_weights_within_half_a_step(built) -> None:
    loaded = artifact.load(built["mlp-uniform4-pruned"][0])
    name = int8_layers(loaded)[0]
    weight = loaded.state_dict()[name].numpy()
    q, scale, exact = int8_weight(weight, loaded.encodings[name])
    assert not exact and np.abs(q).max() <= 63
    assert np.all(np.abs(q * scale[:, None] - weight) <= scale[:, None] / 2 + 1e-7)
    assert np.array_equal(q == 0, weight == 0)                                        # pruned stays pruned


def test_exported_int8_file_predicts_what_the_onnxruntime_int8_runtime_scored(built, tmp_path) -> None:
    path, X, _ = built["seqrec-uniform8-neurons"]
    loaded = artifact.load(path)
    protocol = LatencyProtocol.from_config({**LATENCY, "runtimes": ["onnxruntime_int8"]})
    served, result = choose_runtime(loaded, torch.from_numpy(X), protocol, quantized_bits=8)
    assert result.runtime == "onnxruntime_int8"
    with torch.no_grad():
        scored = served(torch.from_numpy(X)).numpy()
    loaded.meta["runtime"] = result.runtime                   # what the final fit records in the file
    assert default_weights(loaded) == "int8"
    onnx.save(to_onnx(loaded, default_weights(loaded)), str(tmp_path / "m.onnx"))
    got = _ort_scores(tmp_path / "m.onnx", X)
    assert np.array_equal(got.argmax(1), scored.argmax(1))
    np.testing.assert_allclose(got, scored, rtol=FP32_TOL, atol=FP32_TOL)


def test_a_model_is_traced_once_for_both_weight_forms_until_a_weight_changes(built, monkeypatch) -> None:
    """The runtime choice exports fp32 and int8 of the same loaded model: the second reuses the first trace
    (the same graph bytes), and a weight changed in place is traced again, so the graph holds the new value."""
    path, _, _ = built["mlp-neurons-fixed6"]
    loaded = artifact.load(path)
    traces = []
    export = torch.onnx.export
    monkeypatch.setattr(torch.onnx, "export", lambda *a, **k: (traces.append(1), export(*a, **k))[1])
    fresh = to_onnx(artifact.load(path), "int8")
    first, second = to_onnx(loaded, "fp32"), to_onnx(loaded, "int8")
    assert len(traces) == 2                                     # the other model object, then `loaded` once
    assert second.SerializeToString() == fresh.SerializeToString()
    assert to_onnx(loaded, "fp32").SerializeToString() == first.SerializeToString() and len(traces) == 2
    name, weight = next((n, t) for n, t in loaded.state_dict().items() if n.endswith("weight"))
    with torch.no_grad():
        weight.add_(1.0)
    changed = {i.name: onnx.numpy_helper.to_array(i) for i in to_onnx(loaded, "fp32").graph.initializer}
    assert len(traces) == 3
    np.testing.assert_array_equal(changed[name], weight.numpy())


# ---------------------------------------------------------------- the runtime registry


def test_registry_picks_onnxruntime_when_restricted_to_it(built) -> None:
    path, X, y = built["mlp-fp32-pca"]
    loaded = artifact.load(path)
    protocol = LatencyProtocol.from_config({**LATENCY, "runtimes": ["onnxruntime"]})
    served, result = choose_runtime(loaded, torch.from_numpy(X), protocol, quantized_bits=None)
    assert result.runtime == "onnxruntime" and result.latency_ms > 0
    assert result.as_dict()["protocol"]["runtimes"] == ["onnxruntime"]
    with torch.no_grad():
        assert np.array_equal(served(torch.from_numpy(X)).argmax(1).numpy(), _artifact_scores(path, X).argmax(1))


def test_evaluate_artifact_passes_latency_runtimes_through(built) -> None:
    from trainers.pipeline import evaluate_artifact

    path, X, y = built["cnn-ternary"]
    scores = evaluate_artifact(path, X, y, {**LATENCY, "runtimes": ["onnxruntime_int8", "onnxruntime"]})
    assert scores["runtime"] in ("onnxruntime", "onnxruntime_int8")
    assert scores["latency_protocol"]["runtimes"] == ["onnxruntime_int8", "onnxruntime"]


def test_candidates_follow_the_registry_and_the_bits(built) -> None:
    fp32 = artifact.load(built["mlp-fp32-pca"][0])
    quantized = artifact.load(built["mlp-uniform4-pruned"][0])
    assert candidate_runtimes(fp32, None) == ["fp32_dense", "torchscript", "onnxruntime"]
    assert candidate_runtimes(quantized, 4) == list(RUNTIMES)
    assert candidate_runtimes(quantized, 4, ("onnxruntime_int8", "fp32_dense")) == ["fp32_dense", "onnxruntime_int8"]
    with pytest.raises(InputError) as info:
        choose_runtime(fp32, torch.zeros(4, 1, 8, 8), LatencyProtocol(runtimes=("onnxruntime_int8",)), None)
    assert info.value.where == "latency.runtimes"


@pytest.mark.parametrize("value", [["bogus"], "onnxruntime", [], [3]])
def test_latency_runtimes_must_name_known_runtimes(value) -> None:
    with pytest.raises(InputError) as info:
        LatencyProtocol.from_config({"runtimes": value})
    assert info.value.where == "latency.runtimes"
    assert LatencyProtocol.from_config({"runtimes": None}).as_dict() == LatencyProtocol().as_dict()


def test_config_schema_knows_every_registered_runtime() -> None:
    from search import schema

    assert tuple(schema.RUNTIMES) == tuple(RUNTIMES)


def test_predict_serves_an_artifact_recorded_on_onnxruntime(built) -> None:
    from search.predict import predict_ids, runtime_model

    path, X, _ = built["mlp-uniform4-pruned"]
    served = runtime_model(artifact.load(path), "onnxruntime", X[:1])
    assert np.array_equal(predict_ids(served, X), _artifact_scores(path, X).argmax(1))


# ---------------------------------------------------------------- python -m search.export format=onnx


def test_cli_converts_an_sqz_file_to_onnx_that_loads(built, tmp_path, capsys) -> None:
    from search.export import main

    path, X, _ = built["cnn-ternary"]
    out = tmp_path / "sub" / "model.onnx"
    assert main([f"model={path}", "format=onnx", f"out={out}"]) == 0
    assert "fp32 weights" in capsys.readouterr().out
    onnx.checker.check_model(str(out))
    assert np.array_equal(_ort_scores(out, X).argmax(1), _artifact_scores(path, X).argmax(1))
    assert main([f"model={path}", "format=onnx", "weights=int8", f"out={tmp_path / 'int8.onnx'}"]) == 0
    assert "MatMulInteger" in {n.op_type for n in onnx.load(str(tmp_path / "int8.onnx")).graph.node}


@pytest.mark.parametrize("args, where", [
    (["format=tflite"], "format"),
    (["format=onnx", "weights=int4"], "weights"),
    (["format=sqz", "weights=int8"], "weights"),
    (["format=sqz"], "format"),                              # model= is already an .sqz
    (["format=onnx", "out=DIR"], "out"),                     # a directory
    (["format=onnx", "out=FILE/model.onnx"], "out"),         # under a file
    (["format=onnx", "run_id=abc"], "model"),                # a file and a trial
])
def test_cli_rejects_bad_input_before_any_work(built, tmp_path, capsys, args, where) -> None:
    from search.export import main

    (tmp_path / "a_file").write_text("x")
    argv = [f"model={built['mlp-fp32-pca'][0]}"]
    argv += [a.replace("DIR", str(tmp_path)).replace("FILE", str(tmp_path / "a_file")) for a in args]
    if not any(a.startswith("out=") for a in argv):
        argv.append(f"out={tmp_path / 'model.onnx'}")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith(f"squeeze: error: {where}:")
    assert not (tmp_path / "model.onnx").exists()


# ---------------------------------------------------------------- low-rank tables stay factored


@pytest.mark.parametrize("weights", ["fp32", "int8"])
def test_a_factored_item_table_is_exported_as_its_factors(built, tmp_path, weights) -> None:
    from trainers.compress.lowrank import Factored

    path, X, _ = built["seqrec-lowrank8-uniform4"]
    loaded = artifact.load(path)
    enc = loaded.encodings["net.item_emb.weight"]
    assert isinstance(enc, Factored) and enc.rank == 8
    model = onnx.load(str(_save(path, weights, tmp_path / "m.onnx")))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    assert "net.item_emb.weight" not in inits                               # no dense table in the file
    assert np.array_equal(inits["net.item_emb.weight.lowrank_a"], enc.a.decode().numpy())
    assert np.array_equal(inits["net.item_emb.weight.lowrank_b"], enc.b.decode().numpy())
    matmuls = [list(n.input) for n in model.graph.node if n.op_type == "MatMul"]
    assert sum(b == "net.item_emb.weight.lowrank_a_t" for _, b in matmuls) == 1       # scores: (h @ Bᵀ) @ Aᵀ
    assert sum(b == "net.item_emb.weight.lowrank_b" for _, b in matmuls) == 1         # lookup: Gather(A) @ B
    assert ["net.item_emb.weight.lowrank_a", "net.item_emb.weight.lowrank_b"] not in matmuls   # never A @ B
    expected, got = _artifact_scores(path, X), _ort_scores(tmp_path / "m.onnx", X)
    if weights == "fp32":
        assert np.array_equal(got.argmax(1), expected.argmax(1))
        np.testing.assert_allclose(got, expected, rtol=FP32_TOL, atol=FP32_TOL)
    else:
        span = float(expected.max() - expected.min())
        assert float(np.abs(got - expected).max()) <= INT8_SCORE_TOL * span


def test_lowrank_rewrite_keeps_every_use_of_the_table() -> None:
    """A hand-made graph reading a table W three ways: lookup, scoring and any other op (here Add). After the
    rewrite W exists only as ``A @ B`` for the last; every output equals numpy's on ``A @ B``."""
    from onnx import TensorProto, helper, numpy_helper

    from trainers.onnx_export import _to_lowrank

    gen = np.random.default_rng(0)
    a, b = gen.normal(size=(7, 2)).astype(np.float32), gen.normal(size=(2, 4)).astype(np.float32)
    w = a @ b
    nodes = [helper.make_node("Gather", ["W", "ids"], ["rows"]),
             helper.make_node("Transpose", ["W"], ["Wt"], perm=[1, 0]),
             helper.make_node("MatMul", ["h", "Wt"], ["scores"]),
             helper.make_node("Add", ["W", "bias"], ["shifted"])]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [3]),
         helper.make_tensor_value_info("h", TensorProto.FLOAT, [2, 4]),
         helper.make_tensor_value_info("bias", TensorProto.FLOAT, [7, 4])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape)
         for n, shape in (("rows", [3, 4]), ("scores", [2, 7]), ("shifted", [7, 4]))],
        [numpy_helper.from_array(w, "W")])
    _to_lowrank(graph, {"W": (a, b)})
    assert {i.name for i in graph.initializer} == {"W.lowrank_a", "W.lowrank_b"}
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(proto)
    ids, h, bias = np.array([0, 6, 3]), gen.normal(size=(2, 4)).astype(np.float32), np.ones((7, 4), np.float32)
    session = onnxruntime.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    rows, scores, shifted = session.run(None, {"ids": ids, "h": h, "bias": bias})
    np.testing.assert_allclose(rows, w[ids], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(scores, h @ w.T, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(shifted, w + bias, rtol=1e-5, atol=1e-6)
    assert [n.op_type for n in graph.node].count("Transpose") == 2           # of A and B only: Wᵀ is gone


def test_every_runtime_ranks_a_factored_table_as_onnx_does(built) -> None:
    """The torch runtimes score a factored item table as ``(q @ Bᵀ) @ Aᵀ``, the ONNX graph as two MatMuls: the
    same scores within ``FP32_TOL`` and the same top-10 lists (near ties aside: the item ranked ``i``-th by one
    has a score within ``2 FP32_TOL`` of the ``i``-th best of the other)."""
    from trainers.measure import build_runtime

    path, X, _ = built["seqrec-lowrank8-uniform4"]
    loaded, x = artifact.load(path), torch.from_numpy(X)
    with torch.no_grad():
        scores = {rt: build_runtime(loaded, rt, x[:1])(x) for rt in ("fp32_dense", "torchscript", "onnxruntime")}
    want = scores["onnxruntime"]
    best = want.topk(10, dim=1).indices
    for runtime, got in scores.items():
        assert float((got - want).abs().max()) <= FP32_TOL, runtime
        top = got.topk(10, dim=1).indices
        assert float((want.gather(1, top) - want.gather(1, best)).abs().max()) <= 2 * FP32_TOL, runtime
        assert torch.equal(top, best), runtime                              # this case: no near ties


def test_seqrec_graph_computes_one_query_and_stacks_the_feature_tables(built, tmp_path) -> None:
    """One block served: the graph attends from the last position only (no ``(T, T)`` causal mask: no Trilu, no
    EyeLike) and reads the side features with one Gather on their stacked tables; its scores are the artifact's."""
    path, X, _ = built["seqrec-uniform8-neurons"]
    model = onnx.load(str(_save(path, "fp32", tmp_path / "m.onnx")))
    ops = [n.op_type for n in model.graph.node]
    assert "Trilu" not in ops and "EyeLike" not in ops
    side_tables = [i for n in model.graph.node if n.op_type == "Concat" for i in n.input if ".side_emb." in i]
    assert sorted(side_tables) == ["net.side_emb.0.weight", "net.side_emb.1.weight"]
    expected, got = _artifact_scores(path, X), _ort_scores(tmp_path / "m.onnx", X)
    assert np.array_equal(got.argmax(1), expected.argmax(1))
    np.testing.assert_allclose(got, expected, rtol=FP32_TOL, atol=FP32_TOL)
