"""search/validate.py: one rule table checks the composed config and every value a space can sample."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf, open_dict

from search.space import parse_space
from search.validate import RULES, validate_config, validate_space
from trainers.errors import InputError

CONF = Path(__file__).resolve().parents[1] / "conf"
SPACES = sorted(p.stem for p in (CONF / "space").glob("*.yaml"))


@pytest.fixture(scope="module")
def make_cfg():
    cache: dict[tuple[str, ...], DictConfig] = {}

    def make(*overrides: str) -> DictConfig:  # composing takes ~30 ms: each distinct config once per module
        if overrides not in cache:
            cache[overrides] = compose("sweep", overrides=list(overrides))
        return copy.deepcopy(cache[overrides])

    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        yield make


def _error(fn, *args) -> InputError:
    with pytest.raises(InputError) as info:
        fn(*args)
    assert "\n" not in str(info.value)
    return info.value


# --- valid configs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["model=cnn"],
        ["data=breast_cancer"],
        ["data=csv", "data.path=my.csv", "data.target=label"],
        ["data=csv", "data.path=my.csv", "data.target=0"],
        ["data=npz", "data.path=my.npz", "model=cnn"],
        ["data.pca=10", "data.pca=0.95"],
        ["data.pca=10"],
        ["study.n_workers=4", "study.storage=journal:mlruns/optuna.log"],
        ["study.n_workers=2", "study.storage=postgresql://u@localhost/db"],
        ["study.storage=sqlite:///x.db", "study.timeout=3600", "study.min_accuracy=0.9"],
        ["study.objectives=[accuracy]", "study.sampler=nsga2", "study.seed=null"],
        ["compress.quant.scheme=binary", "compress.quant.bits=1"],
        ["compress.quant.scheme=uniform", "compress.quant.bits=1"],
        ["compress.quant.scheme=fixed_point", "compress.quant.bits=16"],
        ["compress.quant.scheme=fixed_point", "compress.quant.bits=32"],
        ["compress.quant.scheme=ternary", "compress.quant.bits=12"],
        ["study.seed_recipes=[]", "study.early_stop=false", "study.base_cache_dir=/tmp/cache"],
        ["+latency.runtimes=[torchscript,onnxruntime]"],
        ["compress.quant.bits=32", "compress.prune.ratio=0.99", "compress.neurons.ratio=0.9"],
        ["compress.quant.clip=1", "compress.quant.threshold=2", "compress.finetune_lr=1e-4"],
        ["model.hidden=[]", "model.width=2", "train.optimizer=sgd", "train.momentum=0"],
        ["device=cuda", "mlflow.artifact_location=null"],
    ],
)
def test_valid_configs_pass(make_cfg, overrides):
    validate_config(make_cfg(*overrides))


BAD = [
    # (overrides, where, fragment of the message)
    (["seed=true"], "seed", "integer"),
    (["seed=-1"], "seed", "integer in 0..4294967295"),
    (["seed=1.5"], "seed", "got 1.5"),
    (["device=gpu"], "device", "one of auto|cpu|cuda, got 'gpu'"),
    (["study.name=a/b"], "study.name", "without '/'"),
    (["study.name=''"], "study.name", "non-empty"),
    (["study.sampler=cmaes"], "study.sampler", "one of tpe|nsga2|random|gp"),
    (["study.n_trials=0"], "study.n_trials", "integer >= 1, got 0"),
    (["study.n_trials=true"], "study.n_trials", "got True"),
    (["study.timeout=0"], "study.timeout", "null or a number > 0"),
    (["study.timeout=-5"], "study.timeout", "got -5"),
    (["study.seed=abc"], "study.seed", "null or an integer"),
    (["study.objectives=[]"], "study.objectives", "non-empty list"),
    (["study.objectives=accuracy"], "study.objectives", "list"),
    (["study.objectives=[accuracy,accuracy]"], "study.objectives", "twice"),
    (["study.objectives=[accuracy,f1]"], "study.objectives", "unknown objective 'f1'"),
    (["study.min_accuracy=1.5"], "study.min_accuracy", "[0, 1]"),
    (["study.max_size_bytes=0"], "study.max_size_bytes", "> 0"),
    (["study.max_latency_ms=-1"], "study.max_latency_ms", "> 0"),
    (["study.max_failure_rate=1.1"], "study.max_failure_rate", "[0, 1]"),
    (["study.n_workers=0"], "study.n_workers", ">= 1"),
    (["study.heartbeat_seconds=0"], "study.heartbeat_seconds", ">= 1"),
    (["study.grace_seconds=0"], "study.grace_seconds", ">= 1"),
    (["study.n_workers=2"], "study.storage", "journal:<file> or postgresql://"),
    (["study.n_workers=2", "study.storage=sqlite:///x.db"], "study.storage", "got 'sqlite:///x.db'"),
    (["study.storage=redis://x"], "study.storage", "journal:<file>"),
    (["study.storage=journal:"], "study.storage", "name a file"),
    (["cv.folds=1"], "cv.folds", "integer >= 2, got 1"),
    (["cv.folds=5.0"], "cv.folds", "integer >= 2, got 5.0"),
    (["train.optimizer=rmsprop"], "train.optimizer", "adam|adamw|sgd"),
    (["train.lr=0"], "train.lr", "number > 0"),
    (["train.lr=abc"], "train.lr", "got 'abc'"),
    (["train.weight_decay=-1e-4"], "train.weight_decay", ">= 0"),
    (["train.epochs=0"], "train.epochs", ">= 1"),
    (["train.batch_size=0"], "train.batch_size", ">= 1"),
    (["train.threads=0"], "train.threads", ">= 1"),
    (["train.momentum=1.5"], "train.momentum", "[0, 1)"),
    (["train.loss=softmax"], "train.loss", "one of full|sampled, got 'softmax'"),
    (["train.negatives=0"], "train.negatives", "integer >= 1, got 0"),
    (["compress.finetune_epochs=-1"], "compress.finetune_epochs", ">= 0"),
    (["compress.finetune_lr=0"], "compress.finetune_lr", "null or a number > 0"),
    (["compress.prune.ratio=1.0"], "compress.prune.ratio", "[0, 0.99]"),
    (["compress.prune.ratio=-0.1"], "compress.prune.ratio", "[0, 0.99]"),
    (["compress.prune.criterion=l1"], "compress.prune.criterion", "magnitude|random"),
    (["compress.prune.schedule=cubic"], "compress.prune.schedule", "one_shot|gradual"),
    (["compress.prune.scope=layer"], "compress.prune.scope", "global|per_layer"),
    (["compress.neurons.ratio=0.95"], "compress.neurons.ratio", "[0, 0.9]"),
    (["compress.neurons.importance=l2"], "compress.neurons.importance", "mean_abs|apoz"),
    (["compress.quant.scheme=int8"], "compress.quant.scheme", "none|fixed_point|uniform|binary|ternary"),
    (["compress.quant.bits=0"], "compress.quant.bits", "1..16 or 32"),
    (["compress.quant.bits=17"], "compress.quant.bits", "1..16 or 32, got 17"),
    (["compress.quant.scheme=fixed_point", "compress.quant.bits=1"], "compress.quant.bits",
     "must be in 2..16 or 32 when compress.quant.scheme is fixed_point (1 bit: scheme=binary, or uniform), got 1"),
    (["compress.quant.bits=true"], "compress.quant.bits", "got True"),
    (["compress.quant.rounding=up"], "compress.quant.rounding", "nearest|floor|stochastic"),
    (["compress.quant.step_scale=0"], "compress.quant.step_scale", "> 0"),
    (["compress.quant.clip=0"], "compress.quant.clip", "(0.5, 1]"),
    (["compress.quant.clip=1.01"], "compress.quant.clip", "(0.5, 1]"),
    (["compress.quant.threshold=2.5"], "compress.quant.threshold", "(0, 2]"),
    (["compress.quant.learn_step=1"], "compress.quant.learn_step", "true or false, got 1"),
    (["compress.quant.quantize_first_last=yes"], "compress.quant.quantize_first_last", "true or false"),
    (["compress.codec=gzip"], "compress.codec", "none|zlib|lzma"),
    (["compress.side_bits=8"], "compress.side_bits", "one of 16|32, got 8"),
    (["compress.lowrank.rank=-1"], "compress.lowrank.rank", "integer >= 0, got -1"),
    (["latency.threads=0"], "latency.threads", ">= 1"),
    (["latency.batch_size=0"], "latency.batch_size", ">= 1"),
    (["latency.warmup=-1"], "latency.warmup", ">= 0"),
    (["latency.repeats=0"], "latency.repeats", ">= 1"),
    (["latency.choice_repeats=0"], "latency.choice_repeats", ">= 1"),
    (["latency.throughput_batch=0"], "latency.throughput_batch", ">= 1"),
    (["mlflow.tracking_uri=''"], "mlflow.tracking_uri", "non-empty string"),
    (["mlflow.tracking_uri=null"], "mlflow.tracking_uri", "got None"),
    (["mlflow.experiment=' '"], "mlflow.experiment", "non-empty string"),
    (["mlflow.register=yes"], "mlflow.register", "true or false"),
    (["mlflow.registry_name=''"], "mlflow.registry_name", "non-empty string"),
    (["data.test_size=0"], "data.test_size", "(0, 1)"),
    (["data.test_size=1"], "data.test_size", "(0, 1)"),
    (["data.pca=0"], "data.pca", "integer >= 1"),
    (["data.pca=1.0"], "data.pca", "float in (0, 1)"),
    (["data.pca=true"], "data.pca", "got True"),
    (["model=cnn", "data.pca=0.9"], "data.pca", "unless model.name is mlp"),
    (["data=breast_cancer", "model=cnn"], "model.name", "must be mlp for data=breast_cancer (its input is tabular"),
    (["data=csv", "data.path=x.csv", "data.target=y", "model=cnn"], "model.name", "must be mlp for data=csv"),
    (["data.standardize=maybe"], "data.standardize", "true or false"),
    (["model.width=0"], "model.width", "> 0"),
    (["model.hidden=[300,0]"], "model.hidden", "positive integers"),
    (["model.hidden=300"], "model.hidden", "list of positive integers, got 300"),
    (["model.hidden=[1.5]"], "model.hidden", "positive integers"),
    (["model.dropout=1"], "model.dropout", "[0, 1)"),
    (["model=cnn", "model.channels=[16,-1]"], "model.channels", "positive integers"),
    (["model=cnn", "model.channels=[]"], "model.channels", "non-empty"),
    # sequence data (conf/data/ecommerce.yaml, conf/data/interactions.yaml) and model=seqrec
    (["data=ecommerce", "model=seqrec", "data.seed=-1"], "data.seed", "integer in 0..4294967295"),
    (["data=ecommerce", "model=seqrec", "data.n_users=0"], "data.n_users", ">= 1"),
    (["data=ecommerce", "model=seqrec", "data.n_items=1"], "data.n_items", ">= 2"),
    (["data=ecommerce", "model=seqrec", "data.n_categories=2"], "data.n_categories", ">= 3"),
    (["data=ecommerce", "model=seqrec", "data.n_brands=0"], "data.n_brands", ">= 1"),
    (["data=ecommerce", "model=seqrec", "data.brands_per_category=0"], "data.brands_per_category", ">= 1"),
    (["data=ecommerce", "model=seqrec", "data.min_events=2"], "data.min_events", ">= 3"),
    (["data=ecommerce", "model=seqrec", "data.max_events=2.5"], "data.max_events", "integer >= 3"),
    (["data=ecommerce", "model=seqrec", "data.popularity_exponent=4"], "data.popularity_exponent", "[0, 3]"),
    (["data=ecommerce", "model=seqrec", "data.transition_strength=1.5"], "data.transition_strength", "[0, 1]"),
    (["data=ecommerce", "model=seqrec", "data.interest_mix=-0.1"], "data.interest_mix", "[0, 1]"),
    (["data=ecommerce", "model=seqrec", "data.brand_loyalty=2"], "data.brand_loyalty", "[0, 1]"),
    (["data=ecommerce", "model=seqrec", "data.max_len=0"], "data.max_len", ">= 1"),
    (["data=ecommerce", "model=seqrec", "data.top_k=0"], "data.top_k", ">= 1"),
    (["data=interactions", "data.path=u.data", "model=seqrec", "data.format=xml"], "data.format", "auto|movielens_tab|movielens_dat|csv"),
    (["data=interactions", "data.path=u.data", "model=seqrec", "data.user_col=''"], "data.user_col", "non-empty string"),
    (["data=interactions", "data.path=u.data", "model=seqrec", "data.item_col=''"], "data.item_col", "non-empty string"),
    (["data=interactions", "data.path=u.data", "model=seqrec", "data.time_col=''"], "data.time_col", "null or a non-empty string"),
    (["data=interactions", "data.path=u.data", "model=seqrec", "data.item_features=''"], "data.item_features", "null or a non-empty string"),
    (["data=interactions", "data.path=u.data", "model=seqrec", "data.user_features=''"], "data.user_features", "null or a non-empty string"),
    (["data=ecommerce", "model=seqrec", "model.d_model=0"], "model.d_model", ">= 1"),
    (["data=ecommerce", "model=seqrec", "model.heads=0"], "model.heads", ">= 1"),
    (["data=ecommerce", "model=seqrec", "model.blocks=0"], "model.blocks", ">= 1"),
    (["data=ecommerce", "model=seqrec", "model.ffn_mult=0"], "model.ffn_mult", "> 0"),
    (["data=ecommerce", "model=seqrec", "model.max_len=0"], "model.max_len", ">= 1"),
    (["data=ecommerce", "model=seqrec", "model.side_features=maybe"], "model.side_features", "true or false"),
    (["data=ecommerce", "model=seqrec", "model.user_features=maybe"], "model.user_features", "true or false"),
    (["data=ecommerce"], "model.name", "must be seqrec for data=ecommerce"),
    (["model=seqrec"], "model.name", "must be mlp or cnn for data=digits"),
    (["data=csv"], "data.path", "is required: add data.path=<file>"),
    (["data=npz"], "data.path", "is required: add data.path=<file>"),
    (["data=csv", "data.path=my.csv"], "data.target", "is required: add data.target=<column>"),
    (["data=csv", "data.path=my.csv", "data.target=''"], "data.target", "column name"),
    (["data=csv", "data.path=my.csv", "data.target=y", "data.sep=';;'"], "data.sep", "null (detect), comma"),
    (["study.name=${nope}"], "study.name", "cannot be resolved"),
    (["study.base_cache=1"], "study.base_cache", "true or false, got 1"),
    (["compress.include=5"], "compress.include", "list of module-name patterns"),
    (["model=custom", "model._target_=5"], "model._target_", "dotted import path"),
    (["compress.exclude=5"], "compress.exclude", "list of module-name patterns"),
    (["model=custom", "model._target_=tests.user_models.nets.ResMLP", "model.kwargs=5"], "model.kwargs",
     "mapping of constructor arguments"),
    (["model=custom", "model._target_=tests.user_models.nets.ResMLP", "model.widen=5"], "model.widen",
     "list of names"),
    (["study.base_cache_gb=0"], "study.base_cache_gb", "number > 0, got 0"),
    (["study.base_cache_dir=''"], "study.base_cache_dir", "null or a non-empty string"),
    (["study.seed_recipes=[twn,nope]"], "study.seed_recipes", "unknown recipe 'nope'"),
    (["study.seed_recipes=[twn,twn]"], "study.seed_recipes", "twice"),
    (["study.seed_recipes=twn"], "study.seed_recipes", "list of distinct recipes"),
    (["study.early_stop=no"], "study.early_stop", "true or false"),
    (["study.early_stop_margin=1.5"], "study.early_stop_margin", "[0, 1]"),
    (["study.shrink_every=-1"], "study.shrink_every", "an integer >= 0"),
    (["study.shrink_tolerance=2"], "study.shrink_tolerance", "[0, 1]"),
    (["study.shrink_levels=0"], "study.shrink_levels", "an integer >= 1"),
    (["latency.blocks=1"], "latency.blocks", "an integer >= 2"),
    (["compress.quant.granularity=row"], "compress.quant.granularity", "one of channel|tensor"),
    (["compress.distill.weight=1.5"], "compress.distill.weight", "[0, 1]"),
    (["compress.distill.temperature=0"], "compress.distill.temperature", "> 0"),
    (["data=ecommerce", "model=seqrec", "compress.distill.weight=0.5"], "compress.distill.weight", "must be 0 for model.name=seqrec"),
    (["+latency.runtimes=[]"], "latency.runtimes", "null or a non-empty list of distinct runtimes from fp32_dense|"),
    (["+latency.runtimes=[tensorrt]"], "latency.runtimes", "unknown runtime 'tensorrt'"),
    (["+latency.runtimes=[torchscript,torchscript]"], "latency.runtimes", "twice"),
    (["train.lr=1e39"], "train.lr", "finite in float32"),
    (["+compress.prune.ration=0.5"], "compress.prune.ration", "unknown key; did you mean compress.prune.ratio?"),
    (["+study.n_trial=3"], "study.n_trial", "unknown key; did you mean study.n_trials?"),
]


@pytest.mark.parametrize("overrides, where, fragment", BAD, ids=[" ".join(row[0]) for row in BAD])
def test_bad_values(make_cfg, overrides, where, fragment):
    err = _error(validate_config, make_cfg(*overrides))
    assert err.where == where
    assert fragment in err.problem, err.problem
    if not any(word in fragment for word in ("required", "resolved", "unknown key")):
        assert ", got " in err.problem


def test_enough_bad_rows():
    assert len(BAD) >= 25
    assert {where for _, where, _ in BAD} >= set(RULES) - {
        "data.name",
        "model.name",
        "mlflow.artifact_location",
    }


def test_first_problem_wins(make_cfg):
    err = _error(validate_config, make_cfg("cv.folds=1", "train.lr=0", "seed=-1"))
    assert err.where == "seed"  # checked in the order of the composed config


def test_unknown_group_keys_are_ignored_and_absent_ones_skipped(make_cfg):
    cfg = make_cfg()
    with open_dict(cfg):
        cfg.model.name = "seqrec"
        cfg.data.name = "ecommerce"  # seqrec needs sequence data (a rule between keys)
        cfg.model.embedding_dim = 64
        del cfg.model["hidden"]
        del cfg.model["dropout"]
        cfg.data.max_len = 50
        del cfg.data["pca"]
    validate_config(cfg)


def test_missing_value_in_an_unknown_key_is_required(make_cfg):
    cfg = make_cfg()
    with open_dict(cfg):
        cfg.data.vocab = "???"
    err = _error(validate_config, cfg)
    assert (err.where, err.problem) == ("data.vocab", "is required: add data.vocab=<value>")


def test_absent_key_with_a_schema_default_passes_and_absent_group_name_is_required(make_cfg):
    cfg = make_cfg()
    with open_dict(cfg):
        del cfg.cv["folds"]  # e.g. a key the YAML does not have yet: the schema's default applies
    validate_config(cfg)
    with open_dict(cfg):
        del cfg.model["name"]
    assert _error(validate_config, cfg).where == "model.name"


def test_rules_are_usable_alone():
    assert RULES["compress.quant.bits"](32) is None
    assert RULES["compress.quant.bits"](9) is None
    assert RULES["compress.quant.bits"](17) == "must be an integer in 1..16 or 32"
    assert (
        RULES["data.pca"](None) is None and RULES["data.pca"](0.5) is None and RULES["data.pca"](20) is None
    )
    assert RULES["train.epochs"](True) is not None


# --- spaces ----------------------------------------------------------------------------------------


#: every space with every model it applies to (space=seqrec is the recommender's; the others fit all models)
REAL_SPACES = [(s, m) for s in SPACES for m in ("mlp", "cnn", "seqrec") if s != "seqrec" or m == "seqrec"]


@pytest.mark.parametrize("name, model", REAL_SPACES)
def test_real_spaces_pass(make_cfg, name, model):
    data = ["data=ecommerce"] if model == "seqrec" else []
    cfg = make_cfg(f"space={name}", f"model={model}", *data)
    validate_config(cfg)
    validate_space(cfg, parse_space(cfg.space))


BAD_SPACES = [
    # (space, extra overrides, where, fragment)
    (
        {"compress.prune.ratio": "interval(0.0, 1.5)"},
        [],
        "space.params.compress.prune.ratio",
        "[0, 0.99]; it can sample 1.5",
    ),
    (
        {"compress.neurons.ratio": "interval(0.0, 0.95)"},
        [],
        "space.params.compress.neurons.ratio",
        "[0, 0.9]",
    ),
    (
        {"compress.quant.bits": "int(interval(2, 20))"},
        [],
        "space.params.compress.quant.bits",
        "it can sample 17",
    ),
    ({"compress.quant.bits": "choice(4, 8, 64)"}, [], "space.params.compress.quant.bits", "it can sample 64"),
    (
        {"compress.quant.bits": "int(interval(1, 8))"},
        ["compress.quant.scheme=fixed_point"],
        "space.params.compress.quant.bits",
        "can sample 1 with this config, which breaks compress.quant.bits (must be in 2..16 or 32 when",
    ),
    (
        {"compress.quant.scheme": "choice(none, fixed_point)"},
        ["compress.quant.bits=1"],
        "space.params.compress.quant.scheme",
        "can sample 'fixed_point' with this config, which breaks compress.quant.bits",
    ),
    (
        {"compress.quant.scheme": "choice(uniform, fixed_point)", "compress.quant.bits": "int(interval(1, 8))"},
        [],
        "space.params.compress.quant.bits",
        "can sample 1 together with compress.quant.scheme='fixed_point', which breaks compress.quant.bits",
    ),
    (
        {"model.name": "choice(mlp, cnn)"},
        ["data=breast_cancer"],
        "space.params.model.name",
        "can sample 'cnn' with this config, which breaks model.name (must be mlp for data=breast_cancer",
    ),
    ({"compress.quant.clip": "interval(0.9, 1.1)"}, [], "space.params.compress.quant.clip", "(0.5, 1]"),
    ({"train.lr": "interval(0, 0.1)"}, [], "space.params.train.lr", "number > 0 (finite in float32); it can sample 0.0"),
    ({"train.epochs": "interval(10, 30)"}, [], "space.params.train.epochs", "write int(interval(a, b))"),
    ({"train.batch_size": "choice(0, 32)"}, [], "space.params.train.batch_size", "it can sample 0"),
    ({"train.optimizer": "choice(adam, lamb)"}, [], "space.params.train.optimizer", "it can sample 'lamb'"),
    ({"model.width": "interval(-1, 1)"}, [], "space.params.model.width", "> 0"),
    ({"model.hidden": "choice([300,100], [0])"}, [], "space.params.model.hidden", "positive integers"),
    ({"data.pca": "choice(null, 1.5)"}, [], "space.params.data.pca", "it can sample 1.5"),
    ({"train.lrate": "interval(0.1, 1)"}, [], "space.params.train.lrate", "no such config key"),
    ({"model.channels": "choice([8], [16])"}, [], "space.params.model.channels", "no such config key"),
    ({"data.pca": "choice(null, 0.9)"}, ["model=cnn"], "space.params.data.pca", "breaks data.pca"),
]


@pytest.mark.parametrize("params, overrides, where, fragment", BAD_SPACES)
def test_bad_spaces(make_cfg, params, overrides, where, fragment):
    cfg = make_cfg(*overrides)
    err = _error(validate_space, cfg, parse_space({"params": params}))
    assert err.where == where
    assert fragment in err.problem, err.problem


def test_widened_real_space_fails(make_cfg):
    cfg = make_cfg()
    space = OmegaConf.to_container(cfg.space)
    space["params"]["compress.prune.ratio"] = "interval(0.0, 1.0)"
    err = _error(validate_space, cfg, parse_space(space))
    assert err.where == "space.params.compress.prune.ratio"
    assert "interval(0.0, 1.0)" in err.problem


def test_bits_guarded_by_when_pass_with_every_scheme(make_cfg):
    space = {
        "params": {
            "compress.quant.scheme": "choice(none, fixed_point, uniform, binary, ternary)",
            "compress.quant.bits": "int(interval(1, 8))",
        },
        "when": {"compress.quant.bits": {"compress.quant.scheme": ["uniform"]}},
    }
    validate_space(make_cfg(), parse_space(space))
    # the config's bits (8) is kept for fixed_point: fine; a config bits of 1 would not be
    err = _error(validate_space, make_cfg("compress.quant.bits=1"), parse_space(space))
    assert err.where == "space.params.compress.quant.scheme"
    assert "can sample 'fixed_point'" in err.problem


def test_pca_guarded_by_when_passes_on_cnn(make_cfg):
    space = {"params": {"data.pca": "choice(null, 0.9)"}, "when": {"data.pca": {"model.name": ["mlp"]}}}
    validate_space(make_cfg("model=cnn"), parse_space(space))


@pytest.mark.parametrize(
    "when, fragment",
    [
        ({"model.nme": ["mlp"]}, "refers to model.nme, which is no config key"),
        ({"compress.quant.scheme": ["fixedpoint"]}, "compress.quant.scheme must be one of"),
        ({"compress.quant.scheme": ["binary"]}, "never gives 'binary'"),
    ],
)
def test_bad_when(make_cfg, when, fragment):
    space = {
        "params": {
            "compress.quant.scheme": "choice(none, uniform)",
            "compress.quant.bits": "int(interval(2, 8))",
        },
        "when": {"compress.quant.bits": when},
    }
    err = _error(validate_space, make_cfg(), parse_space(space))
    assert err.where == "space.when.compress.quant.bits"
    assert fragment in err.problem, err.problem


def test_doctor_fix_takes_a_boolean_like_every_typed_argument(tmp_path, capsys):
    from search.doctor import main

    assert main(["study.name=x", f"study.storage=sqlite:///{tmp_path}/none.db", "fix=maybe"]) == 2
    assert capsys.readouterr().err.strip() == "squeeze: error: fix: must be true or false, got 'maybe'"
    assert main(["study.name=x", f"study.storage=sqlite:///{tmp_path}/none.db", "fix=True"]) == 2   # parsed; no db
    assert capsys.readouterr().err.startswith("squeeze: error: study.storage")
    assert not list(tmp_path.iterdir())
