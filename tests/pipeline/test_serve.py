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
    """`.venv/bin/linerisk serve` on the shared store's champions, two workers each (requests land on either), a
    free loopback port: the restriction model there, the restoration model (registered in the store) on the next."""
    log = tmp_path_factory.mktemp("serve") / "server.log"
    port = free_port()
    server = start([str(BIN / "linerisk"), "serve", "--port", str(port), "--workers", "2"], bare_env(store_env), log)
    try:
        wait_for(port, server, log)
        wait_for(port + 1, server, log)
        yield SimpleNamespace(url=f"http://127.0.0.1:{port}/invocations", log=log, port=port,
                              restore_url=f"http://127.0.0.1:{port + 1}/invocations")
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


def test_the_served_restoration_model_answers_restricted_lines_as_batch_scoring(store, small_world, served, tmp_path):
    """Over real HTTP on PORT + 1: the restoration model trained and registered in the session's store answers
    each restricted line as `linerisk score` does, row for row; a bad request is one 400 line."""
    from linerisk.features.labels import line_features
    from linerisk.features.spec import feature_names
    from linerisk.models import registry
    from linerisk.pipeline.cli import main
    from linerisk.pipeline.io import read_events, read_users

    name, version, _ = registry.resolve("linerisk-restore@champion")
    assert f"serving {name} v{version} at {served.restore_url}" in served.log.read_text()
    users = read_users(small_world / "users.parquet")
    lines = line_features(read_events(small_world / "events.parquet", users).good, AS_OF, users)
    restricted = lines[lines["line_state"] == "restricted"].head(40)
    assert main(["score", "--events", str(small_world / "events.parquet"), "--as-of", AS_OF,
                 "--out", str(tmp_path / "scores.parquet")]) == 0
    batch = pd.read_parquet(tmp_path / "scores.parquet").set_index("user_id").loc[restricted.index]
    frame = restricted[feature_names("restore")].astype("float64")
    status, body = post(served.restore_url, split_payload(frame))
    assert status == 200
    answer = pd.DataFrame(body["predictions"], index=restricted.index)
    assert len(answer) == len(batch) and (batch["line_state"] == "restricted").all()
    np.testing.assert_allclose(answer["restore_probability"], batch["restore_probability"], rtol=1e-12)
    assert answer["red_line"].tolist() == batch["red_line"].tolist() and batch["red_line"].any()
    expected = pd.Timestamp(AS_OF) + pd.to_timedelta(answer["restore_expected_days"], unit="D")
    assert expected.dt.strftime("%Y-%m-%d").fillna("").tolist() == \
        pd.to_datetime(batch["restore_expected"]).dt.strftime("%Y-%m-%d").fillna("").tolist()
    reasons = [c for c in batch.columns if c.startswith("reason_")]
    assert_same_answer(answer[reasons].reset_index(drop=True), batch[reasons].reset_index(drop=True))
    # the restriction model's columns are not the restoration model's: one 400 line naming what is missing
    status, bad = post(served.restore_url, split_payload(feature_frame(small_world, 2)))
    missing = next(n for n in feature_names("restore") if n not in feature_names("restrict"))
    assert status == 400 and bad["error_code"] == "BAD_REQUEST" and f"missing column '{missing}'" in bad["message"]
    assert "\n" not in bad["message"]
    status, again = post(served.restore_url, split_payload(frame.head(1)))
    assert status == 200 and again["predictions"][0] == body["predictions"][0]
