"""Point-in-time feature computation: hand-computed values, invariances, window edges."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

from linerisk.features.compute import build_features, features_from_prepared, prepare_events
from linerisk.features.spec import FEATURES, feature_names, features_for

from .conftest import AS_OF, make_events, random_log

RICH_AS_OF = pd.Timestamp("2025-06-15", tz="UTC")

# Hand-computed from TINY_ROWS in conftest.py; NaN means "no such event".
NAN = np.nan
EXPECTED = {
    1: {
        "late_days_sum_90d": 130, "late_repayment_count_90d": 2, "bl_late_repayment_count_90d": 1,
        "pl_late_repayment_count_90d": 1, "late_repayment_count_365d": 2, "late_repayment_share_90d": 0.4,
        "max_dpd_90d": 150, "max_dpd_365d": 150, "last_dpd": 150, "days_since_late_repayment": 5,
        "early_repayment_count_90d": 2, "bl_early_repayment_count_90d": 1, "pl_early_repayment_count_90d": 1,
        "early_repayment_share_90d": 0.4, "early_repayment_count_365d": 2,
        "fund_misuse_count_90d": 0, "fund_misuse_count_180d": 1, "fund_misuse_count_365d": 1,
        "fund_misuse_amount_180d": 8000, "days_since_fund_misuse": 150,
        "credit_score_latest": 640, "credit_score_change_90d": -40, "credit_score_min_365d": 640,
        "credit_inquiry_count_30d": 2, "credit_inquiry_count_90d": 3, "credit_inquiry_count_365d": 3,
        "pl_balance": 2000, "pl_limit": 8000, "pl_utilisation": 0.25, "pl_limit_change_count_365d": 1,
        "pl_limit_change_ratio": 0.8,
        "bl_is_open": 1, "bl_is_closed": 0, "bl_closed_60d": 0, "days_since_bl_close": NAN,
        "on_time_repayment_count_90d": 1, "on_time_repayment_share_90d": 0.2,
        "pl_restriction_count_365d": 0, "days_since_pl_restored": NAN,
        "bl_drawdown_count_30d": 1, "bl_drawdown_amount_30d": 5000, "bl_drawdown_count_365d": 2,
        "bl_drawdown_amount_365d": 25000, "bl_repayment_count_30d": 1, "bl_repayment_amount_90d": 9000,
        "pl_drawdown_count_90d": 0, "pl_drawdown_amount_180d": 4000, "pl_repayment_count_30d": 1,
        "pl_repayment_amount_90d": 2000,
        "days_since_pl_open": 300, "days_since_signup": 912, "is_merchant": 1,
    },
    2: {"pl_restriction_count_365d": 1, "credit_score_latest": 500, "credit_score_change_90d": NAN,
        "pl_balance": 0, "pl_limit": 5000, "pl_utilisation": 0, "late_repayment_share_90d": NAN,
        "max_dpd_90d": 0, "last_dpd": NAN, "is_merchant": 0},
    3: {"days_since_pl_restored": 100, "pl_restriction_count_365d": 1, "credit_score_min_365d": 720,
        "bl_is_open": 0, "bl_is_closed": 0},
    4: {"bl_is_open": 0, "bl_is_closed": 1, "bl_closed_60d": 1, "days_since_bl_close": 45,
        "bl_repayment_count_90d": 1, "on_time_repayment_count_90d": 1, "late_repayment_count_90d": 0,
        "late_repayment_count_365d": 1, "max_dpd_90d": 0, "max_dpd_365d": 3, "bl_drawdown_count_30d": 0,
        "days_since_pl_open": 100},
    5: {"days_since_pl_open": NAN, "pl_limit": NAN, "bl_is_open": 0, "days_since_signup": 30},
}


def test_hand_written_log_gives_hand_computed_values(tiny_events, tiny_users):
    features = build_features(tiny_events, AS_OF, tiny_users)
    for user, expected in EXPECTED.items():
        got = features.loc[user, list(expected)].astype(float)
        pdt.assert_series_equal(got, pd.Series(expected, dtype=float, name=user), check_names=False, rtol=1e-6)


def test_hand_written_log_covers_every_family(tiny_events, tiny_users):
    checked = {name for expected in EXPECTED.values() for name in expected}
    restrict = features_for("restrict")
    assert {f.family for f in restrict if f.name in checked} == {f.family for f in restrict}


def test_features_have_spec_columns_in_order_as_float32_plus_as_of(tiny_events, tiny_users):
    features = build_features(tiny_events, AS_OF, tiny_users)
    assert list(features.columns) == feature_names() + ["as_of"]
    assert (features[feature_names()].dtypes == np.float32).all()
    assert features.index.name == "user_id"
    assert list(features.index) == [1, 2, 3, 4, 5]
    assert (features["as_of"] == AS_OF).all()


def test_features_ignore_events_after_as_of(rich_log):
    events, users = rich_log
    before = build_features(events, RICH_AS_OF, users)
    future = make_events([(1000 + i % 50, t, 1 + i % 30, 100.0 if t != "bl_close" else None, None, None)
                          for i, t in enumerate(["bl_drawdown", "pl_drawdown", "bl_close"] * 40)], start_id=10**6)
    future.loc[future["event_time"].index[:5], "event_time"] = RICH_AS_OF  # exactly at as_of is the future too
    after = build_features(pd.concat([events, future], ignore_index=True), RICH_AS_OF, users)
    pdt.assert_frame_equal(before, after)


def test_features_ignore_row_order(rich_log):
    events, users = rich_log
    shuffled = events.sample(frac=1.0, random_state=7)
    pdt.assert_frame_equal(build_features(events, RICH_AS_OF, users), build_features(shuffled, RICH_AS_OF, users))


def test_build_features_leaves_its_input_untouched(rich_log):
    events, users = rich_log
    copy_events, copy_users = events.copy(deep=True), users.copy(deep=True)
    build_features(events, RICH_AS_OF, users)
    pdt.assert_frame_equal(events, copy_events)
    pdt.assert_frame_equal(users, copy_users)


def test_every_spec_feature_is_computed_on_a_rich_log(rich_log):
    events, users = rich_log
    features = build_features(events, RICH_AS_OF, users)
    all_nan = [c for c in feature_names() if features[c].isna().all()]
    constant = [c for c in feature_names() if features[c].nunique() < 2 and c not in all_nan]
    assert not all_nan
    assert not constant


def test_without_users_rows_are_users_seen_before_as_of(tiny_events):
    features = build_features(tiny_events, AS_OF)
    assert list(features.index) == [1, 2, 3, 4]  # user 5 only appears after as_of
    assert features["days_since_signup"].isna().all()


def test_string_user_ids_and_string_as_of_give_the_same_values(tiny_events, tiny_users):
    as_int = build_features(tiny_events, AS_OF, tiny_users)
    events = tiny_events.assign(user_id=tiny_events["user_id"].map(lambda u: f"u{u}").astype("string"))
    users = tiny_users.assign(user_id=tiny_users["user_id"].map(lambda u: f"u{u}").astype("string"))
    as_str = build_features(events, "2025-07-01", users)
    assert list(as_str.index) == ["u1", "u2", "u3", "u4", "u5"]
    pdt.assert_frame_equal(as_int.reset_index(drop=True), as_str.reset_index(drop=True))


def test_users_in_any_order_keep_their_order(tiny_events, tiny_users):
    users = tiny_users.iloc[[3, 0, 4, 1, 2]]
    features = build_features(tiny_events, AS_OF, users)
    assert list(features.index) == [4, 1, 5, 2, 3]
    pdt.assert_frame_equal(features.sort_index(), build_features(tiny_events, AS_OF, tiny_users))


def test_late_days_are_capped_per_repayment(tiny_events, tiny_users):
    features = build_features(tiny_events, AS_OF, tiny_users)
    assert features.loc[1, "late_days_sum_90d"] == 10 + 120  # a 150-day repayment counts 120


@pytest.mark.parametrize("seed", [1, 2])
def test_counts_match_a_plain_pandas_reference(seed):
    events, users = random_log(n_users=50, n_events=5_000, seed=seed)
    features = build_features(events, RICH_AS_OF, users)
    past = events[(events["event_time"] < RICH_AS_OF) & (events["event_time"] >= RICH_AS_OF - pd.Timedelta(days=90))]
    late = past[past["event_type"].isin(["bl_repayment", "pl_repayment"]) & (past["days_past_due"] > 0)]
    ref = late.groupby("user_id")["days_past_due"].agg(lambda d: d.clip(upper=120).sum())
    ref = ref.reindex(features.index, fill_value=0).astype(float)
    pdt.assert_series_equal(features["late_days_sum_90d"].astype(float), ref, check_names=False)
    inq = past[past["event_type"] == "credit_inquiry"].groupby("user_id").size().reindex(features.index, fill_value=0)
    assert (features["credit_inquiry_count_90d"].to_numpy() == inq.to_numpy()).all()


@pytest.mark.parametrize("order", ["shuffled", "by_time"])  # masks vs day slices inside compute
@pytest.mark.parametrize("as_of", ["2025-06-15 13:37:01.5", "2025-02-28 23:59:59.999999", "2025-06-15"])
def test_windows_and_latest_values_match_plain_pandas_at_any_time_of_day(as_of, order):
    events, users = random_log(n_users=40, n_events=8_000, seed=5)
    t = pd.Timestamp(as_of, tz="UTC")
    ordered = events.sample(frac=1.0, random_state=1) if order == "shuffled" else events.sort_values("event_time")
    features = build_features(ordered, t, users)
    past = events[events["event_time"] < t]
    for window in (30, 90, 365):
        recent = past[past["event_time"] >= t - pd.Timedelta(days=window)]
        drawdowns = recent[recent["event_type"] == "pl_drawdown"].groupby("user_id")["amount"].agg(["size", "sum"])
        drawdowns = drawdowns.reindex(features.index, fill_value=0)
        np.testing.assert_array_equal(features[f"pl_drawdown_count_{window}d"], drawdowns["size"])
        np.testing.assert_allclose(features[f"pl_drawdown_amount_{window}d"], drawdowns["sum"], rtol=1e-6)
    scores = past[past["event_type"] == "credit_score"].sort_values("event_time")
    latest = scores.groupby("user_id")["credit_score"].last().reindex(features.index).astype(float)
    np.testing.assert_array_equal(features["credit_score_latest"].astype(float), latest)
    then = scores[scores["event_time"] <= t - pd.Timedelta(days=90)].groupby("user_id")["credit_score"].last()
    np.testing.assert_array_equal(features["credit_score_change_90d"].astype(float),
                                  (latest - then.reindex(features.index).astype(float)))
    first_open = past[past["event_type"] == "pl_open"].groupby("user_id")["event_time"].min().reindex(features.index)
    np.testing.assert_allclose(features["days_since_pl_open"].astype(float),
                               (t - first_open) / pd.Timedelta(days=1), rtol=1e-6)


def test_a_log_spanning_decades_gives_the_same_features(tiny_events, tiny_users):
    ancient = make_events([(3, "credit_inquiry", -365 * 20, None, None, None)], start_id=500)  # 20 years back
    longer = build_features(pd.concat([tiny_events, ancient], ignore_index=True), AS_OF, tiny_users)
    pdt.assert_frame_equal(longer, build_features(tiny_events, AS_OF, tiny_users))


def test_events_of_users_outside_the_users_table_are_refused_never_dropped(tiny_events, tiny_users):
    stranger = make_events([(77, "bl_fund_misuse", -3, 10.0, None, None), (0, "credit_inquiry", -3, None, None, None)],
                           start_id=600)
    with pytest.raises(ValueError, match=r"row\(s\) of users missing from the users table \(e.g. 77\).*unknown_user"):
        build_features(pd.concat([tiny_events, stranger], ignore_index=True), AS_OF, tiny_users)


def test_prepared_events_count_what_the_features_read_and_what_lies_after_as_of(tiny_events, tiny_users):
    t = pd.to_datetime(tiny_events["event_time"], utc=True)
    before = int((t < pd.Timestamp(AS_OF)).sum())
    assert 0 < before < len(tiny_events)
    assert prepare_events(tiny_events, tiny_users, until=AS_OF).consumed() == (before, len(tiny_events) - before)
    assert prepare_events(tiny_events, tiny_users).consumed(AS_OF) == (before, len(tiny_events) - before)


def test_as_of_accepts_naive_dates_as_utc(tiny_events, tiny_users):
    from datetime import date
    pdt.assert_frame_equal(build_features(tiny_events, date(2025, 7, 1), tiny_users),
                           build_features(tiny_events, AS_OF, tiny_users))


def test_day_sorted_and_unsorted_preparation_agree(rich_log):
    events, users = rich_log
    for as_of in ("2025-03-01 06:00", "2025-06-15"):
        sliced = features_from_prepared(prepare_events(events, users, sort_by_day=True), as_of)
        masked = features_from_prepared(prepare_events(events, users, sort_by_day=False), as_of)
        pdt.assert_frame_equal(sliced, masked)


def test_prepared_events_refuse_a_later_as_of_than_they_were_cut_at(tiny_events, tiny_users):
    prep = prepare_events(tiny_events, tiny_users, until=AS_OF)
    with pytest.raises(ValueError, match="cut off"):
        features_from_prepared(prep, AS_OF + pd.Timedelta(days=1))


DECAYED = [f for f in features_for("restrict") if f.aggregation == "decayed_count"]
_DECAYED_SOURCES = {  # which events each source names, written out here rather than read from compute.SOURCES
    "credit_inquiry": lambda e: e["event_type"] == "credit_inquiry",
    "repayment.early": lambda e: e["event_type"].isin(["bl_repayment", "pl_repayment"])
    & (e["days_past_due"].fillna(0) < 0),
}


def _random_log_features(as_of: str, order: str, seed: int) -> tuple[pd.DataFrame, pd.Timestamp, pd.DataFrame]:
    """A random log, the as_of instant and its features, built from the log shuffled or in time order."""
    events, users = random_log(n_users=40, n_events=8_000, seed=seed)
    t = pd.Timestamp(as_of, tz="UTC")
    ordered = events.sample(frac=1.0, random_state=seed) if order == "shuffled" else events.sort_values("event_time")
    return events, t, build_features(ordered, t, users)


def _in_window(events: pd.DataFrame, f, t: pd.Timestamp) -> pd.DataFrame:
    """The events of feature `f`'s source in its window before `t`."""
    return events[_DECAYED_SOURCES[f.source](events) & (events["event_time"] < t)
                  & (events["event_time"] >= t - pd.Timedelta(days=f.window))]


