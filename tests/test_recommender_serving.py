"""The recommender in use (issue 13): its own search space, user profiles in the model and the artifact, and
top-k serving from an event log (``python -m search.predict``, the MLflow pyfunc) checked against the
in-process ranking of :mod:`trainers.ranking`."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn import functional as F

from trainers import artifact
from trainers.data import load_dataset, split_dataset
from trainers.data._ecommerce import USER_FEATURES, generate_histories
from trainers.ranking import rank_model, ranking_metrics, target_ranks, top_items

ROOT = Path(__file__).resolve().parents[1]
#: max_len >= max_events: a user's window is the whole history, so "not interacted with" = not in the window
SHOP = {"name": "ecommerce", "n_users": 80, "n_items": 40, "max_len": 12, "min_events": 5, "max_events": 10}
MODEL = {"name": "seqrec", "d_model": 16, "width": 1.0, "heads": 2, "blocks": 1, "ffn_mult": 2.0, "max_len": 12,
         "dropout": 0.0, "side_features": True, "user_features": True}
TRAIN = {"optimizer": "adam", "lr": 0.01, "weight_decay": 0.0, "epochs": 3, "batch_size": 32, "threads": 1}
LATENCY = {"threads": 1, "batch_size": 1, "warmup": 1, "repeats": 3, "throughput_batch": 8}
K = 5


# ---------------------------------------------------------------- item 5: the right space


def space_keys(overrides: list[str]) -> set[str]:
    from search.config import compose
    from search.space import parse_space
    from search.validate import validate_config, validate_space

    cfg = compose(overrides)
    validate_config(cfg)
    params = parse_space(cfg.space)
    validate_space(cfg, params)
    return {p.key for p in params}


def test_seqrec_study_without_space_searches_the_seqrec_space():
    seqrec = space_keys(["data=ecommerce", "model=seqrec", "space=seqrec"])
    assert {"model.d_model", "model.heads", "model.blocks", "model.max_len"} <= seqrec
    assert space_keys(["data=ecommerce", "model=seqrec"]) == seqrec
    assert space_keys(["model=seqrec", "data=interactions", "data.path=u.data"]) == seqrec   # any order


def test_an_explicit_space_still_wins_and_other_models_keep_the_joint_default():
    compress_only = space_keys(["space=compress_only"])
    assert space_keys(["data=ecommerce", "model=seqrec", "space=compress_only"]) == compress_only
    assert "model.d_model" not in space_keys([]) and space_keys([]) == space_keys(["space=joint"])


# ---------------------------------------------------------------- item 1: user profiles


def test_shop_users_carry_their_profile_on_every_event():
    histories, _ = generate_histories(SHOP)
    for h in histories:
        assert h.shape[1] == 3 + len(USER_FEATURES) and (h[:, 3:] == h[0, 3:]).all()
        assert 1 <= h[0, 3] <= 5 and list(h[0, 4:]) == sorted(h[0, 4:])         # age band, sorted interests
    ds = load_dataset(SHOP)
    assert ds.feature_names[3:] == [f"user:{n}" for n in USER_FEATURES]


def test_user_features_enter_the_model_and_can_be_switched_off():
    from trainers.models import build_net, net_spec_from_config

    ds = load_dataset(SHOP)
    vocab = [int(ds.X[:, c].max()) for c in range(1, ds.X.shape[1])]
    spec = net_spec_from_config(MODEL, [7, 12], ds.n_classes, vocab[:2], vocab[2:])
    assert spec["user_vocab"] == vocab[2:] and spec["side_vocab"] == vocab[:2]
    net = build_net(spec).eval()
    for emb in net.user_emb:
        torch.nn.init.normal_(emb.weight)
    X = torch.from_numpy(ds.X[:10])
    other = X.clone()
    other[:, 3:, -1] = 1 + (other[:, 3:, -1] % 3)                                # another profile
    assert not torch.allclose(net(X), net(other))
    off = net_spec_from_config({**MODEL, "user_features": False}, [7, 12], ds.n_classes, vocab[:2], vocab[2:])
    assert off["user_vocab"] == []
    net_off = build_net(off).eval()
    assert torch.equal(net_off(X), net_off(other))


def test_interactions_user_file_becomes_user_channels(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("user,item,timestamp\na,x,1\na,y,2\na,z,3\nb,z,1\nb,x,2\nb,w,3\nc,x,1\nc,y,2\nc,w,3\n")
    users = tmp_path / "users.csv"
    users.write_text("user,gender,age\na,f,30\nb,m,\n")                            # c is not listed
    cfg = {"name": "interactions", "path": str(log), "min_events": 3, "max_len": 3, "user_features": str(users)}
    ds = load_dataset(cfg)
    assert ds.feature_names == ["item", "user:gender", "user:age"]
    assert ds.serving["user_features"] == {"gender": ["f", "m"], "age": ["30"]}
    test = ds.X[ds.heldout]                                                     # users a, b, c
    assert test[:, 1, -1].tolist() == [1, 2, 0] and test[:, 2, -1].tolist() == [1, 0, 0]
    from trainers.data._sequence import user_channels

    assert user_channels(cfg) == 2 and user_channels({"name": "interactions", "path": str(log)}) == 0


# ---------------------------------------------------------------- item 2: top-k serving


def test_top_items_are_ranked_as_target_ranks_ranks_them():
    scores = torch.tensor([[0.0, 0.5, 0.9, 0.5, 0.1, 0.7], [9.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
    seen = torch.tensor([[2, 0], [1, 5]])
    top = top_items(scores, seen, 3)
    assert top.tolist() == [[5, 1, 3], [2, 3, 4]]                  # ties by the smaller id, seen items skipped
    for r in range(3):
        assert target_ranks(scores, top[:, r], seen).tolist() == [r, r]
    assert top_items(scores, seen, 10).tolist() == [[5, 1, 3, 4, 0], [2, 3, 4, 0, 0]]   # fewer candidates: 0s


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A shop exported as event/item/user CSVs, loaded back as data=interactions, one model trained and
    shipped with the final fit's meta, and the log that holds every user's events but the last."""
    from search.final import final_meta
    from trainers.pipeline import run_fold

    tmp = tmp_path_factory.mktemp("serve")
    histories, table = generate_histories(SHOP)
    events = pd.DataFrame([(f"u{u}", f"item{e[0]}", t) for u, h in enumerate(histories) for t, e in enumerate(h)],
                          columns=["user", "item", "timestamp"])
    events.to_csv(tmp / "events.csv", index=False)
    pd.DataFrame({"item": [f"item{i + 1}" for i in range(SHOP["n_items"])], "category": table["category"],
                  "brand": table["brand"]}).to_csv(tmp / "items.csv", index=False)
    profiles = pd.DataFrame([(f"u{u}", *map(str, h[0, 3:])) for u, h in enumerate(histories)],
                            columns=["user", *USER_FEATURES])
    profiles.to_csv(tmp / "users.csv", index=False)
    data = {"name": "interactions", "path": str(tmp / "events.csv"), "format": "csv", "min_events": 3,
            "max_len": SHOP["max_len"], "item_features": str(tmp / "items.csv"),
            "user_features": str(tmp / "users.csv"), "top_k": K}
    ds = load_dataset(data)
    dev, test, _ = split_dataset(ds, None, 2, seed=0)
    cfg = {"data": data, "model": MODEL, "train": TRAIN, "device": "cpu", "n_classes": ds.n_classes,
           "latency": LATENCY, "compress": {"finetune_epochs": 1, "prune": {"ratio": 0.3},
                                            "quant": {"scheme": "uniform", "bits": 6}}}
    record = SimpleNamespace(study_name="serve", trial_number=0, run_id="r0")
    path = tmp / "model.sqz"
    result = run_fold(cfg, ds.X[dev], ds.y[dev], ds.X[test], ds.y[test], seed=0, artifact_path=path,
                      meta=final_meta(record, ds, "fp32_dense"), runtime="fp32_dense")
    # the log a user would send: every event but the held-out last one (so the rows are the test rows)
    last = events.groupby("user").cumcount(ascending=False) == 0
    events[~last].to_csv(tmp / "history.csv", index=False)
    return SimpleNamespace(ds=ds, dev=dev, test=test, path=path, tmp=tmp, hr=result.accuracy, events=events[~last],
                           cfg=cfg)


