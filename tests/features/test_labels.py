"""Line state, horizon labels at the window edges, and the stacked panel."""
from __future__ import annotations

import pandas as pd
import pandas.testing as pdt

from linerisk.features.compute import build_features
from linerisk.features.labels import build_panel, default_snapshots, line_state
from linerisk.features.spec import feature_names

from .conftest import AS_OF, make_events, random_log


def test_line_state_follows_the_last_restriction_event_before_as_of(tiny_events, tiny_users):
    state = line_state(tiny_events, AS_OF, tiny_users)["state"].astype(str).to_dict()
    assert state == {1: "active", 2: "restricted", 3: "active", 4: "active", 5: "no_line"}


def test_line_state_records_when_the_state_began(tiny_events, tiny_users):
    since = line_state(tiny_events, AS_OF, tiny_users)["state_since"]
    assert since[2] == AS_OF - pd.Timedelta(days=30)   # restricted
    assert since[3] == AS_OF - pd.Timedelta(days=100)  # restored
    assert since[1] == AS_OF - pd.Timedelta(days=300)  # opened
    assert pd.isna(since[5])


def test_restricted_and_lineless_users_are_excluded_from_the_panel(tiny_events, tiny_users):
    panel = build_panel(tiny_events, tiny_users, [AS_OF])
    assert sorted(panel.index) == [1, 3, 4]


def test_labels_match_the_contract_at_the_window_edges(tiny_events, tiny_users):
    label = build_panel(tiny_events, tiny_users, [AS_OF], horizon_days=90)["label"].to_dict()
    assert label[1] == 1  # restricted exactly at as_of: future, inside the window
    assert label[4] == 1  # restricted at as_of + 89 days
    assert label[3] == 0  # restricted exactly at as_of + 90 days: outside the window


def test_shorter_horizon_drops_later_restrictions(tiny_events, tiny_users):
    label = build_panel(tiny_events, tiny_users, [AS_OF], horizon_days=30)["label"].to_dict()
    assert label == {1: 1, 3: 0, 4: 0}


def test_panel_features_equal_single_snapshot_features(rich_log):
    events, users = rich_log
    snapshots = [pd.Timestamp("2025-03-01", tz="UTC"), pd.Timestamp("2025-06-01", tz="UTC")]
    panel = build_panel(events, users, snapshots)
    assert list(panel.columns) == feature_names("restrict") + ["as_of", "label"]
    assert not panel.reset_index()[["user_id", "as_of"]].duplicated().any()
    for t in snapshots:
        block = panel[panel["as_of"] == t]
        single = build_features(events, t, users).loc[block.index, [*feature_names("restrict"), "as_of"]]
        pdt.assert_frame_equal(block.drop(columns="label"), single)
        active = line_state(events, t, users)["state"] == "active"
        assert sorted(block.index) == sorted(active[active].index)


def test_panel_labels_match_a_plain_pandas_reference(rich_log):
    events, users = rich_log
    t = pd.Timestamp("2025-04-01", tz="UTC")
    panel = build_panel(events, users, [t], horizon_days=60)
    future = events[(events["event_type"] == "pl_restricted") & (events["event_time"] >= t)
                    & (events["event_time"] < t + pd.Timedelta(days=60))]
    expected = panel.index.isin(future["user_id"]).astype(int)
    assert (panel["label"].to_numpy() == expected).all()
    assert 0 < panel["label"].sum() < len(panel)


def test_default_snapshots_leave_a_full_horizon_before_the_last_event():
    events, _ = random_log(n_users=20, n_events=2_000, days=730)
    snapshots = default_snapshots(events, horizon_days=90, warmup_days=180, step_days=90)
    behaviour = ~events["event_type"].isin(["bl_open", "pl_open"])
    first, last = events.loc[behaviour, "event_time"].min(), events["event_time"].max()
    assert snapshots[0] == first.normalize() + pd.Timedelta(days=180)
    assert all(b - a == pd.Timedelta(days=90) for a, b in zip(snapshots, snapshots[1:]))
    assert snapshots[-1] + pd.Timedelta(days=90) <= last < snapshots[-1] + pd.Timedelta(days=180)
    assert len(snapshots) == 6


def test_default_snapshots_start_after_the_behaviour_starts_not_at_old_account_openings():
    events, _ = random_log(n_users=20, n_events=2_000, days=730)
    old_opens = make_events([(1000, "pl_open", -2000, 5000.0, None, None), (1001, "bl_open", -1500, 9000.0, None, None)],
                            start_id=10**6)
    assert default_snapshots(pd.concat([events, old_opens], ignore_index=True)) == default_snapshots(events)



def test_active_features_are_the_features_of_users_whose_line_is_active(tiny_events, tiny_users):
    from linerisk.features.labels import active_features

    state = line_state(tiny_events, AS_OF, tiny_users)["state"]
    expected = build_features(tiny_events, AS_OF, tiny_users)[(state == "active").to_numpy()]
    expected = expected[[*feature_names("restrict"), "as_of"]]
    pdt.assert_frame_equal(active_features(tiny_events, AS_OF, tiny_users), expected)
    assert sorted(expected.index) == [1, 3, 4]
