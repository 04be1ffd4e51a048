"""The search space: ``cfg.space`` parsed into Optuna distributions, sampled per trial, and turned back
into Hydra overrides.

A space (``conf/space/*.yaml``) has ``params``, an ordered mapping from a dotted config key to a
distribution written in Hydra's override grammar, and an optional ``when`` that makes parameters
conditional. The strings are parsed by Hydra's own override parser, so a space accepts exactly what
``python -m search.sweep key=<expr>`` would:

============================================  =========================================================
``interval(a, b)``                            ``FloatDistribution(a, b)``
``tag(log, interval(a, b))``                  ``FloatDistribution(a, b, log=True)``
``int(interval(a, b))``                       ``IntDistribution(a, b)``
``tag(log, int(interval(a, b)))``             ``IntDistribution(a, b, log=True)``
``range(start, stop[, step])``                ``IntDistribution`` / ``FloatDistribution`` with ``step``
                                              (``stop`` excluded, as in Hydra)
``choice(a, b, ...)`` or ``a, b, ...``        ``CategoricalDistribution``
============================================  =========================================================

Categorical choices may be ``null``, booleans, numbers, strings, lists (``[300,100]``) or dicts. Optuna
stores only ``None``/bool/int/float/str, so lists and dicts are given to Optuna as their override text
(``"[300,100]"``) and decoded back by :meth:`Param.decode`. Hydra 1.3's ``choice()`` rejects ``null`` as
an argument; ``choice(null, 0.9)`` is therefore read as the equivalent simple form ``null, 0.9``.

Example:
    >>> params = parse_space({"params": {"train.lr": "tag(log, interval(1e-4, 1e-2))"}})
    >>> params[0].distribution
    FloatDistribution(high=0.01, log=True, low=0.0001, step=None)
    >>> to_overrides({"train.lr": 0.001, "model.hidden": [128, 64], "data.pca": None})
    ['train.lr=0.001', 'model.hidden=[128,64]', 'data.pca=null']
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep, Sweep
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.basecontainer import Container
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from trainers.errors import InputError

__all__ = [
    "Param",
    "apply_values",
    "config_value",
    "format_value",
    "has_config_key",
    "params_for_distributions",
    "parse_space",
    "same_value",
    "sample",
    "to_overrides",
]

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*(\.[A-Za-z_][A-Za-z0-9_\-]*)*")
_GRAMMAR_HELP = "write interval(a, b), tag(log, interval(a, b)), int(interval(a, b)) or choice(a, b, ...)"


@dataclass(frozen=True)
class Param:
    """One searched config key.

    Attributes:
        key: dotted config key, also the Optuna parameter name (``compress.quant.bits``).
        distribution: what Optuna samples from.
        when: conditions ``{other dotted key: allowed values}``; the parameter is sampled only if every
            other key (sampled earlier, else taken from the config) has one of its allowed values.
        text: the expression as written in the space, for messages.
        choices: for a categorical, the Python values parallel to ``distribution.choices`` (which holds
            lists and dicts as their override text); ``None`` otherwise.
    """

    key: str
    distribution: BaseDistribution
    when: dict[str, tuple] = field(default_factory=dict)
    text: str = ""
    choices: tuple | None = None

    def decode(self, value: Any) -> Any:
        """The Python value of an Optuna value of this parameter (identity except for list/dict choices)."""
        if self.choices is None:
            return value
        internal = self.distribution.to_internal_repr(value)  # index into the choices
        return copy.deepcopy(self.choices[int(internal)])

    def suggest(self, trial: optuna.trial.BaseTrial) -> Any:
        """Sample this parameter in ``trial`` (name = :attr:`key`) and return its Python value."""
        d = self.distribution
        if isinstance(d, FloatDistribution):
            return trial.suggest_float(self.key, d.low, d.high, step=d.step, log=d.log)
        if isinstance(d, IntDistribution):
            return trial.suggest_int(self.key, d.low, d.high, step=d.step, log=d.log)
        if isinstance(d, CategoricalDistribution):
            return self.decode(trial.suggest_categorical(self.key, d.choices))
        raise TypeError(f"unsupported distribution {d!r}")

    def conditions_hold(self, sampled: Mapping[str, Any], cfg: Any) -> bool:
        """Whether every ``when`` condition holds; ``sampled`` wins over the config's value."""
        for other, allowed in self.when.items():
            current = sampled[other] if other in sampled else config_value(cfg, other)
            if not any(same_value(current, a) for a in allowed):
                return False
        return True