def rows_of(top: pd.DataFrame) -> dict[str, list[str]]:
    return {u: list(g.sort_values("rank")["item"]) for u, g in top.groupby("user", sort=False)}


def test_predict_writes_top_k_unseen_items_as_the_in_process_ranking(served, capsys):
    from search import predict

    out = served.tmp / "top.csv"
    code = predict.main([f"model={served.path}", "data=interactions", f"data.path={served.tmp / 'history.csv'}",
                         f"data.user_features={served.tmp / 'users.csv'}", f"top_k={K}", f"out={out}"])
    assert code == 0, capsys.readouterr().err
    top = pd.read_csv(out, dtype=str)
    assert list(top.columns) == ["user", "rank", "item"]
    ds, test = served.ds, served.test
    users = [f"u{u}" for u in range(SHOP["n_users"])]
    got = rows_of(top)
    assert sorted(got) == sorted(users) and all(len(v) == K for v in got.values())
    # in process: the loaded model on the dataset's test rows (= these histories), trainers.ranking's order
    loaded = artifact.load(served.path)
    X = torch.from_numpy(ds.X[test])
    with torch.no_grad():
        scores = loaded(X)
    ids = top_items(scores, X[:, 0], K)
    names = np.asarray(ds.classes, dtype=object)
    user_of_row = sorted(users)                                # the loader's order (ids are not numbers: as text)
    for row, user in enumerate(user_of_row):
        assert got[user] == list(names[ids[row].numpy()]), user
        seen = set(served.events.loc[served.events["user"] == user, "item"])
        assert not seen & set(got[user])                                         # never an item already had
    # HR@k of the file = the artifact's test HR@k (the windows hold the whole histories)
    truth = dict(zip(user_of_row, names[ds.y[test]]))
    hits = np.mean([truth[u] in got[u] for u in user_of_row])
    assert hits == pytest.approx(rank_model(loaded, X, torch.from_numpy(ds.y[test]), K)["hr"]) == served.hr
    ranks = target_ranks(scores, torch.from_numpy(ds.y[test]), X[:, 0])
    assert ranking_metrics(ranks, K)["hr"] == pytest.approx(hits)


