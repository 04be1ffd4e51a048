"""Train once, compress many: trainers.base_cache and its use by trainers.pipeline.run_fold."""

from __future__ import annotations

import copy
import multiprocessing
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from trainers.base_cache import BaseCache, base_key
from trainers.data import load_dataset, split_test
from trainers.pipeline import run_fold

CFG: dict[str, Any] = {
    "device": "cpu", "seed": 0,
    "data": {"name": "digits", "test_size": 0.25, "standardize": True, "pca": None},
    "model": {"name": "mlp", "hidden": [24, 12], "width": 1.0, "dropout": 0.1},
    "train": {"optimizer": "adam", "lr": 0.003, "weight_decay": 0.0, "epochs": 3, "batch_size": 64,
              "momentum": 0.9, "threads": 1},
    "compress": {"finetune_epochs": 2, "finetune_lr": None, "codec": "lzma",
                 "prune": {"ratio": 0.5, "criterion": "random", "schedule": "gradual", "scope": "per_layer"},
                 "neurons": {"ratio": 0.2, "importance": "mean_abs"},
                 "quant": {"scheme": "fixed_point", "bits": 4, "rounding": "stochastic"}},
    "latency": {"threads": 1, "batch_size": 1, "warmup": 1, "repeats": 3, "throughput_batch": 16,
                "runtimes": ["fp32_dense"]},
}


@pytest.fixture(scope="module")
def split():
    ds = load_dataset({"name": "digits"})
    X, y = ds.X[:400], ds.y[:400]
    tr, va = split_test(y, 0.25, seed=0)
    return X[tr], y[tr], X[va], y[va]


def _cfg(**changes: Any) -> dict[str, Any]:
    cfg = copy.deepcopy(CFG)
    for dotted, value in changes.items():
        node = cfg
        *parents, leaf = dotted.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return cfg


def _key(cfg, split, seed=0) -> str:
    X, y = split[0], split[1]
    return base_key(cfg, X, y, seed, 10, "cpu")


def test_key_ignores_compression_and_latency(split) -> None:
    base = _key(_cfg(), split)
    assert _key(_cfg(compress__finetune_epochs=7), split) == base
    assert _key(_cfg(compress__quant={"scheme": "ternary"}), split) == base
    assert _key(_cfg(latency__repeats=99), split) == base


@pytest.mark.parametrize("change", [
    {"train__lr": 0.004}, {"train__epochs": 4}, {"train__batch_size": 32}, {"train__optimizer": "sgd"},
    {"train__weight_decay": 1e-5}, {"model__hidden": [24, 13]}, {"model__width": 0.5}, {"model__dropout": 0.0},
    {"data__standardize": False}, {"data__pca": 0.9},
])
def test_key_changes_with_every_training_relevant_key(split, change) -> None:
    assert _key(_cfg(**change), split) != _key(_cfg(), split)


def test_key_changes_with_rows_labels_seed_and_device(split) -> None:
    X, y = split[0], split[1]
    base = base_key(CFG, X, y, 0, 10, "cpu")
    assert base_key(CFG, X[1:], y[1:], 0, 10, "cpu") != base
    y2 = y.copy()
    y2[0] = (y2[0] + 1) % 10
    assert base_key(CFG, X, y2, 0, 10, "cpu") != base
    assert base_key(CFG, X, y, 1, 10, "cpu") != base
    assert base_key(CFG, X, y, 0, 11, "cpu") != base
    assert base_key(CFG, X, y, 0, 10, "cuda") != base


def test_miss_then_hit_gives_the_same_bytes_as_no_cache(split, tmp_path) -> None:
    cache = BaseCache(tmp_path / "cache", max_bytes=2**30)
    plain = run_fold(_cfg(), *split, seed=3, artifact_path=tmp_path / "plain.sqz")
    miss = run_fold(_cfg(), *split, seed=3, artifact_path=tmp_path / "miss.sqz", cache=cache)
    hit = run_fold(_cfg(), *split, seed=3, artifact_path=tmp_path / "hit.sqz", cache=cache)
    assert (plain.base_cached, miss.base_cached, hit.base_cached) == (False, False, True)
    assert len(cache.entries()) == 1
    data = (tmp_path / "plain.sqz").read_bytes()
    assert (tmp_path / "miss.sqz").read_bytes() == data == (tmp_path / "hit.sqz").read_bytes()
    assert plain.accuracy == miss.accuracy == hit.accuracy
    assert hit.fit_seconds == pytest.approx(hit.train_seconds + hit.compress_seconds)


