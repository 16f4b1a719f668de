"""`mlflow models serve` on the registered champion answers like batch scoring (real HTTP, loopback only)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

from tests.pipeline.scoring_world import AS_OF

START_TIMEOUT = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, payload: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def test_served_champion_returns_the_batch_probability_and_reasons(store, small_world, tmp_path):
    from linerisk.features.compute import build_features
    from linerisk.features.spec import feature_names
    from linerisk.models import registry
    from linerisk.pipeline.io import read_events, read_users

    users = read_users(small_world / "users.parquet")
    features = build_features(read_events(small_world / "events.parquet", users).good, AS_OF, users)
    frame = features[feature_names("restrict")].head(25).astype("float64")
    expected = registry.load_package("linerisk@champion").scorer.score(frame).reset_index(drop=True)

    port = _free_port()
    bin_dir = str(Path(sys.executable).parent)  # mlflow starts `uvicorn` from PATH
    env = {**os.environ, **store, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen([str(Path(bin_dir) / "mlflow"), "models", "serve", "-m", "models:/linerisk@champion", "--env-manager",
                               "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
                              env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert time.monotonic() < deadline, "server did not answer /ping in time"
            time.sleep(0.5)
        # Python floats round-trip exactly through JSON (NaN as the literal MLflow's parser accepts)
        payload = {"dataframe_split": {"columns": list(frame.columns), "data": frame.to_numpy().tolist()}}
        answer = pd.DataFrame(_post(f"http://127.0.0.1:{port}/invocations", payload)["predictions"])
    finally:
        try:
            os.killpg(server.pid, signal.SIGKILL)  # the server and its uvicorn worker
        except ProcessLookupError:
            pass
        server.wait(timeout=30)
        log.close()

    assert list(answer.columns) == list(expected.columns)
    np.testing.assert_allclose(answer["probability"], expected["probability"], rtol=1e-9)
    for col in [c for c in expected.columns if c != "probability"]:
        if col.endswith("_contribution"):
            np.testing.assert_allclose(answer[col].astype(float), expected[col], rtol=1e-9, equal_nan=True)
        else:
            assert answer[col].fillna("").tolist() == expected[col].fillna("").tolist(), col
