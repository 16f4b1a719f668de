"""The test fixtures' shared caches: a world or model store built by other code is never reused."""
from __future__ import annotations

import sys

from tests.conftest import source_key


def test_the_cache_key_changes_with_the_code_and_the_parameters_and_only_then(tmp_path, monkeypatch):
    package = tmp_path / "cachekey_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "sim.py").write_text("RATE = 0.1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    first = source_key("cachekey_pkg", users=2_000, seed=11)
    assert source_key("cachekey_pkg", seed=11, users=2_000) == first  # same code, same parameters
    assert source_key("cachekey_pkg", users=2_000, seed=12) != first
    (package / "sim.py").write_text("RATE = 0.2\n")  # the simulator changed: a fresh world
    assert source_key("cachekey_pkg", users=2_000, seed=11) != first
    (package / "sim.py").write_text("RATE = 0.1\n")
    assert source_key("cachekey_pkg", users=2_000, seed=11) == first
    (package / "extra.py").write_text("")  # a new module in the package counts too
    assert source_key("cachekey_pkg", users=2_000, seed=11) != first
    sys.modules.pop("cachekey_pkg", None)
