"""Paired latency, the A/A noise floor and Pareto ties on latency (issue 11 items 1, 2 and 5)."""

from __future__ import annotations

import copy
import time

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import create_trial
from torch import nn

from search import names
from search.ledger import LATENCY_NOISE_ATTR, StudyLedger, pareto_mask
from search.pareto import non_dominated_mask, tied_non_dominated_mask
from search.report import collect
from search.storage import open_storage
from trainers import measure
from trainers.measure import LatencyProtocol, choose_runtime, empty_forward_ms, measure_paired, paired_stats

optuna.logging.set_verbosity(optuna.logging.WARNING)

MAX_MIN_MIN = ["maximize", "minimize", "minimize"]


# --- paired_stats: pure ------------------------------------------------------------------------------

def test_paired_speedup_cancels_load_that_hits_both_sides_of_a_block():
    rng = np.random.default_rng(0)
    load = rng.uniform(1.0, 4.0, size=(12, 1))              # each block on a differently busy machine
    ref = 2.0 * load * np.ones((12, 5))
    cand = 1.0 * load * np.ones((12, 5))
    s = paired_stats(ref, cand)
    assert s.speedup == pytest.approx(2.0)
    assert (s.speedup_ci_low, s.speedup_ci_high) == pytest.approx((2.0, 2.0))
    assert s.latency_ci_low < s.latency_ms < s.latency_ci_high   # the absolute latency does move
    assert s.blocks == 12 and s.noise == pytest.approx(1.0)      # noise: distance of the interval from 1


def test_paired_interval_covers_the_truth_and_is_seeded():
    rng = np.random.default_rng(1)
    ref = 1.5 * rng.lognormal(0, 0.05, size=(10, 5))
    cand = rng.lognormal(0, 0.05, size=(10, 5))
    a, b = paired_stats(ref, cand, seed=3), paired_stats(ref, cand, seed=3)
    assert a == b
    assert a.speedup_ci_low <= 1.5 <= a.speedup_ci_high
    assert a.speedup_ci_low <= a.speedup <= a.speedup_ci_high


@pytest.mark.parametrize("ref, cand", [([[1.0, 1.0]], [[1.0, 1.0]]),                 # one block
                                       ([[1.0], [1.0]], [[1.0], [1.0], [1.0]]),       # block counts differ
                                       ([[1.0], [0.0]], [[1.0], [1.0]])])             # a zero time
def test_paired_stats_rejects_bad_input(ref, cand):
    with pytest.raises(ValueError):
        paired_stats(ref, cand)


# --- measure_paired / empty_forward_ms: real timing ---------------------------------------------------

PROTOCOL = LatencyProtocol(warmup=5, repeats=60, throughput_batch=16, blocks=6)


def _mlp(width: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, width), nn.ReLU(), nn.Linear(width, 10)).eval()


def test_measure_paired_against_itself_brackets_one_and_a_big_model_is_slower():
    X = torch.randn(50, 64)
    model = _mlp(32)
    aa = measure_paired(model, copy.deepcopy(model), X, PROTOCOL).paired
    assert aa.blocks == 6 and aa.speedup_ci_low <= aa.speedup_ci_high
    assert 0.7 < aa.speedup < 1.4
    big = measure_paired(_mlp(32), _mlp(4096), X, PROTOCOL).paired     # candidate small, reference large
    assert big.speedup_ci_low > 1.5


@pytest.mark.parametrize("paired", [False, True])
def test_the_chosen_runtime_carries_its_own_throughput(paired):
    # candidates are timed without throughput; the winner's is measured (alone, or in the paired measurement)
    X = torch.randn(50, 64)
    protocol = LatencyProtocol(warmup=5, repeats=60, throughput_batch=16, blocks=6,
                               runtimes=("fp32_dense", "torchscript"))
    reference = _mlp(32) if paired else None
    served, result = choose_runtime(_mlp(32), X, protocol, None, reference=reference)
    assert result.runtime in ("fp32_dense", "torchscript")
    assert np.isfinite(result.throughput_per_s) and result.throughput_per_s > 0
    assert (result.paired is not None) == paired


