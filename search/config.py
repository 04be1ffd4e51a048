"""Compose the Hydra config of squeeze from ``conf/`` and command-line overrides, with one-line errors.

The entry points use Hydra's compose API (not ``@hydra.main``) so that they own ``--help``, exit codes
and the working directory: a bad group choice or an unknown key becomes an :class:`InputError` (exit 2)
naming the key, and nothing is written to ``outputs/``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainers.errors import InputError

__all__ = ["CONF_DIR", "coerce", "compose", "group_choices", "parse_key_values", "resolved", "schema_type",
           "split_args"]

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
#: a model's own search space, composed when the command line names no ``space=`` (the root default, joint,
#: searches MLP/CNN keys; a recommender needs its architecture keys): ``model=seqrec`` -> ``space=seqrec``
MODEL_SPACES = {"seqrec": "seqrec"}
#: folders of conf/ that are not config groups: conf/recipe/*.yaml are seed recipes (study.seed_recipes)
NOT_GROUPS = ("recipe",)


def group_choices(conf_dir: Path = CONF_DIR) -> dict[str, list[str]]:
    """``{"data": ["breast_cancer", "csv", ...], "model": [...], "space": [...]}`` from the conf folders."""
    return {d.name: sorted(p.stem for p in d.glob("*.yaml"))
            for d in sorted(conf_dir.iterdir()) if d.is_dir() and d.name not in NOT_GROUPS}


def resolved(cfg: Any) -> tuple[dict[str, Any], str]:
    """``cfg`` (a DictConfig) resolved once, as a plain dict and as YAML text: the same dict as
    ``OmegaConf.to_container(cfg, resolve=True)`` and the same text as ``OmegaConf.to_yaml(cfg, resolve=True)``,
    which would resolve and convert the config a second time.

    Example:
        >>> from omegaconf import OmegaConf
        >>> cfg, text = resolved(OmegaConf.create({"a": 1, "b": "${a}", "c": "yes"}))
        >>> cfg
        {'a': 1, 'b': 1, 'c': 'yes'}
        >>> print(text, end="")
        a: 1
        b: 1
        c: 'yes'
    """
    import yaml
    from omegaconf import OmegaConf
    from omegaconf._utils import get_omega_conf_dumper

    container = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)  # a YAML config holds no enums
    text = yaml.dump(container, default_flow_style=False, allow_unicode=True, sort_keys=False,
                     Dumper=get_omega_conf_dumper())   # what OmegaConf.to_yaml does with its container
    return container, text


def split_args(argv: list[str]) -> list[str]:
    """Reject anything that is not a ``key=value`` override (flags other than --help)."""
    for arg in argv:
        if "=" not in arg:
            raise InputError(arg, "expected key=value overrides (see --help)")
    return list(argv)


_TRUE, _FALSE, _NULL = ("true", "yes", "on", "1"), ("false", "no", "off", "0"), ("null", "none", "~")


def coerce(key: str, text: str, kind: Any) -> Any:
    """``text`` (the value of ``key=text``) as ``kind``: ``bool`` (true/false/yes/no/on/off/1/0, any case),
    ``int``, ``float``, ``str``, or ``None | <kind>`` to also accept ``null``. The types of the config keys
    are those of the schema: ``coerce("study.n_trials", "5", schema_type("study.n_trials"))``.

    Example:
        >>> coerce("fix", "True", bool), coerce("trial", "3", int), coerce("out", "null", str | None)
        (True, 3, None)

    Raises:
        InputError: naming ``key``, when ``text`` is not a ``kind``.
    """
    args = [a for a in getattr(kind, "__args__", ()) if a is not type(None)]
    if args and len(args) < len(kind.__args__):  # Optional[...]
        if text.strip().lower() in _NULL:
            return None
        kind = args[0]
    word = text.strip().lower()
    if kind is bool:
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
        raise InputError(key, f"must be true or false, got {text!r}")
    if kind is int:
        try:
            return int(word)
        except ValueError:
            raise InputError(key, f"must be an integer, got {text!r}") from None
    if kind is float:
        try:
            return float(word)
        except ValueError:
            raise InputError(key, f"must be a number, got {text!r}") from None
    return text


def schema_type(key: str) -> Any:
    """The plain Python type (``int``, ``float``, ``bool``, ``str``, ``None | ...``) of a schema key, for
    :func:`coerce`; ``str`` for keys that are not plain (lists, unions)."""
    from search.schema import KEYS

    return KEYS[key].plain_type if key in KEYS else str


def parse_key_values(argv: list[str] | tuple[str, ...], keys: tuple[str, ...] | list[str],
                     types: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``key=value`` pairs of the known ``keys`` (commands that are not Hydra-composed: reproduce, export,
    predict, doctor); InputError naming the first malformed or unknown one (with the nearest known key).

    Values stay strings unless ``types`` maps a key to a type (see :func:`coerce`; config keys such as
    ``study.storage`` take theirs from the schema: ``{"study.storage": schema_type("study.storage")}``).

    Example:
        >>> parse_key_values(["fix=True", "study.name=x"], ("fix", "study.name"), {"fix": bool})
        {'fix': True, 'study.name': 'x'}
    """
    import difflib

    args: dict[str, Any] = {}
    for arg in argv:
        key, eq, value = arg.partition("=")
        if not eq or not key:
            raise InputError(arg, "expected key=value (see --help)")
        if key not in keys:
            near = difflib.get_close_matches(key, list(keys), n=1)
            hint = f"did you mean {near[0]}? " if near else ""
            raise InputError(key, f"unknown key; {hint}keys: {', '.join(keys)}")
        args[key] = coerce(key, value, types[key]) if types is not None and key in types else value
    return args


