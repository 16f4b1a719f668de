"""--timezone: naive times are wall-clock times in the zone, as_of is local midnight, windows are local days."""
from __future__ import annotations

import pandas as pd
import pandas.testing as pdt
import pytest

from linerisk.data.schema import parse_times
from linerisk.features.compute import build_features, to_utc_timestamp
from linerisk.features.labels import default_snapshots
from linerisk.pipeline.cli import main

from .conftest import random_log


def _dataset(tmp_path, times: list[str]):
    """One user with a line and a credit inquiry at each of `times` (ISO text as given)."""
    events = pd.DataFrame({
        "event_id": [f"e{i}" for i in range(len(times) + 1)],
        "user_id": 1, "event_time": ["2025-01-05T00:00:00+00:00", *times],
        "event_type": ["pl_open", *["credit_inquiry"] * len(times)],
        "amount": [5000.0, *[None] * len(times)], "days_past_due": None, "credit_score": None})
    events.to_csv(tmp_path / "events.csv", index=False)
    pd.DataFrame({"user_id": [1], "signup_date": ["2025-01-01"], "segment": ["consumer"]}).to_parquet(
        tmp_path / "users.parquet")
    return tmp_path / "events.csv"


def test_23_30_local_the_day_before_as_of_is_in_and_00_10_local_on_as_of_is_out(tmp_path):
    # as instants: 23:30 and 00:10 in Beijing are 15:30 and 16:10 UTC the day before as_of
    events = _dataset(tmp_path, ["2025-06-30T15:30:00Z", "2025-06-30T16:10:00Z"])
    out = tmp_path / "f.parquet"
    assert main(["features", "--events", str(events), "--as-of", "2025-07-01", "--timezone", "Asia/Shanghai",
                 "--out", str(out)]) == 0
    row = pd.read_parquet(out).iloc[0]
    assert row["credit_inquiry_count_30d"] == 1
    assert row["as_of"] == pd.Timestamp("2025-06-30T16:00:00Z")
    assert main(["features", "--events", str(events), "--as-of", "2025-07-01", "--out", str(out)]) == 0
    assert pd.read_parquet(out).iloc[0]["credit_inquiry_count_30d"] == 2  # UTC midnight: both before it


def test_naive_times_are_wall_clock_in_the_zone_and_offsets_are_converted():
    text = pd.Series(["2025-06-30 23:30", "2025-06-30T23:30:00+08:00", "2025-06-30T15:30:00Z", "2025-06-01"])
    got = parse_times(text, "Asia/Shanghai")
    assert got.tolist()[:3] == [pd.Timestamp("2025-06-30T15:30:00Z")] * 3
    assert got.iloc[3] == pd.Timestamp("2025-05-31T16:00:00Z")  # a bare date is local midnight
    assert to_utc_timestamp("2025-07-01", "Asia/Shanghai") == pd.Timestamp("2025-06-30T16:00:00Z")
    # a local time that happens twice at a DST change cannot be placed: it is unparseable, not guessed
    assert parse_times(pd.Series(["2025-11-02 01:30"]), "America/New_York").isna().all()


def test_windows_count_local_days_across_a_dst_change():
    # New York springs forward on 2025-03-09: the 30 local days before 2025-04-01 start at 2025-03-02 00:00
    # EST (05:00 UTC), not 30 x 24 hours back (04:00 UTC)
    events = pd.DataFrame({"event_id": ["a", "b", "c"], "user_id": 1,
                           "event_time": pd.to_datetime(["2025-01-05 12:00", "2025-03-02 04:30", "2025-03-02 05:30"],
                                                        utc=True),
                           "event_type": ["pl_open", "credit_inquiry", "credit_inquiry"],
                           "amount": [5000.0, None, None], "days_past_due": pd.array([None] * 3, dtype="Int32"),
                           "credit_score": pd.array([None] * 3, dtype="Int32")})
    users = pd.DataFrame({"user_id": [1], "signup_date": pd.to_datetime(["2025-01-01"]), "segment": ["consumer"]})
    row = build_features(events, "2025-04-01", users, tz="America/New_York").iloc[0]
    assert row["credit_inquiry_count_30d"] == 1


def test_snapshot_dates_are_local_midnights():
    events, _ = random_log(n_users=30, n_events=3_000, seed=1)
    snaps = default_snapshots(events, horizon_days=30, tz="Asia/Shanghai")
    assert snaps and all(t.tz_convert("Asia/Shanghai").hour == 0 and t.minute == 0 for t in snaps)


def test_an_unknown_zone_is_a_usage_error(tmp_path, capsys):
    events = _dataset(tmp_path, ["2025-06-30T15:30:00Z"])
    assert main(["features", "--events", str(events), "--as-of", "2025-07-01", "--timezone", "Mars/Olympus",
                 "--out", str(tmp_path / "f.parquet")]) == 2
    assert "Mars/Olympus" in capsys.readouterr().err
