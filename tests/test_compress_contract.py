"""Contract suite: every compression setting, on a briefly trained MLP (and a CNN for a subset), keeps the
promises the artifact makes.

For each setting: outputs are valid and finite; the requested sparsity and bit width are what the file
holds (``trainers.artifact.read_header``) and what the decoded weights show; pack -> load reproduces the
in-memory model's logits exactly; ``save`` returns the file size = ``len(pack(model))``; re-packing the
loaded model gives the same bytes.
"""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from trainers import artifact
from trainers.compress import compress
from trainers.data import Preprocessor, load_dataset
from trainers.fit import seed_everything, train
from trainers.models import Pipeline, Preprocess, build_net

TRAIN_CFG = {"optimizer": "adam", "lr": 0.003, "weight_decay": 0.0, "epochs": 4, "batch_size": 64, "threads": 1}
N_ROWS = 500
FINETUNE_ROWS = 256        # the fine-tune sees a subset: 2 epochs = 8 steps, enough for a gradual schedule
FINETUNE_EPOCHS = 2


def _settings() -> dict[str, dict[str, Any]]:
    """name -> ``compress`` config (fine-tune epochs added later)."""
    s: dict[str, dict[str, Any]] = {"fp32": {}}
    for criterion in ("magnitude", "random"):
        for schedule in ("one_shot", "gradual"):
            for scope in ("global", "per_layer"):
                s[f"prune-{criterion}-{schedule}-{scope}"] = {
                    "prune": {"ratio": 0.7, "criterion": criterion, "schedule": schedule, "scope": scope}}
    for importance in ("mean_abs", "apoz"):
        s[f"neurons-{importance}"] = {"neurons": {"ratio": 0.5, "importance": importance}}
    for bits in (2, 4, 8):
        for rounding in ("nearest", "floor", "stochastic"):
            s[f"fixed_point-{bits}-{rounding}"] = {
                "quant": {"scheme": "fixed_point", "bits": bits, "rounding": rounding}}
        s[f"uniform-{bits}"] = {"quant": {"scheme": "uniform", "bits": bits}}
        s[f"uniform-{bits}-clip"] = {"quant": {"scheme": "uniform", "bits": bits, "clip": 0.95}}
        s[f"uniform-{bits}-step_scale"] = {"quant": {"scheme": "uniform", "bits": bits, "step_scale": 1.3}}
        s[f"uniform-{bits}-learn_step"] = {"quant": {"scheme": "uniform", "bits": bits, "learn_step": True}}
    s["uniform-4-ends_fp32"] = {"quant": {"scheme": "uniform", "bits": 4, "quantize_first_last": False}}
    s["binary"] = {"quant": {"scheme": "binary"}}
    s["ternary"] = {"quant": {"scheme": "ternary", "threshold": 0.7}}
    s["combined"] = {"neurons": {"ratio": 0.5},
                     "prune": {"ratio": 0.8, "schedule": "gradual", "scope": "per_layer"},
                     "quant": {"scheme": "uniform", "bits": 4}}
    s["combined-global-ternary"] = {"neurons": {"ratio": 0.25, "importance": "apoz"},
                                    "prune": {"ratio": 0.6, "scope": "global"},
                                    "quant": {"scheme": "ternary", "threshold": 0.5}}
    return s


SETTINGS = _settings()
CNN_SETTINGS = ["fp32", "prune-magnitude-gradual-per_layer", "prune-random-one_shot-global", "neurons-mean_abs",
                "fixed_point-4-stochastic", "uniform-2-learn_step", "binary", "ternary", "combined"]
CASES = [("mlp", name) for name in SETTINGS] + [("cnn", name) for name in CNN_SETTINGS]
CASE_IDS = [f"{arch}-{name}" for arch, name in CASES]


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    ds = load_dataset({"name": "digits"})
    return ds.X[:N_ROWS], ds.y[:N_ROWS]


