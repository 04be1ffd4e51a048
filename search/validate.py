"""Checks of a composed config and of its search space, before any study, MLflow run or artifact exists.

One table, :data:`RULES`, maps each public dotted key of ``conf/sweep.yaml`` (and of the data and model
groups) to a checker; :func:`validate_config` applies it to the config's values and :func:`validate_space`
applies the same checkers to every value a space can sample. Each problem is raised as
:class:`~trainers.errors.InputError` ``("<dotted key>", "<rule>, got <value!r>")``.

Example:
    >>> RULES["cv.folds"](1)
    'must be an integer >= 2'
    >>> RULES["cv.folds"](5) is None
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from search.names import OBJECTIVE_DIRECTIONS
from search.space import Param, apply_values, has_config_key, same_value
from trainers.errors import InputError

__all__ = ["RULES", "Rule", "validate_config", "validate_space"]

#: a checker: ``None`` when the value is valid, else the rule it breaks ("must be an integer >= 2")
Rule = Callable[[Any], "str | None"]

_SEED_MAX = 2**32 - 1  # numpy and scikit-learn take seeds in 0 .. 2**32 - 1
_ENUMERATE_MAX = 10_000  # integer distributions up to this many values are checked value by value


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _null_or(text: str, nullable: bool) -> str:
    return f"must be null or {text}" if nullable else f"must be {text}"


def _integer(lo: int | None = None, hi: int | None = None, nullable: bool = False) -> Rule:
    if lo is not None and hi is not None:
        bounds = f" in {lo}..{hi}"
    elif lo is not None:
        bounds = f" >= {lo}"
    else:
        bounds = ""
    text = _null_or(f"an integer{bounds}", nullable)

    def check(v: Any) -> str | None:
        if v is None and nullable:
            return None
        if _is_int(v) and (lo is None or v >= lo) and (hi is None or v <= hi):
            return None
        return text

    return check


def _number(
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
    nullable: bool = False,
) -> Rule:
    if lo is not None and hi is not None:
        bounds = f" in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    elif lo is not None:
        bounds = f" {'>' if lo_open else '>='} {lo:g}"
    else:
        bounds = ""
    text = _null_or(f"a number{bounds}", nullable)

    def check(v: Any) -> str | None:
        if v is None and nullable:
            return None
        if not _is_number(v) or math.isnan(v):
            return text
        if lo is not None and (v <= lo if lo_open else v < lo):
            return text
        if hi is not None and (v >= hi if hi_open else v > hi):
            return text
        return None

    return check


def _one_of(*names: str) -> Rule:
    text = f"must be one of {'|'.join(names)}"

    def check(v: Any) -> str | None:
        return None if isinstance(v, str) and v in names else text

    return check


def _boolean(v: Any) -> str | None:
    return None if isinstance(v, bool) else "must be true or false"


def _text(nullable: bool = False) -> Rule:
    text = _null_or("a non-empty string", nullable)

    def check(v: Any) -> str | None:
        if v is None and nullable:
            return None
        return None if isinstance(v, str) and v.strip() else text

    return check


def _study_name(v: Any) -> str | None:
    if isinstance(v, str) and v.strip() and "/" not in v:
        return None
    return "must be a non-empty string without '/'"


_STORAGE_PREFIXES = ("sqlite:", "journal:", "postgresql", "mysql")


def _storage(v: Any) -> str | None:
    text = "must be null (sqlite:///mlruns/optuna.db), sqlite:///<file>, journal:<file>, postgresql://... or mysql://..."
    if v is None:
        return None
    if not isinstance(v, str) or not v.startswith(_STORAGE_PREFIXES):
        return text
    if v.startswith("journal:") and not v[len("journal:") :].strip():
        return "must name a file after journal:, e.g. journal:mlruns/optuna.log"
    return None


def _objectives(v: Any) -> str | None:
    names = "|".join(OBJECTIVE_DIRECTIONS)
    text = f"must be a non-empty list of distinct objectives from {names}"
    if not isinstance(v, list) or not v:
        return text
    for name in v:
        if not isinstance(name, str) or name not in OBJECTIVE_DIRECTIONS:
            return f"has unknown objective {name!r}: {text}"
    if len(set(v)) != len(v):
        return f"lists an objective twice: {text}"
    return None


def _bits(v: Any) -> str | None:
    return None if _is_int(v) and (1 <= v <= 8 or v == 32) else "must be an integer in 1..8 or 32"


def _pca(v: Any) -> str | None:
    if v is None or (_is_int(v) and v >= 1) or (isinstance(v, float) and 0 < v < 1):
        return None
    return "must be null, a number of components (integer >= 1) or a share of variance (float in (0, 1))"


def _int_list(non_empty: bool) -> Rule:
    text = f"must be a {'non-empty ' if non_empty else ''}list of positive integers"

    def check(v: Any) -> str | None:
        if not isinstance(v, list) or (non_empty and not v):
            return text
        return None if all(_is_int(x) and x >= 1 for x in v) else text

    return check


def _target(v: Any) -> str | None:
    if (isinstance(v, str) and v.strip()) or _is_int(v):
        return None
    return "must be a column name (non-empty string) or index (integer)"


#: every public key -> its checker, in the order of the composed config (defaults first)
RULES: dict[str, Rule] = {
    # conf/data/*.yaml
    "data.name": _text(),
    "data.path": _text(),
    "data.target": _target,
    "data.test_size": _number(0, 1, lo_open=True, hi_open=True),
    "data.standardize": _boolean,
    "data.pca": _pca,
    # conf/data/ecommerce.yaml and conf/data/interactions.yaml (sequence data)
    "data.seed": _integer(0, _SEED_MAX),
    "data.n_users": _integer(1),
    "data.n_items": _integer(2),
    "data.n_categories": _integer(3),
    "data.n_brands": _integer(1),
    "data.brands_per_category": _integer(1),
    "data.min_events": _integer(3),
    "data.max_events": _integer(3),
    "data.popularity_exponent": _number(0, 3),
    "data.transition_strength": _number(0, 1),
    "data.interest_mix": _number(0, 1),
    "data.brand_loyalty": _number(0, 1),
    "data.format": _one_of("auto", "movielens_tab", "movielens_dat", "csv"),
    "data.user_col": _text(),
    "data.item_col": _text(),
    "data.time_col": _text(nullable=True),
    "data.item_features": _text(nullable=True),
    "data.max_len": _integer(1),
    "data.top_k": _integer(1),
    # conf/model/*.yaml
    "model.name": _text(),
    "model.channels": _int_list(non_empty=True),
    "model.hidden": _int_list(non_empty=False),
    "model.width": _number(0, lo_open=True),
    "model.dropout": _number(0, 1, hi_open=True),
    "model.d_model": _integer(1),
    "model.heads": _integer(1),
    "model.blocks": _integer(1),
    "model.ffn_mult": _number(0, lo_open=True),
    "model.max_len": _integer(1),
    "model.side_features": _boolean,
    # conf/sweep.yaml
    "seed": _integer(0, _SEED_MAX),
    "device": _one_of("auto", "cpu", "cuda"),
    "study.name": _study_name,
    "study.storage": _storage,
    "study.sampler": _one_of("tpe", "nsga2", "random", "gp"),
    "study.n_trials": _integer(1),
    "study.timeout": _number(0, lo_open=True, nullable=True),
    "study.seed": _integer(0, _SEED_MAX, nullable=True),
    "study.objectives": _objectives,
    "study.min_accuracy": _number(0, 1, nullable=True),
    "study.max_size_bytes": _number(0, lo_open=True, nullable=True),
    "study.max_latency_ms": _number(0, lo_open=True, nullable=True),
    "study.max_failure_rate": _number(0, 1),
    "study.n_workers": _integer(1),
    "study.heartbeat_seconds": _integer(1),
    "study.grace_seconds": _integer(1),
    "cv.folds": _integer(2),
    "train.optimizer": _one_of("adam", "adamw", "sgd"),
    "train.lr": _number(0, lo_open=True),
    "train.weight_decay": _number(0),
    "train.epochs": _integer(1),
    "train.batch_size": _integer(1),
    "train.threads": _integer(1),
    "train.momentum": _number(0, 1, hi_open=True),
    "compress.finetune_epochs": _integer(0),
    "compress.finetune_lr": _number(0, lo_open=True, nullable=True),
    "compress.prune.ratio": _number(0, 0.99),
    "compress.prune.criterion": _one_of("magnitude", "random"),
    "compress.prune.schedule": _one_of("one_shot", "gradual"),
    "compress.prune.scope": _one_of("global", "per_layer"),
    "compress.neurons.ratio": _number(0, 0.9),
    "compress.neurons.importance": _one_of("mean_abs", "apoz"),
    "compress.quant.scheme": _one_of("none", "fixed_point", "uniform", "binary", "ternary"),
    "compress.quant.bits": _bits,
    "compress.quant.rounding": _one_of("nearest", "floor", "stochastic"),
    "compress.quant.step_scale": _number(0, lo_open=True),
    "compress.quant.clip": _number(0.5, 1, lo_open=True),  # quantiles (1 - clip, clip)
    "compress.quant.learn_step": _boolean,
    "compress.quant.threshold": _number(0, 2, lo_open=True),
    "compress.quant.quantize_first_last": _boolean,
    "compress.codec": _one_of("none", "zlib", "lzma"),
    "latency.threads": _integer(1),
    "latency.batch_size": _integer(1),
    "latency.warmup": _integer(0),
    "latency.repeats": _integer(1),
    "latency.throughput_batch": _integer(1),
    "mlflow.tracking_uri": _text(),
    "mlflow.artifact_location": _text(nullable=True),
    "mlflow.experiment": _text(),
    "mlflow.register": _boolean,
    "mlflow.registry_name": _text(),
}

#: keys of the data and model groups other than their name are checked only where the chosen group has them
_OPTIONAL_PREFIXES = ("data.", "model.")
_REQUIRED_GROUP_KEYS = ("data.name", "model.name")
_HINTS = {"data.path": "<file>", "data.target": "<column>"}


# --- reading the config ----------------------------------------------------------------------------

_ABSENT, _MISSING, _PRESENT = "absent", "missing", "present"


def _lookup(cfg: DictConfig, key: str) -> tuple[str, Any]:
    """``(state, plain value)`` of a dotted key; InputError when its interpolation does not resolve."""
    if not has_config_key(cfg, key):
        return _ABSENT, None
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    if OmegaConf.is_missing(parent, leaf):
        return _MISSING, None
    try:
        value = parent[leaf]
        if OmegaConf.is_config(value):
            value = OmegaConf.to_container(value, resolve=True)
    except Exception as err:  # omegaconf's interpolation errors
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise InputError(key, f"cannot be resolved: {first}") from err
    return _PRESENT, value


def _required(key: str) -> InputError:
    return InputError(key, f"is required: add {key}={_HINTS.get(key, '<value>')}")


def _missing_keys(node: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(node, DictConfig):
        for k in node.keys():
            key = f"{prefix}{k}"
            if OmegaConf.is_missing(node, k):
                yield key
            else:
                child = node._get_node(k)
                if isinstance(child, DictConfig):
                    yield from _missing_keys(child, f"{key}.")


#: data groups whose rows are users' event sequences (trainers/data/_sequence.py); they need model=seqrec
SEQUENCE_DATA = ("ecommerce", "interactions")

#: the keys that :func:`_cross_problems` reads
_CROSS_KEYS = frozenset({"study.n_workers", "study.storage", "data.pca", "model.name"})


def _cross_problems(cfg: DictConfig) -> Iterator[InputError]:
    """Rules between keys, checked after every key is valid on its own."""
    state, workers = _lookup(cfg, "study.n_workers")
    _, storage = _lookup(cfg, "study.storage")
    if state == _PRESENT and _is_int(workers) and workers > 1:
        if storage is None or (isinstance(storage, str) and storage.startswith("sqlite:")):
            yield InputError(
                "study.storage",
                f"must be journal:<file> or postgresql://... when study.n_workers > 1 "
                f"(sqlite does not take writes from several processes; study.n_workers is {workers}), "
                f"got {storage!r}",
            )
    state, pca = _lookup(cfg, "data.pca")
    _, model = _lookup(cfg, "model.name")
    if state == _PRESENT and pca is not None and model != "mlp":
        yield InputError(
            "data.pca",
            f"must be null unless model.name is mlp (PCA needs flat inputs; model.name is {model!r}), got {pca!r}",
        )
    _, data_name = _lookup(cfg, "data.name")
    if isinstance(model, str) and isinstance(data_name, str) and (model == "seqrec") != (data_name in SEQUENCE_DATA):
        need = "seqrec" if data_name in SEQUENCE_DATA else "mlp or cnn"
        yield InputError(
            "model.name",
            f"must be {need} for data={data_name} (seqrec ranks items of sequence data: "
            f"{'|'.join(SEQUENCE_DATA)}; mlp and cnn classify rows), got {model!r}",
        )


def validate_config(cfg: DictConfig) -> None:
    """Check every public key of the composed config; raise the first problem found.

    Keys of the data and model groups are checked only where the chosen group has them, so groups with
    other keys do not break this check. ``???`` values anywhere are reported as required.

    Raises:
        InputError: ``("<dotted key>", "<rule>, got <value!r>")``.
    """
    for key, rule in RULES.items():
        state, value = _lookup(cfg, key)
        if state == _MISSING:
            raise _required(key)
        if state == _ABSENT:
            if key.startswith(_OPTIONAL_PREFIXES) and key not in _REQUIRED_GROUP_KEYS:
                continue
            raise _required(key)
        problem = rule(value)
        if problem is not None:
            raise InputError(key, f"{problem}, got {value!r}")
    for key in _missing_keys(cfg):
        if key.split(".")[0] != "space":
            raise _required(key)
    for err in _cross_problems(cfg):
        raise err


# --- the space -------------------------------------------------------------------------------------


def _candidates(param: Param) -> list[Any]:
    """The values of ``param`` that decide whether all of its values pass a rule."""
    d = param.distribution
    if isinstance(d, CategoricalDistribution):
        return list(param.choices if param.choices is not None else d.choices)
    if isinstance(d, IntDistribution):
        if (d.high - d.low) // d.step < _ENUMERATE_MAX:
            return list(range(d.low, d.high + 1, d.step))
        return [d.low, d.high]
    if isinstance(d, FloatDistribution):
        return [d.low, d.high]
    raise TypeError(f"unsupported distribution {d!r}")  # pragma: no cover


def validate_space(cfg: DictConfig, params: list[Param]) -> None:
    """Check a parsed space against the config it will be sampled into.

    Every searched key must exist in ``cfg`` (unless its ``when`` on fixed keys can never hold with this
    config, like ``data.pca`` when ``model.name`` is not mlp), every value its distribution can sample must pass the key's
    rule in :data:`RULES`, no value may break a rule between keys (e.g. ``data.pca`` with a cnn) when its
    ``when`` lets it be sampled with this config, and every ``when`` must refer to an existing key with
    values that key can take.

    Raises:
        InputError: at ``space.params.<key>`` or ``space.when.<key>``.
    """
    by_key = {p.key: p for p in params}
    for param in params:
        where = f"space.params.{param.key}"
        if not has_config_key(cfg, param.key):
            fixed = {k: v for k, v in param.when.items() if k not in by_key}
            if fixed and not Param(param.key, param.distribution, fixed).conditions_hold({}, cfg):
                continue  # never sampled with this config (data.pca of the joint space with model=seqrec)
            raise InputError(where, f"no such config key in the composed config, got {param.key!r}")
        rule = RULES.get(param.key)
        if rule is not None:
            for value in _candidates(param):
                problem = rule(value)
                if problem is not None:
                    if "integer" in problem and isinstance(param.distribution, FloatDistribution):
                        problem += " (write int(interval(a, b)) for integers)"
                    raise InputError(where, f"{problem}; it can sample {value!r}, got {param.text!r}")
        _validate_when(cfg, param, by_key)

    base_problems = {(e.where, e.problem) for e in _cross_problems(cfg)}
    for param in params:
        if param.key not in _CROSS_KEYS:
            continue
        fixed = {k: v for k, v in param.when.items() if k not in by_key}
        if not Param(param.key, param.distribution, fixed).conditions_hold({}, cfg):
            continue  # never sampled with this config
        for value in _candidates(param):
            for err in _cross_problems(apply_values(cfg, {param.key: value})):
                if (err.where, err.problem) not in base_problems:
                    rule = err.problem.rsplit(", got ", 1)[0]
                    raise InputError(
                        f"space.params.{param.key}",
                        f"can sample {value!r} with this config, which breaks {err.where} ({rule}): "
                        f"narrow it or add a when: condition, got {param.text!r}",
                    )


def _validate_when(cfg: DictConfig, param: Param, by_key: Mapping[str, Param]) -> None:
    where = f"space.when.{param.key}"
    for other, allowed in param.when.items():
        if other not in by_key and not has_config_key(cfg, other):
            raise InputError(where, f"refers to {other}, which is no config key, got {other!r}")
        rule = RULES.get(other)
        for value in allowed:
            if rule is not None and (problem := rule(value)) is not None:
                raise InputError(where, f"{other} {problem}, got {value!r}")
            if other in by_key and isinstance(by_key[other].distribution, CategoricalDistribution):
                choices = by_key[other].choices or ()
                if not any(same_value(value, c) for c in choices):
                    raise InputError(
                        where, f"{other} is searched over {list(choices)!r}, which never gives {value!r}"
                    )
