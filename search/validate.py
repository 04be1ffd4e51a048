"""Checks of a composed config and of its search space, before any study, MLflow run or artifact exists.

Every rule comes from the schema (:mod:`search.schema`): :data:`RULES` maps each public dotted key to its
checker, :func:`validate_config` applies them to the config's values (then the rules between keys, and
refuses keys the schema does not know), and :func:`validate_space` applies the same checkers to every value
a space can sample, and the rules between keys to every combination of values it can sample together.
Each problem is raised as :class:`~trainers.errors.InputError` ``("<dotted key>", "<rule>, got <value!r>")``.

Example:
    >>> RULES["cv.folds"](1)
    'must be an integer >= 2'
    >>> RULES["cv.folds"](5) is None
    True
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from omegaconf import DictConfig, OmegaConf
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from search import schema
from search.space import Param, config_value, has_config_key, same_value
from trainers.errors import InputError

__all__ = ["RULES", "Rule", "SEQUENCE_DATA", "unknown_key_error", "validate_config", "validate_space"]

#: a checker: ``None`` when the value is valid, else the rule it breaks ("must be an integer >= 2")
Rule = Callable[[Any], "str | None"]

_ENUMERATE_MAX = 10_000  # integer distributions up to this many values are checked value by value

#: every public key -> its checker, in the order of the composed config (groups first); from the schema
RULES: dict[str, Rule] = {name: key.check for name, key in schema.KEYS.items()}

#: data groups whose rows are users' event sequences; they need model=seqrec (see search.schema.DATA_INPUTS)
SEQUENCE_DATA = schema.SEQUENCE_DATA

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


def _cross_problems(cfg: DictConfig) -> Iterator[InputError]:
    """Rules between keys (:data:`search.schema.CROSS_RULES`), checked after every key is valid on its own."""
    keys = {k for rule in schema.CROSS_RULES for k in rule.keys}
    yield from _cross_errors({k: config_value(cfg, k) for k in keys})


def _cross_errors(values: Mapping[str, Any]) -> Iterator[InputError]:
    for problem, value in schema.cross_problems(values):
        yield InputError(problem.key, f"{problem.rule}, got {value!r}")


def _unknown_keys(cfg: DictConfig) -> Iterator[str]:
    """Dotted keys of the config that the schema does not know (groups and ``space`` may hold their own)."""
    def walk(node: Any, prefix: str) -> Iterator[str]:
        for k in node.keys():
            key = f"{prefix}{k}"
            if key in schema.KEYS:
                continue
            child = node._get_node(k)
            if isinstance(child, DictConfig) and any(name.startswith(f"{key}.") for name in schema.KEYS):
                yield from walk(child, f"{key}.")
            else:
                yield key

    for key in walk(cfg, ""):
        if key.split(".")[0] not in (*schema.GROUPS, *schema.FREE_BLOCKS):
            yield key


def unknown_key_error(key: str) -> InputError:
    """``<key>: unknown key; did you mean <nearest>?`` (difflib over the schema's keys)."""
    near = schema.nearest_key(key)
    return InputError(key, "unknown key" + (f"; did you mean {near}?" if near else " (see --help for the keys)"))


def validate_config(cfg: DictConfig) -> None:
    """Check every public key of the composed config; raise the first problem found.

    Keys of the data and model groups are checked only where the chosen group has them, so groups with
    other keys do not break this check; any other key the schema does not know is refused (with the
    nearest known key). ``???`` values anywhere are reported as required.

    Raises:
        InputError: ``("<dotted key>", "<rule>, got <value!r>")``.
    """
    for key, rule in RULES.items():
        state, value = _lookup(cfg, key)
        if state == _MISSING:
            raise _required(key)
        if state == _ABSENT:
            spec = schema.KEYS[key]
            if (spec.group is not None or spec.has_default) and key not in _REQUIRED_GROUP_KEYS:
                continue  # a key the chosen group does not have, or a new key whose schema default applies
            raise _required(key)
        problem = rule(value)
        if problem is not None:
            raise InputError(key, f"{problem}, got {value!r}")
    for key in _missing_keys(cfg):
        if key.split(".")[0] != "space":
            raise _required(key)
    for key in _unknown_keys(cfg):
        raise unknown_key_error(key)
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
    rule in :data:`RULES`, no values it can sample together may break a rule between keys (e.g.
    ``data.pca`` with a cnn, ``compress.quant.bits=1`` with ``scheme=fixed_point``) when their ``when``
    lets them be sampled with this config, and every ``when`` must refer to an existing key with values that
    key can take.

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

    _validate_cross(cfg, params, by_key)


def _can_be(param: Param, want: bool, values: Mapping[str, Any], cfg: DictConfig,
            by_key: Mapping[str, Param]) -> bool:
    """Whether ``param.when`` can evaluate to ``want`` when the keys of ``values`` have those values (other
    searched keys may have any value; keys not searched have the config's)."""
    results: list[bool | None] = []
    for other, allowed in param.when.items():
        if other in values:
            results.append(any(same_value(values[other], a) for a in allowed))
        elif other in by_key:
            results.append(None)  # searched elsewhere: either way
        else:
            results.append(any(same_value(config_value(cfg, other), a) for a in allowed))
    if want:
        return all(r is not False for r in results)
    return any(r is not True for r in results)


def _validate_cross(cfg: DictConfig, params: list[Param], by_key: Mapping[str, Param]) -> None:
    """Every combination of values the space can sample together (with the config's values of the keys it
    does not sample) must keep the rules between keys, unless the config alone already breaks them."""
    base_problems = {(e.where, e.problem) for e in _cross_problems(cfg)}
    for rule in schema.CROSS_RULES:
        searched = [k for k in rule.keys if k in by_key]
        if not searched:
            continue
        # per searched key: (sampled?, value); a key with a `when` may also keep the config's value
        choices = [[(True, v) for v in _candidates(by_key[k])] + ([(False, config_value(cfg, k))]
                                                                 if by_key[k].when else [])
                   for k in searched]
        for combo in itertools.product(*choices):
            values = {k: v for k, (_, v) in zip(searched, combo, strict=True)}
            sampled = [k for k, (was_sampled, _) in zip(searched, combo, strict=True) if was_sampled]
            if not sampled or not all(_can_be(by_key[k], k in sampled, values, cfg, by_key) for k in searched):
                continue
            full = {k: values[k] if k in values else config_value(cfg, k) for k in rule.keys}
            for err in _cross_errors(full):
                if (err.where, err.problem) in base_problems:
                    continue
                blamed = err.where if err.where in sampled else sampled[0]
                with_ = [f"{k}={values[k]!r}" for k in sampled if k != blamed]
                together = f" together with {', '.join(with_)}" if with_ else " with this config"
                rule_text = err.problem.rsplit(", got ", 1)[0]
                raise InputError(
                    f"space.params.{blamed}",
                    f"can sample {values[blamed]!r}{together}, which breaks {err.where} ({rule_text}): "
                    f"narrow it or add a when: condition, got {by_key[blamed].text!r}",
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