@pytest.fixture(scope="module")
def bases(data) -> dict[str, tuple[Pipeline, torch.Tensor, torch.Tensor]]:
    """arch -> (trained pipeline, preprocessed X, y): trained once, copied for every setting."""
    X, y = data
    pre = Preprocessor().fit(X)
    preprocess = Preprocess.from_state(list(X.shape[1:]), pre.state_dict())
    with torch.no_grad():
        Xt = preprocess(torch.from_numpy(X))
    yt = torch.from_numpy(y)
    specs = {"mlp": {"type": "mlp", "in_features": 64, "hidden": [32, 16], "n_classes": 10},
             "cnn": {"type": "cnn", "in_shape": [1, 8, 8], "channels": [4, 8], "hidden": [16], "n_classes": 10}}
    out = {}
    for arch, spec in specs.items():
        seed_everything(0)
        net = build_net(spec)
        train(net, Xt, yt, TRAIN_CFG, 0, device="cpu")
        out[arch] = (Pipeline(copy.deepcopy(preprocess), net).eval(), Xt, yt)
    return out


class Case:
    """One compressed model, its saved file and what came back from it."""

    def __init__(self, arch: str, name: str, base: Pipeline, Xt: torch.Tensor, yt: torch.Tensor,
                 X: np.ndarray, directory: Path) -> None:
        self.arch, self.name = arch, name
        self.cfg = {"finetune_epochs": FINETUNE_EPOCHS, **copy.deepcopy(SETTINGS[name])}
        self.model = copy.deepcopy(base)
        report = compress(self.model.net, Xt[:FINETUNE_ROWS], yt[:FINETUNE_ROWS], self.cfg, TRAIN_CFG, seed=0, device="cpu")
        self.model.encodings = {f"net.{k}": v for k, v in report.encodings.items()}
        self.model.eval()
        self.path = directory / f"{arch}-{name}.sqz"
        self.meta = {"setting": name}
        self.saved = artifact.save(self.model, self.path, meta=self.meta)
        self.header = artifact.read_header(self.path)
        self.loaded = artifact.load(self.path)
        self.X = torch.from_numpy(X)

    def weight_entries(self) -> list[dict[str, Any]]:
        return [e for e in self.header["tensors"] if e["name"].startswith("net.") and e["name"].endswith("weight")]

    def dense(self, name: str) -> torch.Tensor:
        return self.model.state_dict()[name].flatten()


@pytest.fixture(scope="module")
def compressed(bases, data, tmp_path_factory):
    """``compressed(arch, name)``: the :class:`Case`, compressed once per module for all the checks."""
    directory, cache = tmp_path_factory.mktemp("contract"), {}

    def get(arch: str, name: str) -> Case:
        if (arch, name) not in cache:
            base, Xt, yt = bases[arch]
            cache[arch, name] = Case(arch, name, base, Xt, yt, data[0], directory)
        return cache[arch, name]

    return get


@pytest.fixture(params=CASES, ids=CASE_IDS)
def case(request, compressed) -> Case:
    return compressed(*request.param)


def _requested_bits(cfg: dict[str, Any]) -> tuple[str, int]:
    quant = cfg.get("quant", {})
    scheme = quant.get("scheme", "none")
    if scheme == "none":
        return "fp32", 32
    if scheme in ("binary", "ternary"):
        return scheme, 1
    return scheme, int(quant["bits"])


# ---------------------------------------------------------------- the contract


def test_outputs_have_the_right_shape_and_are_finite(case: Case) -> None:
    with torch.no_grad():
        for model in (case.model, case.loaded):
            logits = model(case.X)
            assert logits.shape == (len(case.X), 10)
            assert logits.dtype == torch.float32
            assert torch.isfinite(logits).all()


