"""The way back (world.md, Restoration): each path moves the restored share in the seeds' direction,
nothing comes back past the red line, and restore_oracle_prob is calibrated."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from linerisk.data.simulate import WorldParams, advance, oracle_probs, start_chunk
from linerisk.data.world import CAUSES, MINOR
from tests.data.facts import DAY, red_line_times, stacked_recovery


@pytest.fixture(scope="module")
def rec(population_world) -> pd.DataFrame:
    """Restricted lines at every snapshot, off the events (and the true cause), red line apart."""
    return stacked_recovery(population_world)


def share(frame: pd.DataFrame) -> float:
    return float(frame["label"].mean())


@pytest.fixture(scope="module")
def restricted_world():
    """A 4,000-user world run for a year: its state and the restricted lines short of the red line."""
    p = WorldParams(users=4_000, months=24, seed=2)
    s, ev, (rng, *_) = start_chunk(p, 0, 1, p.users)
    for day in range(DAY_AT):
        advance(s, day, p, rng, ev)
    return p, s, np.flatnonzero(s.restricted & ~s.red_line)


DAY_AT = 360


def restored_within_90_days(world, change=None) -> np.ndarray:
    """P(restored within 90 days) of the restricted lines, from simulated futures of copies whose
    state differs from the world's only by `change` (same futures' random stream every time)."""
    p, s, idx = world
    copy = s.take(idx)
    copy.appeal_review_day[:] = -1  # no appeal pending, unless `change` files one
    if change is not None:
        change(copy)
    return oracle_probs(copy, np.empty(0, np.int64), np.arange(copy.n), DAY_AT, p, np.random.default_rng(1))[1]


def test_score_recovery_since_the_restriction_raises_the_restored_share(restricted_world):
    def recovered(f):
        f.score_at_restriction -= 60  # the score is now 60 points above its level at the restriction

    def fallen(f):
        f.score_at_restriction += 60
    as_is, up, down = (restored_within_90_days(restricted_world, c) for c in (None, recovered, fallen))
    assert len(as_is) >= 300
    assert up.mean() > 1.3 * as_is.mean() > 1.3 ** 2 * down.mean()


def test_clean_repayment_since_the_restriction_raises_the_restored_share(restricted_world):
    def clean(f):
        f.clean_since_restriction[:] = 8
        f.late_since_restriction[:] = 0

    def two_late(f):
        f.late_since_restriction += 2
    as_is, on_time, late = (restored_within_90_days(restricted_world, c) for c in (None, clean, two_late))
    assert on_time.mean() > 1.15 * as_is.mean()
    assert late.mean() < 0.6 * as_is.mean()


def test_an_appeal_helps_a_minor_cause_line_and_hardly_a_major_one(restricted_world):
    def appealed(f):
        f.appeal_review_day[:] = DAY_AT + 3
    gain = restored_within_90_days(restricted_world, appealed) - restored_within_90_days(restricted_world)
    p, s, idx = restricted_world
    minor = np.isin(s.restricted_cause[idx], [CAUSES.index(c) for c in MINOR])
    assert minor.sum() >= 100 and (~minor).sum() >= 100
    assert gain[minor].mean() > 0.1
    assert gain[~minor].mean() < 0.05
    assert gain[minor].mean() > 4 * gain[~minor].mean()


def test_past_the_red_line_no_path_brings_a_line_back(restricted_world):
    def red_and_everything_else_good(f):
        f.red_line[:] = True
        f.score_at_restriction -= 60
        f.clean_since_restriction[:] = 8
        f.appeal_review_day[:] = DAY_AT + 3
    assert restored_within_90_days(restricted_world, red_and_everything_else_good).max() == 0


def test_an_appeal_lifts_minor_cause_restrictions_often_and_major_ones_almost_never(population_world):
    events = pd.read_parquet(population_world / "events.parquet")
    restrictions = pd.read_parquet(population_world / "truth_restrictions.parquet")
    restored = pd.read_parquet(population_world / "truth_restorations.parquet")
    appeals = events.loc[events["event_type"] == "pl_appeal", ["user_id", "event_time"]].sort_values("event_time")
    # The cause of the restriction in force when the user appealed.
    appeals = pd.merge_asof(appeals, restrictions[["user_id", "event_time", "cause"]].sort_values("event_time"),
                            on="event_time", by="user_id")
    by_appeal = restored[restored["channel"] == "appeal"][["user_id", "event_time"]].rename(columns={"event_time": "back"})
    m = appeals.reset_index().merge(by_appeal, on="user_id", how="left")
    m["lifted"] = (m["back"] > m["event_time"] + DAY) & (m["back"] < m["event_time"] + 11 * DAY)
    lifted = m.groupby("index").agg(lifted=("lifted", "any"), cause=("cause", "first"),
                                    user_id=("user_id", "first"), t=("event_time", "first"))
    red = lifted["t"] >= red_line_times(events).reindex(lifted["user_id"]).to_numpy()
    assert red.sum() >= 100 and not lifted.loc[red, "lifted"].any()  # past the red line, never
    lifted = lifted[~red]
    minor, major = lifted[lifted["cause"].isin(MINOR)], lifted[~lifted["cause"].isin(MINOR)]
    assert min(len(minor), len(major)) >= 200
    assert 0.25 <= minor["lifted"].mean() <= 0.6
    assert major["lifted"].mean() < 0.1
    # Every appeal restoration follows an appeal 2-10 days earlier.
    assert by_appeal.set_index(["user_id", "back"]).index.isin(
        m.loc[m["lifted"]].set_index(["user_id", "back"]).index).all()


def test_no_line_is_restored_past_the_red_line(population_world):
    events = pd.read_parquet(population_world / "events.parquet")
    red = red_line_times(events)
    restored = events[events["event_type"] == "pl_restored"].join(red.rename("red"), on="user_id", how="inner")
    assert len(red) >= 200
    assert (restored["event_time"] < restored["red"]).all()


def test_a_default_event_is_recorded_when_a_loan_passes_90_days_past_due(population_world):
    events = pd.read_parquet(population_world / "events.parquet")
    defaults = events[events["event_type"].isin(["bl_default", "pl_default"])]
    assert len(defaults) >= 100
    assert (defaults["days_past_due"] == 91).all() and (defaults["amount"] > 0).all()
    # Every repayment made beyond 90 days past due has its product's default event on day 91.
    late = events[events["event_type"].str.endswith("repayment") & (events["days_past_due"] > 90)]
    assert len(late) >= 20
    crossed = (late["event_time"] - pd.to_timedelta(late["days_past_due"].astype(int) - 91, unit="D")).dt.floor("D")
    want = pd.DataFrame({"user_id": late["user_id"].to_numpy(), "day": crossed.to_numpy(),
                         "event_type": late["event_type"].str.replace("repayment", "default").to_numpy()})
    have = defaults.assign(day=defaults["event_time"].dt.floor("D"))[["user_id", "day", "event_type"]]
    assert len(want.merge(have, how="inner").drop_duplicates()) == len(want.drop_duplicates())


def test_restoration_rates_fall_in_the_worlds_ranges(population_world, rec):
    restored = pd.read_parquet(population_world / "truth_restorations.parquet")
    assert 0.15 <= share(rec[~rec["red_line"]]) <= 0.30
    assert 0.15 <= (restored["channel"] == "appeal").mean() <= 0.30
    assert rec.loc[rec["red_line"], "label"].sum() == 0


def test_recovery_truth_matches_the_events(population_world, rec):
    truth = pd.read_parquet(population_world / "truth_recovery_snapshots.parquet")
    keyed = rec.reset_index(names="user_id").merge(truth, on=["user_id", "as_of"], how="inner",
                                                   suffixes=("", "_truth"))
    assert len(keyed) == len(truth)  # every truth row is a line restricted at as_of per the events
    assert (keyed["cause"] == keyed["cause_truth"]).all()
    assert (keyed["since"] == keyed["restricted_since"]).all()
    assert (keyed["red_line"] == keyed["red_line_truth"]).all()
    assert (truth.loc[truth["red_line"], ["restore_oracle_prob", "restore_hazard", "restore_appeal_lift"]] == 0).all().all()


def test_restore_oracle_probability_is_calibrated_against_what_happened(population_world, rec):
    truth = pd.read_parquet(population_world / "truth_recovery_snapshots.parquet")
    joined = truth.merge(rec.reset_index(names="user_id")[["user_id", "as_of", "label"]], on=["user_id", "as_of"])
    joined = joined[~joined["red_line"]]
    joined["bin"] = pd.qcut(joined["restore_oracle_prob"], 8, labels=False, duplicates="drop")
    by_bin = joined.groupby("bin").agg(p=("restore_oracle_prob", "mean"), y=("label", "mean"), n=("label", "size"))
    se = np.sqrt(by_bin["p"] * (1 - by_bin["p"]) / by_bin["n"])
    assert ((by_bin["y"] - by_bin["p"]).abs() <= 3.5 * se + 0.02).all(), by_bin
    assert by_bin["y"].iloc[-1] > 5 * by_bin["y"].iloc[0] + 0.1


def test_restorations_truth_has_one_row_per_restored_event(population_world):
    events = pd.read_parquet(population_world / "events.parquet")
    truth = pd.read_parquet(population_world / "truth_restorations.parquet")
    ev = events[events["event_type"] == "pl_restored"]
    assert len(truth) == len(ev) and truth["event_time"].notna().all()
    assert set(truth["channel"]) == {"auto", "appeal"}
    restrictions = pd.read_parquet(population_world / "truth_restrictions.parquet").sort_values("event_time")
    back = pd.merge_asof(truth.sort_values("event_time"), restrictions[["user_id", "event_time", "cause"]]
                         .rename(columns={"event_time": "since", "cause": "cause_since"}),
                         left_on="event_time", right_on="since", by="user_id")
    assert (back["cause"] == back["cause_since"]).all()
    assert ((back["event_time"] - back["since"]) / DAY).round().sub(back["days_restricted"]).abs().max() <= 1
