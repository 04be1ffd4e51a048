"""``data=ecommerce``: a seeded synthetic shop whose next purchase depends on the recent sequence.

The world (all drawn from ``data.seed``, so the same config always gives the same dataset):

* **items** have a category (spread evenly), a brand (one of the ``brands_per_category`` brands that sell
  in that category; a brand sells in several categories) and a Zipf popularity
  ``w_i = rank_i ** -popularity_exponent``.
* **categories** follow a Markov chain: each category has two favourite successors (think phone -> case ->
  charger) that get ``transition_strength`` of the probability (2:1), the rest is uniform.
* **users** have a profile: an age band (each band prefers a few brands, weight x3) and three interest
  categories; ``n_events`` uniform in ``[min_events, max_events]`` (at most ``n_items``: no item twice).

A user's events, in time order: the first category is one of the interests; then, with probability
``interest_mix`` a random interest, else the successor of the last event's category. With probability
``brand_loyalty`` the item is bought from a brand among the user's last three purchases, if that brand
sells unseen items in the category. Within the candidates an item is drawn by popularity x brand
preference, never one the user already has. So the next item depends on the last category and the
recent brands, which a sequence model can learn and a popularity ranking cannot.

Channels of ``X``: ``item`` (1 .. n_items), ``category`` (1 .. n_categories), ``brand`` (1 .. n_brands),
and the user's profile (:data:`USER_FEATURES`, the same at every event of a user): ``user:age_band``
(1 .. 5) and ``user:interest1..3`` (the three interest categories in increasing order, 1 .. n_categories).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping

import numpy as np

from trainers.data._sequence import MIN_EVENTS, USER_PREFIX, from_histories
from trainers.errors import InputError

__all__ = ["USER_FEATURES", "ecommerce", "generate_histories"]

DEFAULTS = {
    "seed": 0, "n_users": 600, "n_items": 200, "n_categories": 10, "n_brands": 20, "brands_per_category": 4,
    "min_events": 5, "max_events": 30, "popularity_exponent": 0.5, "transition_strength": 0.9,
    "interest_mix": 0.1, "brand_loyalty": 0.8, "max_len": 30,
}
_RECENT_BRANDS = 3
_AGE_BANDS = 5
_INTERESTS = 3
#: the user-profile channels (after item, category, brand)
USER_FEATURES = ("age_band", *(f"interest{i}" for i in range(1, _INTERESTS + 1)))


def _param(cfg: Mapping, key: str, lo: float, hi: float | None = None, integer: bool = True):
    value = cfg.get(key, DEFAULTS[key])
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and value >= lo and (hi is None or value <= hi)
    if integer:
        ok = ok and isinstance(value, numbers.Integral)
    if not ok:
        kind = "an integer" if integer else "a number"
        bounds = f"in [{lo}, {hi}]" if hi is not None else f">= {lo}"
        raise InputError(f"data.{key}", f"must be {kind} {bounds}, got {value!r}")
    return int(value) if integer else float(value)


def _draw(rng: np.random.Generator, cumulative: np.ndarray) -> int:
    """Index drawn with probability proportional to the increments of ``cumulative`` (fast ``rng.choice``)."""
    return min(int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right")), len(cumulative) - 1)


def generate_histories(cfg: Mapping) -> tuple[list[np.ndarray], dict[str, np.ndarray]]:
    """Users' event arrays ``(T_u, 7)`` = (item, category, brand, age band, interest 1..3), 1-based, oldest
    first (the profile columns are the same on every row of a user); and the item table."""
    n_users = _param(cfg, "n_users", 1)
    n_items = _param(cfg, "n_items", 2)
    n_cat = _param(cfg, "n_categories", 3, n_items)
    n_brands = _param(cfg, "n_brands", 1)
    per_cat = _param(cfg, "brands_per_category", 1, n_brands)
    min_events = _param(cfg, "min_events", MIN_EVENTS)
    max_events = _param(cfg, "max_events", min_events)
    zipf = _param(cfg, "popularity_exponent", 0.0, 3.0, integer=False)
    strength = _param(cfg, "transition_strength", 0.0, 1.0, integer=False)
    mix = _param(cfg, "interest_mix", 0.0, 1.0, integer=False)
    loyalty = _param(cfg, "brand_loyalty", 0.0, 1.0, integer=False)
    rng = np.random.default_rng(_param(cfg, "seed", 0))

    # items: category, brand, popularity
    category = rng.permutation(np.arange(n_items) % n_cat)
    cat_brands = np.stack([rng.choice(n_brands, per_cat, replace=False) for _ in range(n_cat)])  # (n_cat, per_cat)
    brand = cat_brands[category, rng.integers(0, per_cat, n_items)]
    popularity = (1.0 + rng.permutation(n_items)) ** -zipf
    items_of_cat = [np.flatnonzero(category == c) for c in range(n_cat)]

    # category transitions: two favourite successors (2:1) plus a uniform floor
    transition = np.full((n_cat, n_cat), (1.0 - strength) / n_cat)
    for c in range(n_cat):
        first, second = rng.choice(np.delete(np.arange(n_cat), c), 2, replace=False)
        transition[c, first] += strength * 2 / 3
        transition[c, second] += strength / 3

    cum_transition = np.cumsum(transition, axis=1)

    # user profiles: age band -> preferred brands; three interest categories
    band_brands = [rng.choice(n_brands, max(1, n_brands // _AGE_BANDS), replace=False) for _ in range(_AGE_BANDS)]

    # an item's weight for a user of each age band: popularity x brand preference (the same products as
    # weighting the candidates one by one, so the same draws; computed once, not per event)
    band_weight = []
    for preferred in band_brands:
        brand_weight = np.ones(n_brands)
        brand_weight[preferred] = 3.0
        band_weight.append(popularity * brand_weight[brand])

    # Every step of a user's events touches only the items of one category (n_items / n_categories), never
    # the whole catalogue, so a shop of 20,000 users and 20,000 items generates in seconds.
    histories = []
    for _ in range(n_users):
        band = int(rng.integers(_AGE_BANDS))
        item_weight = band_weight[band]
        interests = rng.choice(n_cat, min(_INTERESTS, n_cat), replace=False)
        profile = np.array([band + 1, *(np.sort(interests) + 1)], dtype=np.int64)
        seen = np.zeros(n_items, dtype=bool)
        recent_brand = np.zeros(n_brands, dtype=bool)                 # brands of the last purchases
        events: list[int] = []
        for t in range(min(int(rng.integers(min_events, max_events + 1)), n_items)):   # never buys twice
            if t == 0 or rng.random() < mix:
                cat = int(rng.choice(interests))
            else:
                cat = _draw(rng, cum_transition[category[events[-1]]])
            candidates = items_of_cat[cat][~seen[items_of_cat[cat]]]
            if len(candidates) == 0:                                  # category exhausted: anything unseen
                candidates = np.flatnonzero(~seen)
            recent_brand[:] = False
            recent_brand[brand[events[-_RECENT_BRANDS:]]] = True
            loyal = candidates[recent_brand[brand[candidates]]]
            if len(loyal) and rng.random() < loyalty:
                candidates = loyal
            item = int(candidates[_draw(rng, np.cumsum(item_weight[candidates]))])
            seen[item] = True
            events.append(item)
        idx = np.asarray(events)
        items = np.stack([idx + 1, category[idx] + 1, brand[idx] + 1], axis=1).astype(np.int64)
        histories.append(np.concatenate([items, np.broadcast_to(profile, (len(idx), len(profile)))], axis=1))
    return histories, {"category": category + 1, "brand": brand + 1, "popularity": popularity}


def ecommerce(data_cfg: Mapping):
    """The synthetic shop as a sequence :class:`~trainers.data.Dataset` (see the module docstring).

    Example:
        >>> ds = ecommerce({"name": "ecommerce", "n_users": 20, "n_items": 50, "max_len": 10})
        >>> ds.kind, ds.X.shape, ds.feature_names[:4]
        ('sequence', (40, 7, 10), ['item', 'category', 'brand', 'user:age_band'])
    """
    histories, table = generate_histories(data_cfg)
    n_items = _param(data_cfg, "n_items", 2)
    n_cat = _param(data_cfg, "n_categories", 3, n_items)
    classes = ["<pad>", *(f"item{i}" for i in range(1, n_items + 1))]
    interests = [str(c) for c in range(1, n_cat + 1)]
    serving = {"item_features": {k: [0, *map(int, table[k])] for k in ("category", "brand")},
               "user_features": {"age_band": [str(b) for b in range(1, _AGE_BANDS + 1)],
                                 **{name: interests for name in USER_FEATURES[1:]}}}
    names = ["item", "category", "brand", *(USER_PREFIX + n for n in USER_FEATURES)]
    return from_histories(histories, classes, names, str(data_cfg.get("name", "ecommerce")),
                          _param(data_cfg, "max_len", 1), serving)
