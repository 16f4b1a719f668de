"""The restoration model as registered: its curve, the red line, the levers of the way back, the served model."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from linerisk.pipeline.cli import main
from tests.pipeline.scoring_world import AS_OF


@pytest.fixture(scope="module")
def restricted(small_world):
    """Features at AS_OF of the small world's restricted lines (index user_id)."""
    from linerisk.features.labels import line_features
    from linerisk.pipeline.io import read_events, read_users

    users = read_users(small_world / "users.parquet")
    features = line_features(read_events(small_world / "events.parquet", users).good, AS_OF, users)
    return features[features["line_state"] == "restricted"]


@pytest.fixture
def restore(store):
    from linerisk.models import registry

    return registry.load_package("linerisk-restore@champion").scorer


def red_lined(frame: pd.DataFrame) -> pd.DataFrame:
    """The same lines with a default over 90 days past due on record, 30 days ago."""
    return frame.assign(default_count_ever=1.0, max_dpd_ever=95.0, days_since_default=30.0)


def test_the_curve_rises_to_a_year_and_agrees_with_the_scores(restore, restricted):
    X = restricted[[f["name"] for f in restore.spec["features"]]].astype("float64")
    h = restore.hazards(X)
    days = np.arange(0, 366)
    red = restore.red_line(X)
    curve = restore.cumulative(h, days, red)
    assert (np.diff(curve, axis=1) >= -1e-12).all() and (curve[:, 0] == 0).all()
    scores = restore.score(X)
    np.testing.assert_allclose(scores["restore_probability"], curve[:, 90])
    median = scores["restore_expected_days"].to_numpy()
    some = ~np.isnan(median)
    rows = np.flatnonzero(some)
    assert (curve[rows, median[some].astype(int)] >= 0.5 - 1e-9).all()
    assert (curve[rows, median[some].astype(int) - 1] < 0.5).all()  # the first day it reaches one half
    assert (curve[~some, 365] < 0.5 + 1e-9).all()


def test_later_periods_advance_the_clock_and_review_pending_appeals(restore, restricted):
    X = restricted[[f["name"] for f in restore.spec["features"]]].astype("float64").head(5).assign(
        appeal_pending_count=1.0, appeal_rejected_count=0.0)
    frames = restore.period_frames(X)
    assert len(frames) == 5  # 90-day periods to 365 days
    np.testing.assert_allclose(frames[2]["days_restricted"], X["days_restricted"] + 180)
    assert (frames[1]["appeal_pending_count"] == 0).all() and (frames[1]["appeal_rejected_count"] == 1).all()
    assert (frames[0]["appeal_pending_count"] == 1).all()


def test_the_red_line_is_capped_at_one_percent_on_every_horizon_and_stated_with_its_evidence(restore, restricted):
    X = red_lined(restricted[[f["name"] for f in restore.spec["features"]]].astype("float64"))
    scores = restore.score(X)
    assert scores["red_line"].all() and (scores["restore_probability"] <= 0.01).all()
    assert (scores["restore_probability_365d"] <= 0.01).all() and scores["restore_expected_days"].isna().all()
    assert (restore.cumulative(restore.hazards(X), np.arange(366), restore.red_line(X)) <= 0.01 + 1e-12).all()
    evidence = restore.red_line_evidence(X.iloc[0], pd.Timestamp(AS_OF))
    assert evidence["date"] == "2024-08-28" and "default" in evidence["text_en"] and "违约" in evidence["text_zh"]
    misuse = X.iloc[0].copy()
    misuse[["default_count_ever", "max_dpd_ever"]] = 0.0
    misuse[["fund_misuse_count_ever", "days_since_fund_misuse"]] = [2.0, 10.0]
    assert restore.red_line_evidence(misuse, pd.Timestamp(AS_OF))["text_en"].startswith("2 fund-misuse flags")


