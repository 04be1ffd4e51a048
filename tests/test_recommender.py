"""The recommender task (issue 5): sequence data, leave-last-out, ranking metrics, the seqrec model under
compression, and a tiny end-to-end study (marked slow)."""

from __future__ import annotations

import copy
import math
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from trainers import artifact
from trainers.data import from_histories, load_dataset, split_dataset
from trainers.data._ecommerce import generate_histories
from trainers.errors import InputError
from trainers.ranking import item_counts, rank_popularity, ranking_metrics, target_ranks

ROOT = Path(__file__).resolve().parents[1]
TINY_SHOP = {"name": "ecommerce", "n_users": 60, "n_items": 40, "max_len": 10, "min_events": 5, "max_events": 12}


# ---------------------------------------------------------------- data: the synthetic shop


def test_ecommerce_is_deterministic_and_seeded():
    a, b = load_dataset(TINY_SHOP), load_dataset(dict(TINY_SHOP))
    assert np.array_equal(a.X, b.X) and np.array_equal(a.y, b.y)
    other = load_dataset({**TINY_SHOP, "seed": 1})
    assert not np.array_equal(a.X, other.X)


def test_ecommerce_has_two_rows_per_user_with_item_side_and_user_channels():
    ds = load_dataset(TINY_SHOP)
    assert ds.kind == "sequence" and ds.X.dtype == np.int64 and ds.X.shape == (120, 7, 10)
    assert ds.feature_names == ["item", "category", "brand", "user:age_band", "user:interest1", "user:interest2",
                                "user:interest3"]
    assert ds.classes[0] == "<pad>" and ds.n_classes == 41
    assert ds.heldout.sum() == 60 and sorted(ds.users[ds.heldout]) == list(range(60))
    real = ds.X[:, 0] > 0
    assert np.all(np.diff(real.astype(int), axis=1) >= 0)             # left-padded: pads only at the start
    assert np.all((ds.X[:, 1] > 0) == real) and np.all((ds.X[:, 2] > 0) == real)


def test_ecommerce_next_category_follows_the_transition_chain():
    """Category transitions concentrate on two successors per category, so the sequence carries signal."""
    histories, _ = generate_histories({**TINY_SHOP, "n_users": 200})
    pairs = np.concatenate([np.stack([h[:-1, 1], h[1:, 1]], axis=1) for h in histories])
    top2 = 0
    for c in np.unique(pairs[:, 0]):
        counts = np.sort(np.bincount(pairs[pairs[:, 0] == c, 1]))[::-1]
        top2 += counts[:2].sum()
    assert top2 / len(pairs) > 0.6                      # vs 2 / n_categories = 0.2 for independent categories


def test_ecommerce_world_is_the_same_as_before_the_generator_was_vectorized():
    """A pinned digest of TINY_SHOP's events (taken from the per-candidate generator before issue 13): the
    same config gives the same shop across versions, so earlier benchmark results stay comparable."""
    import hashlib

    histories, _ = generate_histories(TINY_SHOP)
    assert hashlib.sha256(np.concatenate(histories).tobytes()).hexdigest()[:16] == "ad07329638a4e73e"


def test_ecommerce_users_never_buy_more_events_than_items():
    histories, _ = generate_histories({"n_users": 30, "n_items": 6, "n_categories": 3, "max_events": 12})
    assert max(len(h) for h in histories) == 6 and all(len(np.unique(h[:, 0])) == len(h) for h in histories)


def test_ecommerce_rejects_bad_sizes():
    with pytest.raises(InputError, match=r"^data.n_categories: must be an integer in \[3, 40\], got 100"):
        load_dataset({**TINY_SHOP, "n_categories": 100})


# ---------------------------------------------------------------- data: interaction logs


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


U_DATA = (  # user item rating timestamp; unsorted, a tie at 300 (user 7), a duplicate line, a short user 9
    "7\t20\t4\t300\n7\t5\t3\t100\n7\t11\t5\t300\n7\t3\t1\t200\n"
    "8\t5\t2\t10\n8\t20\t2\t30\n8\t3\t4\t20\n8\t3\t4\t20\n"
    "9\t11\t3\t5\n"
)
#: per user, in event order: 7 -> 5 (t100), 3 (t200), 11 and 20 tie at t300 -> by item id: 11, 20
#: 8 -> 5, 3, 20. Items sorted numerically: 3 -> 1, 5 -> 2, 11 -> 3, 20 -> 4.


