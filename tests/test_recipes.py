"""Seed recipes (search.recipes): fixed params in a space, enqueued once per study."""

from __future__ import annotations

import optuna
import pytest

from search.config import compose
from search.recipes import enqueue_recipes, fixed_params, load_recipe, recipe_names
from search.space import parse_space
from trainers.errors import InputError


def _space(name: str, *overrides: str):
    cfg = compose([f"space={name}", *overrides])
    return cfg, parse_space(cfg.space)


def test_the_default_recipes_exist_and_parse() -> None:
    cfg = compose([])
    assert set(cfg.study.seed_recipes) <= set(recipe_names())
    for name in recipe_names():
        assert load_recipe(name), name


def test_unknown_recipe_names_the_key() -> None:
    with pytest.raises(InputError, match="study.seed_recipes"):
        load_recipe("nope")


def test_recipe_keys_win_and_the_rest_of_the_space_takes_the_config_values() -> None:
    cfg, params = _space("joint")
    fixed = fixed_params(load_recipe("deep_compression"), params, cfg)
    assert fixed["compress.prune.ratio"] == 0.8 and fixed["compress.quant.bits"] == 4
    assert fixed["compress.quant.scheme"] == "uniform" and fixed["compress.finetune_epochs"] == 20
    # not named by the recipe: the configured training, so the recipe trains exactly the reference's base
    assert fixed["train.lr"] == cfg.train.lr and fixed["train.epochs"] == cfg.train.epochs
    assert fixed["train.weight_decay"] == 0.0 and fixed["model.width"] == 1.0
    assert fixed["compress.neurons.ratio"] == 0.0
    # conditional keys follow the recipe's scheme: no ternary threshold for a uniform recipe
    assert "compress.quant.threshold" not in fixed
    for p in params:
        if p.key in fixed:
            assert p.distribution._contains(p.distribution.to_internal_repr(fixed[p.key])), p.key


def test_values_outside_the_space_are_clipped_and_unsampled_keys_dropped() -> None:
    cfg = compose(["space=compress_only"])
    cfg.space.params["compress.prune.ratio"] = "interval(0.0, 0.5)"
    params = parse_space(cfg.space)
    fixed = fixed_params(load_recipe("sparse_int8"), params, cfg)
    assert fixed["compress.prune.ratio"] == 0.5
    cfg, params = _space("train_only")
    assert fixed_params(load_recipe("twn"), params, cfg) is None       # the space samples none of its keys


def test_recipes_are_enqueued_once_across_a_resume(tmp_path) -> None:
    cfg, params = _space("compress_only")
    storage = f"sqlite:///{tmp_path}/o.db"
    study = optuna.create_study(study_name="s", storage=storage, directions=["maximize", "minimize"])
    assert enqueue_recipes(study, ["twn", "int8", "aggressive"], params, cfg, budget=2) == ["twn", "int8"]
    again = optuna.load_study(study_name="s", storage=storage)
    assert enqueue_recipes(again, ["twn", "int8", "aggressive"], params, cfg, budget=5) == []
    waiting = again.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert [t.user_attrs["recipe"] for t in waiting] == ["twn", "int8"]
    trial = again.ask()
    assert trial.params == {} and trial.user_attrs["recipe"] == "twn"
    assert trial.suggest_categorical("compress.quant.scheme", ["none", "ternary"]) == "ternary"
