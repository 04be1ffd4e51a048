"""Knowledge distillation in the fine-tune (``compress.distill``) and float16-exact preprocessing statistics."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from search import schema
from trainers.compress import compress
from trainers.data import Preprocessor, load_dataset
from trainers.errors import InputError
from trainers.fit import Distillation, distillation_loss, seed_everything, train
from trainers.models import MLP, Preprocess, SeqRec

TRAIN_CFG = {"optimizer": "adam", "lr": 0.003, "weight_decay": 0.0, "epochs": 3, "batch_size": 64, "threads": 1}


@pytest.fixture(scope="module")
def digits_rows() -> tuple[torch.Tensor, torch.Tensor]:
    ds = load_dataset({"name": "digits"})
    X, y = ds.X[:300], ds.y[:300]
    pre = Preprocess.from_state([1, 8, 8], Preprocessor().fit(X).state_dict())
    with torch.no_grad():
        return pre(torch.from_numpy(X)), torch.from_numpy(y)


# ---------------------------------------------------------------- the loss, a pure function


def test_distillation_loss_is_zero_for_equal_logits_and_positive_otherwise() -> None:
    z = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
    assert float(distillation_loss(z, z, 3.0)) == pytest.approx(0.0, abs=1e-7)
    assert float(distillation_loss(z, z.flip(1), 3.0)) > 0.01


def test_distillation_loss_by_hand() -> None:
    student, teacher, t = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), 2.0
    p = torch.softmax(teacher / t, 1)                 # soft targets
    q = torch.softmax(student / t, 1)
    expected = float((p * (p.log() - q.log())).sum()) * t * t
    assert float(distillation_loss(student, teacher, t)) == pytest.approx(expected, rel=1e-6)


def test_distillation_loss_gradient_keeps_its_scale_across_temperatures() -> None:
    """The T^2 factor: for logits small against T the gradient tends to (s - t) / n_classes, whatever T is."""
    teacher = torch.tensor([[0.3, -0.2, 0.1]])
    grads = []
    for t in (10.0, 40.0):
        student = torch.tensor([[0.0, 0.1, -0.1]], requires_grad=True)
        distillation_loss(student, teacher, t).backward()
        grads.append(student.grad.clone())
    assert torch.allclose(grads[0], grads[1], rtol=0.05, atol=1e-4)
    assert float(grads[0].abs().max()) > 0.01


# ---------------------------------------------------------------- in the fine-tune


def _compressed(Xt, yt, distill: dict | None) -> tuple[MLP, MLP]:
    seed_everything(0)
    net = MLP(64, [24], 10)
    train(net, Xt, yt, TRAIN_CFG, seed=0)
    before = copy.deepcopy(net)
    cfg = {"finetune_epochs": 2, "neurons": {"ratio": 0.5}, "quant": {"scheme": "uniform", "bits": 2}}
    if distill is not None:
        cfg["distill"] = distill
    compress(net, Xt, yt, cfg, TRAIN_CFG, seed=0, device="cpu")
    return net, before


def test_distillation_changes_the_fine_tuned_model_and_weight_zero_is_off(digits_rows) -> None:
    Xt, yt = digits_rows
    plain, _ = _compressed(Xt, yt, None)
    off, _ = _compressed(Xt, yt, {"weight": 0.0, "temperature": 4.0})
    taught, _ = _compressed(Xt, yt, {"weight": 0.7, "temperature": 4.0})
    for a, b in zip(plain.state_dict().values(), off.state_dict().values()):
        assert torch.equal(a, b)                      # weight 0: exactly the run without the key
    assert any(not torch.equal(a, b) for a, b in zip(plain.state_dict().values(), taught.state_dict().values()))


def test_the_student_moves_towards_the_teacher(digits_rows) -> None:
    """With the whole loss on the teacher's outputs, the fine-tuned model agrees with the fp32 model more
    than one fine-tuned on the labels alone (the teacher is the net as it was before compression)."""
    Xt, yt = digits_rows

    def disagreement(distill: dict | None) -> float:
        net, teacher = _compressed(Xt, yt, distill)
        with torch.no_grad():
            return float(distillation_loss(net(Xt), teacher(Xt), 1.0))

    assert disagreement({"weight": 1.0, "temperature": 1.0}) < disagreement(None)


def test_a_ranking_model_refuses_distillation() -> None:
    net = SeqRec(n_items=20, d_model=8, heads=1, max_len=5)
    X, y = torch.randint(1, 21, (16, 5)), torch.randint(1, 21, (16,))
    with pytest.raises(InputError, match="compress.distill.weight"):
        train(net, X, y, TRAIN_CFG, seed=0, epochs=1, distill=Distillation(copy.deepcopy(net), 0.5, 2.0))


def test_distill_model_rule() -> None:
    assert schema.distill_model_problem(0.5, "seqrec").key == "compress.distill.weight"
    assert schema.distill_model_problem(0.0, "seqrec") is None
    assert schema.distill_model_problem(0.5, "mlp") is None


# ---------------------------------------------------------------- preprocessing statistics


def test_preprocessing_statistics_are_float16_exact_when_they_fit() -> None:
    X = np.random.default_rng(0).normal(3.0, 2.0, size=(50, 4)).astype(np.float32)
    pre = Preprocess.from_state([4], Preprocessor().fit(X).state_dict())
    for stat in (pre.mean, pre.scale):
        assert torch.equal(stat.half().float(), stat)
    fitted = Preprocessor().fit(X).state_dict()
    assert np.allclose(pre.mean.numpy(), fitted["mean"], rtol=2 ** -11)


def test_preprocessing_statistics_beyond_float16_stay_float32() -> None:
    X = np.random.default_rng(0).normal(1e6, 3.0, size=(50, 2)).astype(np.float32)   # mean > 65504
    pre = Preprocess.from_state([2], Preprocessor().fit(X).state_dict())
    assert np.array_equal(pre.mean.numpy(), Preprocessor().fit(X).state_dict()["mean"].astype(np.float32))
