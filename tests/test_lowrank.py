"""Low-rank factorization of embedding tables (``compress.lowrank.rank``, trainers/compress/lowrank.py).

Oracles: ``torch.linalg.svd`` (Eckart-Young: the best rank-r error is the norm of the dropped singular
values), a numpy float32 loop for the decoder's product, and the artifact round trip (the loaded model's
scores equal, bit for bit, those of the model that was compressed).
"""

from __future__ import annotations

import copy
import struct

import numpy as np
import pytest
import torch
from torch import nn

from trainers import artifact
from trainers.compress import compress
from trainers.compress.lowrank import Factored, check_rank, factorize, factors_table, product
from trainers.compress.quantize import Encoded
from trainers.data import load_dataset, split_dataset
from trainers.errors import InputError

#: a shop whose item table is most of the model: 301 x 32 against ~6,000 transformer weights
SHOP = {"name": "ecommerce", "n_users": 80, "n_items": 300, "max_len": 10, "min_events": 5, "max_events": 12}
MODEL = {"name": "seqrec", "d_model": 32, "width": 1.0, "heads": 2, "blocks": 1, "ffn_mult": 1.0, "max_len": 8,
         "dropout": 0.0, "side_features": True}
TRAIN = {"optimizer": "adam", "lr": 0.01, "weight_decay": 0.0, "epochs": 2, "batch_size": 32, "threads": 1}
UNIFORM4 = {"quant": {"scheme": "uniform", "bits": 4}}


@pytest.fixture(scope="module")
def shop():
    ds = load_dataset(SHOP)
    dev, test, _ = split_dataset(ds, None, 2, seed=0)
    return ds, dev, test


def fit(shop, compression: dict, model: dict | None = None):
    from trainers.pipeline import fit_compressed

    ds, dev, _ = shop
    cfg = {"data": SHOP, "model": {**MODEL, **(model or {})}, "train": TRAIN, "device": "cpu",
           "n_classes": ds.n_classes, "compress": {"finetune_epochs": 1, "side_bits": 16, **copy.deepcopy(compression)}}
    return fit_compressed(cfg, ds.X[dev], ds.y[dev], seed=0)[0]


# ---------------------------------------------------------------- the maths


def test_svd_init_reproduces_the_table_at_full_rank():
    w = torch.randn(40, 12, generator=torch.Generator().manual_seed(0))
    a, b = factorize(w, 12)
    assert a.shape == (40, 12) and b.shape == (12, 12) and a.dtype == b.dtype == torch.float32
    torch.testing.assert_close(a @ b, w, rtol=0, atol=1e-5)


@pytest.mark.parametrize("rank", [1, 3, 7])
def test_svd_init_is_the_best_rank_r_approximation(rank):
    w = torch.randn(60, 16, generator=torch.Generator().manual_seed(1)) @ torch.diag(torch.linspace(3, 0.1, 16))
    a, b = factorize(w, rank)
    s = torch.linalg.svd(w.double()).S
    best = float(s[rank:].square().sum().sqrt())                     # Eckart-Young: the dropped singular values
    err = float(torch.linalg.matrix_norm((a @ b).double() - w.double()))
    assert err == pytest.approx(best, rel=1e-4)
    other = torch.randn(60, rank, generator=torch.Generator().manual_seed(2)) @ b   # another rank-r matrix
    assert err < float(torch.linalg.matrix_norm((other - w).double()))
    a2, b2 = factorize(w.clone(), rank)                              # deterministic, signs included
    assert torch.equal(a, a2) and torch.equal(b, b2)
    assert bool((b.gather(1, b.abs().argmax(1, keepdim=True)) > 0).all())


