"""Ranking metrics for next-item recommendation: HR@k and NDCG@k over **all** items, and the popularity
baseline scored the same way.

For a request (a user's input events) with held-out target item ``t`` and a score per item id:

* the candidates are every item ``1 .. V-1`` except the items in the request's input window (the user's
  history; id 0 is padding and never a candidate). A target that is itself in the history can never be
  recommended and counts as a miss;
* ``rank`` (0-based) = number of candidates scoring higher than ``t``, plus those scoring the same with
  a smaller item id (ties broken by id, so the result is deterministic);
* ``HR@k`` = mean over requests of ``[rank < k]``; ``NDCG@k`` = mean of ``1 / log2(rank + 2)`` if
  ``rank < k`` else 0 (one relevant item, so the ideal DCG is 1).

Example:
    >>> import torch
    >>> scores = torch.tensor([[0.0, 0.9, 0.5, 0.7, 0.1]])      # items 1..4; item 1 is in the history
    >>> ranks = target_ranks(scores, torch.tensor([2]), torch.tensor([[0, 1]]))
    >>> ranks.tolist(), ranking_metrics(ranks, k=2)              # item 3 ranks above the target
    ([1], {'hr': 1.0, 'ndcg': 0.6309297535714575})
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

__all__ = ["target_ranks", "ranking_metrics", "rank_model", "item_counts", "rank_popularity", "top_items"]

#: scores ranked at once by :func:`rank_popularity` (float64: 32 MiB), so memory stays bounded for any catalogue
_SCORES_PER_BATCH = 2**22


def target_ranks(scores: torch.Tensor, targets: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
    """0-based rank of each target among its candidates (``V`` = never ranked); see the module docstring.

    Args:
        scores: ``(B, V)`` a score per item id (column 0 = padding).
        targets: ``(B,)`` held-out item ids.
        history: ``(B, L)`` item ids of the request's input events (0 = padding), excluded from ranking.
    """
    n_items = scores.shape[1]
    masked = scores.detach().to(torch.float64).clone()
    masked[:, 0] = -math.inf
    masked.scatter_(1, history.long(), -math.inf)
    target_score = masked.gather(1, targets.long()[:, None])                  # (B, 1)
    ids = torch.arange(n_items)[None, :]
    above = (masked > target_score) | ((masked == target_score) & (ids < targets.long()[:, None]))
    ranks = above.sum(1)
    ranks[torch.isneginf(target_score[:, 0])] = n_items                      # the target was excluded
    return ranks


def top_items(scores: torch.Tensor, seen: torch.Tensor, k: int) -> torch.Tensor:
    """``(B, min(k, V - 1))`` item ids recommended per request, best first, in exactly the order
    :func:`target_ranks` ranks them: the item in column ``r`` has rank ``r`` (higher score first, ties by
    the smaller id). Candidates are every item but 0 and the ``seen`` ones; when fewer than ``k`` are left,
    the row ends in 0s.

    Args:
        scores: ``(B, V)`` a score per item id (column 0 = padding).
        seen: ``(B, H)`` item ids not to recommend (0 = padding), e.g. everything the user interacted with.
        k: how many items per request.
    """
    masked = scores.detach().to(torch.float64).clone()
    masked[:, 0] = -math.inf
    masked.scatter_(1, seen.long(), -math.inf)
    top = torch.sort(masked, dim=1, descending=True, stable=True).indices[:, :min(k, scores.shape[1] - 1)]
    return torch.where(torch.isneginf(masked.gather(1, top)), torch.zeros_like(top), top)


def ranking_metrics(ranks: torch.Tensor | np.ndarray, k: int) -> dict[str, float]:
    """``{"hr": HR@k, "ndcg": NDCG@k}`` of 0-based target ranks."""
    ranks = torch.as_tensor(ranks, dtype=torch.float64)
    hit = ranks < k
    gain = torch.where(hit, 1.0 / torch.log2(ranks + 2.0), torch.zeros_like(ranks))
    n = max(len(ranks), 1)
    return {"hr": float(hit.sum()) / n, "ndcg": float(gain.sum()) / n}


@torch.inference_mode()
def rank_model(model: nn.Module, X: torch.Tensor, y: torch.Tensor, k: int, batch_size: int = 256) -> dict[str, float]:
    """HR@k and NDCG@k of ``model`` (``(B, C, L)`` int64 requests -> ``(B, V)`` scores) on rows ``X, y``.

    ``batch_size`` requests are scored and ranked at a time: memory is ``O(batch_size * V)`` (about
    ``20 * batch_size * V`` bytes: the scores and their float64 copy), whatever the number of rows."""
    model.eval()
    ranks = [target_ranks(model(X[i:i + batch_size]), y[i:i + batch_size], X[i:i + batch_size, 0])
             for i in range(0, len(X), batch_size)]
    return ranking_metrics(torch.cat(ranks) if ranks else torch.zeros(0), k)


def item_counts(X: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """How often each item id occurs in rows ``X`` (input events, channel 0) and ``y`` (targets); id 0 = 0."""
    counts = np.bincount(np.concatenate([X[:, 0].ravel(), y]), minlength=n_classes).astype(np.float64)
    counts[0] = 0.0
    return counts


def rank_popularity(X_train: np.ndarray, y_train: np.ndarray, X_val: np.ndarray, y_val: np.ndarray,
                    n_classes: int, k: int) -> dict[str, float]:
    """The popularity baseline: every request gets the training rows' item counts as scores."""
    counts = torch.from_numpy(item_counts(X_train, y_train, n_classes))
    Xv, yv = torch.from_numpy(X_val), torch.from_numpy(y_val)
    b = max(1, min(1024, _SCORES_PER_BATCH // n_classes))            # requests per batch: bounded memory
    ranks = [target_ranks(counts.expand(len(Xv[i:i + b]), -1), yv[i:i + b], Xv[i:i + b, 0])
             for i in range(0, len(Xv), b)]
    return ranking_metrics(torch.cat(ranks) if ranks else torch.zeros(0), k)
