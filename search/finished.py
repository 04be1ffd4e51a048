"""The study's finished trials as the early stop and the shrink steps compare with, each read once.

After every fold the early stop compares the running trial with the finished feasible trials, and every
``study.shrink_every``-th trial the shrink step looks for the smallest of them and for the parameter sets
already tried. Rebuilding those from every trial of the study each time cost O(trials) per look: at 3,000
finished trials ~130 ms per trial for the early stop (two looks) and ~140 ms per shrink step on this machine,
~9 ms and ~25 ms with this cache. A finished Optuna trial never changes (its user attributes and constraints
are written before it is told, and a finished trial cannot be updated), so :class:`FinishedTrials` keeps what
those rules need of each one the first time it sees it; a later look only adds the trials that finished since.
The caller still reads the study each time (Optuna's cached storage returns the trials without re-reading
finished ones), so trials finished by other workers count as soon as they are visible, exactly as before.

Example:
    >>> import optuna
    >>> done = optuna.trial.create_trial(params={"compress.prune.ratio": 0.5},
    ...     distributions={"compress.prune.ratio": optuna.distributions.FloatDistribution(0, 1)},
    ...     values=[0.9, 1000.0, 0.05],
    ...     user_attrs={"metrics": {"accuracy": 0.9, "size_bytes": 1000.0, "latency_ms": 0.05}})
    >>> seen = FinishedTrials(use_size=True, use_latency=True)
    >>> seen.update([done])
    >>> len(seen.comparisons), [c.size for c in seen.candidates]
    (1, [1000.0])
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Iterable
from typing import Any

from search import names
from search.early_stop import Finished, FinishedRows
from search.ledger import is_feasible
from search.shrink import Candidate, signature

__all__ = ["FOLD_ACCURACY_ATTR", "FinishedTrials", "comparable_metrics"]

FOLD_ACCURACY_ATTR = "fold_accuracy"   # trial user attr: accuracy per CV fold (early stopping compares folds)


def comparable_metrics(trial: Any) -> dict[str, float] | None:
    """The logged metrics of ``trial`` when it is one the early stop and the shrink steps compare with: a COMPLETE,
    feasible trial that logged an accuracy (infeasible ones never reach the front); ``None`` otherwise."""
    from optuna.trial import TrialState

    m = trial.user_attrs.get("metrics") or {}
    if trial.state == TrialState.COMPLETE and names.ACCURACY in m and is_feasible(trial.constraints):
        return m
    return None


class FinishedTrials:
    """What the early stop and the shrink steps need of every finished trial, kept from the first look.

    Args:
        use_size: size is an objective (the early stop compares it; else it counts as 0 for everyone).
        use_latency: latency is an objective (likewise).

    Attributes:
        comparisons: the comparable trials as :class:`search.early_stop.FinishedRows` (early stop).
        spreads: their ``accuracy_std``, in the same order (the study's typical fold-to-fold spread).
        size_spreads: their ``size_bytes_std`` relative to ``size_bytes`` (those that logged both), likewise for
            the file size.
        candidates: those of them that logged a size, as :class:`search.shrink.Candidate` (shrink parents),
            ordered by trial number as a read of the study lists them.
        signatures: :func:`search.shrink.signature` of every finished trial's parameters (tried sets).
    """

    def __init__(self, use_size: bool, use_latency: bool) -> None:
        self.use_size, self.use_latency = use_size, use_latency
        self.comparisons = FinishedRows()
        self.spreads: list[float] = []
        self.size_spreads: list[float] = []
        self.candidates: list[Candidate] = []
        self.signatures: set[tuple] = set()
        self._seen: set[int] = set()

    def __len__(self) -> int:
        """How many finished trials have been folded in."""
        return len(self._seen)

    def update(self, trials: Iterable[Any]) -> None:
        """Fold in the finished trials among ``trials`` (Optuna ``FrozenTrial``s) not seen before; running and
        waiting ones are left for a later look."""
        new: list[Finished] = []
        for t in trials:
            if t.number in self._seen or not t.state.is_finished():
                continue
            self._seen.add(t.number)
            self.signatures.add(signature(t.params))
            m = comparable_metrics(t)
            if m is None:
                continue
            self.spreads.append(float(m.get(names.ACCURACY_STD, 0.0)))
            if m.get(names.SIZE_BYTES) and names.SIZE_BYTES_STD in m:     # trials logged before it existed: none
                self.size_spreads.append(float(m[names.SIZE_BYTES_STD]) / float(m[names.SIZE_BYTES]))
            new.append(Finished(t.user_attrs.get(FOLD_ACCURACY_ATTR) or [m[names.ACCURACY]],
                                m[names.SIZE_BYTES] if self.use_size else 0.0,
                                m[names.LATENCY_MS] if self.use_latency else 0.0))
            if names.SIZE_BYTES in m:
                insort(self.candidates, Candidate(t.number, float(m[names.ACCURACY]), float(m[names.SIZE_BYTES]),
                                                  t.params), key=lambda c: c.number)
        self.comparisons.extend(new)