def test_predict_stdout_short_and_unknown_users_still_get_k_items(served, capsys):
    from search import predict

    log = served.tmp / "few.csv"
    log.write_text("user,item,timestamp\nnew,item3,1\nghost,unknown-item,1\nu1,item1,5\nu1,item2,6\n")
    code = predict.main([f"model={served.path}", "data=interactions", f"data.path={log}", "top_k=7"])
    out = capsys.readouterr().out
    assert code == 0
    top = pd.read_csv(pd.io.common.StringIO(out), dtype=str)
    got = rows_of(top)
    assert sorted(got) == ["ghost", "new", "u1"] and all(len(v) == 7 for v in got.values())
    assert "item3" not in got["new"] and not {"item1", "item2"} & set(got["u1"])
    assert top["rank"].tolist()[:7] == [str(r) for r in range(1, 8)]


def test_predict_errors_name_the_key(served, capsys):
    from search import predict

    assert predict.main([f"model={served.path}", "data=csv", f"data.path={served.tmp / 'history.csv'}"]) == 2
    assert "data: a recommender reads an event log" in capsys.readouterr().err
    assert predict.main([f"model={served.path}", "data=interactions", "top_k=0"]) == 2
    assert "top_k: must be an integer >= 1" in capsys.readouterr().err


def test_pyfunc_recommends_what_predict_recommends(served, capsys):
    from search import predict
    from search.pyfunc import SqueezeModel

    model = SqueezeModel()
    model.load_context(SimpleNamespace(artifacts={"model": str(served.path)}))
    events = served.events.merge(pd.read_csv(served.tmp / "users.csv", dtype=str), on="user")
    top = model.predict(None, events, params={"top_k": K})
    assert list(top.columns) == ["user", "rank", "item"]
    out = served.tmp / "cli.csv"
    assert predict.main([f"model={served.path}", "data=interactions", f"data.path={served.tmp / 'history.csv'}",
                         f"data.user_features={served.tmp / 'users.csv'}", f"top_k={K}", f"out={out}"]) == 0
    assert rows_of(top) == rows_of(pd.read_csv(out, dtype=str))
    # without the profile columns the users are unknown (0): still k items each
    plain = model.predict(None, served.events, params={"top_k": 3})
    assert plain.groupby("user").size().eq(3).all()