def test_an_appeal_is_offered_to_a_minor_cause_line_but_never_past_the_red_line(restore, restricted, monkeypatch):
    from linerisk.models import restore_plan
    from linerisk.models.restore_plan import restoration_actions

    # who is offered what, whatever the gain: the small world's model has seen too few pending appeals to learn
    # their lift (the demo's does: the gain filter is pinned by the next test)
    monkeypatch.setattr(restore_plan, "MIN_GAIN", -1.0)
    lines = restricted[~restore.red_line(restricted)].head(20).assign(appeal_pending_count=0.0)
    now = restore.score(lines, reasons=False)["restore_probability"].to_numpy()
    minor = restoration_actions(restore, lines, np.ones(len(lines), bool), AS_OF)
    appeal = minor[minor["code"] == "contact_platform"].set_index("user_id")
    assert len(appeal) == len(lines) and (appeal["days"] == 0).all()
    assert (appeal["probability"].to_numpy() >= now[lines.index.get_indexer(appeal.index)] - 1e-12).all()
    major = restoration_actions(restore, lines, np.zeros(len(lines), bool), AS_OF)
    assert "contact_platform" not in set(major["code"]) and "repay_on_time_90d" in set(major["code"])
    assert restoration_actions(restore, red_lined(lines), np.ones(len(lines), bool), AS_OF).empty


def test_an_action_is_offered_only_where_the_world_lets_it_act(restore, restricted, monkeypatch):
    """Using the business loan only where it is open, repaying on time only where something is owed."""
    from linerisk.features.spec import CONDITION_FEATURES
    from linerisk.models import restore_plan
    from linerisk.models.recover import spec_levers
    from linerisk.models.restore_plan import restoration_actions

    monkeypatch.setattr(restore_plan, "MIN_GAIN", -1.0)  # who is offered what, whatever it gains
    lines = restricted[~restore.red_line(restricted)]
    actions = restoration_actions(restore, lines, np.zeros(len(lines), bool), AS_OF)
    conditioned = {lv.code: lv.only_if for lv in spec_levers(restore.spec) if lv.only_if in CONDITION_FEATURES}
    assert set(conditioned.values()) == set(CONDITION_FEATURES)
    for code, condition in conditioned.items():
        can = (lines[list(CONDITION_FEATURES[condition])].fillna(0) > 0).any(axis=1)
        assert can.any() and (~can).any(), condition  # both kinds of line in the small world
        offered = set(actions.loc[actions["code"] == code, "user_id"])
        assert offered and offered <= set(lines.index[can]), code  # never where the world gives it nothing


def test_the_served_restoration_model_answers_as_batch_scoring(restore, restricted):
    from linerisk.models import registry

    names = [f["name"] for f in restore.spec["features"]]
    frame = restricted[names].head(25).astype("float64").reset_index(drop=True)
    served = registry.load_model("linerisk-restore@champion").predict(frame)
    expected = restore.score(frame)
    pd.testing.assert_frame_equal(served.reset_index(drop=True), expected.reset_index(drop=True), check_dtype=False)