def check_u_data(ds) -> None:
    assert ds.classes == ["<pad>", "3", "5", "11", "20"]
    dev, test = ~ds.heldout, ds.heldout
    assert ds.X[dev][:, 0].tolist() == [[0, 2, 1], [0, 0, 2]] and ds.y[dev].tolist() == [3, 1]
    assert ds.X[test][:, 0].tolist() == [[2, 1, 3], [0, 2, 1]] and ds.y[test].tolist() == [4, 4]


def test_movielens_u_data_tab_format(tmp_path, capsys):
    ds = load_dataset({"name": "interactions", "path": write(tmp_path, "u.data", U_DATA), "min_events": 3,
                       "max_len": 3})
    check_u_data(ds)
    assert "dropped 1 of 3 users with fewer than data.min_events=3 events" in capsys.readouterr().err


def test_movielens_ratings_dat_format(tmp_path):
    text = U_DATA.replace("\t", "::")
    ds = load_dataset({"name": "interactions", "path": write(tmp_path, "ratings.dat", text), "min_events": 3,
                       "max_len": 3, "format": "movielens_dat"})
    check_u_data(ds)


def test_event_order_does_not_depend_on_line_order(tmp_path):
    lines = U_DATA.splitlines()
    random.Random(3).shuffle(lines)
    ds = load_dataset({"name": "interactions", "path": write(tmp_path, "u.data", "\n".join(lines) + "\n"),
                       "min_events": 3, "max_len": 3})
    check_u_data(ds)


def test_csv_with_column_mapping_dates_and_item_features(tmp_path):
    log = write(tmp_path, "log.csv", "who,what,when,extra\n"
                                     "a,x,2024-01-03,1\na,y,2024-01-01,1\na,z,2024-01-02,1\n"
                                     "b,z,2024-02-01,1\nb,x,2024-02-03,1\nb,w,2024-02-02,1\n")
    side = write(tmp_path, "items.csv", "what,category\nx,shoes\ny,hats\nz,shoes\n")
    ds = load_dataset({"name": "interactions", "path": log, "user_col": "who", "item_col": "what",
                       "time_col": "when", "min_events": 3, "max_len": 4, "item_features": side})
    assert ds.classes == ["<pad>", "w", "x", "y", "z"] and ds.feature_names == ["item", "category"]
    dev = ~ds.heldout
    assert ds.X[dev][:, 0].tolist() == [[0, 0, 0, 3], [0, 0, 0, 4]] and ds.y[dev].tolist() == [4, 1]
    assert ds.X[dev][:, 1].tolist() == [[0, 0, 0, 1], [0, 0, 0, 2]]        # hats = 1, shoes = 2
    assert ds.X[~dev][:, 1].tolist() == [[0, 0, 1, 2], [0, 0, 2, 0]]       # w is not listed: 0 = unknown


def test_csv_without_time_column_keeps_row_order(tmp_path):
    log = write(tmp_path, "log.csv", "user,item\nu,c\nu,a\nu,b\n")
    ds = load_dataset({"name": "interactions", "path": log, "time_col": None, "min_events": 3, "max_len": 2})
    assert ds.X[~ds.heldout][0, 0].tolist() == [0, 3] and ds.y[ds.heldout].tolist() == [2]


@pytest.mark.parametrize("cfg, where, fragment", [
    ({"user_col": "who"}, "data.user_col", "column 'who' is not in"),
    ({"time_col": "ts"}, "data.time_col", "its columns are: user, item, timestamp"),
    ({"min_events": 2}, "data.min_events", "integer >= 3, got 2"),
    ({"format": "xml"}, "data.format", "auto|movielens_tab|movielens_dat|csv"),
])
def test_csv_input_errors_name_the_key(tmp_path, cfg, where, fragment):
    log = write(tmp_path, "log.csv", "user,item,timestamp\nu,a,1\nu,b,2\nu,c,3\n")
    with pytest.raises(InputError) as info:
        load_dataset({"name": "interactions", "path": log, **cfg})
    assert info.value.where == where and fragment in info.value.problem