def compose(overrides: list[str], config_name: str = "sweep"):
    """The composed (unresolved) DictConfig for ``overrides``.

    Raises:
        InputError: unknown group choice (names the group and its choices), unknown key, bad syntax.
    """
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            cfg = hydra_compose(config_name=config_name, overrides=overrides)
    except MissingConfigException as err:
        for group, choices in group_choices().items():
            for ov in overrides:
                key, _, value = ov.lstrip("+~").partition("=")
                if key == group and value not in choices:
                    raise InputError(group, f"unknown choice {value!r}; choices: {', '.join(choices)}") from None
        raise InputError("overrides", str(err).splitlines()[0]) from None
    except OverrideParseException as err:
        raise InputError("overrides", f"cannot parse ({str(err).splitlines()[0]})") from None
    except ConfigCompositionException as err:
        message = str(err).splitlines()[0]
        for ov in overrides:
            key, _, value = ov.lstrip("+~").partition("=")
            if f"'{key}'" in message:
                raise _not_a_key(key, value, overrides) from None
        raise InputError("overrides", message) from None
    finally:
        GlobalHydra.instance().clear()
    _check_added_keys(cfg, overrides)
    own_space = MODEL_SPACES.get(str(cfg.get("model", {}).get("name"))) if "space" in cfg else None
    if own_space and not _names_group("space", overrides):
        return compose([*overrides, f"space={own_space}"], config_name)
    return cfg


def _names_group(group: str, overrides: list[str]) -> bool:
    """Whether an override chooses (``space=x``, ``+space=x``) or removes (``~space``) ``group``."""
    return any(ov.lstrip("+~").partition("=")[0] == group for ov in overrides)


def _chosen(group: str, overrides: list[str], config_name: str = "sweep") -> str | None:
    """The choice of ``group`` these overrides compose: the last ``group=<choice>``, else the default."""
    for ov in reversed(overrides):
        key, eq, value = ov.lstrip("+").partition("=")
        if eq and key == group:
            return value
    from omegaconf import OmegaConf

    for entry in OmegaConf.load(CONF_DIR / f"{config_name}.yaml").get("defaults", []):
        if isinstance(entry, Mapping) and group in entry:
            return entry[group]
    return None


def _group_keys(group: str, choice: str | None) -> set[str]:
    from omegaconf import OmegaConf

    path = CONF_DIR / group / f"{choice}.yaml"
    return set(OmegaConf.load(path).keys()) if choice and path.is_file() else set()


def _not_a_key(key: str, value: str, overrides: list[str]) -> InputError:
    """The error for ``key=value`` when ``key`` is no key of the composed config: a key of another group
    choice says which choice to add (``data.path=x.csv`` -> add ``data=csv``), a typo names the nearest key."""
    from search.schema import KEYS, nearest_key

    group, _, leaf = key.partition(".")
    if key in KEYS and KEYS[key].group == group:
        owners = [c for c in group_choices().get(group, []) if leaf in _group_keys(group, c)]
        chosen = _chosen(group, overrides)
        if owners and chosen not in owners:
            suffix = Path(value).suffix.lstrip(".").lower()
            best = suffix if suffix in owners else owners[0]
            return InputError(key, f"is not a key of {group}={chosen}: add {group}={best} "
                                   f"({', '.join(f'{group}={o}' for o in owners)} {'has' if len(owners) == 1 else 'have'} {key}), "
                                   f"e.g. {group}={best} {key}={value}")
    near = nearest_key(key)
    return InputError(key, "no such config key" + (f"; did you mean {near}?" if near else " (see --help for the keys)"))


def _check_added_keys(cfg: Any, overrides: list[str]) -> None:
    """``+key=value`` adds a key Hydra does not know: refuse it unless the schema knows it (and, for a
    group key, the chosen group has it), so ``+compress.prune.ration=0.5`` is not silently ignored."""
    from search.schema import FREE_BLOCKS, KEYS

    groups = group_choices()
    for ov in overrides:
        if not ov.startswith("+"):
            continue
        key, _, value = ov.lstrip("+").partition("=")
        top = key.split(".")[0]
        if key in groups or top in (*FREE_BLOCKS, "hydra"):
            continue
        if key not in KEYS:
            if top in groups and cfg[top].get("_target_") is not None:
                continue  # a model/data given by `_target_` takes its own keys
            raise _not_a_key(key, value, overrides)
        if KEYS[key].group is not None and key.partition(".")[2] not in _group_keys(top, _chosen(top, overrides)):
            err = _not_a_key(key, value, overrides)
            if "is not a key of" in err.problem:
                raise err
