"""The training loop: seeded, deterministic on CPU, CUDA when present and allowed.

Used both for the initial fit and for the fine-tune after compression (``on_step`` lets the compressor
update gradual-pruning masks; parametrizations registered on the model keep masks and quantizers in the
loop).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from trainers.errors import InputError
from trainers.options import DEFAULT_NEGATIVES, LOSSES, OPTIMIZERS

__all__ = ["Distillation", "TrainingDiverged", "cpu_threads", "distillation_loss", "loss_options", "make_optimizer", "predict", "resolve_device", "seed_everything",
           "train"]


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite: the trial fails (and the study goes on)."""


@dataclass(frozen=True)
class Distillation:
    """Knowledge distillation (Hinton et al. 2015) in a training run: ``teacher`` (frozen, eval mode) scores
    every batch and the loss becomes ``(1 - weight) * CE + weight * distillation_loss(...)``."""

    teacher: nn.Module
    weight: float
    temperature: float


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(softmax(teacher / T) || softmax(student / T))``, mean over the batch.

    The ``T^2`` keeps the gradient's scale independent of ``T`` (the soft targets' gradients shrink as 1/T^2),
    so the weight between this term and the cross-entropy means the same at every temperature.

    Example:
        >>> z = torch.tensor([[2.0, 0.0, -1.0]])
        >>> float(distillation_loss(z, z, 4.0))
        0.0
    """
    t = float(temperature)
    log_student = F.log_softmax(student_logits / t, dim=-1)
    log_teacher = F.log_softmax(teacher_logits / t, dim=-1)
    return F.kl_div(log_student, log_teacher, reduction="batchmean", log_target=True) * (t * t)


def seed_everything(seed: int) -> None:
    """Seed torch and numpy; make CPU kernels deterministic."""
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    torch.use_deterministic_algorithms(True, warn_only=True)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def make_optimizer(params, name: str, lr: float, weight_decay: float, momentum: float = 0.9) -> torch.optim.Optimizer:
    """The ``torch.optim`` optimizer named by ``train.optimizer`` (the names: :data:`trainers.options.OPTIMIZERS`);
    ``momentum`` is used by sgd only.

    The fused implementation (one kernel for every parameter; CPU and CUDA): deterministic like the default one,
    and on small networks, where an optimizer step is a loop of tiny per-parameter operations, ~25% less time
    per training step (MLP 64-300-100-10, batch 64, one thread: 0.64 against 0.84 ms). Its float rounding
    differs from the default implementation's (weights within ~1e-7 after 3 epochs), so results are not
    bit-identical to builds before it."""
    if name not in OPTIMIZERS:
        raise InputError("train.optimizer", f"must be one of {'|'.join(OPTIMIZERS)}, got {name!r}")
    params = [p for p in params if p.requires_grad]
    extra = {"momentum": momentum} if name == "sgd" else {}
    return getattr(torch.optim, OPTIMIZERS[name])(params, lr=lr, weight_decay=weight_decay, fused=True, **extra)


def loss_options(model: nn.Module, train_cfg: Mapping[str, Any], generator: torch.Generator) -> dict[str, Any]:
    """The keyword arguments of ``model.training_loss`` that ``train.loss`` / ``train.negatives`` ask for:
    ``{}`` for ``full`` (the model's own loss, unchanged), ``{"negatives": S, "generator": generator}`` for
    ``sampled`` (negatives drawn from the training generator, so the same seed gives the same model)."""
    name = train_cfg.get("loss", "full")
    if name not in LOSSES:
        raise InputError("train.loss", f"must be one of {'|'.join(LOSSES)}, got {name!r}")
    if name == "full":
        return {}
    negatives = train_cfg.get("negatives", DEFAULT_NEGATIVES)
    if not isinstance(negatives, int) or isinstance(negatives, bool) or negatives < 1:
        raise InputError("train.negatives", f"must be an integer >= 1, got {negatives!r}")
    if not hasattr(model, "training_loss"):
        raise InputError("train.loss", f"must be full for a classifier ({type(model).__name__}): sampled softmax "
                                       f"is for ranking models (model=seqrec), got {name!r}")
    return {"negatives": negatives, "generator": generator}


def train(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    train_cfg: Mapping[str, Any],
    seed: int,
    *,
    epochs: int | None = None,
    lr: float | None = None,
    device: str = "auto",
    on_step: Callable[[int, int], None] | None = None,
    distill: Distillation | None = None,
) -> dict[str, float]:
    """Minimize cross-entropy of ``model(X)`` against ``y`` with mini-batch ``train_cfg.optimizer``.

    A model that defines ``training_loss(x, y)`` is trained on that loss instead (the sequential
    recommender's next-item loss over every position, :class:`trainers.models.seqrec.SeqRec`).

    Args:
        model: trained in place (moved back to CPU at the end).
        X, y: training inputs (already preprocessed) and int64 labels.
        train_cfg: ``optimizer``, ``lr``, ``weight_decay``, ``epochs``, ``batch_size``, ``momentum``,
            ``threads`` (CPU threads while training; restored afterwards), ``loss`` and ``negatives``
            (:func:`loss_options`).
        seed: seeds the shuffling generator; the same seed gives the same model.
        epochs, lr: override ``train_cfg`` (the fine-tune uses its own).
        on_step: called as ``on_step(step, total_steps)`` before every optimizer step.
        distill: a teacher whose softened outputs the model also learns (classifiers; the fine-tune after
            compression with ``compress.distill.weight`` > 0). It draws no random numbers, so the batches are
            the same with and without it.

    Returns:
        ``{"loss": last epoch's mean loss, "steps": number of optimizer steps}``.

    Raises:
        TrainingDiverged: the loss became NaN/inf.
    """
    epochs = int(train_cfg["epochs"] if epochs is None else epochs)
    lr = float(train_cfg["lr"] if lr is None else lr)
    dev = resolve_device(device)
    with cpu_threads(train_cfg.get("threads")):
        return _train_loop(model, X, y, train_cfg, seed, epochs, lr, dev, on_step, distill)


@contextmanager
def cpu_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op CPU threads set to ``n`` inside the block (None: left as they are), restored after.

    Training, compression and scoring run with ``train.threads``, timing with ``latency.threads``. Left at
    torch's default (every core), the ops big enough to be split run on every core, and two workers on two
    cores then fight over both: measured side by side, two compress-only studies ran 60 trials/min each with
    the default and 76 with one thread each."""
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train_loop(model, X, y, train_cfg, seed, epochs, lr, dev, on_step, distill) -> dict[str, float]:
    batch_size = int(train_cfg["batch_size"])
    model.to(dev).train()
    if distill is not None:
        if hasattr(model, "training_loss"):
            raise InputError("compress.distill.weight", f"must be 0 for {type(model).__name__}: distillation is "
                                                        f"for classifiers")
        distill.teacher.to(dev).eval().requires_grad_(False)
    optimizer = make_optimizer(model.parameters(), train_cfg["optimizer"], lr,
                               float(train_cfg["weight_decay"]), float(train_cfg.get("momentum", 0.9)))
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    loss_kwargs = loss_options(model, train_cfg, generator)
    n = len(X)
    steps_per_epoch = (n + batch_size - 1) // batch_size
    total, step, epoch_loss = epochs * steps_per_epoch, 0, float("nan")
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        running = 0.0
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            xb, yb = X[idx].to(dev), y[idx].to(dev)
            if on_step is not None:
                on_step(step, total)
            if hasattr(model, "training_loss"):
                loss = model.training_loss(xb, yb, **loss_kwargs)
            elif distill is not None:
                logits = model(xb)
                with torch.no_grad():
                    soft = distill.teacher(xb)
                loss = ((1.0 - distill.weight) * loss_fn(logits, yb)
                        + distill.weight * distillation_loss(logits, soft, distill.temperature))
            else:
                loss = loss_fn(model(xb), yb)
            value = loss.item()                 # one read of the loss for the check and the epoch's mean
            if not math.isfinite(value):
                model.cpu()
                raise TrainingDiverged(f"loss became {value} at step {step} (lr={lr})")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running += value * len(idx)
            step += 1
        epoch_loss = running / n
    model.cpu().eval()
    if distill is not None:
        distill.teacher.cpu()
    return {"loss": epoch_loss, "steps": step}


@torch.no_grad()
def predict(model: nn.Module, X: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Class predictions of ``model`` on ``X`` in eval mode, batched."""
    model.eval()
    return torch.cat([model(X[i:i + batch_size]).argmax(1) for i in range(0, len(X), batch_size)])