def test_missing_files_and_bad_side_features(tmp_path):
    with pytest.raises(InputError, match="file not found"):
        load_dataset({"name": "interactions", "path": str(tmp_path / "nope.dat")})
    with pytest.raises(InputError, match=r"^data.path: is required"):
        load_dataset({"name": "interactions", "path": "???"})
    log = write(tmp_path, "u.data", U_DATA)
    side = write(tmp_path, "items.csv", "movie,genre\n3,drama\n")
    with pytest.raises(InputError, match=r"^data.item_features: .*needs the item column 'item'"):
        load_dataset({"name": "interactions", "path": log, "min_events": 3, "item_features": side})
    bad = write(tmp_path, "bad.data", "1\t2\t3\n")
    with pytest.raises(InputError, match="movielens_tab expects 4 fields"):
        load_dataset({"name": "interactions", "path": bad, "format": "movielens_tab"})


# ---------------------------------------------------------------- metrics


def test_ranks_and_metrics_match_a_hand_computed_example():
    # 6 item ids (0 = padding, never a candidate).
    # A: history {1}, target 2 (.5); candidates 2..5 score .5 .7 .5 .1: item 3 is higher, item 4 ties
    #    with a larger id (ranked below) -> rank 1.
    # B: history {2, 3}, target 5 (.6); candidates 1 (.9), 4 (.6), 5: item 1 is higher, item 4 ties with a
    #    smaller id (ranked above) -> rank 2.
    # C: target 1 is in its own history -> never ranked (rank = 6 = number of ids), a miss at every k.
    scores = torch.tensor([[9.0, 0.9, 0.5, 0.7, 0.5, 0.1],
                           [9.0, 0.9, 0.8, 0.8, 0.6, 0.6],
                           [9.0, 0.9, 0.5, 0.7, 0.5, 0.1]])
    history = torch.tensor([[0, 1], [2, 3], [1, 2]])
    ranks = target_ranks(scores, torch.tensor([2, 5, 1]), history)
    assert ranks.tolist() == [1, 2, 6]
    m = ranking_metrics(ranks, k=2)
    assert m["hr"] == pytest.approx(1 / 3)
    assert m["ndcg"] == pytest.approx((1 / math.log2(3)) / 3)
    m3 = ranking_metrics(ranks, k=3)
    assert m3["hr"] == pytest.approx(2 / 3)
    assert m3["ndcg"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(4)) / 3)


def test_popularity_baseline_counts_training_events_and_excludes_history():
    X_train = np.array([[[0, 1, 2]], [[1, 2, 3]]])              # counts: 1 -> 2, 2 -> 2, 3 -> 1 (+ targets)
    y_train = np.array([3, 3])                                 # 3 -> 3
    assert item_counts(X_train, y_train, 5).tolist() == [0, 2, 2, 3, 0]
    X_val = np.array([[[0, 0, 3]], [[0, 0, 4]]])
    y_val = np.array([1, 4])
    # request 1: item 3 (history) excluded; items 1 and 2 tie at 2 counts, the smaller id first -> target 1
    #            at rank 0, a hit at k=1 with gain 1.  request 2: target 4 is in the history -> a miss.
    assert rank_popularity(X_train, y_train, X_val, y_val, 5, k=1) == {"hr": 0.5, "ndcg": 0.5}


# ---------------------------------------------------------------- leave-last-out never leaks


def sentinel_histories(n_users: int = 12, seed: int = 0) -> tuple[list[np.ndarray], set[int]]:
    """Histories whose last events use items that occur nowhere else (ids 101 .. 100 + n_users)."""
    rng = np.random.default_rng(seed)
    histories = []
    for u in range(n_users):
        body = rng.choice(np.arange(1, 51), size=int(rng.integers(3, 9)), replace=False)
        items = np.append(body, 101 + u)
        histories.append(np.stack([items, items % 7 + 1], axis=1).astype(np.int64))
    return histories, set(range(101, 101 + n_users))


