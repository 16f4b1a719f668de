"""One typed configuration: each layer's frozen dataclass, filled from TOML, then from flags.

The embedded `defaults.toml` comes first, a user's `--config FILE` overrides it, and
command-line flags override both. Nothing here has import-time side effects.
"""
from __future__ import annotations

import dataclasses
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

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
            config.setdefault(section, {}).update(values)
    return config


def build(cls: type[T], section: dict[str, Any], **flags: Any) -> T:
    """An instance of dataclass `cls` from a TOML section, then flags that are not None."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(section) - names
    if unknown:
        raise InputError(f"config: unknown key(s) for {cls.__name__}: {', '.join(sorted(unknown))}")
    values = {**section, **{k: v for k, v in flags.items() if v is not None}}
    for f in dataclasses.fields(cls):
        nested = values.get(f.name)
        if isinstance(nested, dict) and f.default_factory is not dataclasses.MISSING:
            values[f.name] = build(type(f.default_factory()), nested)
    return cls(**values)
