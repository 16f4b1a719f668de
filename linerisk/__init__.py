"""linerisk: predict personal credit-line restrictions, explain them, show the way back.

    import linerisk
    world = linerisk.simulate(users=2_000, months=12)
    scores = linerisk.score(world.events, world.users, "2024-12-01")

The API (linerisk/api.py) is loaded on first use, so `import linerisk` stays cheap. One import
name for the whole project: `linerisk.data`, `linerisk.features`, `linerisk.models` and
`linerisk.pipeline` are the repository's top-level folders, installed under this package
(setuptools `package-dir`), so a user's own `models/` or `data/` package never mixes with ours.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

API = ("InputError", "simulate", "build_features", "build_panel", "train", "register", "promote", "load_model",
       "score", "explain", "plan")
__all__ = [*API, "__version__"]

if TYPE_CHECKING:
    from linerisk.api import (InputError, build_features, build_panel, explain, load_model, plan, promote,  # noqa: F401
                              register, score, simulate, train)


def __getattr__(name: str) -> Any:
    """The API's functions, imported from linerisk.api when first asked for."""
    if name in API:
        from linerisk import api

        return getattr(api, name)
    raise AttributeError(f"module 'linerisk' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *API})