def test_leave_last_out_keeps_every_last_event_out_of_the_search(monkeypatch):
    import trainers.pipeline
    from search.objective import evaluate_config
    from trainers.task import TASKS

    histories, last = sentinel_histories()
    classes = ["<pad>", *map(str, range(1, 101 + len(histories)))]
    ds = from_histories(histories, classes, ["item", "category"], "test", max_len=5)
    dev_idx, test_idx, folds = split_dataset(ds, None, 3, seed=0)
    assert set(ds.y[test_idx].tolist()) == last                          # the test rows hold exactly them
    X, y = ds.X[dev_idx], ds.y[dev_idx]
    assert not last & set(X[:, 0].ravel().tolist()) and not last & set(y.tolist())
    for train_idx, val_idx in folds:                                     # folds split users
        assert not set(ds.users[dev_idx][train_idx]) & set(ds.users[dev_idx][val_idx])
    assert sorted(np.concatenate([v for _, v in folds]).tolist()) == list(range(len(dev_idx)))

    seen = []

    class Scores:                          # what run_fold returns, without training anything
        runtime, latency_protocol, artifact_path, ndcg = "fp32_dense", {}, "fold.sqz", None

        def __getattr__(self, name):
            return 0.0

    def spy(cfg, X_train, y_train, X_val, y_val, **_):
        seen.extend([X_train[:, 0].ravel(), y_train, X_val[:, 0].ravel(), y_val])
        return Scores()

    monkeypatch.setattr(trainers.pipeline, "run_fold", spy)
    evaluate_config({"seed": 0}, X, y, folds, "unused", meta={"classes": classes})
    assert len(seen) == 4 * len(folds) and not last & set(np.concatenate(seen).tolist())
    TASKS["ranking"].baseline(X, y, folds, len(classes), k=10)                   # runs on dev rows only

    # the test row of a user is its dev row shifted by one event: the validation event enters as input
    dev_rows, test_rows = ds.X[dev_idx], ds.X[test_idx]
    assert np.array_equal(test_rows[:, :, :-1], dev_rows[:, :, 1:])
    assert np.array_equal(test_rows[:, 0, -1], ds.y[dev_idx])


def test_split_dataset_keeps_the_classifier_split():
    from trainers.data import cv_folds, split_test

    ds = load_dataset({"name": "breast_cancer"})
    dev, test, folds = split_dataset(ds, 0.2, 3, seed=4)
    dev2, test2 = split_test(ds.y, 0.2, 4)
    assert np.array_equal(dev, dev2) and np.array_equal(test, test2)
    for (a, b), (c, d) in zip(folds, cv_folds(ds.y[dev2], 3, 4)):
        assert np.array_equal(a, c) and np.array_equal(b, d)


# ---------------------------------------------------------------- the model under compression

MODEL = {"name": "seqrec", "d_model": 16, "width": 1.0, "heads": 2, "blocks": 1, "ffn_mult": 2.0, "max_len": 8,
         "dropout": 0.1, "side_features": True}
TRAIN = {"optimizer": "adam", "lr": 0.01, "weight_decay": 0.0, "epochs": 2, "batch_size": 32, "threads": 1}
SETTINGS = {
    "fp32": {},
    "uniform-4-prune-neurons": {"prune": {"ratio": 0.5}, "neurons": {"ratio": 0.25},
                                "quant": {"scheme": "uniform", "bits": 4}},
    "fixed_point-6-gradual": {"prune": {"ratio": 0.3, "schedule": "gradual"},
                              "quant": {"scheme": "fixed_point", "bits": 6}},
    "uniform-2-learn_step": {"quant": {"scheme": "uniform", "bits": 2, "learn_step": True}},
    "binary": {"quant": {"scheme": "binary"}},
    "ternary": {"quant": {"scheme": "ternary", "threshold": 0.7}},
}


@pytest.fixture(scope="module")
def shop():
    ds = load_dataset(TINY_SHOP)
    dev, test, _ = split_dataset(ds, None, 2, seed=0)
    return ds, dev, test


def fit(shop, setting: str):
    from trainers.pipeline import fit_compressed

    ds, dev, _ = shop
    cfg = {"data": TINY_SHOP, "model": MODEL, "train": TRAIN, "device": "cpu", "n_classes": ds.n_classes,
           "compress": {"finetune_epochs": 1, **copy.deepcopy(SETTINGS[setting])}}
    return fit_compressed(cfg, ds.X[dev], ds.y[dev], seed=0)[0]