def test_product_sums_rank_components_in_order_in_float32():
    gen = torch.Generator().manual_seed(3)
    a, b = torch.randn(50, 6, generator=gen), torch.randn(6, 20, generator=gen)
    expected = np.zeros((50, 20), dtype=np.float32)
    an, bn = a.numpy(), b.numpy()
    for k in range(6):
        expected = expected + an[:, k:k + 1] * bn[k:k + 1, :]          # float32 multiply, then float32 add
    got = product(a, b)
    assert got.dtype == torch.float32 and np.array_equal(got.numpy(), expected)
    torch.testing.assert_close(got, a @ b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("rows, dim, rank, factored", [
    (301, 32, 8, True), (301, 32, 28, True), (301, 32, 29, False),   # 29 * 333 > 301 * 32
    (301, 32, 32, False), (301, 32, 40, False),                  # rank >= min(rows, dim): always dense
    (11, 32, 8, True), (11, 32, 9, False),                       # 9 * 43 = 387 > 352: factors would be larger
    (10, 10, 6, False), (301, 32, 0, False),
])
def test_a_table_is_factored_only_where_the_factors_store_fewer_values(rows, dim, rank, factored):
    assert factors_table(rows, dim, rank) is factored


@pytest.mark.parametrize("value", [-1, 1.5, True, "8", None])
def test_bad_ranks_are_refused_naming_the_key(value):
    with pytest.raises(InputError) as info:
        check_rank(value)
    assert info.value.where == "compress.lowrank.rank" and f"got {value!r}" in str(info.value)
    net = nn.Sequential(nn.Embedding(20, 8))
    with pytest.raises(InputError, match=r"^compress.lowrank.rank: must be an integer >= 0"):
        compress(net, torch.zeros(4, 1, dtype=torch.long), torch.zeros(4, dtype=torch.long),
                 {"lowrank": {"rank": value}}, TRAIN, 0, device="cpu")


@pytest.mark.parametrize("override", ["compress.lowrank.rank=-1", "compress.lowrank.rank=2.5",
                                      "compress.lowrank.rank=abc"])
def test_bad_ranks_are_refused_before_a_study_exists(override):
    from search.config import compose
    from search.validate import validate_config

    with pytest.raises(InputError) as info:
        validate_config(compose(["data=ecommerce", "model=seqrec", override]))
    assert info.value.where == "compress.lowrank.rank"
    assert "\n" not in str(info.value)
    validate_config(compose(["data=ecommerce", "model=seqrec", "compress.lowrank.rank=8"]))


# ---------------------------------------------------------------- compression, the file, the loaded model

SETTINGS = {
    "rank8-uniform4": {"lowrank": {"rank": 8}, **UNIFORM4},
    "rank8-fp32": {"lowrank": {"rank": 8}},
    "rank4-prune-gradual-fixed6": {"lowrank": {"rank": 4}, "prune": {"ratio": 0.5, "schedule": "gradual"},
                                   "quant": {"scheme": "fixed_point", "bits": 6}},
}


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_a_factored_seqrec_round_trips_bit_exactly(shop, setting, tmp_path):
    ds, _, test = shop
    compression = SETTINGS[setting]
    model = fit(shop, compression)
    rank = compression["lowrank"]["rank"]
    enc = model.encodings["net.item_emb.weight"]
    assert isinstance(enc, Factored) and enc.shape == (301, 32) and enc.rank == rank
    assert torch.equal(model.net.item_emb.weight, enc.decode())       # in memory: the product the loader computes

    data = artifact.pack(model)
    assert struct.unpack_from("<H", data, 4)[0] == 4                  # a reader of versions 1-3 refuses it cleanly
    loaded = artifact.unpack(data)
    X = torch.from_numpy(ds.X[test])
    with torch.no_grad():
        assert torch.equal(model(X), loaded(X))
    assert artifact.pack(loaded) == data
    got = loaded.encodings["net.item_emb.weight"]
    assert isinstance(got, Factored)
    assert torch.equal(loaded.net.item_emb.weight, product(got.a.decode(), got.b.decode()))

    (tmp_path / "m.sqz").write_bytes(data)
    entries = {e["name"]: e for e in artifact.read_header(tmp_path / "m.sqz")["tensors"]}
    entry = entries["net.item_emb.weight"]
    assert entry["scheme"] == "lowrank" and entry["shape"] == [301, 32] and entry["rank"] == rank
    a, b = entry["factors"]["a"], entry["factors"]["b"]
    assert (a["shape"], b["shape"]) == ([301, rank], [rank, 32])
    scheme = compression.get("quant", {}).get("scheme", "none")
    for factor in (a, b):
        assert factor["scheme"] == ("fp32" if scheme == "none" else scheme)
        assert "name" not in factor and "codes" in factor["blobs"]
    assert entries["net.blocks.0.attn.q.weight"]["scheme"] == ("fp32" if scheme == "none" else scheme)
    if "prune" in compression:                                         # the factors are pruned like any weight
        assert a["layout"] != "dense" and a["n_kept"] == 301 * rank - int(0.5 * 301 * rank)


def _table_bytes(data: bytes, tmp_path, name: str = "net.item_emb.weight") -> int:
    (tmp_path / "t.sqz").write_bytes(data)
    entry = next(e for e in artifact.read_header(tmp_path / "t.sqz")["tensors"] if e["name"] == name)
    parts = entry["factors"].values() if entry["scheme"] == "lowrank" else [entry]
    return sum(length for part in parts for _, length in part["blobs"].values())


@pytest.mark.parametrize("compression, table_ratio, file_ratio", [
    (UNIFORM4, 0.5, 0.8),     # 301 x (8 codes of 4 bits + 2 float16 per row) + B, against 301 x (32 x 4 bits + 2)
    ({}, 0.3, 0.7),           # float32: 8 x (301 + 32) values against 301 x 32
])
def test_factored_file_is_much_smaller_than_the_dense_one_at_the_same_bits(shop, tmp_path, compression,
                                                                             table_ratio, file_ratio):
    dense = artifact.pack(fit(shop, compression))
    factored = artifact.pack(fit(shop, {"lowrank": {"rank": 8}, **compression}))
    assert _table_bytes(factored, tmp_path) < table_ratio * _table_bytes(dense, tmp_path)
    assert len(factored) < file_ratio * len(dense), (len(factored), len(dense))


def test_rank_at_least_min_rows_dim_leaves_every_table_dense(shop):
    dense = fit(shop, UNIFORM4)
    same = fit(shop, {"lowrank": {"rank": 32}, **UNIFORM4})                # d_model = 32: nothing to gain
    assert not any(isinstance(e, Factored) for e in same.encodings.values())
    assert artifact.pack(same) == artifact.pack(dense)                     # exactly the rank-0 model


def test_include_and_exclude_choose_the_factored_tables(shop):
    model = fit(shop, {"lowrank": {"rank": 8}, "exclude": ["item_emb"], **UNIFORM4})
    assert "net.item_emb.weight" not in model.encodings                     # excluded: fp32, dense
    factored = {n for n, e in model.encodings.items() if isinstance(e, Factored)}
    expected = {f"net.{n}.weight" for n, m in model.net.named_modules()
                if isinstance(m, nn.Embedding) and n != "item_emb" and factors_table(*m.weight.shape, 8)}
    assert factored == expected and "net.side_emb.1.weight" in expected          # brands: 21 x 32
    assert "net.pos_emb.weight" not in expected                                  # 8 x 32: 8 * 40 > 256
    assert isinstance(model.encodings["net.blocks.0.attn.q.weight"], Encoded)


# ---------------------------------------------------------------- the fine-tune trains the factors


def test_the_fine_tune_trains_the_factors(shop):
    from trainers.pipeline import fit_base

    ds, dev, _ = shop
    cfg = {"data": SHOP, "model": MODEL, "train": TRAIN, "device": "cpu", "n_classes": ds.n_classes}
    base, X, y, _ = fit_base(cfg, ds.X[dev], ds.y[dev], seed=0)
    net = base.net
    a0, b0 = factorize(net.item_emb.weight, 4)

    def compressed(epochs: int) -> tuple[nn.Module, Factored]:
        copy_ = copy.deepcopy(net)
        report = compress(copy_, X, y, {"lowrank": {"rank": 4}, "finetune_epochs": epochs, "finetune_lr": 0.01},
                          TRAIN, 0, device="cpu")
        return copy_.eval(), report.encodings["item_emb.weight"]

    before, enc0 = compressed(0)
    after, enc3 = compressed(3)
    assert torch.equal(enc0.a.decode(), a0) and torch.equal(enc0.b.decode(), b0)   # no fine-tune: the SVD
    assert not torch.equal(enc3.a.decode(), a0) and not torch.equal(enc3.b.decode(), b0)
    with torch.no_grad():
        loss0, loss3 = float(before.training_loss(X, y)), float(after.training_loss(X, y))
    assert loss3 < loss0, (loss0, loss3)


# ---------------------------------------------------------------- serving: the scores from the two factors

#: factored and dense scores differ by float rounding only (sums in another order): at most this, absolute
SCORE_TOL = 1e-4


def assert_same_top_k(scores: torch.Tensor, reference: torch.Tensor, k: int = 10, tol: float = SCORE_TOL) -> float:
    """``scores`` within ``tol`` of ``reference`` everywhere, and their top-``k`` the reference's up to near ties:
    position by position, the item ranked ``i``-th has a reference score within ``2 tol`` of the reference's
    ``i``-th best (only items that rounding could swap may swap). Returns the share of rows whose top-``k`` list
    is exactly the reference's."""
    assert float((scores - reference).abs().max()) <= tol
    top, want = scores.topk(k, dim=1).indices, reference.topk(k, dim=1).indices
    assert float((reference.gather(1, top) - reference.gather(1, want)).abs().max()) <= 2 * tol
    return float((top == want).all(1).float().mean())


@pytest.fixture(scope="module")
def factored_file(shop):
    """A rank-8, 4-bit seqrec written and loaded back, and its test rows."""
    ds, _, test = shop
    return artifact.pack(fit(shop, SETTINGS["rank8-uniform4"])), torch.from_numpy(ds.X[test])


def test_a_factored_item_table_scores_as_two_products_with_the_dense_top_k(factored_file):
    from trainers.measure import factored_scores

    data, X = factored_file
    loaded = artifact.unpack(data)
    served = factored_scores(loaded)
    enc = loaded.encodings["net.item_emb.weight"]
    assert served is not loaded and loaded.net.item_at is None             # the loaded model stays as decoded
    assert torch.equal(served.net.item_at, enc.a.decode().T) and served.net.item_at.is_contiguous()
    assert torch.equal(served.net.item_bt, enc.b.decode().T)
    assert list(served.state_dict()) == list(loaded.state_dict())          # serving state: not in the file
    assert artifact.pack(served) == data
    with torch.no_grad():
        h, u = served.net.encode(X, last_only=True), served.net.user_state(X)     # what serving computes
        q = h if u is None else h + u
        got, dense = served(X), loaded(X)
    a, b = enc.a.decode(), enc.b.decode()
    assert torch.equal(got, (q @ b.T.contiguous()) @ a.T.contiguous())    # exactly the two products
    assert assert_same_top_k(got, dense) == 1.0                            # this case: the same lists


def test_a_dense_table_or_another_network_is_served_as_it_is(shop):
    from trainers.measure import factored_scores

    dense = artifact.unpack(artifact.pack(fit(shop, UNIFORM4)))
    assert factored_scores(dense) is dense
    excluded = artifact.unpack(artifact.pack(fit(shop, {"lowrank": {"rank": 8}, "exclude": ["item_emb"], **UNIFORM4})))
    assert any(isinstance(e, Factored) for e in excluded.encodings.values())   # side tables: looked up only
    assert factored_scores(excluded) is excluded


def test_item_factors_of_the_wrong_shape_are_refused():
    from trainers.models.seqrec import SeqRec

    net = SeqRec(n_items=30, d_model=8)
    with pytest.raises(ValueError, match=r"item factors must be \(31, r\) and \(r, 8\)"):
        net.use_item_factors(torch.zeros(30, 2), torch.zeros(2, 8))


@pytest.mark.parametrize("runtime", ["fp32_dense", "torchscript", "int8_dynamic", "onnxruntime"])
def test_every_runtime_scores_from_the_files_factors_not_the_dense_table(factored_file, runtime):
    """With the decoded dense table zeroed after loading, dense scoring gives 0 for every item; a runtime that
    scores from the factors (the file's encodings) gives the factored model's scores. (The torch runtimes look
    the input items up in the dense table, the ONNX graph in ``A`` then ``B``: the reference does the same.)"""
    from trainers.measure import build_runtime, factored_scores

    data, X = factored_file
    reference = factored_scores(artifact.unpack(data))
    tampered = artifact.unpack(data)
    with torch.no_grad():
        tampered.net.item_emb.weight.zero_()
        if runtime != "onnxruntime":
            reference.net.item_emb.weight.zero_()
        assert not tampered(X).any()                                       # dense scoring: all zero
        served = build_runtime(tampered, runtime, X[:1])
        got, want = served(X), reference(X)
    assert got.abs().max() > 0.1
    tol = SCORE_TOL if runtime in ("fp32_dense", "torchscript", "onnxruntime") else 0.05 * float(want.abs().max())
    assert float((got - want).abs().max()) <= tol


def test_the_fp32_reference_of_a_study_with_factored_tables_has_dense_ones():
    # a study run with compress.lowrank.rank=4 as config (not sampled) must still be compared with dense fp32
    from search.objective import reference_config

    cfg = {"train": {"epochs": 5}, "compress": {"finetune_epochs": 5, "prune": {"ratio": 0.5}, "neurons": {"ratio": 0.2},
                                                "quant": {"scheme": "uniform", "bits": 4}, "lowrank": {"rank": 4}}}
    ref = reference_config(cfg)
    assert ref["compress"]["lowrank"]["rank"] == 0 and ref["compress"]["quant"]["scheme"] == "none"
    assert cfg["compress"]["lowrank"]["rank"] == 4                      # the study's config is left as it was