# --- parsing ---------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _parser() -> OverridesParser:
    return OverridesParser.create()


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _parse_sweep(key: str, text: str) -> Sweep:
    """The Hydra sweep object of ``key=<text>``; InputError when it does not parse or is no sweep."""
    where = f"space.params.{key}"
    try:
        value = _parser().parse_override(f"{key}={text}").value()
    except HydraException as err:
        value = _choice_with_null(key, text, err)
    if isinstance(value, Sweep):
        return value
    raise InputError(
        where, f"is a plain value ({value!r}), not a distribution: {_GRAMMAR_HELP}, got {text!r}"
    )


def _choice_with_null(key: str, text: str, err: HydraException) -> ChoiceSweep:
    """Hydra's choice() rejects null arguments; read ``choice(null, ...)`` as the simple form ``null, ...``."""
    where = f"space.params.{key}"
    stripped = text.strip()
    if "NoneType" in str(err) and stripped.startswith("choice(") and stripped.endswith(")"):
        inner = stripped[len("choice(") : -1]
        try:
            value = _parser().parse_override(f"{key}={inner}").value()
        except HydraException:
            pass
        else:
            if isinstance(value, ChoiceSweep):
                return value
            if not isinstance(value, Sweep):
                return ChoiceSweep(list=[value])
    raise InputError(
        where, f"is not valid override grammar ({_first_line(err)}): {_GRAMMAR_HELP}, got {text!r}"
    )


def _same_to_optuna(a: Any, b: Any) -> bool:
    # Optuna finds a categorical value with list.index, i.e. ==, where 1 == 1.0 == True
    try:
        return bool(a == b)
    except Exception:  # pragma: no cover - exotic values
        return False


def _categorical(key: str, text: str, values: list[Any]) -> tuple[CategoricalDistribution, tuple]:
    where = f"space.params.{key}"
    encoded: list[Any] = []
    for v in values:
        if isinstance(v, Sweep):
            raise InputError(where, f"nested sweeps are not supported inside choice(), got {text!r}")
        if v is None or isinstance(v, (bool, int, float, str)):
            if isinstance(v, float) and math.isnan(v):
                raise InputError(where, f"nan cannot be a choice, got {text!r}")
            encoded.append(v)
        elif isinstance(v, (list, dict)):
            encoded.append(format_value(v))
        else:  # pragma: no cover - the grammar produces nothing else
            raise InputError(where, f"unsupported choice {v!r}, got {text!r}")
    for i, a in enumerate(encoded):
        for b in encoded[i + 1 :]:
            if _same_to_optuna(a, b):
                raise InputError(
                    where, f"has the choice {a!r} twice (or equal values such as 1 and true), got {text!r}"
                )
    return CategoricalDistribution(encoded), tuple(values)


def _interval(key: str, text: str, sweep: IntervalSweep) -> BaseDistribution:
    where = f"space.params.{key}"
    log = "log" in sweep.tags
    low, high = sweep.start, sweep.end
    if low is None or high is None or not all(math.isfinite(x) for x in (low, high)):
        raise InputError(where, f"interval bounds must be finite numbers, got {text!r}")
    if low > high:
        raise InputError(where, f"interval(a, b) needs a <= b, got {text!r}")
    if log and low <= 0:
        raise InputError(where, f"a log interval needs a > 0, got {text!r}")
    if isinstance(low, int) and isinstance(high, int):
        return IntDistribution(low, high, log=log)
    return FloatDistribution(float(low), float(high), log=log)


def _range(key: str, text: str, sweep: RangeSweep) -> BaseDistribution:
    where = f"space.params.{key}"
    values = list(sweep.range())
    if not values:
        raise InputError(where, f"range is empty, got {text!r}")
    low, high, step = min(values), max(values), abs(sweep.step)
    log = "log" in sweep.tags
    if log and (step != 1 or isinstance(step, float)):
        raise InputError(where, f"a log range needs integers with step 1, got {text!r}")
    if log and low <= 0:
        raise InputError(where, f"a log range needs start > 0, got {text!r}")
    if all(isinstance(x, int) for x in (sweep.start, sweep.stop, sweep.step)):
        return IntDistribution(low, high, step=step, log=log)
    return FloatDistribution(float(low), float(high), step=float(step))