@pytest.mark.parametrize("setting", list(SETTINGS))
def test_seqrec_pack_load_gives_identical_scores_and_requested_bits(shop, setting, tmp_path):
    ds, _, test = shop
    model = fit(shop, setting)
    X = torch.from_numpy(ds.X[test])
    size = artifact.save(model, tmp_path / "m.sqz")
    assert size == len(artifact.pack(model)) == (tmp_path / "m.sqz").stat().st_size
    loaded = artifact.load(tmp_path / "m.sqz")
    with torch.no_grad():
        expected, got = model(X), loaded(X)
    assert got.shape == (len(X), ds.n_classes) and torch.isfinite(got).all()
    assert torch.equal(expected, got)
    assert artifact.pack(loaded) == artifact.pack(model)

    quant = SETTINGS[setting].get("quant", {"scheme": "none"})
    entries = {e["name"]: e for e in artifact.read_header(tmp_path / "m.sqz")["tensors"]}
    for name in ("net.item_emb.weight", "net.side_emb.0.weight", "net.user_emb.0.weight", "net.pos_emb.weight",
                 "net.blocks.0.attn.q.weight", "net.blocks.0.ffn.fc1.weight"):
        entry = entries[name]
        if quant["scheme"] == "none":
            assert entry["scheme"] == "fp32"
            continue
        assert entry["scheme"] == quant["scheme"]
        assert entry["bits"] == quant.get("bits", 1)
    table = loaded.net.item_emb.weight                                      # per-row quantization
    levels = 2 ** quant.get("bits", 1) + (1 if quant["scheme"] == "ternary" else 0)
    if quant["scheme"] != "none":
        assert max(len(torch.unique(row)) for row in table) <= levels + 1    # + the pruned zeros
    if setting == "uniform-4-prune-neurons":
        assert loaded.net.spec()["ffn_hidden"] == [24]                     # 32 FFN units, 25% removed
        assert float((table == 0).float().mean()) == pytest.approx(0.5, abs=0.02)


def test_seqrec_run_fold_scores_hr_and_ndcg_on_the_loaded_model(shop, tmp_path):
    from trainers.pipeline import run_fold

    ds, dev, _ = shop
    X, y = ds.X[dev], ds.y[dev]
    cfg = {"data": {**TINY_SHOP, "top_k": 5}, "model": MODEL, "train": TRAIN, "device": "cpu",
           "n_classes": ds.n_classes, "compress": {"finetune_epochs": 0, "quant": {"scheme": "uniform", "bits": 8}},
           "latency": {"threads": 1, "batch_size": 1, "warmup": 2, "repeats": 5, "throughput_batch": 16}}
    result = run_fold(cfg, X[:40], y[:40], X[40:], y[40:], seed=0, artifact_path=tmp_path / "f.sqz")
    assert 0.0 <= result.ndcg <= result.accuracy <= 1.0
    assert result.size_bytes == (tmp_path / "f.sqz").stat().st_size and result.latency_ms > 0
    assert result.latency_protocol["batch_size"] == 1
    assert "ndcg" in result.metrics()


def test_seqrec_without_side_features_reads_only_item_ids(shop):
    from trainers.models import build_net, net_spec_from_config

    ds, _, test = shop
    spec = net_spec_from_config({**MODEL, "side_features": False, "width": 1.5}, [3, 10], ds.n_classes, [10, 20])
    assert spec["side_vocab"] == [] and spec["d_model"] == 24 and spec["max_len"] == 8
    net = build_net(spec).eval()
    X = torch.from_numpy(ds.X[test])
    shuffled = X.clone()
    shuffled[:, 1:] = torch.randint(1, 5, shuffled[:, 1:].shape)
    assert torch.equal(net(X), net(shuffled))


# ---------------------------------------------------------------- config


def test_seqrec_configs_and_spaces_validate():
    from search.config import compose
    from search.space import parse_space
    from search.validate import validate_config, validate_space

    for overrides in (["data=ecommerce", "model=seqrec"], ["data=ecommerce", "model=seqrec", "space=seqrec"],
                      ["data=interactions", "data.path=u.data", "model=seqrec", "space=seqrec"]):
        cfg = compose(overrides)
        validate_config(cfg)
        validate_space(cfg, parse_space(cfg.space))
    for overrides, fragment in ((["data=ecommerce"], "must be seqrec for data=ecommerce"),
                                (["model=seqrec"], "must be mlp or cnn for data=digits"),
                                (["data=ecommerce", "model=seqrec", "data.top_k=0"], "integer >= 1")):
        with pytest.raises(InputError, match=fragment):
            validate_config(compose(overrides))


