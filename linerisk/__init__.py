"""linerisk: predict personal credit-line restrictions, explain them, show the way back.

    import linerisk
    world = linerisk.simulate(users=2_000, months=12)
    scores = linerisk.score(world.events, world.users, "2024-12-01")

The API (linerisk/api.py) imports its libraries when a function runs, so `import linerisk` stays cheap. One import
name for the whole project: `linerisk.data`, `linerisk.features`, `linerisk.models` and
`linerisk.pipeline` are the repository's top-level folders, installed under this package
(setuptools `package-dir`), so a user's own `models/` or `data/` package never mixes with ours.
"""
from __future__ import annotations

from linerisk import api
from linerisk.api import *  # noqa: F401,F403 (linerisk.api imports nothing heavy at the top: its functions do)

__version__ = "0.1.0"

API = tuple(api.__all__)
__all__ = [*API, "__version__"]