@pytest.mark.parametrize("order", ["shuffled", "by_time"])
@pytest.mark.parametrize("as_of", ["2025-06-15 13:37:01.5", "2025-03-01"])
def test_decayed_counts_match_a_brute_force_sum_of_halving_weights(as_of, order):
    events, t, features = _random_log_features(as_of, order, seed=11)
    assert DECAYED, "the spec declares recency-weighted counts"
    for f in DECAYED:
        mine = _in_window(events, f, t)
        age_days = (t - mine["event_time"]) / pd.Timedelta(days=1)
        ref = (0.5 ** (age_days / f.half_life)).groupby(mine["user_id"]).sum().reindex(features.index, fill_value=0)
        assert ref.sum() > 5  # the log has such events: the comparison is not between zeros
        np.testing.assert_allclose(features[f.name].astype(float), ref.astype(float), rtol=1e-5, err_msg=f.name)


def test_decayed_counts_halve_after_the_half_life_and_ignore_events_after_as_of(tiny_users):
    past = make_events([(5, "credit_inquiry", -30, None, None, None), (5, "credit_inquiry", -90, None, None, None),
                        (5, "credit_inquiry", -400, None, None, None)])  # the last is outside the 365-day window
    future = make_events([(5, "credit_inquiry", 0, None, None, None), (5, "credit_inquiry", 3, None, None, None)],
                         start_id=100)
    before = build_features(past, AS_OF, tiny_users)
    after = build_features(pd.concat([past, future], ignore_index=True), AS_OF, tiny_users)
    pdt.assert_frame_equal(before, after)
    assert before.loc[5, "credit_inquiry_decayed_hl30"] == pytest.approx(0.5 + 0.125, rel=1e-6)
    assert before.loc[5, "credit_inquiry_decayed_hl90"] == pytest.approx(0.5 ** (1 / 3) + 0.5, rel=1e-6)