# ---------------------------------------------------------------- the study, end to end


@pytest.mark.slow
def test_tiny_recommender_study_records_hr_and_ndcg(tmp_path):
    cmd = [sys.executable, "-m", "search.sweep", "data=ecommerce", "model=seqrec", "space=seqrec",
           "study.n_trials=2", "cv.folds=2", "data.n_users=80", "data.n_items=40", "data.max_len=10",
           "compress.finetune_epochs=1", "latency.repeats=5", "latency.warmup=2", "latency.throughput_batch=16",
           "study.name=rec", f"mlflow.tracking_uri=sqlite:///{tmp_path}/m.db",
           f"mlflow.artifact_location={tmp_path}/art", f"study.storage=sqlite:///{tmp_path}/o.db"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/m.db")
    exp = client.get_experiment_by_name("squeeze")
    (parent,) = client.search_runs([exp.experiment_id], filter_string="tags.role = 'study'")
    for key in ("reference_accuracy", "reference_ndcg", "popularity_hr", "popularity_ndcg"):
        assert key in parent.data.metrics, key
    trials = client.search_runs([exp.experiment_id], filter_string="tags.role = 'trial'")
    assert len(trials) == 2
    for run in trials:
        assert run.data.tags["state"] == "COMPLETE", run.data.tags.get("error")
        assert {"accuracy", "ndcg", "size_bytes", "latency_ms"} <= set(run.data.metrics)
        assert 0 <= run.data.metrics["ndcg"] <= run.data.metrics["accuracy"] <= 1


# ---------------------------------------------------------------- train.loss: full or sampled softmax


def _new_seqrec(X: torch.Tensor, n_classes: int, seed: int) -> torch.nn.Module:
    """A fresh seqrec (MODEL, with user features) for ecommerce rows ``X``, built the way fit_base builds it."""
    from trainers.fit import seed_everything
    from trainers.models import build_net, net_spec_from_config

    seed_everything(seed)
    vocab = [int(X[:, c].max()) for c in range(1, X.shape[1])]
    n_side = X.shape[1] - 1 - 4                                                 # 4 user channels (ecommerce)
    return build_net(net_spec_from_config({**MODEL, "user_features": True}, list(X.shape[1:]), n_classes,
                                          vocab[:n_side], vocab[n_side:]))


def _trained_seqrec(X: torch.Tensor, y: torch.Tensor, n_classes: int, train_cfg: dict, seed: int):
    """:func:`_new_seqrec` trained by :func:`trainers.fit.train` on rows ``X, y``."""
    from trainers.fit import train

    net = _new_seqrec(X, n_classes, seed)
    train(net, X, y, train_cfg, seed, device="cpu")
    return net


def _reference_full_softmax_training(X, y, n_classes, train_cfg, seed):
    """An oracle: the training loop and next-item loss as written before ``train.loss`` existed."""
    import torch.nn.functional as F

    net = _new_seqrec(X, n_classes, seed)
    threads = torch.get_num_threads()
    torch.set_num_threads(train_cfg["threads"])
    optimizer = torch.optim.Adam(net.parameters(), lr=train_cfg["lr"], weight_decay=train_cfg["weight_decay"],
                                 fused=True)   # as trainers.fit.make_optimizer builds it
    generator, bs = torch.Generator().manual_seed(seed), train_cfg["batch_size"]
    net.train()
    for _ in range(train_cfg["epochs"]):
        order = torch.randperm(len(X), generator=generator)
        for start in range(0, len(X), bs):
            xb, yb = X[order[start:start + bs]], y[order[start:start + bs]]
            h = net.encode(xb) + net.user_state(xb)[:, None]
            items = xb[:, 0, -h.shape[1]:]
            targets = torch.cat([items[:, 1:], yb[:, None]], dim=1)
            real = items > 0
            loss = F.cross_entropy(h[real] @ net.item_emb.weight.T, targets[real])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    torch.set_num_threads(threads)
    return net.eval()


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def shop_rows(shop):
    ds, dev, test = shop
    return (torch.from_numpy(ds.X[dev]), torch.from_numpy(ds.y[dev]), torch.from_numpy(ds.X[test]),
            torch.from_numpy(ds.y[test]), ds.n_classes)


def test_full_loss_trains_bit_identical_weights_to_the_loss_before_train_loss(shop_rows):
    X, y, _, _, n_classes = shop_rows
    default = _trained_seqrec(X, y, n_classes, TRAIN, seed=3)                               # no train.loss key
    full = _trained_seqrec(X, y, n_classes, {**TRAIN, "loss": "full", "negatives": 7}, seed=3)
    oracle = _reference_full_softmax_training(X, y, n_classes, TRAIN, seed=3)
    assert _same_weights(default, full) and _same_weights(full, oracle)


def test_sampled_loss_is_seeded_by_the_training_seed(shop_rows):
    X, y, _, _, n_classes = shop_rows
    sampled = {**TRAIN, "loss": "sampled", "negatives": 8}
    a = _trained_seqrec(X, y, n_classes, sampled, seed=0)
    b = _trained_seqrec(X, y, n_classes, sampled, seed=0)
    assert _same_weights(a, b)
    assert not _same_weights(a, _trained_seqrec(X, y, n_classes, sampled, seed=1))
    assert not _same_weights(a, _trained_seqrec(X, y, n_classes, {**TRAIN, "loss": "full"}, seed=0))


def test_sampled_softmax_ranks_nearly_as_well_as_the_full_softmax():
    """On the default shop (200 items) 16 uniform negatives per batch learn the sequence: far above the
    popularity ranking, within a few points of the full softmax (HR@10 over all items, test rows)."""
    from trainers.ranking import rank_model

    ds = load_dataset({"name": "ecommerce", "max_len": 10})
    dev, test, _ = split_dataset(ds, None, 2, seed=0)
    X, y = torch.from_numpy(ds.X[dev]), torch.from_numpy(ds.y[dev])
    Xt, yt = torch.from_numpy(ds.X[test]), torch.from_numpy(ds.y[test])
    popularity = rank_popularity(ds.X[dev], ds.y[dev], ds.X[test], ds.y[test], ds.n_classes, 10)["hr"]
    cfg = {**TRAIN, "epochs": 12}
    full = rank_model(_trained_seqrec(X, y, ds.n_classes, cfg, seed=0), Xt, yt, 10)["hr"]
    sampled = rank_model(_trained_seqrec(X, y, ds.n_classes, {**cfg, "loss": "sampled", "negatives": 16}, seed=0),
                         Xt, yt, 10)["hr"]
    assert sampled > 1.5 * popularity and sampled > full - 0.08, (popularity, full, sampled)


def test_sampled_softmax_masks_accidental_hits():
    from trainers.models.seqrec import sampled_softmax_loss

    pos = torch.tensor([1.0, 0.5])
    neg = torch.tensor([[50.0, 2.0, 50.0],        # event 0: negatives 0 and 2 are its target (item 4)
                        [0.0, -1.0, 3.0]])        # event 1 (target 9): no hit
    negatives, targets = torch.tensor([4, 7, 4]), torch.tensor([4, 9])
    expected = (-torch.log_softmax(torch.tensor([1.0, 2.0]), 0)[0]
                - torch.log_softmax(torch.tensor([0.5, 0.0, -1.0, 3.0]), 0)[0]) / 2
    loss = sampled_softmax_loss(pos, neg, targets, negatives)
    assert torch.allclose(loss, expected) and torch.isfinite(loss)
    # the logQ correction: a constant log q cancels (uniform sampling); a per-item one shifts each logit
    assert torch.allclose(sampled_softmax_loss(pos, neg, targets, negatives, torch.full((10,), -2.3)), expected)
    log_q = torch.zeros(10)
    log_q[7] = 1.0
    shifted = (-torch.log_softmax(torch.tensor([1.0, 1.0]), 0)[0]
               - torch.log_softmax(torch.tensor([0.5, 0.0, -2.0, 3.0]), 0)[0]) / 2
    assert torch.allclose(sampled_softmax_loss(pos, neg, targets, negatives, log_q), shifted)


def test_negatives_are_drawn_from_items_never_padding_and_seeded():
    from trainers.models.seqrec import draw_negatives

    a = draw_negatives(5, 2000, torch.Generator().manual_seed(0))
    assert a.min() == 1 and a.max() == 5 and len(a) == 2000
    assert torch.equal(a, draw_negatives(5, 2000, torch.Generator().manual_seed(0)))


def test_train_loss_options_are_checked_by_the_trainer():
    from trainers.fit import loss_options

    net, g = torch.nn.Linear(3, 2), torch.Generator()
    assert loss_options(net, {}, g) == {} and loss_options(net, {"loss": "full", "negatives": 0}, g) == {}
    for cfg, message in (({"loss": "foo"}, r"^train.loss: must be one of full\|sampled, got 'foo'"),
                         ({"loss": "sampled", "negatives": 0}, r"^train.negatives: must be an integer >= 1, got 0"),
                         ({"loss": "sampled"}, r"^train.loss: must be full for a classifier")):
        with pytest.raises(InputError, match=message):
            loss_options(net, cfg, g)


def test_sampled_loss_config_validates_for_seqrec_only():
    from search.config import compose
    from search.validate import validate_config

    validate_config(compose(["data=ecommerce", "model=seqrec", "train.loss=sampled", "train.negatives=64"]))
    with pytest.raises(InputError, match=r"^train.loss: must be full unless model.name is seqrec .*got 'sampled'"):
        validate_config(compose(["train.loss=sampled"]))                        # data=digits, model=mlp


# ---------------------------------------------------------------- the fine-tune's cost: one table per step


class _CountReads(torch.nn.Module):
    """An identity parametrization that counts how often the weight it sits on is computed."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return w


@pytest.mark.parametrize("loss", [{}, {"loss": "sampled", "negatives": 8}], ids=["full", "sampled"])
def test_training_loss_computes_a_parametrized_item_table_once(shop_rows, loss):
    """The input embedding and the scores share one read of ``item_emb.weight``: during the compression
    fine-tune that read is ``Q(w * mask) * mask`` over the whole table, and a second read doubled the cost of
    a step at 20,000 items."""
    from torch.nn.utils import parametrize

    from trainers.fit import loss_options

    X, y, _, _, n_classes = shop_rows
    net = _new_seqrec(X, n_classes, seed=0)
    counter = _CountReads()
    parametrize.register_parametrization(net.item_emb, "weight", counter)
    counter.calls = 0                                              # registering checks the parametrization once
    kwargs = loss_options(net, {**TRAIN, **loss}, torch.Generator().manual_seed(0))
    net.training_loss(X[:16], y[:16], **kwargs).backward()
    assert counter.calls == 1
    assert net.item_emb.parametrizations.weight.original.grad is not None


@pytest.mark.parametrize("loss", [{}, {"loss": "sampled", "negatives": 8}], ids=["full", "sampled"])
def test_finetune_quantizes_the_item_table_once_per_step(shop_rows, monkeypatch, loss):
    """Through :func:`trainers.compress.compress`: during the fine-tune the uniform quantizer runs over the item
    table exactly once per optimizer step."""
    import trainers.compress._pipeline as pipeline
    from trainers.compress.quantize import Uniform

    X, y, _, _, n_classes = shop_rows
    net = _new_seqrec(X, n_classes, seed=0)
    table_shape = tuple(net.item_emb.weight.shape)
    reads, finetune = [], {}
    fake, train = Uniform.fake, pipeline.train

    def counting_fake(self, w, mask=None):
        if finetune and tuple(w.shape) == table_shape:
            reads.append(1)
        return fake(self, w, mask)

    def counting_train(*args, **kwargs):
        finetune["on"] = True
        finetune.update(train(*args, **kwargs))
        return finetune

    monkeypatch.setattr(Uniform, "fake", counting_fake)
    monkeypatch.setattr(pipeline, "train", counting_train)
    pipeline.compress(net, X, y, {"finetune_epochs": 2, "quant": {"scheme": "uniform", "bits": 4}},
                      {**TRAIN, **loss}, seed=0, device="cpu")
    assert finetune["steps"] == 2 * math.ceil(len(X) / TRAIN["batch_size"])
    assert len(reads) == finetune["steps"]
