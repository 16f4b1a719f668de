"""Fixtures of the pipeline tests: a registry with `linerisk@champion` on the real feature spec."""
from tests.pipeline.scoring_world import store, store_env  # noqa: F401 (fixtures)
