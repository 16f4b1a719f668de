"""One typed configuration: each layer's frozen dataclass, filled from TOML, then from flags.

The embedded `defaults.toml` comes first, a user's `--config FILE` overrides it, and
command-line flags override both. Nothing here has import-time side effects.
"""
from __future__ import annotations

import dataclasses
import tomllib
import typing
import zoneinfo
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import click

from linerisk.data.schema import InputError

T = TypeVar("T")


def load_toml(path: str | Path | None = None) -> dict[str, Any]:
    """The embedded defaults merged (per section) with the TOML file at `path`, if given."""
    config = tomllib.loads(resources.files("linerisk.pipeline").joinpath("defaults.toml").read_text("utf-8"))
    if path is not None:
        try:
            user = tomllib.loads(Path(path).read_text("utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise InputError(f"config: cannot read {path}: {exc}") from None
        for section, values in user.items():
            if section not in config or not isinstance(values, dict):
                raise InputError(f"config {path}: unknown section [{section}] (known: {', '.join(sorted(config))})")
            config[section].update(values)
    return config


def _zone(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise click.BadParameter(f"unknown time zone {value!r} (an IANA name such as Asia/Shanghai)") from None
    return value


# On every command that reads events: the zone of naive times, of --as-of dates and of the day windows.
timezone_option = click.option(
    "--timezone", "tz", default="UTC", show_default=True, callback=_zone,
    help="Zone of naive event times and --as-of dates (as_of is midnight there; windows count its local days); "
         "times with an offset are converted.")


_TYPE_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _check_type(where: str, key: str, value: Any, kind: Any) -> Any:
    """`value` if it is of `kind` (an int is a fine float); else InputError naming the key."""
    ok = (isinstance(value, bool) if kind is bool else
          isinstance(value, int) and not isinstance(value, bool) if kind is int else
          isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float else
          isinstance(value, kind) if isinstance(kind, type) else True)
    if not ok:
        raise InputError(f"config: {where}.{key} must be {_TYPE_NAMES.get(kind, kind)}, not {value!r}")
    return float(value) if kind is float else value


def build(cls: type[T], section: dict[str, Any], where: str | None = None, **flags: Any) -> T:
    """An instance of dataclass `cls` from a TOML section (`where`, e.g. "simulate"), then flags that are not
    None. An unknown key or a value of the wrong type is an InputError naming the key."""
    where = where or cls.__name__
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(section) - names
    if unknown:
        raise InputError(f"config: unknown key(s) in [{where}]: {', '.join(sorted(unknown))}")
    values = {**section, **{k: v for k, v in flags.items() if v is not None}}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        if f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(hints[f.name]):
            if not isinstance(values[f.name], dict):
                raise InputError(f"config: {where}.{f.name} must be a table, not {values[f.name]!r}")
            values[f.name] = build(hints[f.name], values[f.name], f"{where}.{f.name}")
        else:
            values[f.name] = _check_type(where, f.name, values[f.name], hints[f.name])
    return cls(**values)