def test_a_restoration_model_on_another_feature_spec_is_refused(store, small_world, tmp_path, monkeypatch, capsys):
    from linerisk.features import spec

    real = spec.spec_hash
    monkeypatch.setattr(spec, "spec_hash", lambda target="restrict": real(target) + ("x" if target == "restore" else ""))
    assert main(["score", "--events", str(small_world / "events.parquet"), "--as-of", AS_OF,
                 "--out", str(tmp_path / "s.parquet")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "linerisk-restore" in err[0] and "feature spec" in err[0]
    assert not (tmp_path / "s.parquet").exists()


def test_train_target_restore_reports_the_curve_and_the_red_line(population_world, tmp_path, capsys):
    from linerisk.pipeline import train_job

    args = ["--target", "restore", "--data", str(population_world), "--no-register", "--out", str(tmp_path / "r.html"),
            "--n-estimators", "60", "--learning-rate", "0.15", "--log-every", "0", "--num-threads", "1"]
    result = train_job.command.main(args, standalone_mode=False)
    assert result.model.spec_["target"] == "restore" and result.model.calibrator_["periods"]
    m = result.flat_metrics
    assert 0.6 < m["test_auc"] < 1 and m["test_ece"] < 0.05
    assert m["test_red_line_max_p90"] <= 0.01 and m["test_red_line_restored"] == 0
    assert 0.5 < m["test_chained_cindex_ipcw"] < 1 and "test_chained_curve_ece_90d" in m
    assert m["oracle_test_auc"] > 0.5  # restore_oracle_prob joined on the same rows
    html = (tmp_path / "r.html").read_text()
    assert "Restoration curve (test)" in html and "Red line (test)" in html


def test_the_way_back_takes_its_levers_days_and_conditions_from_the_models_spec(restore, restricted, monkeypatch):
    import copy

    from linerisk.models import restore_plan
    from linerisk.models.restore_plan import restoration_actions

    monkeypatch.setattr(restore_plan, "MIN_GAIN", -1.0)  # what is offered, whatever it gains

    lines = restricted[~restore.red_line(restricted)].head(20).assign(appeal_pending_count=0.0)
    edited = copy.copy(restore)
    edited.spec = copy.deepcopy(restore.spec)
    for f in edited.spec["features"]:
        for lv in f["levers"]:
            if lv["action"] == "contact_platform":
                lv["only_if"] = ""  # offered whatever the likely cause
            if lv["action"] == "no_credit_applications_90d" and lv["text_en"]:
                lv["days"] = 30
    actions = restoration_actions(edited, lines, np.zeros(len(lines), bool), AS_OF)
    assert (actions[actions["code"] == "contact_platform"]["days"] == 0).all()
    assert len(actions[actions["code"] == "contact_platform"]) == len(lines)
    inquiries = actions[actions["code"] == "no_credit_applications_90d"]
    assert len(inquiries) and (inquiries["days"] == 30).all()
    assert set(restoration_actions(restore, lines, np.zeros(len(lines), bool), AS_OF)["code"]) <= {
        "repay_on_time_90d", "no_credit_applications_90d", "use_business_loan_90d", "all"}


def test_a_restoration_model_saved_before_the_spec_had_its_levers_is_refused_in_one_line():
    """Such a model's spec has no restoration levers (its way back would be empty): it is refused, not loaded."""
    import hashlib
    import json
    from types import SimpleNamespace

    from linerisk.data.errors import InputError
    from linerisk.features.spec import feature_records
    from linerisk.models.batch import require_feature_spec
    from linerisk.models.recover import spec_levers

    old_rows = [{**row, "levers": []} for row in feature_records("restore")]  # the view as saved before
    old_hash = hashlib.sha256(json.dumps(old_rows, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    assert spec_levers({"features": old_rows}) == ()
    old = SimpleNamespace(name="linerisk-restore", version="3", target="restore", spec_hash=old_hash)
    with pytest.raises(InputError) as err:
        require_feature_spec(old, "restore")
    message = str(err.value)
    assert "\n" not in message and "linerisk-restore v3" in message and old_hash[:12] in message
    assert "use a model trained on the current feature spec" in message


def test_only_actions_that_raise_the_chance_of_restoration_are_listed(restore, restricted):
    from linerisk.models.restore_plan import MIN_GAIN, restoration_actions

    lines = restricted[~restore.red_line(restricted)].head(60)
    now = restore.score(lines, reasons=False)
    actions = restoration_actions(restore, lines, np.ones(len(lines), bool), AS_OF)
    assert not actions.empty
    mine = lines.index.get_indexer(actions["user_id"])
    gain = np.maximum(actions["probability"].to_numpy() - now["restore_probability"].to_numpy()[mine],
                      actions["probability_365d"].to_numpy() - now["restore_probability_365d"].to_numpy()[mine])
    assert (gain >= MIN_GAIN - 1e-12).all()
    # the plan is every action that helps, together: one per user with any, never worse than its best action
    plan = actions[actions["code"] == "all"].set_index("user_id")
    best = actions[actions["code"] != "all"].groupby("user_id")["probability_365d"].max()
    assert sorted(plan.index) == sorted(best.index)
    assert (plan["probability_365d"] >= best.loc[plan.index] - 1e-9).all()


def test_a_ninety_day_action_already_raises_the_chance_within_its_ninety_days(restore, restricted):
    # its behaviour counts from the first day (an instalment paid on time today is one), so the curve
    # rises while the action is under way, never below the status quo
    from linerisk.models.restore_plan import restoration_actions

    lines = restricted[~restore.red_line(restricted)].head(60)
    now = restore.score(lines, reasons=False)["restore_probability"].to_numpy()
    actions = restoration_actions(restore, lines, np.ones(len(lines), bool), AS_OF)
    slow = actions[(actions["days"] == 90) & (actions["code"] != "all")]
    assert len(slow)
    lift = slow["probability"].to_numpy() - now[lines.index.get_indexer(slow["user_id"])]
    assert (lift >= -1e-12).all() and (lift > 1e-4).any()