def _to_distribution(key: str, text: str) -> tuple[BaseDistribution, tuple | None]:
    where = f"space.params.{key}"
    sweep = _parse_sweep(key, text)
    if isinstance(sweep, ChoiceSweep):
        if sweep.tags:
            raise InputError(where, f"tags are only supported on interval() and range(), got {text!r}")
        if sweep.shuffle:
            raise InputError(where, f"shuffle() has no meaning for a sampler, got {text!r}")
        return _categorical(key, text, list(sweep.list))
    unknown = sorted(set(sweep.tags) - {"log"})
    if unknown:
        raise InputError(where, f"unknown tag {', '.join(unknown)} (only log is supported), got {text!r}")
    try:
        if isinstance(sweep, IntervalSweep):
            return _interval(key, text, sweep), None
        if isinstance(sweep, RangeSweep):
            if sweep.shuffle:
                raise InputError(where, f"shuffle() has no meaning for a sampler, got {text!r}")
            return _range(key, text, sweep), None
    except (ValueError, TypeError) as err:
        if isinstance(err, InputError):
            raise
        raise InputError(where, f"{_first_line(err)}, got {text!r}") from err
    raise InputError(where, f"{type(sweep).__name__} is not a distribution: {_GRAMMAR_HELP}, got {text!r}")


def _plain(value: Any) -> Any:
    if isinstance(value, Container):
        return OmegaConf.to_container(value, resolve=True)
    return value


def parse_space(space_cfg: Any) -> list[Param]:
    """Parse a space (``cfg.space``: a DictConfig or a dict) into :class:`Param` objects, in order.

    Raises:
        InputError: at ``space.params.<key>`` for an expression that is not a distribution, at
            ``space.when.<key>`` for a condition on a key that is not searched, or that refers to itself or
            to a key sampled later.
    """
    space = _plain(space_cfg)
    if not isinstance(space, Mapping):
        raise InputError("space", f"must be a mapping with params and when, got {space!r}")
    for extra in space:
        if extra not in ("params", "when"):
            raise InputError(f"space.{extra}", "unknown key: a space has only params and when")
    params = space.get("params")
    if not isinstance(params, Mapping) or not params:
        raise InputError(
            "space.params", f"must map at least one dotted config key to a distribution, got {params!r}"
        )
    when = space.get("when") or {}
    if not isinstance(when, Mapping):
        raise InputError(
            "space.when", f"must map a key of space.params to {{other key: [values]}}, got {when!r}"
        )

    order = {str(key): i for i, key in enumerate(params)}
    for key in when:
        if str(key) not in order:
            raise InputError(f"space.when.{key}", f"is not a key of space.params, got {key!r}")

    result: list[Param] = []
    for key, text in params.items():
        key = str(key)
        if not _KEY.fullmatch(key):
            raise InputError(
                f"space.params.{key}", f"must be a dotted config key such as train.lr, got {key!r}"
            )
        if not isinstance(text, str):
            raise InputError(
                f"space.params.{key}", f"is a plain value ({text!r}), not a distribution: {_GRAMMAR_HELP}"
            )
        distribution, choices = _to_distribution(key, text)
        result.append(
            Param(
                key=key,
                distribution=distribution,
                when=_parse_when(key, when.get(key), order),
                text=text,
                choices=choices,
            )
        )
    return result


def _parse_when(key: str, conditions: Any, order: Mapping[str, int]) -> dict[str, tuple]:
    where = f"space.when.{key}"
    if conditions is None:
        return {}
    if not isinstance(conditions, Mapping) or not conditions:
        raise InputError(where, f"must map other keys to their allowed values, got {conditions!r}")
    result: dict[str, tuple] = {}
    for other, allowed in conditions.items():
        other = str(other)
        if other == key:
            raise InputError(where, f"refers to itself, got {other!r}")
        if other in order and order[other] > order[key]:
            raise InputError(
                where, f"refers to {other}, which is sampled later: move {other} above {key} in space.params"
            )
        values = tuple(allowed) if isinstance(allowed, (list, tuple)) else (allowed,)
        if not values:
            raise InputError(where, f"lists no allowed value for {other}, got {allowed!r}")
        result[other] = values
    return result


def params_for_distributions(params: list[Param]) -> dict[str, BaseDistribution]:
    """``{key: distribution}``, e.g. for ``optuna.trial.create_trial`` or ``study.enqueue_trial``."""
    return {p.key: p.distribution for p in params}


# --- sampling --------------------------------------------------------------------------------------


_ABSENT = object()


def config_value(cfg: Any, key: str) -> Any:
    """The (resolved, plain) value of a dotted key in ``cfg``; ``None`` if absent or ``???``."""
    if cfg is None:
        return None
    if not isinstance(cfg, Container):
        cfg = OmegaConf.create(cfg)
    return _plain(OmegaConf.select(cfg, key, default=None, throw_on_missing=False))


def has_config_key(cfg: Any, key: str) -> bool:
    """Whether the dotted ``key`` exists in ``cfg`` (a ``???`` value counts as existing)."""
    if not isinstance(cfg, Container):
        cfg = OmegaConf.create(cfg)
    parent_key, _, leaf = key.rpartition(".")
    try:
        parent = (
            OmegaConf.select(cfg, parent_key, default=None, throw_on_missing=False) if parent_key else cfg
        )
    except Exception:  # an interpolation on the way that does not resolve
        return False
    return isinstance(parent, DictConfig) and leaf in parent.keys()


