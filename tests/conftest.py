"""Session-wide fixtures: a small simulated world built once, an MLflow store built once."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest


# ---------------------------------------------------------------------------- MLflow (issue 4)
# Creating an MLflow SQLite store runs its migrations (seconds), so one empty store is built per
# session and each test gets a copy in its own tmp_path.

@pytest.fixture(scope="session")
def mlflow_template_db(tmp_path_factory) -> Path:
    """An empty, migrated MLflow SQLite store, built once per session."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()  # runs the migrations; no global state
    return path


@pytest.fixture
def mlflow_store(mlflow_template_db, tmp_path, monkeypatch) -> str:
    """A private copy of the store: MLFLOW_TRACKING_URI and LINERISK_HOME point into tmp_path."""
    home = tmp_path / "linerisk_home"
    home.mkdir()
    shutil.copy(mlflow_template_db, home / "mlflow.db")
    uri = f"sqlite:///{home / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("LINERISK_HOME", str(home))
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    return uri


# ---------------------------------------------------------------------------- a small synthetic panel and models

FAST = dict(num_threads=1, log_every=0, min_child_samples=20, n_estimators=300, early_stopping_rounds=30, learning_rate=0.1)


@pytest.fixture(scope="session")
def synth_panel():
    from tests.models.synth import make_panel
    return make_panel(n_users=1500, n_snapshots=6, seed=0)


@pytest.fixture(scope="session")
def synth_split(synth_panel):
    from linerisk.models.train import split_out_of_time
    return split_out_of_time(synth_panel, valid_snapshots=1, test_snapshots=1, horizon_days=90)


@pytest.fixture(scope="session")
def trained_model(synth_split):
    """A calibrated model on the synthetic panel (trained once per session)."""
    from linerisk.models.train import TrainParams, train_model
    from tests.models.synth import synth_spec

    spec = synth_spec()
    names = [f["name"] for f in spec["features"]]
    s = synth_split
    return train_model(s.train[names], s.train["label"], s.valid[names], s.valid["label"], TrainParams(**FAST), spec)


@pytest.fixture(scope="session")
def weak_model(synth_split):
    """A deliberately weak model (one depth-1 tree) on the same spec, for promotion tests."""
    from linerisk.models.train import TrainParams, train_model
    from tests.models.synth import synth_spec

    spec = synth_spec()
    names = [f["name"] for f in spec["features"]]
    s = synth_split
    params = TrainParams(**{**FAST, "n_estimators": 1, "max_depth": 1, "early_stopping_rounds": 1})
    return train_model(s.train[names], s.train["label"], s.valid[names], s.valid["label"], params, spec)


# ---------------------------------------------------------------------------- simulated worlds (issue 2)
# Worlds are written once per test session into a directory shared by the xdist workers
# (guarded by a file lock), so each is simulated only once however many workers need it. Without
# xdist that directory outlives the session (and is shared by every checkout on the machine), so a
# world's directory is named after its parameters and the code that writes it: a change to the
# simulator or the features gets a fresh world, never a stale one.

import fcntl  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402


def source_key(*modules: str, **params) -> str:
    """12 hex digits of sha256 over `params` and the Python sources of `modules` (a package: all its files)."""
    import importlib

    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode())
    for module in modules:
        path = Path(importlib.import_module(module).__file__)
        files = sorted(path.parent.rglob("*.py")) if path.name == "__init__.py" else [path]
        for file in files:
            digest.update(f"{module}:{file.relative_to(path.parent)}".encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:12]


def shared_world(tmp_path_factory, name: str, **params) -> Path:
    """Simulate (once, across workers) a small world with `params` and return its directory."""
    from linerisk.data.simulate import WorldParams
    from linerisk.pipeline.simulate_job import write_world

    key = source_key("linerisk.data", "linerisk.features", "linerisk.pipeline.simulate_job", **params)
    corrupt_rate = params.pop("corrupt_rate", 0.0)
    root = tmp_path_factory.getbasetemp().parent / "worlds"
    root.mkdir(exist_ok=True)
    name = f"{name}-{key}"
    out = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "manifest.json").exists():
            write_world(WorldParams(**params), out, corrupt_rate=corrupt_rate, jobs=1, progress=False)
    return out


@pytest.fixture(scope="session")
def small_world(tmp_path_factory) -> Path:
    """2,000 users over 12 months: enough for end-to-end plumbing, fast to build."""
    return shared_world(tmp_path_factory, "small", users=2_000, months=12, seed=11, oracle_users=500)


@pytest.fixture(scope="session")
def population_world(tmp_path_factory) -> Path:
    """20,000 users over 24 months: enough restrictions to measure each mechanism's direction."""
    return shared_world(tmp_path_factory, "population", users=20_000, months=24, seed=7, oracle_users=4_000)


@pytest.fixture(scope="session")
def corrupt_world(tmp_path_factory) -> Path:
    """A small world with 1% of its event rows corrupted on purpose."""
    return shared_world(tmp_path_factory, "corrupt", users=1_000, months=6, seed=5, oracle_users=100,
                        corrupt_rate=0.01)


# ---------------------------------------------------------------------------- a Dask cluster (issue 14)
# One LocalCluster (2 worker processes, 1 thread each) per session (per xdist worker process), started
# on first use and shared by every test that takes `dask_client`.

@pytest.fixture(scope="session")
def dask_client():
    """A `distributed.Client` on a LocalCluster of 2 single-threaded worker processes."""
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        yield client


# ---------------------------------------------------------------------------- a registry with linerisk@champion
# On the real feature spec, built once per session (tests/pipeline/scoring_world.py): for the jobs and the API.
from tests.pipeline.scoring_world import store, store_env  # noqa: E402, F401 (fixtures)