def test_candidates_are_screened_with_choice_repeats_and_the_winner_timed_with_repeats(monkeypatch):
    import trainers.measure as measure

    seen = []
    real = measure._time_calls
    monkeypatch.setattr(measure, "_time_calls", lambda model, batches, warmup: seen.append(
        (id(model), len(batches) - warmup)) or real(model, batches, warmup))
    protocol = LatencyProtocol(warmup=2, repeats=40, choice_repeats=12, throughput_batch=8, blocks=5,
                               runtimes=("fp32_dense", "torchscript"))
    served, result = choose_runtime(_mlp(32), torch.randn(50, 64), protocol, None)
    timed = [(m, n) for m, n in seen if n > 0]
    screen, full = timed[:10], timed[10:]           # 5 rounds x 2 candidates, then the winner
    per_model: dict[int, int] = {}
    for m, n in screen:
        per_model[m] = per_model.get(m, 0) + n
    assert sorted(per_model.values()) == [12, 12]    # each candidate: choice_repeats calls in all
    assert full[0] == (id(served), 40)               # the winner again with the full repeats
    assert result.protocol.repeats == 40


def _clocked(log: list, name: str, ms: float) -> torch.nn.Module:
    """A served model whose every call appends its name to ``log`` and takes ``ms`` (busy wait)."""
    class Clocked(torch.nn.Module):
        def forward(self, x):
            log.append(name)
            end = time.perf_counter() + ms / 1000
            while time.perf_counter() < end:
                pass
            return x
    return Clocked()


def test_runtimes_are_screened_in_interleaved_rounds():
    # a burst of machine load during one candidate's calls must hit the others too: no candidate is timed
    # for all its calls before the next starts, and the order rotates from round to round
    log: list[str] = []
    served = {name: _clocked(log, name, 0.0) for name in ("a", "b", "c")}
    measure.screen_runtimes(served, torch.randn(10, 4), LatencyProtocol(warmup=1, choice_repeats=6, repeats=6,
                                                                      blocks=3))
    timed = log[3:]                                     # after one warm-up call each
    assert sorted(timed) == ["a"] * 6 + ["b"] * 6 + ["c"] * 6
    rounds = [timed[i:i + 6] for i in range(0, 18, 6)]
    assert [r[0] for r in rounds] == ["a", "b", "c"]    # the first candidate of a round rotates
    assert all(sorted(r) == ["a", "a", "b", "b", "c", "c"] for r in rounds)


def test_the_screen_ranks_candidates_by_their_latency():
    log: list[str] = []
    served = {"slow": _clocked(log, "slow", 2.0), "fast": _clocked(log, "fast", 0.2)}
    latency = measure.screen_runtimes(served, torch.randn(10, 4), LatencyProtocol(warmup=1, choice_repeats=4,
                                                                                repeats=4, blocks=2))
    assert latency["fast"] < latency["slow"]
    assert latency["slow"] >= 2.0 * 0.9               # ms per sample of a 2 ms call (batch 1)


def test_screening_splits_calls_that_do_not_divide_into_rounds():
    log: list[str] = []
    measure.screen_runtimes({"a": _clocked(log, "a", 0.0)}, torch.randn(10, 4),
                            LatencyProtocol(warmup=1, choice_repeats=7, repeats=7, blocks=3))
    assert len(log) == 1 + 7


@pytest.mark.parametrize("runtime", ["fp32_dense", "torchscript", "onnxruntime"])
def test_empty_forward_is_timed_in_each_runtime(runtime):
    X = torch.randn(20, 64)
    assert 0 < empty_forward_ms(runtime, X, PROTOCOL) < 50


# --- Pareto ties on latency ----------------------------------------------------------------------------

def test_identical_artifacts_never_split_the_front_on_latency():
    """Two trials of the same file (same accuracy and size, latencies within the noise), among random
    others: both on the front or both off, whatever the others are."""
    rng = np.random.default_rng(0)
    noise = 0.05
    for _ in range(300):
        n = int(rng.integers(1, 12))
        others = np.column_stack([rng.choice([0.8, 0.85, 0.9], n), rng.choice([10.0, 20.0, 30.0], n),
                                  rng.uniform(0.8, 1.3, n)])
        twin = [float(rng.choice([0.8, 0.85, 0.9])), float(rng.choice([10.0, 20.0, 30.0])), rng.uniform(0.8, 1.3)]
        second = [twin[0], twin[1], twin[2] * rng.uniform(1.0, 1.0 + noise)]
        values = np.vstack([others, twin, second])
        mask = tied_non_dominated_mask(values, MAX_MIN_MIN, [0.0, 0.0, noise])
        assert mask[-1] == mask[-2], values


