"""Sequence (next-item) data: how users' event histories become rows, and the leave-last-out protocol.

Representation
--------------
A sequence :class:`~trainers.data.Dataset` (``kind="sequence"``) has **two rows per user**:

============  ==========================================  ==================================
row           input ``X[r]``                              target ``y[r]``
============  ==========================================  ==================================
dev row       the events before the second-to-last one     the second-to-last event (validation)
test row      the events before the last one               the last event (test)
============  ==========================================  ==================================

``X`` is int64 ``(N, C, L)``: ``L = data.max_len`` most recent input events, **left-padded** with 0, and
``C`` channels per event: channel 0 is the item id (``1 .. n_items``; 0 = padding), then the item side
features (category, brand, ...; ``1 .. V_c``, 0 = padding/unknown), then the **user features** (age band,
interests, ...; names start with ``user:``; the user's value repeated at every event of the row, so the
last position always holds it; 0 = unknown), all named by ``Dataset.feature_names``. The user channels
are always the last ones; :func:`user_channels` says how many a data config gives (the trainer needs it
before it sees the names). ``y`` is the next item id. ``classes`` are the item names with ``classes[0]``
the padding id, so ``n_classes = n_items + 1`` is the size of the model's score vector.
``users[r]`` is the row's user, ``heldout[r]`` is True for the test rows.
:class:`SequenceDataset` adds ``serving``: the JSON that turns a raw event log into rows again after
training (each item's side-feature ids, each user feature's values), written into the shipped artifact's
meta (key ``sequence``) for :mod:`search.predict`.

Protocol (leave-last-out, users split by the folds)
---------------------------------------------------
* :func:`leave_last_out` gives ``dev_idx`` (the dev rows) and ``test_idx`` (the test rows). The search
  only ever indexes ``X[dev_idx], y[dev_idx]``: a user's last event is the target of its test row and
  appears in no dev row at all, neither as input nor as target, so it cannot reach training or validation.
* :func:`user_folds` splits the dev rows, i.e. the **users**, into K shuffled folds (no stratification:
  a next item is no class label). Training users learn next-item prediction over their whole dev row
  (every position, the validation event included as the last target); validation users are never seen
  in training and are scored on their validation event. After the search, a final model trains on all
  dev rows and is scored on the test rows (inputs then include the validation event).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sklearn.model_selection import KFold

from trainers.data._dataset import Dataset
from trainers.errors import InputError

__all__ = ["MIN_EVENTS", "USER_PREFIX", "SequenceDataset", "check_sequence_arrays", "check_sequence_dataset",
           "from_histories", "leave_last_out", "user_channels", "user_folds"]

#: a user needs one input event, the validation event and the test event
MIN_EVENTS = 3
#: channel names of user features start with this (``user:age_band``)
USER_PREFIX = "user:"


@dataclass
class SequenceDataset(Dataset):
    """A sequence :class:`Dataset` and ``serving``: how a raw event log becomes its rows again (plain JSON)::

        {"item_features": {"category": [0, 3, 1, ...]},    # side-feature id of every item id (index)
         "user_features": {"age_band": ["0", "1", ...]}}    # the values of each user feature: id = index + 1
    """

    serving: dict[str, Any] = field(default_factory=dict)


def user_channels(data_cfg: Mapping) -> int:
    """How many user-feature channels (the last channels of ``X``) the data config ``data_cfg`` gives."""
    name = str(data_cfg.get("name"))
    if name == "ecommerce":
        from trainers.data._ecommerce import USER_FEATURES

        return len(USER_FEATURES)
    if name == "interactions":
        from trainers.data._interactions import user_feature_names

        return len(user_feature_names(data_cfg))
    return 0


def from_histories(histories: Sequence[np.ndarray], classes: list[str], feature_names: list[str], name: str,
                   max_len: int, serving: Mapping[str, Any] | None = None) -> SequenceDataset:
    """The two-rows-per-user :class:`SequenceDataset` of time-ordered histories (see the module docstring).

    Args:
        histories: one int64 array ``(T_u, C)`` per user, oldest event first, ``T_u >= 3``; column 0 is
            the item id ``1 .. len(classes) - 1``, then side-feature ids and user-feature ids (0 = unknown).
        classes: item names, ``classes[0]`` = padding.
        feature_names: the ``C`` channel names, ``"item"`` first, user features (``user:...``) last.
        name: ``data.name``.
        max_len: input events kept per row (the most recent ones).
        serving: :attr:`SequenceDataset.serving`.
    """
    if not isinstance(max_len, numbers.Integral) or isinstance(max_len, bool) or max_len < 1:
        raise InputError("data.max_len", f"must be an integer >= 1, got {max_len!r}")
    n_users, n_channels = len(histories), len(feature_names)
    X = np.zeros((2 * n_users, n_channels, max_len), dtype=np.int64)
    y = np.zeros(2 * n_users, dtype=np.int64)
    for u, events in enumerate(histories):
        assert events.ndim == 2 and events.shape[1] == n_channels, f"user {u}: events of shape {events.shape}"
        assert len(events) >= MIN_EVENTS, f"user {u} has {len(events)} events, needs >= {MIN_EVENTS}"
        for row, cut in ((u, len(events) - 2), (n_users + u, len(events) - 1)):
            window = events[max(0, cut - max_len):cut]           # (T, C), the most recent inputs
            X[row, :, max_len - len(window):] = window.T
            y[row] = events[cut, 0]
    users = np.concatenate([np.arange(n_users), np.arange(n_users)]).astype(np.int64)
    heldout = np.repeat([False, True], n_users)
    return SequenceDataset(X=X, y=y, classes=list(classes), kind="sequence", name=name,
                           feature_names=list(feature_names), users=users, heldout=heldout,
                           serving=dict(serving or {}))


def check_sequence_arrays(ds) -> None:
    """Internal consistency of a sequence dataset (a loader bug when it fails, not a user error)."""
    if ds.X.ndim != 3 or ds.X.dtype != np.int64 or ds.y.dtype != np.int64:
        raise ValueError(f"sequence Dataset needs X int64 (N, C, L) and y int64, got {ds.X.dtype} {ds.X.shape} "
                         f"and {ds.y.dtype}")
    n = len(ds.X)
    if ds.y.shape != (n,) or ds.users is None or ds.heldout is None or ds.users.shape != (n,) \
            or ds.heldout.shape != (n,):
        raise ValueError("sequence Dataset needs y, users and heldout of shape (N,)")
    if ds.feature_names is None or len(ds.feature_names) != ds.X.shape[1]:
        raise ValueError(f"sequence Dataset needs one feature name per channel, got {ds.feature_names}")
    if n and (ds.X.min() < 0 or ds.X[:, 0].max() >= len(ds.classes) or ds.y.min() < 1
              or ds.y.max() >= len(ds.classes)):
        raise ValueError("sequence Dataset item ids must be in 1 .. len(classes) - 1 (0 = padding)")
    for flag in (False, True):
        users = ds.users[ds.heldout == flag]
        if len(np.unique(users)) != len(users):
            raise ValueError("sequence Dataset needs exactly one dev row and one test row per user")


def leave_last_out(ds) -> tuple[np.ndarray, np.ndarray]:
    """``(dev_idx, test_idx)``: the rows whose target is the validation event, and those of the test event."""
    return np.flatnonzero(~ds.heldout).astype(np.int64), np.flatnonzero(ds.heldout).astype(np.int64)


def user_folds(n_users: int, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """K shuffled folds over ``n_users`` dev rows (one per user); the validation sets partition the users."""
    splitter = KFold(n_splits=folds, shuffle=True, random_state=seed)
    return [(train.astype(np.int64), val.astype(np.int64)) for train, val in splitter.split(np.zeros((n_users, 1)))]


def check_sequence_dataset(ds, folds: int) -> None:
    """Fail early when the users cannot support ``folds`` user folds."""
    n_users = int((~ds.heldout).sum())
    need = max(2 * folds, 4)
    if n_users < need:
        raise InputError("cv.folds", f"{folds} user folds need >= {need} users with >= {MIN_EVENTS} events, "
                                     f"data={ds.name} has {n_users}; lower cv.folds or add users")
    if len(ds.classes) < 3:
        raise InputError("data", f"data={ds.name} has {len(ds.classes) - 1} item(s); ranking needs at least 2")

