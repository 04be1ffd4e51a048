"""Compose the Hydra config of squeeze from ``conf/`` and command-line overrides, with one-line errors.

The entry points use Hydra's compose API (not ``@hydra.main``) so that they own ``--help``, exit codes
and the working directory: a bad group choice or an unknown key becomes an :class:`InputError` (exit 2)
naming the key, and nothing is written to ``outputs/``.
"""

from __future__ import annotations

from pathlib import Path

from trainers.errors import InputError

__all__ = ["CONF_DIR", "compose", "group_choices", "parse_key_values", "split_args"]

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def group_choices(conf_dir: Path = CONF_DIR) -> dict[str, list[str]]:
    """``{"data": ["breast_cancer", "csv", ...], "model": [...], "space": [...]}`` from the conf folders."""
    return {d.name: sorted(p.stem for p in d.glob("*.yaml"))
            for d in sorted(conf_dir.iterdir()) if d.is_dir()}


def split_args(argv: list[str]) -> list[str]:
    """Reject anything that is not a ``key=value`` override (flags other than --help)."""
    for arg in argv:
        if "=" not in arg:
            raise InputError(arg, "expected key=value overrides (see --help)")
    return list(argv)


def parse_key_values(argv: list[str] | tuple[str, ...], keys: tuple[str, ...] | list[str]) -> dict[str, str]:
    """``key=value`` pairs of the known ``keys`` (commands that are not Hydra-composed: reproduce, export,
    predict); InputError naming the first malformed or unknown one."""
    args: dict[str, str] = {}
    for arg in argv:
        key, eq, value = arg.partition("=")
        if not eq or not key:
            raise InputError(arg, "expected key=value (see --help)")
        if key not in keys:
            raise InputError(key, f"unknown key; keys: {', '.join(keys)}")
        args[key] = value
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
            return hydra_compose(config_name=config_name, overrides=overrides)
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
            key = ov.lstrip("+~").partition("=")[0]
            if f"'{key}'" in message:
                raise InputError(key, "no such config key (see --help for the keys)") from None
        raise InputError("overrides", message) from None
    finally:
        GlobalHydra.instance().clear()