def test_artifact_meta_holds_the_serving_tables(served):
    meta = artifact.load(served.path).meta
    assert meta["feature_names"] == ["item", "category", "brand", *(f"user:{n}" for n in USER_FEATURES)]
    assert set(meta["sequence"]) == {"item_features", "user_features"}
    assert len(meta["sequence"]["item_features"]["category"]) == SHOP["n_items"] + 1
    spec = artifact.read_header(served.path)["arch"]["net"]
    assert len(spec["user_vocab"]) == len(USER_FEATURES)
    names = {e["name"]: e for e in artifact.read_header(served.path)["tensors"]}
    assert names["net.user_emb.0.weight"]["scheme"] == "uniform"                 # compressed like any table


# ---------------------------------------------------------------- a low-rank item table, served factored

#: factored and dense scores differ by float rounding only (sums in another order): at most this, absolute
SCORE_TOL = 1e-4


@pytest.fixture(scope="module")
def factored(served):
    """The same shop with the item table stored as rank-8 factors of 4 bits, scored and shipped on torchscript."""
    from search.final import final_meta
    from trainers.pipeline import run_fold

    ds = served.ds
    cfg = {**served.cfg, "compress": {"finetune_epochs": 1, "lowrank": {"rank": 8},
                                      "quant": {"scheme": "uniform", "bits": 4}}}
    record = SimpleNamespace(study_name="serve", trial_number=1, run_id="r1")
    path = served.tmp / "factored.sqz"
    result = run_fold(cfg, ds.X[served.dev], ds.y[served.dev], ds.X[served.test], ds.y[served.test], seed=0,
                      artifact_path=path, meta=final_meta(record, ds, "torchscript"), runtime="torchscript")
    return SimpleNamespace(path=path, hr=result.accuracy)


def test_predict_ranks_a_factored_table_as_it_was_scored(served, factored):
    """``search.predict`` serves the factored file on its recorded runtime, which scores from the two factors:
    its top-k is that runtime's, the HR@k of its lists is the file's scored HR@k, and the lists are the dense
    table's up to near ties (the item ranked ``i``-th has a dense score within ``2 SCORE_TOL`` of the ``i``-th
    best)."""
    from search import predict
    from trainers.compress.lowrank import Factored
    from trainers.measure import build_runtime

    loaded = artifact.load(factored.path)
    assert isinstance(loaded.encodings["net.item_emb.weight"], Factored)
    out = served.tmp / "factored_top.csv"
    assert predict.main([f"model={factored.path}", "data=interactions", f"data.path={served.tmp / 'history.csv'}",
                         f"data.user_features={served.tmp / 'users.csv'}", f"top_k={K}", f"out={out}"]) == 0
    got = rows_of(pd.read_csv(out, dtype=str))
    X = torch.from_numpy(served.ds.X[served.test])
    with torch.no_grad():
        scores = build_runtime(loaded, "torchscript", X[:1])(X)
        dense = loaded(X)                                                    # the decoded dense table
    assert float((scores - dense).abs().max()) <= SCORE_TOL
    names = np.asarray(served.ds.classes, dtype=object)
    users = sorted(f"u{u}" for u in range(SHOP["n_users"]))
    ids, dense_ids = top_items(scores, X[:, 0], K), top_items(dense, X[:, 0], K)
    for row, user in enumerate(users):
        assert got[user] == list(names[ids[row].numpy()]), user
    gap = dense.gather(1, ids) - dense.gather(1, dense_ids)
    assert float(gap.abs().max()) <= 2 * SCORE_TOL
    truth = dict(zip(users, names[served.ds.y[served.test]]))
    assert np.mean([truth[u] in got[u] for u in users]) == pytest.approx(factored.hr)


