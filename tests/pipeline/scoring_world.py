"""A registry holding both models trained on the real feature spec (`linerisk@champion`, restriction;
`linerisk-restore@champion`, restoration), built once per test session.

Scoring, monitoring and serving only read the registry, so one store (SQLite + artifacts) is
shared by every test and xdist worker (built under a file lock, like the simulated worlds).
tests/conftest.py makes its `store` and `store_env` fixtures available to every test.
"""
from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

import pytest

RESTORE_NAME = "linerisk-restore"
AS_OF = "2024-09-27"  # small world: behaviour from 2024-01-01, ~1,700 active lines at this date
FAST = dict(num_threads=1, log_every=0, min_child_samples=20, n_estimators=60, early_stopping_rounds=20,
            learning_rate=0.15, max_depth=4)


def _train_and_register(world: Path) -> None:
    import pandas as pd
    from mlflow.tracking import MlflowClient

    from linerisk.features import spec as feature_spec
    from linerisk.features.labels import build_panel
    from linerisk.models import registry
    from linerisk.models.restore import train_restoration_model
    from linerisk.models.train import TrainParams, reference_distributions, registry_spec, split_random, train_model
    from linerisk.pipeline.io import read_events, read_users

    users = read_users(world / "users.parquet")
    events = read_events(world / "events.parquet", users).good
    snaps = pd.date_range(end=AS_OF, periods=4, freq="15D", tz="UTC")  # near AS_OF: a batch there is not drifted
    panel = build_panel(events, users, snaps, horizon_days=90).reset_index()
    spec = registry_spec("restrict")
    names = feature_spec.feature_names("restrict")
    split = split_random(panel, "label", seed=0)
    model = train_model(split.train[names], split.train["label"], split.valid[names], split.valid["label"],
                        TrainParams(**FAST), spec)
    reference = reference_distributions(split.train[names], model.predict_proba(split.train[names])[:, 1], spec)
    reg = registry.register_model(model, params={"max_depth": FAST["max_depth"]}, metrics={"test_auc": 0.7},
                                  reference=reference, test_frame=split.test)
    MlflowClient().set_registered_model_alias(reg.name, registry.CHAMPION, reg.version)

    # the restoration model of the same world: restricted lines at the same dates
    restore = build_panel(events, users, snaps, horizon_days=90, target="restore").reset_index()
    names = feature_spec.feature_names("restore")
    split = split_random(restore, "label", seed=0)
    model = train_restoration_model(split.train[names], split.train["label"], split.valid[names],
                                    split.valid["label"], TrainParams(**FAST), registry_spec("restore"))
    reference = reference_distributions(split.train[names], model.predict_proba(split.train[names])[:, 1], model.spec_)
    reg = registry.register_model(model, params={"max_depth": FAST["max_depth"]}, metrics={"test_auc": 0.7},
                                  reference=reference, test_frame=split.test, name=RESTORE_NAME)
    MlflowClient().set_registered_model_alias(reg.name, registry.CHAMPION, reg.version)


def scoring_store(tmp_path_factory, world: Path, template_db: Path) -> dict[str, str]:
    """Env vars (MLFLOW_TRACKING_URI, LINERISK_HOME) of the shared store with `linerisk@champion`."""
    from tests.conftest import source_key

    # named after the world and the code that trains and packages the models (see tests/conftest.py shared_world)
    key = source_key("linerisk.features", "linerisk.models", world=world.name)
    root = tmp_path_factory.getbasetemp().parent / f"scoring_store-{key}"
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}", "LINERISK_HOME": str(root),
           "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    with open(f"{root}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "ready").exists():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir()
            shutil.copy(template_db, root / "mlflow.db")
            saved = {k: os.environ.get(k) for k in env}
            os.environ.update(env)
            try:
                _train_and_register(world)
            finally:
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
            (root / "ready").touch()
    return env


@pytest.fixture(scope="session")
def store_env(tmp_path_factory, small_world, mlflow_template_db) -> dict[str, str]:
    """The shared store's environment (built on first use)."""
    return scoring_store(tmp_path_factory, small_world, mlflow_template_db)


@pytest.fixture
def store(store_env, monkeypatch) -> dict[str, str]:
    """Point this test's MLflow and LINERISK_HOME at the shared store."""
    for key, value in store_env.items():
        monkeypatch.setenv(key, value)
    return store_env
