"""Shrink steps (search/shrink.py): the parent choice and the moves as pure functions, and end to end."""

from __future__ import annotations

import random

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from search import names
from search.shrink import (
    BIG_MOVES,
    BIG_STEP_HEADROOM,
    Candidate,
    children,
    level_tolerance,
    longer_finetune,
    next_child,
    parents,
    signature,
)
from tests.test_sweep import load_study, runs, sweep

DISTRIBUTIONS = {
    "compress.neurons.ratio": FloatDistribution(0.0, 0.9),
    "compress.prune.ratio": FloatDistribution(0.0, 0.97),
    "compress.quant.bits": IntDistribution(2, 8),
    "compress.quant.scheme": CategoricalDistribution(["none", "uniform"]),
}
PARAMS = {"compress.neurons.ratio": 0.6, "compress.prune.ratio": 0.8, "compress.quant.bits": 3,
          "compress.quant.scheme": "uniform"}


def test_the_parent_is_the_smallest_trial_within_the_tolerance():
    trials = [Candidate(0, 0.970, 3000, {}), Candidate(1, 0.960, 1000, {}), Candidate(2, 0.968, 2000, {}),
              Candidate(3, 0.975, 2000, {})]
    assert [c.number for c in parents(trials, reference_accuracy=0.972, tolerance=0.005)] == [3, 2, 0]
    assert parents(trials, reference_accuracy=0.99, tolerance=0.005) == []


def test_every_move_makes_one_knob_smaller_and_stays_in_the_space():
    moves = dict(children(Candidate(0, 0.97, 1000, PARAMS), DISTRIBUTIONS, random.Random(0)))
    changed = {name: {k for k in PARAMS if child[k] != PARAMS[k]} for name, child in moves.items()}
    assert all(len(keys) == 1 for keys in changed.values())
    assert moves["compress.neurons.ratio +0.10"]["compress.neurons.ratio"] == pytest.approx(0.7)
    assert moves["compress.neurons.ratio +0.05"]["compress.neurons.ratio"] == pytest.approx(0.65)
    assert moves["compress.prune.ratio keep x0.7"]["compress.prune.ratio"] == pytest.approx(1 - 0.2 * 0.7)
    assert moves["compress.quant.bits -1"]["compress.quant.bits"] == 2
    # at the bounds: clipped into the range, and no move at all where the value cannot change
    edge = {**PARAMS, "compress.neurons.ratio": 0.88, "compress.quant.bits": 2, "compress.prune.ratio": 0.97}
    moves = dict(children(Candidate(0, 0.97, 1000, edge), DISTRIBUTIONS, random.Random(0)))
    assert sorted(moves) == ["compress.neurons.ratio +0.10"]      # +0.05 clips to the same child: offered once
    assert moves["compress.neurons.ratio +0.10"]["compress.neurons.ratio"] == 0.9


def test_a_key_the_parent_did_not_sample_is_not_moved():
    no_bits = {k: v for k, v in PARAMS.items() if k != "compress.quant.bits"}
    moves = dict(children(Candidate(0, 0.97, 1000, no_bits), DISTRIBUTIONS, random.Random(0)))
    assert all("compress.quant.bits" not in child for child in moves.values())


def test_next_child_skips_tried_children_and_falls_back_to_the_next_parent():
    small, big = Candidate(0, 0.97, 1000, PARAMS), Candidate(1, 0.971, 2000, {**PARAMS, "compress.quant.bits": 4})
    tried: set = {signature(PARAMS), signature(big.params)}
    seen = []
    while (step := next_child([big, small], DISTRIBUTIONS, 0.972, 0.005, tried, random.Random(1))) is not None:
        parent, move, params = step
        seen.append(parent.number)
        tried.add(signature(params))
    # the five moves of the smallest parent first, then the next one's; its "one bit fewer" child is the
    # smallest parent itself (already tried), so four
    assert seen == [0] * 5 + [1] * 4
    assert next_child([small], DISTRIBUTIONS, 0.99, 0.005, set(), random.Random(1)) is None   # none within tolerance


def test_categorical_moves_one_grid_per_tensor_and_ternary_below_2_bit_uniform():
    space = {**DISTRIBUTIONS, "compress.quant.scheme": CategoricalDistribution(["none", "uniform", "ternary"]),
             "compress.quant.granularity": CategoricalDistribution(["channel", "tensor"])}
    params = {**PARAMS, "compress.quant.granularity": "channel"}
    moves = dict(children(Candidate(0, 0.97, 1000, params), space, random.Random(0)))
    assert moves["compress.quant.granularity tensor"]["compress.quant.granularity"] == "tensor"
    assert "compress.quant.scheme ternary" not in moves                   # 3 bits: one bit fewer comes first
    two_bits = {**params, "compress.quant.bits": 2, "compress.quant.granularity": "tensor"}
    moves = dict(children(Candidate(0, 0.97, 1000, two_bits), space, random.Random(0)))
    assert moves["compress.quant.scheme ternary"]["compress.quant.scheme"] == "ternary"
    assert "compress.quant.granularity tensor" not in moves               # already one grid per tensor
    # a space without ternary offers no such move
    moves = dict(children(Candidate(0, 0.97, 1000, two_bits), DISTRIBUTIONS, random.Random(0)))
    assert "compress.quant.scheme ternary" not in moves