def test_requested_sparsity_is_honoured(case: Case) -> None:
    prune = case.cfg.get("prune", {})
    ratio, scope = float(prune.get("ratio", 0.0)), prune.get("scope", "per_layer")
    scheme, _ = _requested_bits(case.cfg)
    entries = case.weight_entries()
    assert len(entries) == len(case.model.encodings) >= 3
    totals = {"numel": 0, "pruned": 0, "zeros": 0}
    for e in entries:
        numel = math.prod(e["shape"])
        w = case.dense(e["name"])
        pruned = numel - e["n_kept"]
        zeros = int((w == 0).sum())
        enc = case.loaded.encodings[e["name"]]
        if enc.mask is not None:                       # every pruned position decodes to exactly 0
            assert not w[~enc.mask].any()
            assert int(enc.mask.sum()) == e["n_kept"]
        else:
            assert e["layout"] == "dense" and e["n_kept"] == numel
        assert zeros >= pruned
        if scheme == "fp32":                           # no quantizer can add zeros: decoded zeros = pruned
            assert zeros == pruned
        if scope == "per_layer" and scheme == "ternary":
            assert pruned >= math.floor(ratio * numel + 1e-9), e["name"]
        elif scope == "per_layer":
            assert pruned == math.floor(ratio * numel + 1e-9), e["name"]
            if scheme == "fp32":
                assert zeros / numel == math.floor(ratio * numel + 1e-9) / numel
        totals["numel"] += numel
        totals["pruned"] += pruned
        totals["zeros"] += zeros
    n = totals["numel"]
    if scheme == "ternary":                            # the ternary threshold can only add zeros
        assert totals["pruned"] >= math.floor(ratio * n + 1e-9)
    elif scope == "global":
        assert totals["pruned"] == math.floor(ratio * n + 1e-9)
    else:
        assert totals["pruned"] == sum(math.floor(ratio * math.prod(e["shape"]) + 1e-9) for e in entries)
    if scheme == "fp32":
        assert totals["zeros"] / n == totals["pruned"] / n


def test_requested_bit_width_is_honoured(case: Case) -> None:
    scheme, bits = _requested_bits(case.cfg)
    keep_ends = not case.cfg.get("quant", {}).get("quantize_first_last", True)
    entries = case.weight_entries()
    for i, e in enumerate(entries):
        end_layer = i in (0, len(entries) - 1)
        want_scheme, want_bits = ("fp32", 32) if keep_ends and end_layer else (scheme, bits)
        assert e["scheme"] == want_scheme, e["name"]
        assert e["bits"] == want_bits, e["name"]
        assert e["blobs"]["codes"][1] == math.ceil(e["n_kept"] * want_bits / 8), e["name"]
        if want_scheme == "fp32":
            continue
        enc = case.loaded.encodings[e["name"]]
        rows = case.dense(e["name"]).reshape(e["shape"][0], -1)
        kept = torch.ones_like(rows, dtype=torch.bool) if enc.mask is None else enc.mask.reshape(rows.shape)
        for c in range(rows.shape[0]):
            assert len(torch.unique(rows[c][kept[c]])) <= 2**want_bits, (e["name"], c)
    # biases and preprocessing statistics are stored as raw fp32
    for e in case.header["tensors"]:
        if not e["name"].endswith("weight") or e["name"].startswith("preprocess."):
            assert (e["scheme"], e["bits"], e["layout"]) == ("fp32", 32, "dense"), e["name"]


def test_pack_then_load_reproduces_outputs_exactly(case: Case) -> None:
    with torch.no_grad():
        assert torch.equal(case.loaded(case.X), case.model(case.X))
    assert case.loaded.net.spec() == case.model.net.spec()
    mine, theirs = case.model.state_dict(), case.loaded.state_dict()
    assert set(mine) == set(theirs)
    for name in mine:
        assert torch.equal(mine[name], theirs[name]), name
    assert case.loaded.meta == case.meta


def test_save_returns_the_file_size_which_is_the_packed_length(case: Case) -> None:
    packed = artifact.pack(case.model, meta=case.meta)
    assert case.saved == os.path.getsize(case.path) == len(packed)
    assert case.path.read_bytes() == packed


def test_repacking_the_loaded_model_gives_identical_bytes(case: Case) -> None:
    assert artifact.pack(case.loaded, meta=case.loaded.meta) == case.path.read_bytes()
