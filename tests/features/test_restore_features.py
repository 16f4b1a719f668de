"""Since-restriction features and the restoration panel, on a hand-written log with known answers."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pandas.testing as pdt
import pytest

from linerisk.features.compute import build_features
from linerisk.features.labels import build_panel
from linerisk.features.spec import feature_names, features_for
from tests.features.conftest import AS_OF, make_events

N = None
ROWS = [
    # user 10: late before the restriction; since it: mixed repayments, a rejected and a pending appeal
    (10, "pl_open", -400, 8000, N, N),
    (10, "credit_score", -120, N, N, 600),
    (10, "pl_repayment", -100, 500, 20, N),
    (10, "pl_restricted", -60, N, N, N),
    (10, "bl_drawdown", -35, 2000, N, N),
    (10, "bl_repayment", -40, 800, 0, N),
    (10, "pl_repayment", -30, 500, 5, N),
    (10, "pl_appeal", -25, N, N, N),
    (10, "credit_inquiry", -20, N, N, N),
    (10, "credit_score", -10, N, N, 650),
    (10, "pl_appeal", -3, N, N, N),
    (10, "pl_restored", 30, N, N, N),          # after as_of: the label, never a feature
    (10, "pl_appeal", 1, N, N, N),
    # user 11: the red line -- a default recorded at 95 days past due and two misuse flags
    (11, "bl_open", -500, 20000, N, N),
    (11, "pl_open", -450, 5000, N, N),
    (11, "bl_fund_misuse", -300, 4000, N, N),
    (11, "bl_default", -200, 3000, 95, N),
    (11, "pl_restricted", -190, N, N, N),
    (11, "bl_fund_misuse", -100, 1000, N, N),
    # user 12: active line
    (12, "pl_open", -300, 3000, N, N),
    (12, "pl_repayment", -20, 100, 0, N),
    # user 13: restricted, then restored before as_of: active again
    (13, "pl_open", -300, 3000, N, N),
    (13, "pl_restricted", -100, N, N, N),
    (13, "pl_restored", -10, N, N, N),
    (13, "pl_repayment", -50, 100, 0, N),
]
NAN = np.nan
EXPECTED = {
    10: {"days_restricted": 60, "on_time_repayment_count_since": 1, "late_repayment_count_since": 1,
         "max_dpd_since": 5, "early_repayment_count_since": 0, "credit_score_change_since": 50,
         "credit_inquiry_count_since": 1, "bl_drawdown_count_since": 1, "fund_misuse_count_since": 0,
         "appeal_pending_count": 1, "appeal_rejected_count": 1, "late_days_sum_before_restriction": 20,
         "credit_score_at_restriction": 600, "bl_closed_before_restriction": 0, "pl_utilisation_at_restriction": 0,
         "max_dpd_ever": 20, "default_count_ever": 0,
         "days_since_default": NAN, "fund_misuse_count_ever": 0, "credit_score_latest": 650},
    11: {"days_restricted": 190, "default_count_ever": 1, "max_dpd_ever": 95, "days_since_default": 200,
         "fund_misuse_count_ever": 2, "fund_misuse_count_since": 1, "fund_misuse_count_before_restriction": 1,
         "credit_score_change_since": NAN, "appeal_pending_count": 0, "appeal_rejected_count": 0},
}


@pytest.fixture
def log() -> tuple[pd.DataFrame, pd.DataFrame]:
    events = make_events(ROWS)
    users = pd.DataFrame({"user_id": np.array([10, 11, 12, 13], dtype="int64"),
                          "signup_date": pd.to_datetime(["2023-01-01"] * 4).astype("datetime64[s]"),
                          "segment": pd.array(["consumer", "merchant", "consumer", "consumer"], dtype="string")})
    return events, users


def test_since_restriction_features_count_only_what_happened_since_the_current_restriction(log):
    features = build_features(log[0], AS_OF, log[1])
    for user, expected in EXPECTED.items():
        got = features.loc[user, list(expected)].astype(float)
        pdt.assert_series_equal(got, pd.Series(expected, dtype=float, name=user), check_names=False)


def test_anchored_features_do_not_apply_to_lines_that_are_not_restricted(log):
    features = build_features(log[0], AS_OF, log[1])
    anchored = [f.name for f in features_for("restore") if f.anchor != "as_of"]
    assert features.loc[[12, 13], anchored].isna().all().all()
    # history-wide red-line evidence is read for everyone
    assert features.loc[12, "max_dpd_ever"] == 0


def test_every_restoration_family_is_checked_by_the_hand_written_log():
    checked = {name for expected in EXPECTED.values() for name in expected}
    own = {f.family for f in features_for("restore") if "restrict" not in f.targets}
    assert own <= {f.family for f in features_for("restore") if f.name in checked}


def test_restore_panel_holds_restricted_lines_labelled_restored_within_the_horizon(log):
    events, users = log
    panel = build_panel(events, users, [AS_OF], horizon_days=90, target="restore")
    assert list(panel.columns) == [*feature_names("restore"), "as_of", "label", "restore_days", "followup_days"]
    assert sorted(panel.index) == [10, 11]
    assert panel["label"].to_dict() == {10: 1, 11: 0}
    assert panel.loc[10, "restore_days"] == 30 and np.isnan(panel.loc[11, "restore_days"])
    assert (panel["followup_days"] == 30).all()  # the log's last event is the restoration at +30 days
    short = build_panel(events, users, [AS_OF], horizon_days=30, target="restore")
    assert short["label"].to_dict() == {10: 0, 11: 0}  # [as_of, as_of + 30) excludes day 30


def test_restore_panel_features_equal_single_snapshot_features(log):
    events, users = log
    panel = build_panel(events, users, [AS_OF], target="restore")
    single = build_features(events, AS_OF, users).loc[panel.index, [*feature_names("restore"), "as_of"]]
    pdt.assert_frame_equal(panel[[*feature_names("restore"), "as_of"]], single)


def test_an_unknown_target_is_named(log):
    with pytest.raises(ValueError, match="unknown target 'oops'"):
        build_panel(*log, [AS_OF], target="oops")
