"""Weight pruning: which weights to zero (masks), and when (one-shot or the Zhu & Gupta schedule).

A pruner scores weights (``magnitude``: |w|; ``random``: a fixed random score per weight, so a gradual
schedule only ever adds zeros) and keeps the highest scores, over all layers at once (``global``) or
layer by layer (``per_layer``). Biases are never pruned.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from trainers.compress.quantize import _as_float
from trainers.errors import InputError
from trainers.options import PRUNE_CRITERIA, PRUNE_MAX_RATIO, PRUNE_SCOPES

__all__ = ["Pruner", "zhu_gupta_sparsity"]


def zhu_gupta_sparsity(step: int, total_steps: int, final: float, initial: float = 0.0,
                       begin: int = 0, end: int | None = None) -> float:
    """Target sparsity at ``step`` of the cubic schedule of Zhu & Gupta (2017).

    ``s_t = s_f + (s_i - s_f) * (1 - (t - t_0) / (t_end - t_0))^3`` for ``t_0 <= t <= t_end``, ``s_i`` before
    ``t_0`` and ``s_f`` after ``t_end`` (default ``t_end = total_steps``): prune fast while there are many
    redundant weights, slowly near the target.

    Example:
        >>> zhu_gupta_sparsity(0, 100, 0.9), zhu_gupta_sparsity(50, 100, 0.9), zhu_gupta_sparsity(100, 100, 0.9)
        (0.0, 0.7875, 0.9)
    """
    end = total_steps if end is None else end
    if end <= begin:
        return final
    t = min(max((step - begin) / (end - begin), 0.0), 1.0)
    return final + (initial - final) * (1.0 - t) ** 3


class Pruner:
    """Computes keep-masks for a list of weight tensors.

    Args:
        criterion: ``magnitude`` (smallest |w| go first) or ``random``.
        scope: ``global`` (one threshold for all layers) or ``per_layer`` (the same ratio in each layer).
        seed: seeds the random scores.
    """

    def __init__(self, criterion: str = "magnitude", scope: str = "per_layer", seed: int = 0) -> None:
        if criterion not in PRUNE_CRITERIA:
            raise InputError("compress.prune.criterion", f"must be one of {'|'.join(PRUNE_CRITERIA)}, got {criterion!r}")
        if scope not in PRUNE_SCOPES:
            raise InputError("compress.prune.scope", f"must be one of {'|'.join(PRUNE_SCOPES)}, got {scope!r}")
        self.criterion, self.scope = criterion, scope
        self.generator = torch.Generator().manual_seed(seed)
        self._random_scores: list[torch.Tensor] | None = None

    def scores(self, weights: list[torch.Tensor], masks: list[torch.Tensor] | None) -> list[torch.Tensor]:
        if self.criterion == "magnitude":
            out = [w.detach().abs().cpu().float() for w in weights]
        else:
            if self._random_scores is None:
                self._random_scores = [torch.rand(w.shape, generator=self.generator) for w in weights]
            out = [s.clone() for s in self._random_scores]
        if masks is not None:  # pruned weights stay pruned: score -1, below every score (all are >= 0)
            # s * 1 + 0 = s and s * 0 - 1 = -1 for the finite scores of a fine-tune that has not diverged: the
            # values of where(mask, s, -1) at a fifth of its cost (this runs ~20 times a gradual fine-tune)
            out = [s.mul_(keep).add_(keep - 1) for s, keep in
                   ((s, _as_float(m.bool().cpu())) for s, m in zip(out, masks))]
        return out

    def masks(self, weights: list[torch.Tensor], ratio: float,
              previous: list[torch.Tensor] | None = None) -> list[torch.Tensor]:
        """Bool keep-masks (same shapes as ``weights``) zeroing ``floor(ratio * n)`` weights."""
        if not 0.0 <= ratio <= PRUNE_MAX_RATIO:
            raise InputError("compress.prune.ratio", f"must be in [0, {PRUNE_MAX_RATIO:g}], got {ratio}")
        scores = self.scores(weights, previous)
        if self.scope == "per_layer":
            return [_keep_top(s, s.numel() - math.floor(ratio * s.numel() + 1e-9)) for s in scores]
        flat = torch.cat([s.flatten() for s in scores])
        keep_flat = _keep_top(flat, flat.numel() - math.floor(ratio * flat.numel() + 1e-9))
        out, start = [], 0
        for s in scores:
            out.append(keep_flat[start:start + s.numel()].reshape(s.shape))
            start += s.numel()
        return out


def _keep_top(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Mask keeping exactly the ``k`` highest scores (ties broken by position, deterministically: of equal
    scores the earlier positions are kept), for scores without NaN.

    The mask a stable descending sort gives (its first ``k`` positions), found without sorting: the ``k``-th
    highest score ``t`` (read off a sort of the values alone), every score above ``t``, and of the scores equal to ``t``
    the first ``k - #above`` by position. The gradual schedule computes masks ~20 times a fine-tune, and a
    full sort of every layer cost more than the rest of the schedule's work."""
    n = scores.numel()
    if k <= 0 or k >= n:
        return torch.full(scores.shape, k > 0, dtype=torch.bool)
    # in numpy: on this CPU build torch.kthvalue took 4-6x as long as reading the value off numpy's sort (150-235
    # vs 37-66 us for 30,000 scores; np.partition degrades on the many equal scores, -1, of pruned weights), and
    # each of the comparisons below costs a fraction of torch's per-call overhead
    flat = scores.detach().cpu().numpy().reshape(-1)
    threshold = np.sort(flat)[n - k]                                   # the k-th highest score
    keep = flat > threshold
    keep[np.flatnonzero(flat == threshold)[:k - int(keep.sum())]] = True   # the first tied positions
    return torch.from_numpy(keep.reshape(scores.shape))
