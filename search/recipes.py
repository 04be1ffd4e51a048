"""Expert recipes as seed trials: the settings a person would try first, run before the sampler guesses.

A recipe is a YAML file ``conf/recipe/<name>.yaml`` with ``params: {dotted key: value}`` (a fixed
setting, no distributions). ``study.seed_recipes=[...]`` names the recipes a new study starts with; each
is turned into the fixed parameters of one Optuna trial (``study.enqueue_trial``) **in the study's
space**: a parameter the space samples takes the recipe's value, or else the config's own value (so a
recipe trial of the joint space trains with the configured training settings, not random ones); a value
outside the space's range is moved to its nearest bound; a key the space does not sample is dropped (the
config decides it). A recipe none of whose keys the space samples is skipped with a notice.

The trials carry the user attribute ``recipe`` (logged as the run tag ``recipe=<name>``), count in
``study.n_trials``, and are enqueued once per study: a resumed study does not enqueue them again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from search import names
from search.config import CONF_DIR
from trainers.errors import InputError

__all__ = ["RECIPE_DIR", "RECIPE_ATTR", "recipe_names", "load_recipe", "fixed_params", "enqueue_recipes"]

RECIPE_DIR = CONF_DIR / "recipe"
RECIPE_ATTR = names.RECIPE                    # trial user attr (and MLflow tag) naming the recipe
_ENQUEUED_ATTR = "seed_recipes_enqueued"     # study user attr: the recipes already enqueued


def recipe_names() -> list[str]:
    """The recipes that exist (stems of ``conf/recipe/*.yaml``)."""
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def load_recipe(name: str) -> dict[str, Any]:
    """``{dotted key: value}`` of recipe ``name``; InputError naming ``study.seed_recipes`` if unknown."""
    from omegaconf import OmegaConf

    path = RECIPE_DIR / f"{name}.yaml"
    if not isinstance(name, str) or not path.is_file():
        raise InputError("study.seed_recipes", f"unknown recipe {name!r}; recipes: {', '.join(recipe_names())} "
                                               f"(conf/recipe/*.yaml), or [] for none")
    params = OmegaConf.to_container(OmegaConf.load(path), resolve=True).get("params") or {}
    return dict(params)


def _in_space(param, value: Any) -> tuple[bool, Any]:
    """``(ok, Optuna value)`` of ``value`` for ``param``: numbers clipped into the range, categoricals only
    when among the choices."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from search.space import same_value

    d = param.distribution
    if isinstance(d, CategoricalDistribution):
        python_choices = param.choices if param.choices is not None else d.choices
        for python_value, optuna_value in zip(python_choices, d.choices):
            if same_value(python_value, value):
                return True, optuna_value
        return False, None
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return False, None
    clipped = min(max(value, d.low), d.high)
    if isinstance(d, IntDistribution):
        return True, int(round(clipped))
    if isinstance(d, FloatDistribution):
        return True, float(clipped)
    return False, None


def fixed_params(recipe: Mapping[str, Any], params: Sequence[Any], cfg: Any) -> dict[str, Any] | None:
    """The Optuna fixed parameters of ``recipe`` in the space ``params`` (see the module docstring), or
    ``None`` when the space samples none of the recipe's keys."""
    from search.space import config_value

    if not any(p.key in recipe for p in params):
        return None
    fixed: dict[str, Any] = {}
    sampled: dict[str, Any] = {}           # Python values, for the ``when`` conditions of later params
    for param in params:
        if not param.conditions_hold(sampled, cfg):
            continue
        value = recipe[param.key] if param.key in recipe else config_value(cfg, param.key)
        ok, optuna_value = _in_space(param, value)
        if not ok:
            continue                       # the sampler draws this one
        fixed[param.key] = optuna_value
        sampled[param.key] = param.decode(optuna_value)
    return fixed


def enqueue_recipes(study, names: Sequence[str], params: Sequence[Any], cfg: Any, budget: int) -> list[str]:
    """Enqueue the recipes ``names`` (at most ``budget``) unless this study already has; returns what was
    enqueued now. Callers hold the study's budget lock, so concurrent starts enqueue once."""
    if study.user_attrs.get(_ENQUEUED_ATTR) is not None:
        return []
    enqueued: list[str] = []
    for name in names:
        if len(enqueued) >= budget:
            break
        fixed = fixed_params(load_recipe(name), params, cfg)
        if fixed is None:
            continue
        study.enqueue_trial(fixed, user_attrs={RECIPE_ATTR: name})
        enqueued.append(name)
    study.set_user_attr(_ENQUEUED_ATTR, list(enqueued))
    return enqueued