EPOCHS = {**DISTRIBUTIONS, "compress.finetune_epochs": IntDistribution(1, 60, log=True)}


def test_longer_finetune_doubles_the_epochs_within_the_space():
    assert longer_finetune({**PARAMS, "compress.finetune_epochs": 20}, EPOCHS)["compress.finetune_epochs"] == 40
    assert longer_finetune({**PARAMS, "compress.finetune_epochs": 40}, EPOCHS)["compress.finetune_epochs"] == 60
    assert longer_finetune({**PARAMS, "compress.finetune_epochs": 60}, EPOCHS) is None
    assert longer_finetune(PARAMS, EPOCHS) is None                        # not sampled: nothing to change


def test_longer_finetune_also_doubles_the_finetune_lr_within_the_space():
    space = {**EPOCHS, "compress.finetune_lr": FloatDistribution(3e-4, 1e-2, log=True)}
    retry = longer_finetune({**PARAMS, "compress.finetune_epochs": 20, "compress.finetune_lr": 0.003}, space)
    assert retry["compress.finetune_epochs"] == 40 and retry["compress.finetune_lr"] == pytest.approx(0.006)
    clipped = longer_finetune({**PARAMS, "compress.finetune_epochs": 20, "compress.finetune_lr": 0.008}, space)
    assert clipped["compress.finetune_lr"] == 0.01
    # epochs at the bound: no retry, whatever the rate could still do
    assert longer_finetune({**PARAMS, "compress.finetune_epochs": 60, "compress.finetune_lr": 0.003}, space) is None


def test_a_narrow_miss_is_retried_once_with_twice_the_finetune():
    parent = Candidate(0, 0.972, 1000, {"compress.neurons.ratio": 0.6, "compress.finetune_epochs": 20})
    space = {k: EPOCHS[k] for k in parent.params}
    child = {**parent.params, "compress.neurons.ratio": pytest.approx(0.7)}

    def step(child_accuracy: float, tried_extra=()):
        done = Candidate(1, child_accuracy, 800, {**parent.params, "compress.neurons.ratio": 0.7})
        other = {**parent.params, "compress.neurons.ratio": 0.65}          # the +0.05 move, tried and good
        tried = {signature(parent.params), signature(done.params), signature(other), *tried_extra}
        return next_child([parent, done], space, 0.972, 0.005, tried, random.Random(0))

    # missed by 1 pt (tolerance 0.5 pt; band 3 tolerances): the same child with 40 epochs
    _, move, params = step(0.962)
    assert params == {**child, "compress.finetune_epochs": 40} and move.endswith("fine-tune x2")
    assert step(0.940) is None                                            # missed by far: not retried
    retried = {"compress.neurons.ratio": 0.7, "compress.finetune_epochs": 40}
    assert step(0.962, [signature(retried)]) is None                      # once only


