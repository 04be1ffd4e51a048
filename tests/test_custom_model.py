"""Bring your own model: a user's nn.Module (tests/user_models/nets.py, outside the package) is built from
``model._target_``, compressed, packed without pickle, loaded only when its module is allowed, and goes
through sweep, reproduce, export, predict and the MLflow pyfunc like the built-in networks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from trainers import artifact
from trainers.errors import InputError
from trainers.models import custom

ROOT = Path(__file__).resolve().parents[1]
NETS = "tests.user_models.nets"
TINY_TRAIN = {"optimizer": "adam", "lr": 3e-3, "weight_decay": 0.0, "epochs": 2, "batch_size": 64}


def config(target: str, kwargs: dict | None = None, **compress) -> dict:
    return {"model": {"name": "custom", "_target_": f"{NETS}.{target}", "kwargs": kwargs or {}, "width": 1.0,
                      "widen": []},
            "data": {"standardize": True, "pca": None}, "train": TINY_TRAIN, "device": "cpu",
            "compress": {"finetune_epochs": 1, "prune": {"ratio": 0.5}, "neurons": {"ratio": 0.0},
                         "quant": {"scheme": "uniform", "bits": 4}, **compress}}


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return X[:300].astype(np.float32), y[:300]


@pytest.fixture
def untrusted(monkeypatch):
    """This process has not run any user model from its own config (as a fresh `search.predict`)."""
    monkeypatch.setattr(custom, "_TRUSTED", set())
    monkeypatch.delenv(artifact.ALLOW_ENV, raising=False)


def fit_pack(cfg: dict, X, y, path: Path):
    from trainers.pipeline import fit_and_compress

    fitted = fit_and_compress(cfg, X, y, seed=0)
    size = artifact.save(fitted.model, path)
    return fitted, size


# --- building ----------------------------------------------------------------------------------------

def test_data_shapes_are_passed_by_name_only_to_constructors_that_take_them():
    from trainers.models import build_net, net_spec_from_config

    spec = net_spec_from_config({"name": "custom", "_target_": f"{NETS}.ResMLP", "kwargs": {"hidden": 10},
                                 "width": 1.5, "widen": ["hidden"]}, [1, 8, 8], 10)
    assert spec["kwargs"] == {"hidden": 15, "in_features": 64, "n_classes": 10}     # no input_shape parameter
    net = build_net(spec)
    assert isinstance(net.module, __import__(NETS, fromlist=["ResMLP"]).ResMLP)
    assert net(torch.zeros(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize("model_cfg, key", [
    ({"_target_": "tests.user_models.nets.Nope"}, "model._target_"),
    ({"_target_": "no_such_pkg.Net"}, "model._target_"),
    ({"_target_": "tests.user_models.nets.ResMLP", "kwargs": {"n_classes": 3}}, "model.kwargs.n_classes"),
    ({"_target_": "tests.user_models.nets.ResMLP", "widen": ["depth"]}, "model.widen"),
])
def test_a_bad_user_model_config_is_one_line_naming_the_key(model_cfg, key):
    from trainers.models import net_spec_from_config

    with pytest.raises(InputError) as err:
        net_spec_from_config({"name": "custom", **model_cfg}, [4], 3)
    assert err.value.where == key and "\n" not in str(err.value)


def test_the_schema_knows_the_custom_keys():
    from search.schema import KEYS

    assert KEYS["model._target_"].check("my_pkg.nets.ResMLP") is None
    assert KEYS["model._target_"].check("ResMLP") is not None
    assert KEYS["compress.exclude"].default == [] and KEYS["compress.include"].default is None
    assert KEYS["compress.exclude"].check(["stem", "blocks.*.fc2"]) is None


# --- compression ---------------------------------------------------------------------------------------

def test_include_and_exclude_patterns_match_names_inside_the_users_module():
    from trainers.compress import compressible_layers
    from trainers.models import build_net, net_spec_from_config

    net = build_net(net_spec_from_config(config("ResMLP", {"blocks": 2})["model"], [6], 3))
    every = [n for n, _ in compressible_layers(net)]
    assert every == ["module.stem", "module.blocks.0.fc1", "module.blocks.0.fc2", "module.blocks.1.fc1",
                     "module.blocks.1.fc2", "module.head"]
    assert [n for n, _ in compressible_layers(net, exclude=["stem", "head"])] == every[1:-1]
    assert [n for n, _ in compressible_layers(net, include=["blocks.*.fc1"])] == every[1:4:2]


def test_conv1d_weights_are_pruned_and_quantized_and_neuron_pruning_follows_the_protocol(digits, tmp_path):
    X, y = digits
    cfg = config("RowConv", {"channels": [4, 8]}, neurons={"ratio": 0.5})
    fitted, size = fit_pack(cfg, X, y, tmp_path / "conv.sqz")
    assert fitted.units_kept == [2, 4]
    enc = fitted.model.encodings
    assert {"net.module.convs.0.weight", "net.module.convs.1.weight", "net.module.head.weight"} <= set(enc)
    assert all(e.scheme == "uniform" and e.bits == 4 for e in enc.values())
    assert size == (tmp_path / "conv.sqz").stat().st_size
    loaded = artifact.load(tmp_path / "conv.sqz")              # this process built it: trusted
    assert loaded.net.spec()["kept"] == [[0, 2], [1, 4]]
    assert torch.equal(loaded(torch.from_numpy(X[:40])), fitted.model(torch.from_numpy(X[:40])))


def test_unsupported_layer_types_stay_fp32_are_stored_and_the_file_says_so(digits, tmp_path):
    X, y = digits
    fitted, size = fit_pack(config("GatedNet", exclude=["out"]), X, y, tmp_path / "gated.sqz")
    header = artifact.read_header(tmp_path / "gated.sqz")
    assert header["uncompressed_modules"] == ["bn", "gate", "norm", "out"]    # BatchNorm, Bilinear, LayerNorm, excluded
    stored = {t["name"]: t for t in header["tensors"]}
    assert stored["net.module.gate.weight"]["scheme"] == "fp32" and stored["net.module.gate.weight"]["shape"] == [16, 16, 16]
    assert stored["net.module.out.weight"]["scheme"] == "fp32"
    assert stored["net.module.inp.weight"]["scheme"] == "uniform"
    assert size == len(artifact.pack(fitted.model))                          # sizes stay true
    loaded = artifact.load(tmp_path / "gated.sqz")
    assert torch.equal(loaded(torch.from_numpy(X[:40])), fitted.model(torch.from_numpy(X[:40])))


def test_neuron_pruning_on_a_model_without_the_protocol_is_refused_before_the_study():
    from search.preflight import check_custom_model

    gated = {"name": "custom", "_target_": f"{NETS}.GatedNet", "kwargs": {}}
    check_custom_model(gated, 0.0, [])                                        # not asked: fine
    check_custom_model({**gated, "_target_": f"{NETS}.ResMLP"}, 0.5, [0.7])   # implements the protocol
    for ratio, space, key in ((0.3, [], "compress.neurons.ratio"), (0.0, [0.7], "space.params.compress.neurons.ratio")):
        with pytest.raises(InputError) as err:
            check_custom_model(gated, ratio, space)
        assert err.value.where == key and "unit_layers()" in str(err.value) and "\n" not in str(err.value)


# --- loading: the allow-list ---------------------------------------------------------------------------

def test_loading_a_user_model_needs_its_module_allowed(digits, tmp_path, untrusted, monkeypatch):
    X, y = digits
    fit_pack(config("ResMLP"), X, y, tmp_path / "res.sqz")
    custom._TRUSTED.clear()                                   # as a fresh process would be
    with pytest.raises(artifact.ArtifactError) as err:
        artifact.load(tmp_path / "res.sqz")
    assert "tests.user_models.nets" in str(err.value) and "allow=['tests']" in str(err.value)
    for allow in (["tests"], ["tests.user_models"], ["tests.user_models.nets"]):
        assert artifact.load(tmp_path / "res.sqz", allow=allow).net.target == f"{NETS}.ResMLP"
    with pytest.raises(artifact.ArtifactError):
        artifact.load(tmp_path / "res.sqz", allow=["test"])   # a prefix of the name is not its package
    monkeypatch.setenv(artifact.ALLOW_ENV, "other,tests")
    assert artifact.load(tmp_path / "res.sqz").net.target == f"{NETS}.ResMLP"


# --- end to end: sweep (joint space, 2 folds), reproduce, final + register, export, predict, pyfunc -------

E2E = {
    "resmlp": ("digits", "ResMLP", ["+model.kwargs.hidden=32", "model.widen=[hidden]"]),
    "rowconv": ("breast_cancer", "RowConv", ["+model.kwargs.channels=[4,8]"]),
}


@pytest.fixture(scope="module", params=sorted(E2E))
def study(request, tmp_path_factory):
    data, target, extra = E2E[request.param]
    tmp = tmp_path_factory.mktemp(request.param)
    uri = f"sqlite:///{tmp}/mlflow.db"
    cmd = [sys.executable, "-m", "search.sweep", f"data={data}", "model=custom", f"model._target_={NETS}.{target}",
           *extra, "space=joint", "cv.folds=2", "study.n_trials=3", "study.seed_recipes=[]", "train.epochs=2",
           "compress.finetune_epochs=1", "latency.repeats=5", "latency.warmup=2", "latency.throughput_batch=32",
           f"study.name={request.param}", f"mlflow.tracking_uri={uri}", f"mlflow.artifact_location={tmp}/artifacts",
           f"study.storage=sqlite:///{tmp}/optuna.db"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"tmp": tmp, "uri": uri, "data": data, "name": request.param}


def _cli(module: str, argv: list[str], capsys) -> tuple[int, str]:
    import importlib

    capsys.readouterr()
    code = importlib.import_module(module).main(argv)
    out, err = capsys.readouterr()
    return code, out + err


@pytest.mark.slow
def test_user_model_through_sweep_reproduce_export_predict_and_pyfunc(study, capsys, tmp_path, monkeypatch):
    import mlflow
    import optuna
    from mlflow import MlflowClient

    from trainers.data import load_dataset

    tmp, uri = study["tmp"], study["uri"]
    trials = optuna.load_study(study_name=study["name"], storage=f"sqlite:///{tmp}/optuna.db").trials
    states = [t.state.name for t in trials]
    assert "FAIL" not in states and "COMPLETE" in states, states           # PRUNED = stopped early: fine
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("squeeze")
    run = client.search_runs([exp.experiment_id], "tags.role = 'trial' and tags.pareto = 'true'")[0]
    run_id = run.info.run_id
    # reproduce: accuracy and size exactly
    code, out = _cli("search.reproduce", [f"run_id={run_id}", f"mlflow.tracking_uri={uri}"], capsys)
    assert code == 0 and "match exactly" in out, out
    # final fit + registry, then export the artifact
    code, out = _cli("search.reproduce", [f"run_id={run_id}", f"mlflow.tracking_uri={uri}", "final=true",
                                          "register=true", f"registry_name=custom-{study['name']}"], capsys)
    assert code == 0, out
    model_file = tmp_path / "model.sqz"
    code, out = _cli("search.export", [f"run_id={run_id}", f"mlflow.tracking_uri={uri}", f"out={model_file}"], capsys)
    assert code == 0, out
    header = artifact.read_header(model_file)
    assert header["arch"]["net"]["type"] == "custom" and header["arch"]["net"]["target"].startswith(NETS)
    # ONNX: the same scores as the loaded artifact
    from trainers import onnx_export

    ds = load_dataset({"name": study["data"]})
    loaded = artifact.load(model_file, allow=["tests"])
    onnx_file = tmp_path / "model.onnx"
    onnx_export.save(loaded, onnx_file, "fp32")
    import onnxruntime as ort

    X = np.ascontiguousarray(ds.X[:20], dtype=np.float32)
    sess = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    scores = sess.run(None, {sess.get_inputs()[0].name: X})[0]
    np.testing.assert_allclose(scores, loaded(torch.from_numpy(X)).detach().numpy(), rtol=1e-4, atol=1e-4)
    # predict in a fresh process: refused without allow (exit 2, one line naming the module), fine with it
    env = {k: v for k, v in __import__("os").environ.items() if k != artifact.ALLOW_ENV}
    base = [sys.executable, "-m", "search.predict", f"model={model_file}", f"data={study['data']}"]
    refused = subprocess.run(base, cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert refused.returncode == 2 and "tests.user_models.nets" in refused.stderr
    assert refused.stderr.count("\n") == 1
    done = subprocess.run([*base, "allow=tests"], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    predicted = done.stdout.split()
    expected = np.asarray(ds.classes, dtype=object)[loaded(torch.from_numpy(
        np.ascontiguousarray(ds.X, dtype=np.float32))).argmax(1).numpy()]
    assert np.mean(np.asarray(predicted) == expected.astype(str)) > 0.99     # runtime may differ in the last bit
    # the registered pyfunc loads and predicts (the user's package travelled as a code path)
    mlflow.set_tracking_uri(uri)
    pyfunc = mlflow.pyfunc.load_model(f"models:/custom-{study['name']}/1")
    assert set(pyfunc.predict(X)) <= set(ds.classes)
    monkeypatch.setattr(custom, "_TRUSTED", set())
    local = Path(mlflow.artifacts.download_artifacts(f"models:/custom-{study['name']}/1", dst_path=str(tmp_path / "pf")))
    assert (local / "code" / "tests" / "user_models" / "nets.py").is_file()


def test_model_kwargs_can_be_searched_like_any_config_key():
    from omegaconf import OmegaConf

    from search.config import compose
    from search.space import apply_values, parse_space
    from search.validate import validate_config, validate_space

    cfg = compose(["model=custom", f"model._target_={NETS}.ResMLP", "+model.kwargs.hidden=32", "space=compress_only"])
    validate_config(cfg)
    params = parse_space(OmegaConf.create({"params": {"model.kwargs.hidden": "choice(16, 48)",
                                                      "compress.prune.ratio": "interval(0.0, 0.9)"}}))
    validate_space(cfg, params)
    assert apply_values(cfg, {"model.kwargs.hidden": 48}).model.kwargs.hidden == 48
    with pytest.raises(InputError) as err:
        validate_space(cfg, parse_space(OmegaConf.create({"params": {"model.kwargs.depth": "choice(1, 2)"}})))
    assert err.value.where == "space.params.model.kwargs.depth"