def test_a_latency_advantage_inside_the_noise_does_not_reach_the_front():
    # the case: a large unquantized trial Pareto-optimal only because it timed 3% faster
    values = [[0.95, 10_000, 1.00],       # the compressed trial
              [0.95, 68_000, 0.97]]       # larger, "faster" by noise
    assert non_dominated_mask(values, MAX_MIN_MIN).tolist() == [True, True]
    assert tied_non_dominated_mask(values, MAX_MIN_MIN, [0, 0, 0.05]).tolist() == [True, False]
    values[1][2] = 0.90                   # 10% faster: beyond the noise, a real trade-off
    assert tied_non_dominated_mask(values, MAX_MIN_MIN, [0, 0, 0.05]).tolist() == [True, True]


def test_size_and_accuracy_stay_exact_and_maximized_timings_tie_too():
    values = [[0.9, 100.0, 2.05], [0.9, 99.0, 2.00]]           # (accuracy, size, speedup)
    directions = ["maximize", "minimize", "maximize"]
    assert tied_non_dominated_mask(values, directions, [0, 0, 0.05]).tolist() == [False, True]
    assert tied_non_dominated_mask(values, directions, [0, 0, 0.01]).tolist() == [True, True]
    assert pareto_mask(values, ["accuracy", "size_bytes", "speedup"], 0.05).tolist() == [False, True]


def test_zero_tolerance_is_the_exact_front():
    rng = np.random.default_rng(2)
    values = np.column_stack([rng.integers(0, 5, 200) / 4, rng.integers(1, 6, 200), rng.uniform(0.5, 2, 200)])
    assert (tied_non_dominated_mask(values, MAX_MIN_MIN, [0, 0, 0]) == non_dominated_mask(values, MAX_MIN_MIN)).all()


def test_tied_front_matches_a_brute_force_oracle():
    rng = np.random.default_rng(3)
    eps = 0.1
    for _ in range(50):
        n = int(rng.integers(1, 40))
        v = np.column_stack([rng.integers(0, 4, n) / 4, rng.integers(1, 5, n), rng.uniform(0.5, 2, n)])
        got = tied_non_dominated_mask(v, MAX_MIN_MIN, [0, 0, eps])
        # oracle: merge repeats (equal exact columns, latencies chained within eps) to their minimum, then
        # a dominates b when >= everywhere (latency: not slower by more than eps) and better somewhere
        raw = np.log(v[:, 2])
        lat = raw.copy()
        for key in {tuple(r) for r in v[:, :2]}:
            idx = [i for i in range(n) if tuple(v[i, :2]) == key]
            idx.sort(key=lambda i: raw[i])
            start = idx[0]
            for prev, cur in zip(idx, idx[1:]):
                if raw[cur] - raw[prev] > np.log1p(eps):
                    start = cur
                lat[cur] = raw[start]
        t = np.log1p(eps)
        want = [not any(v[a, 0] >= v[b, 0] and v[a, 1] <= v[b, 1] and lat[a] <= lat[b] + t
                        and (v[a, 0] > v[b, 0] or v[a, 1] < v[b, 1] or lat[a] < lat[b] - t)
                        for a in range(n)) for b in range(n)]
        assert got.tolist() == want


@pytest.mark.parametrize("tolerances", [[0, 0], [0, 0, -0.1], [0, 0, float("nan")]])
def test_tolerances_are_validated(tolerances):
    with pytest.raises(ValueError, match="tolerances"):
        tied_non_dominated_mask([[0.9, 1.0, 1.0]], MAX_MIN_MIN, tolerances)


def test_a_tolerant_column_must_be_positive():
    with pytest.raises(ValueError, match="> 0"):
        tied_non_dominated_mask([[0.9, 1.0, 0.0]], MAX_MIN_MIN, [0, 0, 0.05])


def test_ledger_front_and_report_use_the_studys_noise(tmp_path):
    objectives = ["accuracy", "size_bytes", "latency_ms"]
    study = optuna.create_study(study_name="s", storage=open_storage(f"sqlite:///{tmp_path}/o.db"),
                                directions=MAX_MIN_MIN)
    study.set_user_attr(LATENCY_NOISE_ATTR, 0.05)
    rng = np.random.default_rng(4)
    ledger = StudyLedger(study, objectives).update()
    for _ in range(5):                                   # waves: a tie can bring back a dropped point
        study.add_trials([create_trial(values=[float(rng.choice([0.8, 0.9])), float(rng.choice([1.0, 2.0])),
                                               float(rng.uniform(0.9, 1.2))]) for _ in range(15)])
        front = sorted(r.number for r in collect(study, objectives) if r.pareto)
        assert ledger.update().front == front
    values = np.array([t.values for t in study.trials])
    assert front == np.flatnonzero(pareto_mask(values, objectives, 0.05)).tolist()
    assert front != np.flatnonzero(non_dominated_mask(values, MAX_MIN_MIN)).tolist()