@pytest.mark.slow
def test_a_shrink_step_runs_the_smallest_good_trial_with_one_knob_pushed(tmp_path):
    study = optuna.create_study(study_name="shr", storage=f"sqlite:///{tmp_path}/optuna.db",
                                directions=["maximize", "minimize", "minimize"])
    study.enqueue_trial({"compress.prune.ratio": 0.5, "compress.neurons.ratio": 0.3, "compress.quant.scheme": "uniform",
                         "compress.quant.bits": 6, "compress.finetune_epochs": 2, "compress.finetune_lr": 3e-3})
    # every second trial is a shrink step; a tolerance of 1 makes every finished trial a possible parent
    proc = sweep(tmp_path, "study.name=shr", "study.n_trials=4", "study.seed_recipes=[]", "study.shrink_every=2",
                 "study.shrink_tolerance=1.0", "study.early_stop=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, second, _, fourth = load_study(tmp_path, "shr").trials
    assert second.user_attrs.get("shrink_of") == 0 and "shrink_of" not in first.user_attrs
    changed = {k for k in first.params if second.params[k] != first.params[k]}
    assert len(changed) == 1 and set(second.params) == set(first.params)
    (key,) = changed
    smaller = {"compress.quant.bits": lambda old, new: new < old,
               "compress.quant.granularity": lambda old, new: (old, new) == ("channel", "tensor")}
    assert smaller.get(key, lambda old, new: new > old)(first.params[key], second.params[key])
    by_number = {int(r.data.tags[names.TRIAL_NUMBER]): r for r in runs(tmp_path, "trial")}
    assert by_number[1].data.tags[names.SHRINK_OF] == "0" and names.SHRINK_OF not in by_number[0].data.tags
    # the study's first shrink step is at study.shrink_tolerance itself, recorded in Optuna and MLflow
    assert second.user_attrs["shrink_tolerance"] == 1.0 and by_number[1].data.tags[names.SHRINK_TOLERANCE] == "1.0"
    # the second one at the next level (study.shrink_levels=3: 4x the tolerance)
    assert fourth.user_attrs["shrink_tolerance"] == 4.0 and "shrink_of" in fourth.user_attrs

    off = sweep(tmp_path, "study.name=shr", "study.n_trials=6", "study.shrink_every=0", "study.seed_recipes=[]")
    assert off.returncode == 0, off.stderr[-3000:]
    assert all("shrink_of" not in t.user_attrs for t in load_study(tmp_path, "shr").trials[4:])


def test_a_candidate_key_is_the_signature_of_its_params_computed_once():
    c = Candidate(3, 0.97, 1000.0, {"compress.prune.ratio": 0.5000000001, "compress.quant.bits": 4})
    assert c.key == signature(c.params) == signature({"compress.prune.ratio": 0.5, "compress.quant.bits": 4})
    assert c.key is c.key                                   # cached on the (frozen) candidate
    assert c == Candidate(3, 0.97, 1000.0, dict(c.params))  # equality still by its fields


def test_a_parent_far_above_the_floor_tries_the_big_steps_first():
    parent = Candidate(0, 0.97, 1000, PARAMS)
    big_names = {f"{key} {name}" for key, name, _, _ in BIG_MOVES}
    far = children(parent, DISTRIBUTIONS, random.Random(0), headroom=BIG_STEP_HEADROOM)
    assert {name for name, _ in far[:len(big_names)]} == big_names
    assert {name for name, _ in far[len(big_names):]} & big_names == set()
    moved = dict(far)
    assert moved["compress.neurons.ratio +0.20"]["compress.neurons.ratio"] == pytest.approx(0.8)
    assert moved["compress.prune.ratio keep x0.5"]["compress.prune.ratio"] == pytest.approx(0.9)
    assert moved["compress.quant.bits -2"]["compress.quant.bits"] == 2          # clipped to the space's 2
    near = children(parent, DISTRIBUTIONS, random.Random(0), headroom=BIG_STEP_HEADROOM - 0.1)
    assert {name for name, _ in near} & big_names == set()


def test_next_child_steps_big_from_a_parent_far_above_the_tolerance():
    big_names = {f"{key} {name}" for key, name, _, _ in BIG_MOVES}
    far = Candidate(0, 0.972 - 0.005 + 0.005 * (BIG_STEP_HEADROOM + 0.5), 1000, PARAMS)   # 4.5 tolerances above
    _, move, _ = next_child([far], DISTRIBUTIONS, 0.972, 0.005, set(), random.Random(0))
    assert move in big_names
    near = Candidate(0, 0.972, 1000, PARAMS)                                           # 1 tolerance above the floor
    _, move, _ = next_child([near], DISTRIBUTIONS, 0.972, 0.005, set(), random.Random(0))
    assert move not in big_names


def test_shrink_levels_alternate_the_tolerance_with_looser_ones():
    assert [level_tolerance(0.005, 1, s) for s in range(4)] == [0.005] * 4          # one level: always the same
    assert [level_tolerance(0.005, 2, s) for s in range(4)] == pytest.approx([0.005, 0.02, 0.005, 0.02])
    assert [level_tolerance(0.005, 3, s) for s in range(8)] == pytest.approx(
        [0.005, 0.02, 0.005, 0.08, 0.005, 0.02, 0.005, 0.08])


def test_a_looser_level_steps_from_a_smaller_less_accurate_parent():
    accurate, small = Candidate(0, 0.971, 2000, PARAMS), Candidate(1, 0.955, 800, {**PARAMS, "compress.quant.bits": 2})
    tight, _, _ = next_child([accurate, small], DISTRIBUTIONS, 0.972, level_tolerance(0.005, 3, 0), set(),
                             random.Random(0))
    loose, _, child = next_child([accurate, small], DISTRIBUTIONS, 0.972, level_tolerance(0.005, 3, 1), set(),
                                 random.Random(0))
    assert (tight.number, loose.number) == (0, 1)                 # 0.5 pt: the accurate one; 2 pt: the small one
    assert child != small.params
