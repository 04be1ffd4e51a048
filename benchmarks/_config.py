"""The benchmarks' shared way to build a plain config dict: conf/sweep.yaml with chosen data and model
groups (no Hydra needed), and a recursive merge for per-setting overrides."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

REPO = Path(__file__).resolve().parents[1]


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``overrides`` merged in, recursively for nested mappings."""
    out = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def base_config(data: str, model: str) -> dict[str, Any]:
    """conf/sweep.yaml with ``conf/data/<data>.yaml`` and ``conf/model/<model>.yaml``, resolved, on CPU
    (a benchmark of CPU inference; training on CPU is deterministic)."""
    conf = REPO / "conf"
    root = OmegaConf.load(conf / "sweep.yaml")
    root.pop("defaults", None)
    root.data = OmegaConf.load(conf / "data" / f"{data}.yaml")
    root.model = OmegaConf.load(conf / "model" / f"{model}.yaml")
    cfg = OmegaConf.to_container(root, resolve=True)
    cfg["device"] = "cpu"
    return cfg


@contextmanager
def space_without(keys: Iterable[str]) -> Iterator[None]:
    """Within the block, every space the sweep parses (``search.space.parse_space``, which
    ``search.sweep.prepare`` looks up at call time) leaves out ``keys``: the config's values decide them, as in
    a space that never sampled them (the build before a key joined the space)."""
    import search.space

    left_out, original = frozenset(keys), search.space.parse_space

    def parse(space_cfg):
        return [p for p in original(space_cfg) if p.key not in left_out]

    search.space.parse_space = parse
    try:
        yield
    finally:
        search.space.parse_space = original