def test_throughput_is_a_maximized_objective():
    assert names.OBJECTIVE_DIRECTIONS[names.THROUGHPUT] == "maximize"
    assert names.THROUGHPUT in names.TIMED_OBJECTIVES


def test_a_fold_timed_against_the_reference_logs_a_paired_speedup(tmp_path):
    from trainers.data import load_dataset, split_test
    from trainers.pipeline import ReferenceArtifact, evaluate_artifact, run_fold

    ds = load_dataset({"name": "digits"})
    X, y = ds.X[:400], ds.y[:400]
    tr, va = split_test(y, 0.25, seed=0)
    cfg = {"device": "cpu", "data": {"name": "digits", "standardize": True, "pca": None},
           "model": {"name": "mlp", "hidden": [32], "width": 1.0, "dropout": 0.0},
           "train": {"optimizer": "adam", "lr": 0.003, "weight_decay": 0.0, "epochs": 2, "batch_size": 64,
                     "momentum": 0.9, "threads": 1},
           "compress": {"finetune_epochs": 0, "finetune_lr": None, "codec": "lzma", "prune": {"ratio": 0.0},
                        "neurons": {"ratio": 0.0}, "quant": {"scheme": "none"}},
           "latency": {"threads": 1, "batch_size": 1, "warmup": 3, "repeats": 40, "throughput_batch": 16,
                       "runtimes": ["fp32_dense"]}}
    ref = run_fold(cfg, X[tr], y[tr], X[va], y[va], seed=0, artifact_path=tmp_path / "ref.sqz")
    assert ref.speedup is None                                     # no reference: unpaired, as before
    refa = ReferenceArtifact(str(tmp_path / "ref.sqz"), ref.runtime, 0.5)
    aa = evaluate_artifact(refa.path, X[va], y[va], cfg["latency"], reference=refa)
    assert aa["speedup_ci_low"] <= aa["speedup"] <= aa["speedup_ci_high"]
    assert aa["latency_ms"] == aa["latency_measured_ms"]              # a measured name keeps the measured number
    assert 0 < aa["latency_ci_low"] <= aa["latency_ci_high"]
    assert aa["latency_measured_ms"] > 0 and aa["accuracy"] == ref.accuracy
    fold = run_fold(cfg, X[tr], y[tr], X[va], y[va], seed=0, artifact_path=tmp_path / "t.sqz", reference=refa)
    assert fold.speedup_ci_low <= fold.speedup <= fold.speedup_ci_high


def test_the_latency_block_of_the_config_sets_the_paired_blocks():
    from omegaconf import OmegaConf

    from search.config import CONF_DIR
    from trainers.measure import LatencyProtocol

    default = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "sweep.yaml"))["latency"]
    assert LatencyProtocol.from_config(default) == LatencyProtocol()            # one default, two places agree
    assert (LatencyProtocol().repeats, LatencyProtocol().blocks) == (400, 20)
    short = LatencyProtocol.from_config({**default, "repeats": 100, "blocks": 10})
    assert (short.repeats, short.blocks) == (100, 10)
    # the runtime candidates are screened with choice_repeats calls, never more than the protocol's repeats
    assert LatencyProtocol().screen_repeats == 100
    assert LatencyProtocol(repeats=15).screen_repeats == 15


# --- what one timed call is -------------------------------------------------------------------------------

def test_onnx_runtime_is_timed_on_its_own_call_with_the_input_prepared_beforehand():
    from trainers.measure import _empty_onnx, timed_call

    x = torch.randn(3, 64)
    served = _empty_onnx(x[:1], 1)
    call, prepare = timed_call(served)
    array = prepare(x)
    assert isinstance(array, np.ndarray) and array.dtype == np.float32     # converted before the clock starts
    assert np.array_equal(call(array), served(x).numpy())                  # the same outputs as the torch wrapper

    class NoTorchCall(type(served)):                # the timed calls never go through the torch wrapper
        def forward(self, x):
            raise AssertionError("the conversion to and from torch tensors was timed")

    served.__class__ = NoTorchCall
    assert measure._time_calls(served, [x[:1]] * 5, 2).shape == (3,)


def test_torch_runtimes_are_timed_on_the_module_call():
    from trainers.measure import timed_call

    net = _mlp(8)
    call, prepare = timed_call(net)
    x = torch.randn(2, 64)
    assert call is net and prepare(x) is x
