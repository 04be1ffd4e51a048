"""How a study spends its budget, end to end: the base cache, seed recipes, early stopping (real stores)."""

from __future__ import annotations

import optuna
import pytest

from search import names
from tests.test_sweep import client, load_study, runs, sweep

pytestmark = pytest.mark.slow

GOOD = {"compress.prune.ratio": 0.0, "compress.neurons.ratio": 0.0, "compress.quant.scheme": "uniform",
        "compress.quant.bits": 6, "compress.finetune_epochs": 2, "compress.finetune_lr": 3e-3}
HOPELESS = {"compress.prune.ratio": 0.95, "compress.prune.criterion": "random", "compress.prune.schedule": "one_shot",
            "compress.prune.scope": "per_layer", "compress.neurons.ratio": 0.0, "compress.quant.scheme": "none",
            "compress.finetune_epochs": 1, "compress.finetune_lr": 3e-4}   # the least fine-tune the space has


def _space_high(key: str, space: str = "compress_only") -> int:
    """The upper bound of ``key`` in ``conf/space/<space>.yaml``."""
    from omegaconf import OmegaConf

    from search.config import CONF_DIR
    from search.space import parse_space

    return next(int(p.distribution.high) for p in parse_space(OmegaConf.load(CONF_DIR / "space" / f"{space}.yaml"))
                if p.key == key)


def test_a_hopeless_trial_is_pruned_after_fold_one_in_optuna_and_mlflow(tmp_path):
    study = optuna.create_study(study_name="stop", storage=f"sqlite:///{tmp_path}/optuna.db",
                                directions=["maximize", "minimize", "minimize"])
    study.enqueue_trial(GOOD)
    study.enqueue_trial(HOPELESS)
    proc = sweep(tmp_path, "study.name=stop", "study.n_trials=2", "cv.folds=3", "train.epochs=6",
                 "study.early_stop=true", "study.early_stop_margin=0.05")
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = load_study(tmp_path, "stop").trials
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED"]
    by_number = {int(r.data.tags[names.TRIAL_NUMBER]): r for r in runs(tmp_path, "trial")}
    good, pruned = by_number[0], by_number[1]
    assert good.data.metrics[names.FOLDS_RUN] == 3 and good.info.status == "FINISHED"
    assert pruned.data.tags[names.STATE] == "PRUNED" and pruned.info.status == "KILLED"
    assert pruned.data.metrics[names.FOLDS_RUN] == 1
    assert pruned.data.tags.get(names.PARETO) != "true"
    assert pruned.data.metrics[names.ACCURACY] < good.data.metrics[names.ACCURACY] - 0.2


def test_recipes_seed_a_new_study_once_share_the_cached_base_and_reproduce_exactly(tmp_path, capsys):
    first = sweep(tmp_path, "study.name=rcp", "study.n_trials=2", "study.seed_recipes=[twn,int8]")
    assert first.returncode == 0, first.stderr[-3000:]
    again = sweep(tmp_path, "study.name=rcp", "study.n_trials=3", "study.seed_recipes=[twn,int8]")
    assert again.returncode == 0, again.stderr[-3000:]
    trials = load_study(tmp_path, "rcp").trials
    assert len(trials) == 3
    assert [t.user_attrs.get("recipe") for t in trials] == ["twn", "int8", None]
    assert trials[0].params["compress.quant.scheme"] == "ternary"
    by_number = {int(r.data.tags[names.TRIAL_NUMBER]): r for r in runs(tmp_path, "trial")}
    assert by_number[0].data.tags[names.RECIPE] == "twn" and by_number[1].data.tags[names.RECIPE] == "int8"
    assert names.RECIPE not in by_number[2].data.tags
    # compress_only: every trial and the reference train the same base per fold: one entry per fold, all hits
    entries = sorted((tmp_path / "base-cache" / "rcp").glob("*.base.pt"))
    assert len(entries) == 2
    assert all(r.data.metrics[names.BASE_CACHED] == 1.0 for r in by_number.values())
    (parent,) = runs(tmp_path, "study")
    assert names.REFERENCE_LONG_ACCURACY in parent.data.metrics
    # train.epochs + the space's longest fine-tune (read from conf/space/compress_only.yaml, not copied here)
    assert parent.data.metrics[names.REFERENCE_LONG_EPOCHS] == 2 + _space_high("compress.finetune_epochs")

    from search.reproduce import main as reproduce

    capsys.readouterr()
    code = reproduce([f"run_id={by_number[0].info.run_id}", f"mlflow.tracking_uri=sqlite:///{tmp_path}/mlflow.db",
                      f"study.storage=sqlite:///{tmp_path}/optuna.db"])
    out = capsys.readouterr()
    assert code == 0, out.err[-2000:]
    assert client(tmp_path).get_run(by_number[0].info.run_id).data.tags[names.STATE] == "COMPLETE"
