"""Tests of trainers.data: loaders and their input errors, splits, and the preprocessor."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from trainers.data import Dataset, Preprocessor, check_dataset, cv_folds, load_dataset, split_test
from trainers.errors import InputError

# ---------------------------------------------------------------- helpers


def write_csv(tmp_path: Path, text: str, name: str = "table.csv") -> str:
    """Write ``text`` to a CSV file under ``tmp_path`` and return its path."""
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def write_npz(tmp_path: Path, **arrays: np.ndarray) -> str:
    """Save ``arrays`` into an .npz file under ``tmp_path`` and return its path."""
    path = tmp_path / "arrays.npz"
    np.savez(path, **arrays)
    return str(path)


def csv_cfg(path: str | None, target: str | None = "label") -> dict:
    """A ``data`` config for a CSV file."""
    return {"name": "csv", "path": path, "target": target, "test_size": 0.2}


def raises_input(where: str, fragment: str):
    """Context manager asserting an InputError at ``where`` whose problem contains ``fragment``."""
    return pytest.raises(InputError, match=rf"^{re.escape(where)}: .*{re.escape(fragment)}")


def toy(n_per_class: tuple[int, ...], n_features: int = 3, seed: int = 0) -> Dataset:
    """A tabular dataset with ``n_per_class[k]`` rows of class k."""
    y = np.repeat(np.arange(len(n_per_class)), n_per_class).astype(np.int64)
    X = np.random.default_rng(seed).normal(size=(len(y), n_features)).astype(np.float32)
    return Dataset(X=X, y=y, classes=[str(k) for k in range(len(n_per_class))], kind="tabular", name="toy")


# ---------------------------------------------------------------- built-in datasets


def test_digits_is_a_float32_image_dataset():
    ds = load_dataset({"name": "digits"})
    assert ds.kind == "image"
    assert ds.X.shape == (1797, 1, 8, 8) and ds.X.dtype == np.float32
    assert ds.y.dtype == np.int64 and set(np.unique(ds.y)) == set(range(10))
    assert ds.classes == [str(d) for d in range(10)]
    assert ds.n_classes == 10 and ds.input_shape == (1, 8, 8)


def test_breast_cancer_is_tabular_with_feature_names():
    ds = load_dataset({"name": "breast_cancer"})
    assert ds.kind == "tabular" and ds.X.shape == (569, 30) and ds.X.dtype == np.float32
    assert ds.classes == ["malignant", "benign"] and ds.n_classes == 2
    assert ds.feature_names is not None and len(ds.feature_names) == 30


def test_unknown_dataset_name():
    with raises_input("data", "'mnist'"):
        load_dataset({"name": "mnist"})


def test_loader_accepts_omegaconf_and_treats_missing_path_as_required():
    omegaconf = pytest.importorskip("omegaconf")
    cfg = omegaconf.OmegaConf.create({"name": "csv", "path": "???", "target": "???"})
    with raises_input("data.path", "is required"):
        load_dataset(cfg)


# ---------------------------------------------------------------- csv


def test_csv_string_target_is_mapped_to_sorted_class_ids(tmp_path):
    path = write_csv(tmp_path, "a,b,label\n1,2.5,dog\n3,4,cat\n5,6,dog\n7,8,bird\n")
    ds = load_dataset(csv_cfg(path))
    assert ds.kind == "tabular" and ds.name == "csv"
    assert ds.X.dtype == np.float32 and ds.X.shape == (4, 2)
    np.testing.assert_array_equal(ds.X[0], [1.0, 2.5])
    assert ds.classes == ["bird", "cat", "dog"]
    np.testing.assert_array_equal(ds.y, [2, 1, 2, 0])
    assert ds.feature_names == ["a", "b"]


def test_csv_numeric_target_sorts_numerically(tmp_path):
    path = write_csv(tmp_path, "x,label\n1,10\n2,2\n3,10\n")
    ds = load_dataset(csv_cfg(path))
    assert ds.classes == ["2", "10"]
    np.testing.assert_array_equal(ds.y, [1, 0, 1])


@pytest.mark.parametrize("missing", [None, "???"])
def test_csv_path_required(missing):
    with raises_input("data.path", "is required"):
        load_dataset(csv_cfg(missing))


def test_csv_target_required(tmp_path):
    path = write_csv(tmp_path, "a,label\n1,x\n")
    with raises_input("data.target", "is required"):
        load_dataset(csv_cfg(path, target="???"))


def test_csv_file_not_found(tmp_path):
    path = str(tmp_path / "nope.csv")
    with raises_input(path, "file not found"):
        load_dataset(csv_cfg(path))


def test_csv_empty_file(tmp_path):
    path = write_csv(tmp_path, "")
    with raises_input(path, "is empty"):
        load_dataset(csv_cfg(path))


def test_csv_header_without_rows(tmp_path):
    path = write_csv(tmp_path, "a,b,label\n")
    with raises_input(path, "no data rows"):
        load_dataset(csv_cfg(path))


def test_csv_target_column_absent_lists_columns(tmp_path):
    path = write_csv(tmp_path, "a,b,class\n1,2,x\n")
    with raises_input("data.target", "'label' is not in") as info:
        load_dataset(csv_cfg(path))
    assert "a, b, class" in info.value.problem


def test_csv_non_numeric_feature_names_column_and_value(tmp_path):
    path = write_csv(tmp_path, "a,colour,label\n1,2,x\n3,red,y\n")
    with raises_input(path, "feature column 'colour' is not numeric (line 3: 'red')"):
        load_dataset(csv_cfg(path))


@pytest.mark.parametrize("cell", ["", "inf", "-inf", "nan"])
def test_csv_missing_or_infinite_feature(tmp_path, cell):
    path = write_csv(tmp_path, f"a,b,label\n1,2,x\n3,{cell},y\n")
    with raises_input(path, "feature column 'b' has 1 missing or infinite value(s), first at line 3"):
        load_dataset(csv_cfg(path))


def test_csv_missing_target_value(tmp_path):
    path = write_csv(tmp_path, "a,label\n1,x\n2,\n3,y\n")
    with raises_input(path, "target column 'label' has 1 missing value(s), first at line 3"):
        load_dataset(csv_cfg(path))


def test_csv_without_feature_columns(tmp_path):
    path = write_csv(tmp_path, "label\nx\ny\n")
    with raises_input(path, "no feature columns"):
        load_dataset(csv_cfg(path))


# ---------------------------------------------------------------- csv as a user would expect (issue 10)


@pytest.mark.parametrize("sep", [";", "\t", "|", ","])
def test_csv_delimiter_is_detected(tmp_path, sep):
    path = write_csv(tmp_path, sep.join(["a", "b", "label"]) + "\n" + sep.join(["1.5", "2", "x"]) + "\n"
                     + sep.join(["3", "4", "y"]) + "\n")
    ds = load_dataset(csv_cfg(path))
    assert ds.feature_names == ["a", "b"] and ds.classes == ["x", "y"]
    np.testing.assert_array_equal(ds.X[0], [1.5, 2.0])


def test_csv_delimiter_detection_ignores_quoted_commas():
    from trainers.data._tabular import detect_delimiter

    assert detect_delimiter(['name;"x, y";label', '"a, b";1;c', '"d";2;e']) == ";"
    assert detect_delimiter(["only"]) == ","


@pytest.mark.parametrize("sep,written", [("semicolon", ";"), (";", ";"), ("tab", "\t"), ("\\t", "\t")])
def test_csv_explicit_sep(tmp_path, sep, written):
    path = write_csv(tmp_path, written.join(["a", "label"]) + "\n" + written.join(["1", "x"]) + "\n")
    ds = load_dataset({**csv_cfg(path), "sep": sep})
    assert ds.feature_names == ["a"]


def test_csv_bad_sep_names_the_key(tmp_path):
    path = write_csv(tmp_path, "a,label\n1,x\n")
    with raises_input("data.sep", "got '::'"):
        load_dataset({**csv_cfg(path), "sep": "::"})


def test_csv_wrong_explicit_sep_hints_at_the_real_one(tmp_path):
    path = write_csv(tmp_path, "a;label\n1;x\n")
    with raises_input("data.target", "set data.sep=';'"):
        load_dataset({**csv_cfg(path), "sep": ","})


def test_csv_pandas_index_column_is_dropped_with_a_notice(tmp_path, capsys):
    path = write_csv(tmp_path, ",a,label\n0,1.5,x\n1,2.5,y\n2,3.5,x\n")
    ds = load_dataset(csv_cfg(path))
    assert ds.feature_names == ["a"] and ds.X.shape == (3, 1)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("squeeze: note:") and "row index" in err[0]


def test_csv_unnamed_first_column_that_is_no_index_is_kept(tmp_path, capsys):
    path = write_csv(tmp_path, ",a,label\n0.5,1,x\n0.25,2,y\n")
    assert load_dataset(csv_cfg(path)).feature_names == ["Unnamed: 0", "a"]
    assert capsys.readouterr().err == ""


def test_csv_duplicate_column_names_are_refused(tmp_path):
    path = write_csv(tmp_path, "a,b,a,label\n1,2,3,x\n")
    with raises_input(path, "has two columns named 'a' (columns 0 and 2, 0-based): rename or drop one"):
        load_dataset(csv_cfg(path))


def test_csv_continuous_target_is_called_a_regression_target(tmp_path):
    rows = "".join(f"{i},{np.sin(i) * 3:.4f}\n" for i in range(40))
    path = write_csv(tmp_path, "a,label\n" + rows)
    with raises_input(path, "target column 'label' looks like a regression target (40 distinct non-integer values"):
        load_dataset(csv_cfg(path))


def test_csv_integral_float_and_few_float_labels_stay_classes(tmp_path):
    path = write_csv(tmp_path, "a,label\n" + "".join(f"{i},{[0.5, 1.5][i % 2]}\n" for i in range(20)))
    assert load_dataset(csv_cfg(path)).classes == ["0.5", "1.5"]
    path = write_csv(tmp_path, "a,label\n" + "".join(f"{i},{float(i % 3)}\n" for i in range(20)), name="int.csv")
    assert load_dataset(csv_cfg(path)).classes == ["0", "1", "2"]


@pytest.mark.parametrize("target,features", [(2, ["a", "b"]), (-1, ["a", "b"]), (0, ["b", "c"])])
def test_csv_target_by_index(tmp_path, target, features):
    text = "a,b,c\nx,2,3\ny,4,5\n" if target == 0 else "a,b,label\n1,2,x\n3,4,y\n"
    assert load_dataset(csv_cfg(write_csv(tmp_path, text), target=target)).feature_names == features


def test_csv_target_index_out_of_range_lists_columns(tmp_path):
    path = write_csv(tmp_path, "a,b,label\n1,2,x\n")
    with raises_input("data.target", "column index 4 is out of range"):
        load_dataset(csv_cfg(path, target=4))


def test_csv_target_index_that_names_another_column_is_ambiguous(tmp_path):
    path = write_csv(tmp_path, "1,2,3\n1,2,x\n")
    with raises_input("data.target", "is both the index of column '2' and the name of another column"):
        load_dataset(csv_cfg(path, target=1))
    assert load_dataset(csv_cfg(path, target="3")).feature_names == ["1", "2"]  # by name when quoted


def test_csv_values_beyond_float32_are_refused(tmp_path):
    path = write_csv(tmp_path, "a,b,label\n1,2,x\n3,-4e39,y\n")
    with raises_input(path, "feature column 'b' has 1 value(s) beyond float32's range"):
        load_dataset(csv_cfg(path))


def test_csv_decimal_commas_get_a_hint(tmp_path):
    path = write_csv(tmp_path, "a;b;label\n1,5;2;x\n3,5;4;y\n")
    with raises_input(path, "decimal commas are not read"):
        load_dataset(csv_cfg(path))


# ---------------------------------------------------------------- npz


@pytest.mark.parametrize(
    ("shape", "kind", "input_shape"),
    [((6, 5), "tabular", (5,)), ((6, 4, 3), "image", (1, 4, 3)), ((6, 2, 4, 3), "image", (2, 4, 3))],
)
def test_npz_rank_decides_kind(tmp_path, shape, kind, input_shape):
    X = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
    path = write_npz(tmp_path, X=X, y=np.array([3, 1, 3, 1, 3, 1]))
    ds = load_dataset({"name": "npz", "path": path})
    assert ds.kind == kind and ds.input_shape == input_shape and ds.X.dtype == np.float32
    assert ds.classes == ["1", "3"]
    np.testing.assert_array_equal(ds.y, [1, 0, 1, 0, 1, 0])
    np.testing.assert_array_equal(ds.X.reshape(6, -1), X.reshape(6, -1))


def test_npz_string_labels(tmp_path):
    path = write_npz(tmp_path, X=np.zeros((3, 2)), y=np.array(["b", "a", "b"]))
    ds = load_dataset({"name": "npz", "path": path})
    assert ds.classes == ["a", "b"]
    np.testing.assert_array_equal(ds.y, [1, 0, 1])


@pytest.mark.parametrize("shape", [(6,), (6, 1, 2, 3, 4)])
def test_npz_bad_rank(tmp_path, shape):
    path = write_npz(tmp_path, X=np.zeros(shape), y=np.zeros(6))
    with raises_input(path, f"got shape {shape}"):
        load_dataset({"name": "npz", "path": path})


@pytest.mark.parametrize("missing", ["X", "y"])
def test_npz_missing_array(tmp_path, missing):
    arrays = {"X": np.zeros((4, 2)), "y": np.zeros(4)}
    del arrays[missing]
    path = write_npz(tmp_path, **arrays)
    with raises_input(path, f"has no array {missing!r}"):
        load_dataset({"name": "npz", "path": path})


def test_npz_length_mismatch(tmp_path):
    path = write_npz(tmp_path, X=np.zeros((4, 2)), y=np.zeros(3))
    with raises_input(path, "len(X)=4, len(y)=3"):
        load_dataset({"name": "npz", "path": path})


def test_npz_nan_in_X(tmp_path):
    X = np.zeros((4, 2))
    X[2, 1] = np.nan
    path = write_npz(tmp_path, X=X, y=np.zeros(4))
    with raises_input(path, "1 NaN or infinite value(s), first in row 2"):
        load_dataset({"name": "npz", "path": path})


def test_npz_no_rows(tmp_path):
    path = write_npz(tmp_path, X=np.zeros((0, 2)), y=np.zeros(0))
    with raises_input(path, "no rows"):
        load_dataset({"name": "npz", "path": path})


def test_npz_missing_file_and_not_an_archive(tmp_path):
    missing = str(tmp_path / "none.npz")
    with raises_input(missing, "file not found"):
        load_dataset({"name": "npz", "path": missing})
    text = write_csv(tmp_path, "not an archive", name="fake.npz")
    with raises_input(text, "is not a .npz archive"):
        load_dataset({"name": "npz", "path": text})


# ---------------------------------------------------------------- check_dataset


def test_check_dataset_accepts_enough_rows():
    check_dataset(toy((7, 7)), folds=5, test_size=0.2)


def test_check_dataset_single_class_csv(tmp_path):
    path = write_csv(tmp_path, "a,label\n1,x\n2,x\n3,x\n")
    with raises_input("data.target", "has a single class ('x')"):
        check_dataset(load_dataset(csv_cfg(path)), folds=2, test_size=0.2)


def test_check_dataset_single_class_builtin_key():
    with raises_input("data", "has a single class"):
        check_dataset(toy((10,)), folds=2, test_size=0.2)


def test_check_dataset_class_too_small_for_folds():
    with raises_input("cv.folds", "class '1' has only 5 rows") as info:
        check_dataset(toy((50, 5)), folds=5, test_size=0.2)
    assert "need >= 6" in info.value.problem


@pytest.mark.parametrize("test_size", [0, 1, 1.5, -0.1])
def test_check_dataset_test_size_range(test_size):
    with raises_input("data.test_size", repr(test_size)):
        check_dataset(toy((20, 20)), folds=2, test_size=test_size)


def test_check_dataset_minimum_is_exactly_enough():
    """The smallest class size check_dataset accepts really yields `folds` rows per class for CV."""
    ds = toy((40, 6))
    check_dataset(ds, folds=5, test_size=0.2)
    dev, _ = split_test(ds.y, 0.2, seed=1)
    assert len(cv_folds(ds.y[dev], 5, seed=1)) == 5


@pytest.mark.parametrize(("n_rows", "ok"), [(5, False), (6, True)])
def test_check_dataset_counts_rows_the_test_split_takes(n_rows, ok):
    """With test_size=0.5 a class of 5 rows keeps only 2 for CV (3 go to test), too few for 3 folds."""
    ds = toy((20, n_rows))
    if not ok:
        with raises_input("cv.folds", "need >= 6"):
            check_dataset(ds, folds=3, test_size=0.5)
        return
    check_dataset(ds, folds=3, test_size=0.5)
    dev, _ = split_test(ds.y, 0.5, seed=0)
    assert len(cv_folds(ds.y[dev], 3, seed=0)) == 3


# ---------------------------------------------------------------- split_test / cv_folds


@pytest.fixture
def labels() -> np.ndarray:
    return np.random.default_rng(0).choice(3, size=203, p=[0.6, 0.3, 0.1]).astype(np.int64)


def test_split_test_is_deterministic_and_seed_dependent(labels):
    dev1, test1 = split_test(labels, 0.25, seed=7)
    dev2, test2 = split_test(labels, 0.25, seed=7)
    np.testing.assert_array_equal(dev1, dev2)
    np.testing.assert_array_equal(test1, test2)
    _, other = split_test(labels, 0.25, seed=8)
    assert not np.array_equal(test1, other)


def test_split_test_is_stratified_disjoint_complete_sorted(labels):
    dev, test = split_test(labels, 0.25, seed=3)
    assert len(np.intersect1d(dev, test)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([dev, test])), np.arange(len(labels)))
    assert np.all(np.diff(dev) > 0) and np.all(np.diff(test) > 0)
    for label in range(3):
        n = np.sum(labels == label)
        assert abs(np.sum(labels[test] == label) - 0.25 * n) <= 1


def test_split_test_rounds_and_keeps_every_class_on_both_sides():
    y = np.repeat([0, 1, 2], [2, 7, 30])
    dev, test = split_test(y, 0.8, seed=0)
    # class 0: round(1.6) = 2 would leave no dev row, so 1; class 1: round(5.6) = 6; class 2: 24
    np.testing.assert_array_equal(np.bincount(y[test]), [1, 6, 24])
    np.testing.assert_array_equal(np.bincount(y[dev]), [1, 1, 6])
    _, test_small = split_test(y, 0.1, seed=0)
    assert np.bincount(y[test_small])[0] == 1


def test_split_test_is_shuffled(labels):
    _, test = split_test(labels, 0.25, seed=0)
    rows_of_0 = np.flatnonzero(labels == 0)
    test_rows_of_0 = np.intersect1d(test, rows_of_0)
    assert not np.array_equal(test_rows_of_0, rows_of_0[: len(test_rows_of_0)])


def test_cv_folds_deterministic_and_partition(labels):
    folds = cv_folds(labels, 4, seed=5)
    again = cv_folds(labels, 4, seed=5)
    assert len(folds) == 4
    for (train, val), (train2, val2) in zip(folds, again, strict=True):
        np.testing.assert_array_equal(train, train2)
        np.testing.assert_array_equal(val, val2)
        assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == len(labels)
    all_val = np.concatenate([val for _, val in folds])
    np.testing.assert_array_equal(np.sort(all_val), np.arange(len(labels)))
    other = cv_folds(labels, 4, seed=6)
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(folds, other, strict=True))


def test_cv_folds_rejects_bad_folds(labels):
    with raises_input("cv.folds", "got 1"):
        cv_folds(labels, 1, seed=0)
    with raises_input("cv.folds", "class 1 has 2"):
        cv_folds(np.array([0, 0, 0, 1, 1]), 3, seed=0)


# ---------------------------------------------------------------- Preprocessor


@pytest.fixture
def shifted() -> tuple[np.ndarray, np.ndarray]:
    """Train rows around 0 and test rows shifted by +5, so train-only fitting is visible."""
    rng = np.random.default_rng(0)
    train = rng.normal(0.0, 2.0, size=(200, 6)).astype(np.float32)
    test = rng.normal(5.0, 2.0, size=(50, 6)).astype(np.float32)
    return train, test


def test_standardize_fits_on_train_rows_only(shifted):
    train, test = shifted
    pre = Preprocessor().fit(train)
    z_train, z_test = pre.transform(train), pre.transform(test)
    assert z_train.dtype == np.float32
    np.testing.assert_allclose(z_train.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(z_train.std(axis=0), 1.0, atol=1e-4)
    assert np.all(z_test.mean(axis=0) > 1.5)


def test_constant_feature_gets_scale_one():
    X = np.column_stack([np.full(10, 0.1), np.arange(10)]).astype(np.float32)
    out = Preprocessor().fit_transform(X)
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out[:, 0], 0.0, atol=1e-6)


def test_no_standardize_no_pca_is_identity(shifted):
    train, _ = shifted
    np.testing.assert_array_equal(Preprocessor(standardize=False).fit_transform(train), train)


def test_pca_float_keeps_the_variance_share():
    ds = load_dataset({"name": "digits"})
    pre = Preprocessor(pca=0.8).fit(ds.X)
    out = pre.transform(ds.X)
    flat = Preprocessor().fit_transform(ds.X).reshape(len(ds.X), -1)
    share = out.var(axis=0).sum() / flat.var(axis=0).sum()
    assert 0.8 <= share < 0.9
    assert out.ndim == 2 and out.shape[1] < 64
    assert pre.output_shape((1, 8, 8)) == (out.shape[1],)
    assert pre.variance_kept == pytest.approx(share, abs=1e-3)


def test_pca_int_components(shifted):
    train, test = shifted
    pre = Preprocessor(pca=3)
    assert pre.output_shape((6,)) == (3,)
    assert pre.fit(train).transform(test).shape == (50, 3)


@pytest.mark.parametrize("bad", [0, -2, 0.0, 1.0, 1.5, True, "3"])
def test_bad_pca_values(bad):
    with raises_input("data.pca", repr(bad)):
        Preprocessor(pca=bad)


def test_pca_more_components_than_features(shifted):
    train, _ = shifted
    with raises_input("data.pca", "asks for 7 components, but the data has 6 features"):
        Preprocessor(pca=7).fit(train)


@pytest.mark.parametrize(("standardize", "pca"), [(True, None), (False, 2), (True, 0.9), (False, None)])
def test_state_dict_round_trip_gives_identical_output(shifted, standardize, pca):
    train, test = shifted
    pre = Preprocessor(standardize=standardize, pca=pca).fit(train)
    state = pre.state_dict()
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in state.values())
    assert ("mean" in state) == standardize and ("pca_components" in state) == (pca is not None)
    restored = Preprocessor.from_state_dict(state)
    np.testing.assert_array_equal(restored.transform(test), pre.transform(test))
    assert restored.output_shape((6,)) == pre.output_shape((6,))


def test_state_dict_transform_is_plain_numpy(shifted):
    train, test = shifted
    state = Preprocessor(pca=2).fit(train).state_dict()
    manual = ((test - state["mean"]) / state["scale"] - state["pca_mean"]) @ state["pca_components"].T
    np.testing.assert_allclose(Preprocessor.from_state_dict(state).transform(test), manual, rtol=1e-6)


def test_images_keep_their_shape_and_are_standardized_per_pixel():
    rng = np.random.default_rng(1)
    X = (rng.normal(size=(40, 2, 4, 4)) * np.arange(1, 33).reshape(1, 2, 4, 4) + 3).astype(np.float32)
    pre = Preprocessor().fit(X)
    out = pre.transform(X)
    assert out.shape == X.shape and pre.output_shape((2, 4, 4)) == (2, 4, 4)
    np.testing.assert_allclose(out.std(axis=0), 1.0, atol=1e-4)
    assert pre.state_dict()["mean"].shape == (2, 4, 4)


def test_transform_before_fit_fails():
    with pytest.raises(RuntimeError, match="before fit"):
        Preprocessor().transform(np.zeros((2, 2), dtype=np.float32))
