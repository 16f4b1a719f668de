"""`linerisk score`: the Scores contract from a registered model, chunked, atomic, resumable, strict on bad input."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from linerisk.pipeline.cli import main
from linerisk.pipeline.score_job import SCORE_COLUMNS, drift_path_for, partial_paths
from tests.pipeline.scoring_world import AS_OF

ROOT = Path(__file__).resolve().parents[2]


def score(world: Path, out: Path, *extra: str, events: Path | None = None) -> int:
    return main(["score", "--events", str(events or world / "events.parquet"), "--users", str(world / "users.parquet"),
                 "--as-of", AS_OF, "--out", str(out), *extra])


def test_scores_every_active_user_with_the_contract_columns(store, small_world, tmp_path, capsys):
    from linerisk.features.labels import line_state
    from linerisk.pipeline.io import read_events, read_users

    out = tmp_path / "scores.parquet"
    assert score(small_world, out) == 0
    scores = pd.read_parquet(out)
    assert list(scores.columns) == SCORE_COLUMNS
    users = read_users(small_world / "users.parquet")
    state = line_state(read_events(small_world / "events.parquet", users).good, AS_OF, users)["state"]
    assert sorted(scores["user_id"]) == sorted(state.index[state == "active"])
    assert scores["user_id"].is_monotonic_increasing and scores["user_id"].is_unique
    assert (scores["as_of"] == pd.Timestamp(AS_OF, tz="UTC")).all()
    assert scores["probability"].between(0, 1).all()
    assert set(scores["band"]) <= {"low", "medium", "high", "very_high"}
    assert (scores["model_name"] == "linerisk").all() and (scores["model_version"] == "1").all()
    # reasons: k-th reason present exactly when its contribution is, and contributions descend
    for k in (1, 2, 3):
        present = scores[f"reason_{k}_contribution"].notna()
        for field in ("family", "code", "text_en", "text_zh"):
            assert (scores[f"reason_{k}_{field}"].notna() == present).all()
        assert (scores.loc[present, f"reason_{k}_contribution"] > 0).all()
        codes = scores.loc[present, f"reason_{k}_code"]
        assert (codes.str.split(":").str[0] == scores.loc[present, f"reason_{k}_family"]).all()
    both = scores["reason_2_contribution"].notna()
    assert (scores.loc[both, "reason_1_contribution"] >= scores.loc[both, "reason_2_contribution"]).all()
    text = capsys.readouterr().out
    assert f"scored {len(scores):,} active users" in text and "score PSI vs training reference" in text
    times = pd.read_parquet(small_world / "events.parquet", columns=["event_time"])["event_time"]
    future = int((pd.to_datetime(times, utc=True) >= pd.Timestamp(AS_OF, tz="UTC")).sum())
    assert future > 0  # the world runs on after AS_OF: those rows are read, not used, and said so
    assert f"rows read {len(times):,} = used {len(times) - future:,} + future {future:,} + quarantined 0" in text
    assert (tmp_path / "scores.quarantine.parquet").exists() and drift_path_for(out).exists()
    assert not partial_paths(out)


def test_one_user_at_a_time_equals_the_batch_and_chunking_changes_nothing(store, small_world, tmp_path):
    from linerisk.features.compute import build_features
    from linerisk.models import registry
    from linerisk.pipeline.io import read_events, read_users

    whole, chunked = tmp_path / "whole.parquet", tmp_path / "chunked.csv"
    assert score(small_world, whole) == 0
    assert score(small_world, chunked, "--chunk-users", "300") == 0
    a, b = pd.read_parquet(whole), pd.read_csv(chunked)
    pd.testing.assert_series_equal(a["user_id"], b["user_id"])
    np.testing.assert_allclose(a["probability"], b["probability"], rtol=1e-12)
    for col in ("band", "reason_1_code", "reason_2_text_zh", "reason_3_text_en"):
        assert a[col].fillna("").tolist() == b[col].fillna("").tolist(), col

    scorer = registry.load_package("linerisk@champion").scorer
    users = read_users(small_world / "users.parquet")
    features = build_features(read_events(small_world / "events.parquet", users).good, AS_OF, users).reset_index()
    some = a.sample(8, random_state=0)
    singles = pd.concat([scorer.score(features[features["user_id"] == u]) for u in some["user_id"]])
    expected = some[singles.columns].reset_index(drop=True)
    pd.testing.assert_frame_equal(singles.reset_index(drop=True), expected, check_dtype=False)


def _slow_run(store, world: Path, out: Path, pause: float) -> subprocess.Popen:
    """`linerisk score` in another process, pausing after each 500-user chunk; returned once it writes."""
    cmd = [sys.executable, "-m", "linerisk.pipeline.cli", "score", "--events", str(world / "events.parquet"),
           "--as-of", AS_OF, "--out", str(out), "--chunk-users", "500", "--pause-after-chunk", str(pause)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **store}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 90
    while not (partial_paths(out) and partial_paths(out)[0].stat().st_size > 0):
        assert proc.poll() is None and time.monotonic() < deadline, "scoring never started writing"
        time.sleep(0.05)
    return proc


def test_a_killed_run_leaves_no_output_and_a_rerun_writes_the_same_bytes(store, small_world, tmp_path):
    reference, out = tmp_path / "reference.parquet", tmp_path / "scores.parquet"
    assert score(small_world, reference, "--chunk-users", "500") == 0
    proc = _slow_run(store, small_world, out, 60)
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not out.exists() and len(partial_paths(out)) == 1
    assert score(small_world, out, "--chunk-users", "500") == 0
    assert out.read_bytes() == reference.read_bytes()
    assert not partial_paths(out)  # the dead run's partial file is cleaned up


def test_two_runs_with_the_same_out_never_delete_each_others_partial_file(store, small_world, tmp_path):
    reference, out = tmp_path / "reference.parquet", tmp_path / "scores.parquet"
    assert score(small_world, reference, "--chunk-users", "500") == 0
    slow = _slow_run(store, small_world, out, 1.5)
    try:
        assert score(small_world, out, "--chunk-users", "500") == 0  # a second run meanwhile, same --out
        assert out.read_bytes() == reference.read_bytes()
        _, err = slow.communicate(timeout=120)
    finally:
        slow.kill()
    assert slow.returncode == 0, err[-2000:]
    assert out.read_bytes() == reference.read_bytes() and not partial_paths(out)


def test_a_row_the_features_did_not_consume_breaks_the_count_and_stops_the_run(store, small_world, tmp_path,
                                                                               monkeypatch, capsys):
    from linerisk.models import batch  # where each chunk's events are prepared for the features

    real = batch.prepare_events

    def lossy(events, *args, **kwargs):  # a bug that loses two rows on the way into the features
        return real(events.iloc[2:], *args, **kwargs)

    monkeypatch.setattr(batch, "prepare_events", lossy)
    out = tmp_path / "scores.parquet"
    assert score(small_world, out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "2 row(s) unaccounted for" in err[0], err
    assert not out.exists() and not partial_paths(out)


def _events_subset(world: Path, n_users: int = 60) -> pd.DataFrame:
    events = pd.read_parquet(world / "events.parquet")
    return events[events["user_id"] <= n_users].reset_index(drop=True)


def _broken(kind: str, world: Path, path: Path) -> Path:
    events = _events_subset(world)
    if kind == "missing column":
        events = events.drop(columns=["amount"])
    elif kind == "wrong type":
        events["amount"] = events["amount"].astype("string").where(events["amount"].isna(), "a lot")
    elif kind == "empty file":
        events = events.iloc[:0]
    elif kind == "not parquet":
        path.write_text("this is not a parquet file\n")
        return path
    events.to_parquet(path)
    return path


@pytest.mark.parametrize("kind, message", [("missing column", "missing column(s) amount"),
                                           ("wrong type", "column amount is not numeric"),
                                           ("empty file", "holds no rows"),
                                           ("not parquet", "cannot read")])
def test_unusable_input_exits_2_with_one_line_and_no_output(store, small_world, tmp_path, capsys, kind, message):
    events = _broken(kind, small_world, tmp_path / "events.parquet")
    out = tmp_path / "scores.parquet"
    assert score(small_world, out, events=events) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["events.parquet"]


def test_an_unknown_event_type_is_quarantined_not_fatal(store, small_world, tmp_path, capsys):
    events = _events_subset(small_world)
    events.loc[3, "event_type"] = "pl_teleport"
    events.to_parquet(tmp_path / "events.parquet")
    out = tmp_path / "scores.parquet"
    assert score(small_world, out, events=tmp_path / "events.parquet") == 0
    quarantine = pd.read_parquet(tmp_path / "scores.quarantine.parquet")
    assert quarantine["rule"].tolist() == ["unknown_event_type"]
    assert quarantine["event_id"].tolist() == [events.loc[3, "event_id"]]
    assert f"+ quarantined 1, unknown_event_type=1" in capsys.readouterr().out


def test_quarantine_matches_the_corruption_truth_across_chunks(store, corrupt_world, tmp_path, capsys):
    out = tmp_path / "scores.parquet"
    code = main(["score", "--events", str(corrupt_world / "events.parquet"), "--as-of", "2024-06-01",
                 "--out", str(out), "--chunk-users", "150"])
    assert code == 0
    quarantine = pd.read_parquet(tmp_path / "scores.quarantine.parquet")
    truth = pd.read_parquet(corrupt_world / "truth_corruption.parquet")
    assert quarantine["rule"].value_counts().to_dict() == truth["rule"].value_counts().to_dict()
    n = len(pd.read_parquet(corrupt_world / "events.parquet", columns=["event_id"]))
    text = capsys.readouterr().out
    assert f"rows read {n:,} = used " in text and f"+ quarantined {len(truth):,}" in text


def test_a_model_built_on_another_feature_spec_is_refused(mlflow_store, synth_split, trained_model, small_world,
                                                          tmp_path, capsys):
    from linerisk.models import registry
    from linerisk.models.train import reference_distributions
    from tests.models.synth import SYNTH_FEATURES

    names = [n for n, *_ in SYNTH_FEATURES]
    ref = reference_distributions(synth_split.train[names], trained_model.predict_proba(synth_split.train)[:, 1],
                                  trained_model.spec_)
    reg = registry.register_model(trained_model, params={}, metrics={}, reference=ref, test_frame=synth_split.test)
    out = tmp_path / "scores.parquet"
    capsys.readouterr()
    assert score(small_world, out, "--model", f"linerisk/{reg.version}") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "feature spec" in err[0] and not out.exists()
    assert score(small_world, out, "--model", "linerisk@nope") == 2 and not out.exists()


def test_a_naive_beijing_log_scores_like_the_same_wall_clock_in_utc_and_like_the_same_instants_with_offsets(
        store, small_world, tmp_path):
    users = pd.read_parquet(small_world / "users.parquet")
    users = users[users["user_id"] <= 400]
    users.to_parquet(tmp_path / "users.parquet")
    utc = _events_subset(small_world, 400)
    wall = utc["event_time"].dt.tz_localize(None)  # the same wall-clock times, now meant as Beijing time
    logs = {"utc": utc, "naive": utc.assign(event_time=wall),
            "offset": utc.assign(event_time=wall.dt.strftime("%Y-%m-%dT%H:%M:%S.%f+08:00"))}
    scores = {}
    for name, events in logs.items():
        events.to_parquet(tmp_path / f"{name}.parquet")
        zone = [] if name == "utc" else ["--timezone", "Asia/Shanghai"]
        out = tmp_path / f"scores_{name}.parquet"
        assert main(["score", "--events", str(tmp_path / f"{name}.parquet"), "--users", str(tmp_path / "users.parquet"),
                     "--as-of", AS_OF, "--out", str(out), *zone]) == 0
        scores[name] = pd.read_parquet(out)
    assert len(scores["utc"]) > 100
    pd.testing.assert_frame_equal(scores["naive"], scores["offset"])
    assert (scores["naive"]["as_of"] == pd.Timestamp(AS_OF, tz="Asia/Shanghai")).all()
    pd.testing.assert_frame_equal(scores["naive"].drop(columns="as_of"), scores["utc"].drop(columns="as_of"))