def test_pyfunc_and_a_file_without_a_runtime_rank_a_factored_table_as_predict(served, factored):
    from search import predict
    from search.pyfunc import SqueezeModel
    from trainers.measure import factored_scores

    model = SqueezeModel()
    model.load_context(SimpleNamespace(artifacts={"model": str(factored.path)}))
    events = served.events.merge(pd.read_csv(served.tmp / "users.csv", dtype=str), on="user")
    top = model.predict(None, events, params={"top_k": K})
    out = served.tmp / "factored_cli.csv"
    assert predict.main([f"model={factored.path}", "data=interactions", f"data.path={served.tmp / 'history.csv'}",
                         f"data.user_features={served.tmp / 'users.csv'}", f"top_k={K}", f"out={out}"]) == 0
    assert rows_of(top) == rows_of(pd.read_csv(out, dtype=str))
    loaded = artifact.load(factored.path)                       # no runtime recorded: fp32_dense, still factored
    X = torch.from_numpy(served.ds.X[served.test])
    with torch.no_grad():
        assert torch.equal(predict.runtime_model(loaded, None, X[:1])(X), factored_scores(loaded)(X))


@pytest.mark.slow
def test_logged_pyfunc_takes_top_k_as_a_param(served, tmp_path):
    import mlflow

    from search.pyfunc import log_pyfunc

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/m.db")
    experiment = mlflow.create_experiment("serving", artifact_location=(tmp_path / "art").as_uri())
    with mlflow.start_run(experiment_id=experiment):
        info = log_pyfunc(served.path)
    top = mlflow.pyfunc.load_model(info.model_uri).predict(served.events, params={"top_k": 3})
    assert list(top.columns) == ["user", "rank", "item"] and top.groupby("user").size().eq(3).all()


# ---------------------------------------------------------------- serving computes the last position only


def _requests(n_items: int, side: list[int], user: list[int], rows: int = 48, length: int = 14) -> torch.Tensor:
    """Left-padded windows (some empty, some longer than max_len) with ids up to 2 above each vocab (unseen)."""
    g = torch.Generator().manual_seed(0)
    chans = [torch.randint(1, n_items + 1, (rows, 1, length), generator=g)]
    chans += [torch.randint(1, v + 3, (rows, 1, length), generator=g) for v in side]
    chans += [torch.randint(1, v + 3, (rows, 1, 1), generator=g).expand(rows, 1, length) for v in user]
    x = torch.cat(chans, dim=1)
    lengths = torch.randint(0, length + 1, (rows,), generator=g)
    lengths[:2] = torch.tensor([0, 1])                                          # an empty and a one-event window
    return x.masked_fill((torch.arange(length)[None] < (length - lengths)[:, None])[:, None], 0)


def _full_state_scores(net, x: torch.Tensor) -> torch.Tensor:
    """The scores from every position's state (``encode`` as training computes it), the last one taken after."""
    q = net.encode(x)[:, -1]
    u = net.user_state(x)
    q = q if u is None else q + u
    return q @ net.item_emb.weight.T if net.item_at is None else (q @ net.item_bt) @ net.item_at


