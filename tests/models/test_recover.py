"""models.recover: the time projection never rises without new events; the action plan really gets below."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from linerisk.features.compute import build_features
from linerisk.models import recover
from tests.models.explain_world import AS_OF, user_log, world_model


@pytest.fixture(scope="module")
def model(small_world):
    return world_model(small_world)


def _two_users():
    a_events, a_users = user_log(1, early=6, late_dpd=(12, 30), inquiries=3, score=660)
    b_events, b_users = user_log(2, early=2, late_dpd=(5,), score=640)
    return pd.concat([a_events, b_events], ignore_index=True), pd.concat([a_users, b_users], ignore_index=True)


def test_features_at_a_shifted_copy_equal_features_at_a_later_date(model):
    events, users = user_log(1, early=5, late_dpd=(20,), inquiries=2)
    shifted, pseudo = recover._shifted_logs(events, users, pd.Index([1]), AS_OF, np.array([0, 35]))
    via_shift = build_features(shifted, AS_OF, pseudo).drop(columns="as_of").to_numpy()
    later = build_features(events[events["event_time"] < AS_OF], AS_OF + pd.Timedelta(days=35), users)
    np.testing.assert_allclose(via_shift[1], later.drop(columns="as_of").to_numpy()[0], rtol=1e-6)


def test_a_shifted_copy_reads_naive_times_in_the_zone_as_the_features_do():
    from linerisk.features.compute import to_utc_timestamp

    tz = "Asia/Shanghai"  # UTC+8: a naive midnight read as UTC would sit 8 hours late
    events, users = user_log(1, early=5, late_dpd=(20,), inquiries=2)
    events = events.assign(event_time=pd.to_datetime(events["event_time"], utc=True).dt.tz_convert(tz).dt.tz_localize(None))
    users = users.assign(signup_date=pd.to_datetime(users["signup_date"]).dt.tz_localize(None).dt.normalize())
    as_of = to_utc_timestamp(AS_OF.tz_localize(None), tz)
    shifted, pseudo = recover._shifted_logs(events, users, pd.Index([1]), as_of, np.array([0]), tz)
    via_shift = build_features(shifted, as_of, pseudo, tz).drop(columns="as_of")
    own = build_features(events, as_of, users, tz).drop(columns="as_of")
    np.testing.assert_allclose(via_shift.to_numpy(dtype=float), own.to_numpy(dtype=float), rtol=1e-9)


def test_time_projection_is_monotone_non_increasing_and_recovers(model):
    events, users = _two_users()
    tp = recover.project_time(model.scorer_, events, users, [1, 2], AS_OF)
    curve = tp.curve.pivot(index="days", columns="user_id", values="probability")
    assert list(curve.index) == list(range(0, 365, 7))
    assert (curve.diff().dropna() <= 1e-12).all().all()
    assert curve.iloc[0, 0] > curve.iloc[-1, 0] + 0.05  # windows age out: the risk falls
    now = model.predict_proba(build_features(events, AS_OF, users))[:, 1]
    np.testing.assert_allclose(tp.recovery["probability_now"], now, atol=1e-9)
    rec = tp.recovery.loc[1]
    assert rec["probability_now"] >= rec["threshold"] and 0 < rec["recovery_days"] <= 364
    assert curve.loc[rec["recovery_days"], 1] < rec["threshold"] <= curve.loc[rec["recovery_days"] - 7, 1]


def test_action_plan_final_probability_recomputed_from_scratch_is_below_threshold(model):
    events, users = _two_users()
    features = build_features(events, AS_OF, users)
    plan = recover.plan_actions(model.scorer_, features)
    first = plan.summary.loc[1]
    assert first["probability_now"] >= first["threshold"] and first["reached"]
    steps = plan.steps[plan.steps["user_id"] == 1]
    assert len(steps) == first["n_steps"] >= 1 and "no_early_repayment_90d" in set(steps["code"])
    assert (steps["probability"].diff().dropna() < 0).all()
    assert steps["text_en"].str.contains(r"\d").all() and steps["text_zh"].str.contains(r"\d").all()

    fresh = build_features(events, AS_OF, users).loc[[1]]
    after = recover.apply_plan(fresh, list(steps["code"]), model.spec_)
    p = model.predict_proba(after)[:, 1][0]
    assert p < first["threshold"]
    assert p == pytest.approx(first["final_probability"], abs=1e-9)
    assert p == pytest.approx(steps["probability"].iloc[-1], abs=1e-9)


def test_levers_only_lower_risk_and_stay_in_range(model):
    events, users = _two_users()
    features = build_features(events, AS_OF, users)
    spec = model.spec_
    direction = {f["name"]: f["direction"] for f in spec["features"]}
    names = [f["name"] for f in spec["features"]]
    for moves in recover.lever_values(recover.spec_levers(spec), features[names], spec):
        for col, new in moves.items():
            cur = features[names[col]].to_numpy(dtype=float)
            assert direction[names[col]] != 0
            ok = np.isnan(cur) | (direction[names[col]] * (new - cur) <= 1e-9)
            assert ok.all(), names[col]
    after = recover.apply_plan(features, ["no_early_repayment_90d", "no_credit_applications_30d"], spec)
    assert (after["early_repayment_count_90d"] == 0).all() and (after["credit_score_latest"] <= 950).all()


OUTCOMES = ("credit_score",)  # families that record what happened to the user, not what the user does


def test_plans_contain_no_outcome_only_lever():
    from linerisk.features import spec as feature_spec

    from linerisk.models.train import registry_spec

    for lever in recover.spec_levers(registry_spec()):
        families = {feature_spec.get(name).family for name, *_ in lever.moves}
        assert lever.family not in OUTCOMES and families - set(OUTCOMES), lever.code
        assert "credit score by" not in lever.text_en.lower()


def test_stopping_inquiries_lifts_the_score_by_what_the_inquiries_cost(model):
    from linerisk.features import spec as feature_spec

    events, users = _two_users()
    features = build_features(events, AS_OF, users)
    inquiries = features["credit_inquiry_count_30d"].to_numpy(dtype=float)
    assert (inquiries > 0).any()
    after = recover.apply_plan(features, ["no_credit_applications_30d"], model.spec_)
    lift = after["credit_score_latest"].to_numpy(dtype=float) - features["credit_score_latest"].to_numpy(dtype=float)
    np.testing.assert_allclose(lift, np.minimum(feature_spec.SCORE_POINTS_PER_INQUIRY * inquiries,
                                                950 - features["credit_score_latest"].to_numpy(dtype=float)))
    assert (after["credit_inquiry_count_30d"] == 0).all()


def test_a_user_already_below_the_threshold_has_nothing_to_do(model):
    events, users = user_log(3, score=720)
    features = build_features(events, AS_OF, users)
    plan = recover.plan_actions(model.scorer_, features)
    assert plan.summary.loc[3, "reached"] and plan.summary.loc[3, "n_steps"] == 0 and plan.steps.empty
    tp = recover.project_time(model.scorer_, events, users, [3], AS_OF)
    assert tp.recovery.loc[3, "recovery_days"] == 0


def test_the_plans_levers_are_the_ones_the_models_spec_declares(model):
    import copy

    from linerisk.models.scoring import Scorer

    events, users = _two_users()
    features = build_features(events, AS_OF, users)
    spec = copy.deepcopy(model.spec_)
    for f in spec["features"]:  # keep only the early-repayment action
        f["levers"] = [lv for lv in f.get("levers", []) if lv["action"] == "no_early_repayment_90d"]
    only_early = Scorer(model.scorer_.booster.model_to_string(), model.calibrator_, spec)
    plan = recover.plan_actions(only_early, features)
    assert set(plan.steps["code"]) == {"no_early_repayment_90d"}
    for f in spec["features"]:
        f["levers"] = []
    bare = recover.plan_actions(Scorer(model.scorer_.booster.model_to_string(), model.calibrator_, spec), features)
    assert bare.steps.empty and not bare.summary["n_steps"].any()
    np.testing.assert_allclose(bare.summary["final_probability"], bare.summary["probability_now"])


def test_every_lever_is_a_behaviour_the_simulator_can_carry_out():
    from linerisk.models.plan_check import INTERVENTIONS
    from linerisk.models.train import registry_spec

    codes = {lv.code for target in ("restrict", "restore") for lv in recover.spec_levers(registry_spec(target))}
    assert codes == set(INTERVENTIONS)  # every lever has its behaviour, and no behaviour is left without a lever
    assert all(INTERVENTIONS[c].kept() for c in codes)


def test_a_lever_takes_effect_once_its_window_has_cleared_and_the_review_has_caught_up():
    from linerisk.features.spec import REVIEW_LAG_DAYS
    from linerisk.models.train import registry_spec

    days = {lv.code: lv.days for lv in recover.spec_levers(registry_spec())}
    assert days["no_credit_applications_30d"] == 30 + REVIEW_LAG_DAYS
    assert days["no_early_repayment_90d"] == days["repay_on_time_90d"] == 90 + REVIEW_LAG_DAYS
    assert min(days.values()) > REVIEW_LAG_DAYS and max(days.values()) <= 90 + REVIEW_LAG_DAYS
