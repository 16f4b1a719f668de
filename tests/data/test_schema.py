"""The contract's schema module: every corruption kind is caught, nothing else is."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from linerisk.data.schema import RULES, InputError, validate_events, validate_users


def good_events() -> pd.DataFrame:
    t = pd.Timestamp("2024-03-01", tz="UTC")
    return pd.DataFrame({
        "event_id": ["a", "b", "c", "d"],
        "user_id": [1, 1, 2, 2],
        "event_time": [t, t, t, t],
        "event_type": ["pl_open", "pl_repayment", "credit_score", "credit_inquiry"],
        "amount": [1000.0, 50.0, None, None],
        "days_past_due": [None, -3, None, None],
        "credit_score": [None, None, 700, None],
    })


USERS = pd.DataFrame({"user_id": [1, 2], "signup_date": ["2024-01-01", "2024-01-02"],
                      "segment": ["consumer", "merchant"]})


@pytest.mark.parametrize("rule, change", [
    ("missing_required", {"amount": [None, 50.0, None, None]}),
    ("unknown_event_type", {"event_type": ["pl_open", "pl_teleport", "credit_score", "credit_inquiry"]}),
    ("unparseable_time", {"event_time": ["2024-03-01", "yesterday", "2024-03-01", "2024-03-01"]}),
    ("must_be_null", {"credit_score": [None, 640, 700, None]}),
    ("negative_amount", {"amount": [1000.0, -50.0, None, None]}),
    ("score_out_of_range", {"credit_score": [None, None, 999, None]}),
    ("unknown_user", {"user_id": [1, 1, 2, 3]}),
    ("duplicate_event_id", {"event_id": ["a", "b", "c", "c"]}),
    ("dpd_out_of_range", {"event_type": ["pl_open", "bl_default", "credit_score", "credit_inquiry"],
                          "days_past_due": [None, 90, None, None]}),
    ("missing_required", {"event_type": ["pl_open", "pl_default", "credit_score", "credit_inquiry"],
                          "amount": [1000.0, None, None, None], "days_past_due": [None, 91, None, None]}),
    ("must_be_null", {"event_type": ["pl_open", "pl_appeal", "credit_score", "credit_inquiry"],
                      "amount": [1000.0, 50.0, None, None], "days_past_due": [None, None, None, None]}),
])
def test_each_rule_quarantines_exactly_the_broken_row(rule, change):
    events = good_events().assign(**change)
    checked = validate_events(events, USERS)
    assert len(checked.quarantined) == 1
    assert checked.quarantined["rule"].iloc[0] == rule
    assert checked.n_read == 4


def test_appeals_and_defaults_past_90_days_pass():
    t = pd.Timestamp("2024-03-01", tz="UTC")
    events = pd.DataFrame({
        "event_id": ["a", "b", "c"], "user_id": [1, 2, 2], "event_time": [t, t, t],
        "event_type": ["pl_appeal", "bl_default", "pl_default"],
        "amount": [None, 30_000.0, 1_200.0], "days_past_due": [None, 91, 120], "credit_score": [None, None, None],
    })
    checked = validate_events(events, USERS)
    assert checked.quarantined.empty and len(checked.good) == 3


def test_rules_cover_every_kind_the_contract_lists():
    assert len(RULES) == 9


def test_clean_events_pass_typed_per_contract():
    checked = validate_events(good_events(), USERS)
    assert len(checked.good) == 4 and checked.quarantined.empty
    assert str(checked.good["event_time"].dtype) == "datetime64[us, UTC]"


def test_validation_does_not_modify_its_input():
    events = good_events().assign(amount=[1000.0, -50.0, None, None])
    before = events.copy()
    validate_events(events, USERS)
    pd.testing.assert_frame_equal(events, before)


def test_missing_column_is_an_input_error_naming_it():
    with pytest.raises(InputError, match="event_type"):
        validate_events(good_events().drop(columns="event_type"))


def test_users_with_unknown_segment_are_refused():
    with pytest.raises(InputError, match="segment"):
        validate_users(USERS.assign(segment=["consumer", "shop"]))


def test_corrupted_world_quarantines_exactly_the_rows_listed_in_truth(corrupt_world):
    from linerisk.pipeline.io import read_events, read_users
    users = read_users(corrupt_world / "users.parquet")
    checked = read_events(corrupt_world / "events.parquet", users)
    truth = pd.read_parquet(corrupt_world / "truth_corruption.parquet").set_index("row")["rule"]
    got = checked.quarantined["rule"]
    assert sorted(got.index) == sorted(truth.index)
    assert (got.sort_index().to_numpy() == truth.sort_index().to_numpy()).all()
    assert set(truth) == set(RULES)
    assert checked.n_read == len(pd.read_parquet(corrupt_world / "events.parquet"))


def test_duplicated_ids_marks_exactly_the_later_repeats_as_pandas_does():
    from linerisk.data.schema import duplicated_ids

    rng = np.random.default_rng(0)
    ids = pd.Series([f"u{k}-{j}" for k, j in rng.integers(0, 300, (5_000, 2))], dtype="string")
    mixed = pd.Series(["7", 7, "a", "7", 7.0, "b", "a"], dtype=object)  # equal hashes need not mean equal ids
    for s in (ids, mixed, ids.iloc[:0]):
        expected = s.duplicated(keep="first").to_numpy()
        assert (duplicated_ids(s) == expected).all()
    assert duplicated_ids(ids).sum() > 100