def same_value(a: Any, b: Any) -> bool:
    """Equality that keeps booleans apart from numbers (``True`` is not ``1``) and lists apart from tuples."""
    a, b = _plain(a), _plain(b)
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    try:
        return bool(a == b)
    except Exception:  # pragma: no cover
        return False


def sample(trial: optuna.trial.BaseTrial, params: list[Param], cfg: Any) -> dict[str, Any]:
    """Sample ``params`` in order; a parameter whose ``when`` fails is skipped (the config value stays).

    Conditions are checked against the values sampled so far in this trial, else against ``cfg``.

    Returns:
        ``{dotted key: Python value}`` for the sampled parameters only.
    """
    values: dict[str, Any] = {}
    for param in params:
        if param.conditions_hold(values, cfg):
            values[param.key] = param.suggest(trial)
    return values


# --- back to config --------------------------------------------------------------------------------


def _strict_equal(a: Any, b: Any) -> bool:
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list):
        return len(a) == len(b) and all(_strict_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_strict_equal(a[k], b[k]) for k in a)
    return a == b


def _parses_to(text: str, value: Any) -> bool:
    try:
        parsed = _parser().parse_override(f"k={text}")
    except HydraException:
        return False
    return not parsed.is_sweep_override() and _strict_equal(parsed.value(), value)


def _quote(s: str, q: str) -> str:
    # Hydra quoted strings: a quote is escaped with a backslash, and backslashes right before a quote
    # (or the closing quote) are doubled; other backslashes are literal.
    out: list[str] = []
    i = 0
    while i < len(s):
        j = i
        while j < len(s) and s[j] == "\\":
            j += 1
        run = s[i:j]
        if run:
            out.append(run * 2 if j == len(s) or s[j] == q else run)
            i = j
            continue
        out.append("\\" + q if s[i] == q else s[i])
        i += 1
    return q + "".join(out) + q


def _format_str(s: str, force_quotes: bool) -> str:
    if s and not force_quotes and _parses_to(s, s):
        return s
    for candidate in (_quote(s, "'"), _quote(s, '"')):
        if _parses_to(candidate, s):
            return candidate
    raise ValueError(f"cannot write the string {s!r} as a Hydra override value")


def _format(value: Any, force_quotes: bool) -> str:
    value = _plain(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)  # shortest text that reads back as the same float; also inf, -inf, nan
    if isinstance(value, str):
        return _format_str(value, force_quotes)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_format(v, force_quotes) for v in value) + "]"
    if isinstance(value, Mapping):
        return (
            "{" + ",".join(f"{_format(k, False)}:{_format(v, force_quotes)}" for k, v in value.items()) + "}"
        )
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as a Hydra override value")


def format_value(value: Any) -> str:
    """The Hydra override text of a value: ``null``, ``true``, ``0.001``, ``[300,100]``, ``'a b'`` ...

    Raises:
        ValueError: when no text reads back as exactly this value.
    """
    text = _format(value, force_quotes=False)
    if isinstance(value, (list, tuple, Mapping, Container)) and not _parses_to(text, _plain_lists(value)):
        text = _format(value, force_quotes=True)
        if not _parses_to(text, _plain_lists(value)):
            raise ValueError(f"cannot write {value!r} as a Hydra override value")
    return text


def _plain_lists(value: Any) -> Any:
    value = _plain(value)
    if isinstance(value, (list, tuple)):
        return [_plain_lists(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain_lists(v) for k, v in value.items()}
    return value


def to_overrides(values: Mapping[str, Any]) -> list[str]:
    """Hydra overrides ``key=value`` that make ``compose(overrides=...)`` reproduce ``values``.

    Dict values merge into the config's dict, as every Hydra ``key={...}`` override does.
    """
    return [f"{key}={format_value(value)}" for key, value in values.items()]


def apply_values(cfg: DictConfig, values: Mapping[str, Any]) -> DictConfig:
    """A copy of ``cfg`` with the dotted keys set to ``values`` (same result as composing with
    :func:`to_overrides`, without re-composing).

    Raises:
        InputError: at the key, when ``cfg`` has no such key.
    """
    result = copy.deepcopy(cfg)
    for key, value in values.items():
        if not has_config_key(result, key):
            raise InputError(key, "no such config key")
        OmegaConf.update(result, key, copy.deepcopy(_plain(value)), merge=True)
    return result