@pytest.mark.parametrize("blocks", [1, 2])
@pytest.mark.parametrize("side,user", [([], []), ([4, 6], []), ([4, 6], [3, 5])])
@pytest.mark.parametrize("rank", [None, 3])
def test_forward_scores_from_the_last_position_as_the_full_state_does(blocks, side, user, rank):
    from trainers.compress.lowrank import factorize
    from trainers.models.seqrec import SeqRec

    torch.manual_seed(blocks)
    net = SeqRec(n_items=60, d_model=16, heads=2, ffn_hidden=[24] * blocks, max_len=10, dropout=0.3,
                 side_vocab=side, user_vocab=user).eval()
    for emb in net.user_emb:
        torch.nn.init.normal_(emb.weight)
    if rank:
        net.use_item_factors(*factorize(net.item_emb.weight.detach(), rank))
    x = _requests(60, side, user)
    with torch.no_grad():
        assert net.encode(x, last_only=True).shape == (len(x), 16) and net.encode(x).shape == (len(x), 10, 16)
        got, full = net(x), _full_state_scores(net, x)
    assert torch.allclose(got, full, atol=1e-5, rtol=1e-5)
    assert torch.equal(got.topk(10).indices, full.topk(10).indices)


def test_feature_lookups_in_one_stacked_table_sum_each_features_own_embedding():
    from trainers.models.seqrec import SeqRec

    net = SeqRec(n_items=30, d_model=8, max_len=6, side_vocab=[3, 5, 2], user_vocab=[4, 2])
    for emb in net.user_emb:
        torch.nn.init.normal_(emb.weight)
    x = _requests(30, [3, 5, 2], [4, 2], length=6)
    with torch.no_grad():
        side = sum(emb(torch.where(x[:, c] <= v, x[:, c], 0)) for c, (emb, v) in
                   enumerate(zip(net.side_emb, [3, 5, 2]), start=1))                 # one lookup per feature
        user = sum(emb(torch.where(x[:, c, -1] <= v, x[:, c, -1], 0)) for c, (emb, v) in
                   zip(range(4, 6), zip(net.user_emb, [4, 2])))
        item_pos = F.embedding(x[:, 0], net.item_emb.weight) * 8 ** 0.5 + net.pos_emb.weight
        net.blocks = torch.nn.ModuleList()                                        # the embeddings alone
        net.ln = torch.nn.Identity()
        net.dropout = torch.nn.Identity()
        assert torch.allclose(net.encode(x), (item_pos + side) * (x[:, :1, :] > 0).transpose(1, 2), atol=1e-6)
        assert torch.allclose(net.user_state(x), user, atol=1e-6)


def test_training_still_learns_from_every_position():
    """``training_loss`` is the cross-entropy of the next item at every position with an event: the last block
    computes all of them in training (only serving's forward cuts it to the last)."""
    from trainers.models.seqrec import SeqRec

    net = SeqRec(n_items=20, d_model=8, ffn_hidden=[8], max_len=6, dropout=0.0, side_vocab=[3], user_vocab=[2])
    x, y = _requests(20, [3], [2], rows=8, length=6), torch.randint(1, 21, (8,))
    h = net.encode(x) + net.user_state(x)[:, None]
    items = x[:, 0]
    targets = torch.cat([items[:, 1:], y[:, None]], dim=1)
    expected = F.cross_entropy(h[items > 0] @ net.item_emb.weight.T, targets[items > 0])
    assert torch.allclose(net.training_loss(x, y), expected)


def test_served_model_ranks_validation_rows_as_the_full_state_does(served, factored):
    from trainers.measure import factored_scores

    X = torch.from_numpy(served.ds.X[served.test])
    for path in (served.path, factored.path):
        net = factored_scores(artifact.load(path)).net
        with torch.no_grad():
            got, full = net(X), _full_state_scores(net, X)
        assert torch.allclose(got, full, atol=1e-5)
        assert torch.equal(top_items(got, X[:, 0], K), top_items(full, X[:, 0], K))