def test_other_compression_reuses_the_base_and_other_training_does_not(split, tmp_path) -> None:
    cache = BaseCache(tmp_path / "cache", max_bytes=2**30)
    run_fold(_cfg(), *split, seed=0, artifact_path=tmp_path / "a.sqz", cache=cache)
    other = run_fold(_cfg(compress__quant={"scheme": "ternary", "threshold": 0.7}), *split, seed=0,
                     artifact_path=tmp_path / "b.sqz", cache=cache)
    assert other.base_cached
    retrained = run_fold(_cfg(train__lr=0.002), *split, seed=0, artifact_path=tmp_path / "c.sqz", cache=cache)
    assert not retrained.base_cached
    assert len(cache.entries()) == 2


def test_seqrec_base_is_cached_and_identical(tmp_path) -> None:
    from trainers.data import load_dataset as load

    ds = load({"name": "ecommerce", "n_users": 60, "n_items": 30, "n_categories": 3, "n_brands": 4,
               "min_events": 4, "max_events": 8, "max_len": 6, "seed": 0})
    cfg = _cfg(model={"name": "seqrec", "d_model": 8, "heads": 1, "blocks": 1, "ffn_mult": 1.0, "max_len": 6,
                      "dropout": 0.1, "side_features": True, "width": 1.0},
               compress__neurons={"ratio": 0.0}, compress__quant={"scheme": "uniform", "bits": 4})
    cfg["data"] = {"name": "ecommerce", "top_k": 5}
    cfg["n_classes"] = len(ds.classes)
    X, y = ds.X, ds.y
    cache = BaseCache(tmp_path / "cache", max_bytes=2**30)
    runs = [run_fold(cfg, X[:45], y[:45], X[45:], y[45:], seed=0, artifact_path=tmp_path / f"{i}.sqz",
                     cache=c) for i, c in enumerate([None, cache, cache])]
    assert [r.base_cached for r in runs] == [False, False, True]
    assert len({(tmp_path / f"{i}.sqz").read_bytes() for i in range(3)}) == 1


def test_size_bound_evicts_least_recently_used(tmp_path) -> None:
    cache = BaseCache(tmp_path, max_bytes=10**9)
    state = {"w": torch.zeros(1000)}
    for name in ("a", "b", "c"):
        cache.put(name * 8, {"n": name}, state)
    one = cache.path("a" * 8).stat().st_size
    assert cache.get("a" * 8) is not None          # "a" used last: "b" is now the oldest
    import os
    import time
    for i, name in enumerate(("b", "c", "a")):       # make the order explicit (coarse file-system clocks)
        t = time.time() - 100 + i
        os.utime(cache.path(name * 8), (t, t))
    cache.max_bytes = 2 * one + one // 2
    cache.trim()
    assert [p.name[:8] for p in cache.entries()] == ["aaaaaaaa", "cccccccc"]
    assert cache.size_bytes() <= cache.max_bytes


def test_unreadable_entry_is_a_miss(tmp_path) -> None:
    cache = BaseCache(tmp_path, max_bytes=10**9)
    cache.put("k" * 8, {"n": 1}, {"w": torch.ones(3)})
    cache.path("k" * 8).write_bytes(b"truncated")
    assert cache.get("k" * 8) is None
    assert cache.get("missing") is None
    assert not list(tmp_path.glob("*.tmp"))


def _writer(root: str, key: str, n: int, barrier) -> None:
    cache = BaseCache(root, max_bytes=2**30)
    state = {"w": torch.arange(200_000, dtype=torch.float32)}
    barrier.wait()
    for _ in range(n):
        cache.put(key, {"spec": 1}, state)


def _reader(root: str, key: str, n: int, barrier, out) -> None:
    cache = BaseCache(root, max_bytes=2**30)
    barrier.wait()
    seen = bad = 0
    for _ in range(n):
        got = cache.get(key)
        if got is not None:
            seen += 1
            bad += int(not torch.equal(got[1]["w"], torch.arange(200_000, dtype=torch.float32)))
    out.put((seen, bad))


def test_two_concurrent_writers_and_a_reader_never_see_a_partial_entry(tmp_path) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), "same", 15, barrier)) for _ in range(2)]
    procs.append(ctx.Process(target=_reader, args=(str(tmp_path), "same", 60, barrier, out)))
    for p in procs:
        p.start()
    seen, bad = out.get(timeout=120)
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    assert bad == 0
    assert [p.name for p in BaseCache(tmp_path, 2**30).entries()] == ["same.base.pt"]
    assert not list(Path(tmp_path).glob("*.tmp"))
    assert np.isfinite(seen)


def test_a_user_models_source_is_part_of_the_key(split, tmp_path, monkeypatch) -> None:
    pkg = tmp_path / "userpkg_cache"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text("VERSION = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = _cfg(model={"name": "custom", "_target_": "userpkg_cache.nets.Net", "kwargs": {}})
    before = _key(cfg, split)
    assert _key(cfg, split) == before
    (pkg / "nets.py").write_text("VERSION = 2\n")
    assert _key(cfg, split) != before
