"""`linerisk explain`: one user's probability, band, reasons, help and path back, as text or JSON; exit 2 on bad input."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from linerisk.pipeline.cli import main
from tests.pipeline.scoring_world import AS_OF


@pytest.fixture(scope="module")
def states(small_world):
    from linerisk.features.labels import line_state
    from linerisk.pipeline.io import read_events, read_users

    users = read_users(small_world / "users.parquet")
    return line_state(read_events(small_world / "events.parquet", users).good, AS_OF, users)["state"]


def explain(world, user, *extra):
    return main(["explain", "--model", "linerisk@champion", "--events", str(world / "events.parquet"),
                 "--as-of", AS_OF, "--user", str(user), *extra])


def test_json_view_matches_the_batch_score_and_carries_reasons_help_and_the_path_back(store, small_world, states,
                                                                                      capsys):
    from linerisk.features.compute import build_features
    from linerisk.models import registry
    from linerisk.pipeline.io import read_events, read_users

    user = int(states[states == "active"].index[0])
    assert explain(small_world, user, "--json") == 0
    view = json.loads(capsys.readouterr().out)
    assert view["user_id"] == user and view["line_state"] == "active" and view["model"]["name"] == "linerisk"
    users = read_users(small_world / "users.parquet")
    features = build_features(read_events(small_world / "events.parquet", users).good, AS_OF, users).loc[[user]]
    scorer = registry.load_model("linerisk@champion").unwrap_python_model().scorer
    assert view["probability"] == pytest.approx(float(scorer.probability(features)[0]), abs=1e-9)
    assert view["band"] in ("low", "medium", "high", "very_high")
    for r in view["reasons"] + view["helping"]:
        assert set(r) == {"rank", "family", "code", "text_en", "text_zh", "contribution"}
    assert all(r["contribution"] > 0 for r in view["reasons"]) and all(h["contribution"] < 0 for h in view["helping"])
    curve = [c["probability"] for c in view["recovery"]["curve"]]
    assert len(curve) == 53 and all(b <= a + 1e-12 for a, b in zip(curve, curve[1:]))
    assert view["plan"]["final_probability"] <= view["probability"] + 1e-12


def test_text_view_of_a_restricted_user_shows_the_way_back(store, small_world, states, capsys):
    user = int(states[states == "restricted"].index[0])
    assert explain(small_world, user) == 0
    out = capsys.readouterr().out
    assert f"user {user} at {AS_OF}" in out and "restricted since" in out and "linerisk-restore v1" in out
    assert "Why it was most likely restricted" in out and "Red line:" in out
    assert "P(restored within 90 days)" in out and "expected:" in out and "What holds restoration back" in out
    assert "What would bring it sooner" in out and "monthly for a year:" in out
    assert "probability of a restriction within 90 days" not in out  # an active line's view says nothing here


def test_explain_and_score_agree_on_a_restricted_line(store, small_world, states, tmp_path, capsys):
    import pandas as pd

    assert main(["score", "--events", str(small_world / "events.parquet"), "--as-of", AS_OF,
                 "--out", str(tmp_path / "s.parquet")]) == 0
    scores = pd.read_parquet(tmp_path / "s.parquet").set_index("user_id")
    capsys.readouterr()
    for user in states[states == "restricted"].index[:3]:
        assert explain(small_world, int(user), "--json") == 0
        view = json.loads(capsys.readouterr().out)
        row = scores.loc[user]
        assert view["line_state"] == row["line_state"] == "restricted" and view["probability"] is None
        assert view["restore"]["probability_90d"] == pytest.approx(row["restore_probability"], abs=1e-12)
        assert view["red_line"]["holds"] == bool(row["red_line"])
        expected = None if pd.isna(row["restore_expected"]) else pd.Timestamp(row["restore_expected"]).strftime("%Y-%m-%d")
        assert view["restore"]["expected"] == expected
        assert [r["code"] for r in view["holding_back"]] == [row[f"reason_{k}_code"] for k in (1, 2, 3)
                                                             if pd.notna(row[f"reason_{k}_code"])]
        assert all(r["contribution"] < 0 for r in view["holding_back"])
        curve = [c["probability"] for c in view["restore"]["curve"]]
        assert all(b >= a - 1e-12 for a, b in zip(curve, curve[1:]))
        assert curve[-1] == pytest.approx(view["restore"]["probability_365d"])
        assert view["restore_model"]["name"] == "linerisk-restore"


def write_log(path, rows: list[tuple]) -> None:
    """events.parquet and users.parquet in `path` from (user, type, days from AS_OF, amount, dpd, score) rows."""
    import numpy as np
    import pandas as pd

    as_of = pd.Timestamp(AS_OF, tz="UTC")
    pd.DataFrame({
        "event_id": [f"x{i}" for i in range(len(rows))], "user_id": np.asarray([r[0] for r in rows], dtype=np.int64),
        "event_time": [as_of + pd.Timedelta(days=r[2]) for r in rows], "event_type": [r[1] for r in rows],
        "amount": [r[3] for r in rows], "days_past_due": pd.array([r[4] for r in rows], dtype="Int32"),
        "credit_score": pd.array([r[5] for r in rows], dtype="Int32")}).to_parquet(path / "events.parquet")
    ids = sorted({r[0] for r in rows})
    pd.DataFrame({"user_id": np.asarray(ids, dtype=np.int64), "signup_date": [pd.Timestamp("2023-01-01")] * len(ids),
                  "segment": ["consumer"] * len(ids)}).to_parquet(path / "users.parquet")


QUIET = [(1, "pl_open", -300, 5000.0, None, None), (1, "credit_score", -200, None, None, 610),
         (1, "credit_inquiry", -150, None, None, None), (1, "credit_inquiry", -140, None, None, None),
         (1, "pl_restricted", -120, None, None, None),
         (2, "credit_score", -100, None, None, 700)]  # user 2 never opened a personal line


def test_a_restricted_user_with_no_events_since_the_restriction_gets_an_answer(store, tmp_path, capsys):
    write_log(tmp_path, QUIET)
    assert main(["explain", "--events", str(tmp_path / "events.parquet"), "--as-of", AS_OF, "--user", "1",
                 "--json"]) == 0
    view = json.loads(capsys.readouterr().out)
    assert view["line_state"] == "restricted" and view["state_since"].startswith("2024-05-30")
    assert 0 <= view["restore"]["probability_90d"] <= view["restore"]["probability_365d"] <= 1
    assert view["why_restricted"]["as_of"].startswith("2024-05-30") and not view["red_line"]["holds"]
    # nothing drawn, nothing owed, no business loan: neither repaying on time nor using the business loan acts
    assert not {a["code"] for a in view["actions"]} & {"repay_on_time_90d", "use_business_loan_90d"}


def test_a_user_without_a_line_is_one_line(store, tmp_path, capsys):
    write_log(tmp_path, QUIET)
    assert main(["explain", "--events", str(tmp_path / "events.parquet"), "--as-of", AS_OF, "--user", "2"]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("error")]
    assert err == ["error: user_id: 2 has no personal line at 2024-09-27 (no pl_open before it)"]


def test_unknown_user_and_unknown_model_exit_2_with_one_line(store, small_world, capsys):
    assert explain(small_world, 987654321) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "987654321" in err[0] and "not in the users table" in err[0]
    assert main(["explain", "--model", "nosuchmodel@champion", "--events", str(small_world / "events.parquet"),
                 "--as-of", AS_OF, "--user", "1"]) == 2
    assert "nosuchmodel" in capsys.readouterr().err


def test_a_model_built_on_another_feature_spec_is_refused(mlflow_store, synth_split, trained_model, small_world,
                                                          capsys):
    from linerisk.models import registry

    reg = registry.register_model(trained_model, params={}, metrics={}, reference={}, test_frame=synth_split.test)
    capsys.readouterr()
    assert main(["explain", "--model", f"linerisk/{reg.version}", "--events", str(small_world / "events.parquet"),
                 "--as-of", AS_OF, "--user", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "feature spec" in err[0]


def test_a_plan_says_when_it_takes_effect_in_both_languages(store, small_world, states, capsys):
    from linerisk.features.compute import build_features
    from linerisk.models.recover import plan_actions
    from linerisk.pipeline.io import load_model_package, read_events, read_users

    users = read_users(small_world / "users.parquet")
    scorer = load_model_package("linerisk@champion").scorer
    features = build_features(read_events(small_world / "events.parquet", users).good, AS_OF, users)
    plan = plan_actions(scorer, features.loc[states.index[states == "active"]])
    acted = plan.summary[plan.summary["n_steps"] > 0]
    user = int(acted.index[0])
    days = int(acted["effective_days"].iloc[0])
    assert days == plan.steps.loc[plan.steps["user_id"] == user, "days"].max() > 0
    assert explain(small_world, user, "--json") == 0
    view = json.loads(capsys.readouterr().out)
    when = (pd.Timestamp(AS_OF) + pd.Timedelta(days=days)).strftime("%Y-%m-%d")
    assert view["plan"]["effective_days"] == days and view["plan"]["effective_date"] == when
    assert explain(small_world, user) == 0
    out = capsys.readouterr().out
    assert f"takes effect from {when}" in out and f"自{when}起生效" in out
