"""search/space.py: parsing the override grammar, conditional sampling, overrides round trip."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import optuna
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from search.space import (
    Param,
    apply_values,
    format_value,
    params_for_distributions,
    parse_space,
    sample,
    to_overrides,
)
from trainers.errors import InputError

CONF = Path(__file__).resolve().parents[1] / "conf"
SPACES = sorted(p.stem for p in (CONF / "space").glob("*.yaml"))
#: the groups a space needs beyond the defaults (space=seqrec searches the recommender's keys)
SPACE_GROUPS = {"seqrec": ("data=ecommerce", "model=seqrec")}

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def make_cfg():
    cache: dict[tuple[str, ...], DictConfig] = {}

    def make(*overrides: str) -> DictConfig:  # composing takes ~30 ms: each distinct config once per module
        if overrides not in cache:
            cache[overrides] = compose("sweep", overrides=list(overrides))
        return copy.deepcopy(cache[overrides])

    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        yield make


def one(text, key="train.lr"):
    [param] = parse_space({"params": {key: text}})
    return param


# --- parsing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("interval(0.0, 0.97)", FloatDistribution(0.0, 0.97)),
        ("interval(1, 2)", FloatDistribution(1.0, 2.0)),
        ("tag(log, interval(3e-4, 1e-2))", FloatDistribution(3e-4, 1e-2, log=True)),
        ("int(interval(2, 8))", IntDistribution(2, 8)),
        ("tag(log, int(interval(16, 256)))", IntDistribution(16, 256, log=True)),
        ("tag(log,int(interval(2,8)))", IntDistribution(2, 8, log=True)),
        ("range(1, 10, 3)", IntDistribution(1, 7, step=3)),
        ("range(5, 1, -2)", IntDistribution(3, 5, step=2)),
        ("choice(32, 64, 128)", CategoricalDistribution((32, 64, 128))),
        ("choice(magnitude, random)", CategoricalDistribution(("magnitude", "random"))),
        ("choice(null, 0.9, 0.95, 0.99)", CategoricalDistribution((None, 0.9, 0.95, 0.99))),
        ("null, 0.9", CategoricalDistribution((None, 0.9))),
        ("choice(null)", CategoricalDistribution((None,))),
        ("choice(false, true)", CategoricalDistribution((False, True))),
        ("choice('a b', '1', 2)", CategoricalDistribution(("a b", "1", 2))),
        ("float(choice(1, 2))", CategoricalDistribution((1.0, 2.0))),
    ],
)
def test_grammar_forms(text, expected):
    param = one(text)
    assert param.distribution == expected
    assert param.key == "train.lr" and param.text == text and param.when == {}
    for a, b in zip(param.distribution.choices if param.choices else (), param.choices or (), strict=True):
        assert a == b and type(a) is type(b)


def test_int_interval_bounds_are_ints_and_float_interval_bounds_floats():
    d = one("int(interval(2, 8))").distribution
    assert type(d.low) is int and type(d.high) is int
    d = one("interval(1, 2)").distribution
    assert type(d.low) is float and type(d.high) is float


def test_float_range_has_a_step():
    d = one("range(0.1, 0.5, 0.1)").distribution
    assert isinstance(d, FloatDistribution)
    assert d.low == pytest.approx(0.1) and d.high == pytest.approx(0.4) and d.step == pytest.approx(0.1)


def test_list_and_dict_choices_are_strings_to_optuna_and_values_to_us():
    param = one("choice([300,100], [128, 64], [])", key="model.hidden")
    assert param.distribution.choices == ("[300,100]", "[128,64]", "[]")
    assert param.choices == ([300, 100], [128, 64], [])
    assert param.decode("[128,64]") == [128, 64]
    param = one("choice({a: 1, b: [x]}, plain)", key="model.hidden")
    assert param.distribution.choices == ("{a:1,b:[x]}", "plain")
    assert param.decode("{a:1,b:[x]}") == {"a": 1, "b": ["x"]}
    assert param.decode("plain") == "plain"


def test_decode_returns_a_fresh_copy():
    param = one("choice([1,2], [3])", key="model.hidden")
    param.decode("[1,2]").append(9)
    assert param.decode("[1,2]") == [1, 2]


def test_list_choice_through_a_stored_study(tmp_path):
    param = one("choice([300,100], [128,64])", key="model.hidden")
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    study = optuna.create_study(
        storage=storage, study_name="s", sampler=optuna.samplers.RandomSampler(seed=1)
    )
    seen = []
    for _ in range(6):
        trial = study.ask()
        values = sample(trial, [param], None)
        seen.append(values["model.hidden"])
        study.tell(trial, 0.0)
    assert {tuple(v) for v in seen} <= {(300, 100), (128, 64)}
    resumed = optuna.load_study(study_name="s", storage=storage)
    stored = [t.params["model.hidden"] for t in resumed.trials]
    assert all(isinstance(s, str) for s in stored)
    assert [param.decode(s) for s in stored] == seen


def test_when_is_parsed_into_tuples():
    params = parse_space(
        {
            "params": {
                "compress.quant.scheme": "choice(none, uniform)",
                "compress.quant.bits": "int(interval(2, 8))",
            },
            "when": {"compress.quant.bits": {"compress.quant.scheme": ["uniform"], "model.name": "mlp"}},
        }
    )
    assert params[1].when == {"compress.quant.scheme": ("uniform",), "model.name": ("mlp",)}


@pytest.mark.parametrize("name", SPACES)
def test_real_spaces_parse_in_order(make_cfg, name):
    cfg = make_cfg(f"space={name}")
    params = parse_space(cfg.space)
    raw = OmegaConf.load(CONF / "space" / f"{name}.yaml")
    assert [p.key for p in params] == list(raw.params)
    assert {p.key for p in params if p.when} == set(raw.get("when", {}))
    assert params_for_distributions(params) == {p.key: p.distribution for p in params}


def test_every_space_exists():
    assert SPACES == ["compress_only", "joint", "seqrec", "seqrec_compress", "train_only"]


def test_the_recommender_compression_space_samples_compression_keys_only():
    """Its trials share one cached fp32 base: nothing that changes training or the architecture is searched."""
    keys = {p.key for p in parse_space(OmegaConf.load(CONF / "space" / "seqrec_compress.yaml"))}
    assert keys and all(k.startswith("compress.") for k in keys)
    assert "compress.lowrank.rank" in keys


# --- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("interval(0, ", "not valid override grammar"),
        ("intervall(0, 1)", "not valid override grammar"),
        ("interval(a, b)", "not valid override grammar"),
        ("choice()", "not valid override grammar"),
        ("choice(null, choice(1, 2))", "nested sweeps"),
        ("choice(1, choice(2, 3))", "nested sweeps"),
        ("5", "plain value"),
        ("adam", "plain value"),
        ("[1,2]", "plain value"),
        (5, "plain value"),
        (None, "plain value"),
        ("interval(2, 1)", "a <= b"),
        ("tag(log, interval(0, 1))", "a > 0"),
        ("tag(log, int(interval(0, 8)))", "a > 0"),
        ("interval(0, inf)", "finite"),
        ("tag(foo, interval(1, 2))", "unknown tag foo"),
        ("tag(log, choice(1, 2))", "tags are only supported"),
        ("shuffle(choice(1, 2))", "shuffle"),
        ("choice(1, 1)", "twice"),
        ("choice(1, true)", "twice"),
        ("choice('[1,2]', [1,2])", "twice"),
        ("choice(1, nan)", "nan"),
        ("range(3, 1)", "empty"),
        ("tag(log, range(1, 10, 2))", "log range"),
        ("glob(*)", "not a distribution"),
    ],
)
def test_bad_expressions(text, fragment):
    with pytest.raises(InputError) as info:
        one(text)
    assert info.value.where == "space.params.train.lr"
    assert fragment in info.value.problem
    if isinstance(text, str):
        assert repr(text) in info.value.problem  # the message shows the text


@pytest.mark.parametrize(
    "space, where, fragment",
    [
        ({"params": {}}, "space.params", "at least one"),
        ({"when": {}}, "space.params", "at least one"),
        ({"params": {"train.lr": "interval(0.1, 1)"}, "param": {}}, "space.param", "unknown key"),
        ({"params": {"train lr": "interval(0.1, 1)"}}, "space.params.train lr", "dotted config key"),
        (
            {"params": {"train.lr": "interval(0.1, 1)"}, "when": {"train.epochs": {"model.name": ["mlp"]}}},
            "space.when.train.epochs",
            "not a key of space.params",
        ),
        (
            {
                "params": {
                    "compress.quant.bits": "int(interval(2, 8))",
                    "compress.quant.scheme": "choice(none, uniform)",
                },
                "when": {"compress.quant.bits": {"compress.quant.scheme": ["uniform"]}},
            },
            "space.when.compress.quant.bits",
            "sampled later",
        ),
        (
            {"params": {"train.lr": "interval(0.1, 1)"}, "when": {"train.lr": {"train.lr": [0.1]}}},
            "space.when.train.lr",
            "itself",
        ),
        (
            {"params": {"train.lr": "interval(0.1, 1)"}, "when": {"train.lr": ["mlp"]}},
            "space.when.train.lr",
            "must map other keys",
        ),
        (
            {"params": {"train.lr": "interval(0.1, 1)"}, "when": {"train.lr": {"model.name": []}}},
            "space.when.train.lr",
            "no allowed value",
        ),
    ],
)
def test_bad_spaces(space, where, fragment):
    with pytest.raises(InputError) as info:
        parse_space(space)
    assert info.value.where == where
    assert fragment in info.value.problem


def test_input_error_is_one_line():
    with pytest.raises(InputError) as info:
        one("interval(0, ")
    assert "\n" not in str(info.value)


# --- sampling --------------------------------------------------------------------------------------


def _sample_many(cfg, params, n=60, seed=0):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    result = []
    for _ in range(n):
        trial = study.ask()
        values = sample(trial, params, cfg)
        assert set(trial.params) == set(values)  # only sampled keys reach Optuna
        result.append(values)
    return result


def test_conditional_sampling_joint_mlp(make_cfg):
    cfg = make_cfg()
    params = parse_space(cfg.space)
    runs = _sample_many(cfg, params)
    schemes = {v["compress.quant.scheme"] for v in runs}
    assert schemes == {"none", "fixed_point", "uniform", "binary", "ternary"}
    for v in runs:
        scheme = v["compress.quant.scheme"]
        assert ("compress.quant.bits" in v) == (scheme in ("fixed_point", "uniform"))
        assert ("compress.quant.rounding" in v) == (scheme == "fixed_point")
        assert ("compress.quant.step_scale" in v) == (scheme == "uniform")
        assert ("compress.quant.clip" in v) == (scheme == "uniform")
        assert ("compress.quant.threshold" in v) == (scheme == "ternary")
        assert "data.pca" in v  # model.name=mlp in the config
        assert v["data.pca"] in (None, 0.9, 0.95, 0.99)
        assert isinstance(v["compress.quant.bits"] if "compress.quant.bits" in v else 2, int)
        assert isinstance(v["train.epochs"], int) and 10 <= v["train.epochs"] <= 30
        assert 3e-4 <= v["train.lr"] <= 1e-2
        assert list(v) == [p.key for p in params if p.key in v]  # in space order


def test_condition_on_config_value_cnn(make_cfg):
    cfg = make_cfg("model=cnn")
    runs = _sample_many(cfg, parse_space(cfg.space), n=20)
    assert all("data.pca" not in v for v in runs)


def test_condition_falls_back_to_config_when_earlier_param_not_sampled(make_cfg):
    space = {
        "params": {
            "compress.quant.scheme": "choice(uniform, ternary)",
            "compress.quant.bits": "int(interval(2, 8))",
        },
        "when": {
            "compress.quant.scheme": {"model.name": ["cnn"]},
            "compress.quant.bits": {"compress.quant.scheme": ["none"]},
        },
    }
    params = parse_space(space)
    # mlp: scheme is not sampled, the config's scheme (none) lets bits be sampled
    assert all(set(v) == {"compress.quant.bits"} for v in _sample_many(make_cfg(), params, n=5))
    # cnn: scheme is sampled (uniform | ternary), so bits never is
    assert all(set(v) == {"compress.quant.scheme"} for v in _sample_many(make_cfg("model=cnn"), params, n=5))
    # the config itself says uniform: bits is not sampled either
    assert _sample_many(make_cfg("compress.quant.scheme=uniform"), params, n=3) == [{}, {}, {}]


def test_conditions_keep_bools_apart_from_ints():
    param = Param("x", FloatDistribution(0, 1), when={"flag": (1,)})
    assert not param.conditions_hold({"flag": True}, None)
    assert param.conditions_hold({"flag": 1}, None)
    param = Param("x", FloatDistribution(0, 1), when={"model.hidden": ([300, 100],)})
    assert param.conditions_hold({}, OmegaConf.create({"model": {"hidden": [300, 100]}}))


def test_sample_works_with_a_fixed_trial():
    params = parse_space(
        {
            "params": {
                "compress.quant.scheme": "choice(none, uniform)",
                "compress.quant.bits": "int(interval(2, 8))",
            },
            "when": {"compress.quant.bits": {"compress.quant.scheme": ["uniform"]}},
        }
    )
    trial = optuna.trial.FixedTrial({"compress.quant.scheme": "uniform", "compress.quant.bits": 4})
    assert sample(trial, params, None) == {"compress.quant.scheme": "uniform", "compress.quant.bits": 4}


# --- back to config --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value, text",
    [
        (None, "null"),
        (True, "true"),
        (False, "false"),
        (0, "0"),
        (-3, "-3"),
        (0.1, "0.1"),
        (1e-07, "1e-07"),
        (0.0003848580348067421, "0.0003848580348067421"),
        (2.0, "2.0"),
        (float("inf"), "inf"),
        ("adam", "adam"),
        ("a b", "a b"),
        ("1", "'1'"),
        ("null", "'null'"),
        ("true", "'true'"),
        ("", "''"),
        ("x,y", "'x,y'"),
        ("it's", "'it\\'s'"),
        ([300, 100], "[300,100]"),
        ([], "[]"),
        ([1, None, "x", 0.5, False], "[1,null,x,0.5,false]"),
        (["1", "a,b"], "['1','a,b']"),
        ({"a": 1, "b": [2]}, "{a:1,b:[2]}"),
    ],
)
def test_format_value(value, text):
    assert format_value(value) == text


def test_format_value_rejects_other_types():
    with pytest.raises(TypeError):
        format_value(object())


def _strict(a, b):
    if isinstance(a, list):
        return (
            isinstance(b, list) and len(a) == len(b) and all(_strict(x, y) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return type(a) is type(b) and a == b


def _assert_reproduced(cfg, values):
    for key, value in values.items():
        got = OmegaConf.select(cfg, key)
        got = OmegaConf.to_container(got) if OmegaConf.is_config(got) else got
        assert _strict(value, got), (key, value, got)


ROUND_TRIP = {
    "train.lr": 0.0003848580348067421,
    "train.weight_decay": 1e-07,
    "train.epochs": 7,
    "model.hidden": [128, 64],
    "model.width": 0.5000000000000001,
    "data.pca": None,
    "compress.quant.learn_step": True,
    "compress.quant.scheme": "fixed_point",
    "compress.codec": "null",
    "study.name": "my study: 'v1', 2",
    "mlflow.experiment": "007",
    "compress.prune.ratio": 0.0,
    "train.optimizer": "",
}


def test_to_overrides_round_trip_through_compose(make_cfg):
    overrides = to_overrides(ROUND_TRIP)
    assert overrides[:4] == [
        "train.lr=0.0003848580348067421",
        "train.weight_decay=1e-07",
        "train.epochs=7",
        "model.hidden=[128,64]",
    ]
    composed = make_cfg(*overrides)
    _assert_reproduced(composed, ROUND_TRIP)
    assert apply_values(make_cfg(), ROUND_TRIP) == composed


@pytest.mark.parametrize("name", SPACES)
def test_sampled_values_round_trip(make_cfg, name):
    groups = SPACE_GROUPS.get(name, ())
    cfg = make_cfg(f"space={name}", *groups)
    params = parse_space(cfg.space)
    for values in _sample_many(cfg, params, n=8, seed=3):
        composed = make_cfg(f"space={name}", *groups, *to_overrides(values))
        _assert_reproduced(composed, values)
        assert apply_values(cfg, values) == composed


def test_list_choice_round_trip(make_cfg):
    cfg = make_cfg()
    params = parse_space({"params": {"model.hidden": "choice([300,100], [64])"}})
    for values in _sample_many(cfg, params, n=4):
        _assert_reproduced(make_cfg(*to_overrides(values)), values)


def test_apply_values_copies_and_checks_keys(make_cfg):
    cfg = make_cfg()
    new = apply_values(cfg, {"train.lr": 0.5, "model.hidden": [8]})
    assert new.train.lr == 0.5 and list(new.model.hidden) == [8]
    assert cfg.train.lr == 0.001 and list(cfg.model.hidden) == [300, 100]
    with pytest.raises(InputError) as info:
        apply_values(cfg, {"train.nope": 1})
    assert info.value.where == "train.nope"
    new = apply_values(make_cfg("data=csv"), {"data.path": "x.csv"})  # a ??? key can be set
    assert new.data.path == "x.csv"
