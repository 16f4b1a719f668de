"""`linerisk features`: validated input, quarantine with counts, exit 2 on unusable input, atomic output."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from linerisk.pipeline.cli import main

from .conftest import random_log


@pytest.fixture
def dataset(tmp_path):
    """A dataset directory (events.parquet, users.parquet) with three bad rows of different kinds."""
    events, users = random_log(n_users=80, n_events=6_000, seed=3)
    events = events.copy()
    events.loc[events["amount"].notna().idxmax(), "amount"] = -5.0
    events.loc[events["amount"].isna().idxmax(), "event_type"] = "pl_mystery"
    events.loc[len(events) - 1, "user_id"] = 99_999
    events.to_parquet(tmp_path / "events.parquet")
    users.to_parquet(tmp_path / "users.parquet")
    return tmp_path


def test_features_job_writes_features_and_a_quarantine_with_counts(dataset, capsys):
    out = dataset / "out" / "features.parquet"
    status = main(["features", "--events", str(dataset / "events.parquet"), "--as-of", "2025-06-01", "--out", str(out)])
    assert status == 0
    err = capsys.readouterr().err
    quarantine = pd.read_parquet(dataset / "out" / "features.quarantine.parquet")
    events = pd.read_parquet(dataset / "events.parquet")
    good = events[~events["event_id"].isin(quarantine["event_id"])]
    future = int((pd.to_datetime(good["event_time"], utc=True) >= pd.Timestamp("2025-06-01", tz="UTC")).sum())
    assert 0 < future and f"rows read 6,000 = used {6_000 - 3 - future:,} + future {future:,} + quarantined 3" in err
    features = pd.read_parquet(out)
    assert len(features) == 80 and "user_id" in features and "as_of" in features
    assert sorted(quarantine["rule"]) == ["negative_amount", "unknown_event_type", "unknown_user"]


def test_features_job_with_labels_writes_an_active_only_panel(dataset):
    out = dataset / "panel.parquet"
    status = main(["features", "--events", str(dataset / "events.parquet"), "--as-of", "2025-03-01",
                   "--as-of", "2025-06-01", "--labels", "--out", str(out)])
    assert status == 0
    panel = pd.read_parquet(out)
    assert set(panel["label"].unique()) <= {0, 1}
    assert panel["as_of"].nunique() == 2
    assert not panel[["user_id", "as_of"]].duplicated().any()


def test_features_job_auto_snapshots(dataset):
    out = dataset / "panel.parquet"
    assert main(["features", "--events", str(dataset / "events.parquet"), "--as-of", "auto", "--labels",
                 "--out", str(out)]) == 0
    assert pd.read_parquet(out)["as_of"].nunique() >= 2


def _run_bad(args, out, capsys):
    status = main(["features", *args, "--as-of", "2025-06-01", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    assert status == 2
    assert len(err.splitlines()) == 1 and err.startswith("error:") and "Traceback" not in err
    assert not out.exists()
    assert not any(p.name.startswith(".") for p in out.parent.iterdir())  # no temporary left behind
    return err


def test_missing_column_exits_2_with_one_line_and_no_output(dataset, capsys):
    pd.read_parquet(dataset / "events.parquet").drop(columns="days_past_due").to_parquet(dataset / "bad.parquet")
    err = _run_bad(["--events", str(dataset / "bad.parquet"), "--users", str(dataset / "users.parquet")],
                   dataset / "f.parquet", capsys)
    assert "days_past_due" in err


def test_empty_file_exits_2_with_one_line_and_no_output(dataset, capsys):
    (dataset / "empty.csv").write_text("")
    _run_bad(["--events", str(dataset / "empty.csv"), "--users", str(dataset / "users.parquet")],
             dataset / "f.parquet", capsys)


def test_header_only_file_exits_2(dataset, capsys):
    (dataset / "header.csv").write_text("event_id,user_id,event_time,event_type,amount,days_past_due,credit_score\n")
    _run_bad(["--events", str(dataset / "header.csv"), "--users", str(dataset / "users.parquet")],
             dataset / "f.parquet", capsys)


def test_unreadable_file_exits_2_with_one_line_and_no_output(dataset, capsys):
    (dataset / "garbage.parquet").write_bytes(b"this is not parquet at all")
    err = _run_bad(["--events", str(dataset / "garbage.parquet"), "--users", str(dataset / "users.parquet")],
                   dataset / "f.parquet", capsys)
    assert "garbage.parquet" in err


def test_missing_events_file_exits_2(dataset, capsys):
    _run_bad(["--events", str(dataset / "nope.parquet")], dataset / "f.parquet", capsys)


def test_describe_prints_the_spec_as_json_and_as_a_table(capsys):
    assert main(["features", "--describe", "--json"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert len(described["features"]) >= 40 and described["features"][0]["text_zh"]
    assert main(["features", "--describe"]) == 0
    assert "late_days_sum_90d" in capsys.readouterr().out


def test_help_works(capsys):
    assert main(["features", "--help"]) == 0
    assert "--as-of" in capsys.readouterr().out


def test_features_job_stacks_several_snapshots_without_labels(dataset):
    out = dataset / "multi.parquet"
    assert main(["features", "--events", str(dataset / "events.parquet"), "--as-of", "2025-03-01",
                 "--as-of", "2025-06-01", "--out", str(out)]) == 0
    frame = pd.read_parquet(out)
    assert len(frame) == 160 and frame["as_of"].nunique() == 2


def test_a_row_lost_before_the_features_stops_the_job_with_the_count(dataset, capsys, monkeypatch):
    from linerisk.pipeline import features_job

    real = features_job.prepare_events
    monkeypatch.setattr(features_job, "prepare_events", lambda events, *a, **k: real(events.iloc[:-5], *a, **k))
    out = dataset / "features.parquet"
    status = main(["features", "--events", str(dataset / "events.parquet"), "--as-of", "2025-06-01", "--out", str(out)])
    assert status == 2 and not out.exists()
    assert "5 row(s) unaccounted for" in capsys.readouterr().err


def test_events_of_a_user_missing_from_users_are_quarantined_as_unknown_user(dataset, capsys):
    out = dataset / "features.parquet"
    assert main(["features", "--events", str(dataset / "events.parquet"), "--as-of", "2025-06-01",
                 "--out", str(out)]) == 0
    quarantine = pd.read_parquet(dataset / "features.quarantine.parquet")
    assert quarantine.loc[quarantine["rule"] == "unknown_user", "user_id"].tolist() == [99_999]
    assert 99_999 not in set(pd.read_parquet(out)["user_id"])
    assert "unknown_user=1" in capsys.readouterr().err


def test_an_events_directory_finds_users_parquet_inside_it(dataset, tmp_path, capsys):
    events_dir = tmp_path / "nightly" / "events"
    events_dir.mkdir(parents=True)
    events = pd.read_parquet(dataset / "events.parquet")
    events.iloc[:3000].to_parquet(events_dir / "part-0.parquet")
    events.iloc[3000:].to_parquet(events_dir / "part-1.parquet")
    pd.read_parquet(dataset / "users.parquet").to_parquet(events_dir / "users.parquet")
    out = tmp_path / "features.parquet"
    assert main(["features", "--events", str(events_dir), "--as-of", "2025-06-01", "--out", str(out)]) == 0, \
        capsys.readouterr().err
    assert "rows read 6,000 =" in capsys.readouterr().err  # the users file is not read as events
    assert len(pd.read_parquet(out)) == 80
