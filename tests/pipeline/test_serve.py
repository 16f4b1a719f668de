"""`linerisk serve` answers like batch scoring over real HTTP (loopback only), and a bad request gets
one 400 line naming the column and the rule while the server keeps serving."""
from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from tests.pipeline.http_server import BIN, bare_env, free_port, post, start, stop, wait_for
from tests.pipeline.scoring_world import AS_OF


def feature_frame(world: Path, n: int) -> pd.DataFrame:
    from linerisk.features.compute import build_features
    from linerisk.features.spec import feature_names
    from linerisk.pipeline.io import read_events, read_users

    users = read_users(world / "users.parquet")
    features = build_features(read_events(world / "events.parquet", users).good, AS_OF, users)
    return features[feature_names("restrict")].head(n).astype("float64")


def split_payload(frame: pd.DataFrame) -> dict:
    # Python floats round-trip exactly through JSON; NaN goes as null
    rows = [[None if isinstance(v, float) and math.isnan(v) else v for v in row] for row in frame.to_numpy().tolist()]
    return {"dataframe_split": {"columns": list(frame.columns), "data": rows}}


def assert_same_answer(answer: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Same columns; numbers equal to 1e-12 (JSON round-trips floats exactly), the rest equal."""
    assert list(answer.columns) == list(expected.columns)
    for col in expected.columns:
        if pd.api.types.is_float_dtype(expected[col]):
            np.testing.assert_allclose(answer[col].astype(float), expected[col].astype(float), rtol=1e-12,
                                       equal_nan=True, err_msg=col)
        else:
            assert answer[col].fillna("").tolist() == expected[col].fillna("").tolist(), col


@pytest.fixture(scope="module")
def served(store_env, small_world, tmp_path_factory):
    """`.venv/bin/linerisk serve` on the shared store's champion, two workers (requests land on either), a free loopback port."""
    log = tmp_path_factory.mktemp("serve") / "server.log"
    port = free_port()
    server = start([str(BIN / "linerisk"), "serve", "--port", str(port), "--workers", "2"], bare_env(store_env), log)
    try:
        wait_for(port, server, log)
        yield SimpleNamespace(url=f"http://127.0.0.1:{port}/invocations", log=log, port=port)
    finally:
        stop(server)


def test_served_champion_returns_the_batch_probability_and_reasons(store, small_world, served):
    from linerisk.models import registry

    url = served.url
    frame = feature_frame(small_world, 25)
    expected = registry.load_package("linerisk@champion").scorer.score(frame).reset_index(drop=True)
    status, body = post(url, split_payload(frame))
    assert status == 200
    assert_same_answer(pd.DataFrame(body["predictions"]), expected)
    # the column form and records give the same answer
    inputs = {c: [None if math.isnan(v) else v for v in frame[c]] for c in frame.columns}
    status, body = post(url, {"inputs": inputs})
    assert status == 200
    assert_same_answer(pd.DataFrame(body["predictions"]), expected)
    records = [dict(zip(frame.columns, row)) for row in split_payload(frame)["dataframe_split"]["data"]]
    status, body = post(url, {"dataframe_records": records})
    assert status == 200
    assert_same_answer(pd.DataFrame(body["predictions"]), expected)


def _bad_requests(frame: pd.DataFrame) -> dict[str, tuple[bytes | dict, str]]:
    """Each kind of bad request -> (body, a phrase its one-line answer must contain)."""
    good = split_payload(frame)
    cols = good["dataframe_split"]["columns"]
    first = cols[0]
    missing = {"dataframe_split": {"columns": cols[1:], "data": [r[1:] for r in good["dataframe_split"]["data"]]}}
    text = json.loads(json.dumps(good))
    text["dataframe_split"]["data"][0][3] = "lots"
    boolean = {"inputs": {c: [True] if c == cols[5] else [1.0] for c in cols}}
    ragged = json.loads(json.dumps(good))
    ragged["dataframe_split"]["data"][0] = ragged["dataframe_split"]["data"][0][:-1]
    uneven = {"inputs": {c: [1.0, 2.0] if c == cols[7] else [1.0] for c in cols}}
    return {
        "missing column": (missing, f"missing column '{first}'"),
        "text in a numeric column": (text, f"column '{cols[3]}': \"lots\" is not a JSON number or null"),
        "boolean in a numeric column": (boolean, f"column '{cols[5]}': true is not a JSON number or null"),
        "row with too few values": (ragged, "dataframe_split row 0 has"),
        "columns of different lengths": (uneven, f"column '{cols[7]}' has 2 values"),
        "no rows": ({"dataframe_split": {"columns": cols, "data": []}}, "no rows"),
        "not JSON": (b"{not json", "not valid JSON"),
        "unknown format": ({"rows": []}, "exactly one of dataframe_split"),
    }


BAD_KINDS = ["missing column", "text in a numeric column", "boolean in a numeric column", "row with too few values",
             "columns of different lengths", "no rows", "not JSON", "unknown format"]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_each_bad_request_gets_one_400_line_and_the_next_request_succeeds(store, small_world, served, kind):
    url = served.url
    frame = feature_frame(small_world, 2)
    body, phrase = _bad_requests(frame)[kind]
    status, answer = post(url, body)
    assert status == 400 and answer["error_code"] == "BAD_REQUEST"
    assert phrase in answer["message"], answer["message"]
    assert "\n" not in answer["message"] and "Traceback" not in json.dumps(answer) and set(answer) == {"error_code", "message"}
    status, good = post(url, split_payload(frame))
    assert status == 200 and len(good["predictions"]) == 2


def test_csv_and_parquet_bodies_get_the_same_answer_and_the_same_checks(store, small_world, served):
    import io

    url = served.url
    frame = feature_frame(small_world, 3)
    status, answer = post(url, split_payload(frame))
    assert status == 200
    status, csv = post(url, frame.to_csv(index=False).encode(), content_type="text/csv")
    buf = io.BytesIO()
    frame.to_parquet(buf)
    status2, parquet = post(url, buf.getvalue(), content_type="application/vnd.apache.parquet")
    assert status == status2 == 200 and csv == parquet == answer
    status, bad = post(url, frame.drop(columns=frame.columns[2]).to_csv(index=False).encode(), content_type="text/csv")
    assert status == 400 and bad["message"].startswith(f"missing column '{frame.columns[2]}'")
    status, bad = post(url, b"<xml/>", content_type="application/xml")
    assert status == 415 and "application/json" in bad["message"]


def test_a_restoration_model_that_is_not_registered_is_one_error_line(store, tmp_path):
    done = subprocess.run([str(BIN / "linerisk"), "serve", "--restore-model", "linerisk-restore-nowhere@champion",
                           "--port", str(free_port())], env=bare_env(store), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "linerisk-restore-nowhere" in lines[0] and lines[0].startswith("error: "), done.stderr


def test_a_registered_restoration_model_is_served_on_the_next_port(store_env, small_world, tmp_path):
    """Two models, two ports: with `linerisk-restore@champion` registered (here a copy of the champion,
    standing in for the restoration model's registration), `linerisk serve` serves it on PORT + 1."""
    import shutil

    from mlflow.tracking import MlflowClient

    db = tmp_path / "mlflow.db"
    shutil.copy(store_env["MLFLOW_TRACKING_URI"].removeprefix("sqlite:///"), db)
    env = {**store_env, "MLFLOW_TRACKING_URI": f"sqlite:///{db}", "LINERISK_HOME": str(tmp_path)}
    client = MlflowClient(env["MLFLOW_TRACKING_URI"], env["MLFLOW_TRACKING_URI"])
    copy = client.copy_model_version("models:/linerisk@champion", "linerisk-restore")
    client.set_registered_model_alias("linerisk-restore", "champion", copy.version)

    port = free_port()
    log = tmp_path / "server.log"
    server = start([str(BIN / "linerisk"), "serve", "--port", str(port), "--workers", "1"], bare_env(env), log)
    try:
        wait_for(port, server, log)
        wait_for(port + 1, server, log)
        frame = feature_frame(small_world, 3)
        first = post(f"http://127.0.0.1:{port}/invocations", split_payload(frame))
        second = post(f"http://127.0.0.1:{port + 1}/invocations", split_payload(frame))
    finally:
        stop(server)
    assert first[0] == second[0] == 200 and first[1] == second[1]
    assert f"serving linerisk-restore v{copy.version} at http://127.0.0.1:{port + 1}/invocations" in log.read_text()