@pytest.mark.parametrize("order", ["shuffled", "by_time"])
@pytest.mark.parametrize("as_of", ["2025-06-15 13:37:01.5", "2025-03-01"])
def test_peak_counts_match_a_brute_force_scan_of_every_span(as_of, order):
    events, t, features = _random_log_features(as_of, order, seed=12)
    peaks = [f for f in features_for("restrict") if f.aggregation == "peak_count"]
    assert peaks, "the spec declares peak counts"
    for f in peaks:
        mine = _in_window(events, f, t)
        ref = pd.Series(0.0, index=features.index)
        for user, times in mine.groupby("user_id")["event_time"]:
            ref[user] = max(((times >= s) & (times < s + pd.Timedelta(days=f.sub_window))).sum() for s in times)
        assert ref.max() >= 2  # some span holds several events: the peak is not just the count of one
        np.testing.assert_array_equal(features[f.name].astype(float), ref, err_msg=f.name)


def test_a_peak_count_sees_the_busiest_span_not_the_whole_window(tiny_users):
    rows = [(5, "credit_inquiry", d, None, None, None) for d in (-170, -150, -100, -75, -72, -70, -60)]
    rows += [(5, "credit_inquiry", -200, None, None, None), (5, "credit_inquiry", 1, None, None, None)]  # outside
    rows += [(4, "credit_inquiry", -45, None, None, None), (4, "credit_inquiry", -15, None, None, None)]  # 30 apart
    features = build_features(make_events(rows), AS_OF, tiny_users)
    assert features.loc[5, "credit_inquiry_peak_30d_180d"] == 4  # days -75 .. -60
    assert features.loc[4, "credit_inquiry_peak_30d_180d"] == 1  # a span's end is open
    assert features.loc[1, "credit_inquiry_peak_30d_180d"] == 0
