"""Facts read straight off a simulated world's events, written independently of features/.

The simulator's tests measure its mechanisms with these, so they do not rely on the
feature pipeline they will later be used to check.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

DAY = pd.Timedelta(days=1)


def load(world: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(world / f"{name}.parquet")
            for name in ("events", "users", "truth_restrictions", "truth_snapshots")}


def snapshot_dates(world: Path) -> list[pd.Timestamp]:
    manifest = json.loads((world / "manifest.json").read_text())
    p = manifest["parameters"]
    start = pd.Timestamp(p["start"], tz="UTC")
    return sorted(pd.to_datetime(pd.read_parquet(world / "truth_snapshots.parquet")["as_of"].unique(), utc=True)) \
        or [start + p["warmup_days"] * DAY]


def population(events: pd.DataFrame, as_of: pd.Timestamp, horizon_days: int = 90) -> pd.DataFrame:
    """Users whose line is active at `as_of`, their label and history flags, one row per user."""
    past = events[events["event_time"] < as_of]
    opened = past.loc[past["event_type"] == "pl_open", "user_id"].unique()
    status = past[past["event_type"].isin(["pl_restricted", "pl_restored"])]
    last = status.sort_values("event_time").groupby("user_id")["event_type"].last()
    restricted = last.index[last == "pl_restricted"]
    users = pd.Index(opened).difference(restricted)
    fut = events[(events["event_time"] >= as_of) & (events["event_time"] < as_of + horizon_days * DAY)]
    hit = fut.loc[fut["event_type"] == "pl_restricted", "user_id"].unique()
    out = pd.DataFrame(index=users)
    out["label"] = out.index.isin(hit)

    def window(days: int) -> pd.DataFrame:
        return past[past["event_time"] >= as_of - days * DAY]

    def count(frame: pd.DataFrame, mask: pd.Series) -> pd.Series:
        return frame[mask].groupby("user_id").size().reindex(users, fill_value=0)

    w90, w30, w180, w60 = window(90), window(30), window(180), window(60)
    out["bl_late_90"] = count(w90, (w90["event_type"] == "bl_repayment") & (w90["days_past_due"] > 0))
    out["late_days_90"] = (w90[(w90["days_past_due"] > 0)].assign(d=lambda x: x["days_past_due"].clip(upper=120))
                           .groupby("user_id")["d"].sum().reindex(users, fill_value=0))
    out["early_90"] = count(w90, w90["event_type"].str.endswith("repayment") & (w90["days_past_due"] < 0))
    out["misuse_180"] = count(w180, w180["event_type"] == "bl_fund_misuse")
    out["inquiries_30"] = count(w30, w30["event_type"] == "credit_inquiry")
    out["bl_closed_60"] = count(w60, w60["event_type"] == "bl_close")
    scores = past[past["event_type"] == "credit_score"].sort_values("event_time").groupby("user_id")["credit_score"]
    out["score"] = scores.last().reindex(users)
    pl = past[past["event_type"].isin(["pl_drawdown", "pl_repayment"])]
    balance = (pl["amount"] * np.where(pl["event_type"] == "pl_drawdown", 1, -1)).groupby(pl["user_id"]).sum()
    limits = past[past["event_type"].isin(["pl_open", "pl_limit_change"])].sort_values("event_time")
    limit = limits.groupby("user_id")["amount"].last()
    out["utilisation"] = (balance.reindex(users, fill_value=0) / limit.reindex(users)).fillna(0)
    merchants = past.loc[past["event_type"] == "bl_open", "user_id"].unique()
    out["merchant"] = out.index.isin(merchants)
    return out


def stacked_population(world: Path) -> pd.DataFrame:
    events = pd.read_parquet(world / "events.parquet")
    frames = [population(events, d).assign(as_of=d) for d in snapshot_dates(world)]
    return pd.concat(frames)


def red_line_times(events: pd.DataFrame) -> pd.Series:
    """Per user, when the red line was crossed: the first default event or the second misuse flag."""
    defaults = events[events["event_type"].isin(["bl_default", "pl_default"])].groupby("user_id")["event_time"].min()
    misuse = events[events["event_type"] == "bl_fund_misuse"].sort_values("event_time")
    second = misuse.groupby("user_id")["event_time"].nth(1)
    second = pd.Series(second.to_numpy(), index=misuse.loc[second.index, "user_id"].to_numpy())
    both = pd.concat([defaults, second])
    return both.groupby(level=0).min()


def recovery_population(events: pd.DataFrame, restrictions: pd.DataFrame, as_of: pd.Timestamp,
                        horizon_days: int = 90) -> pd.DataFrame:
    """Users whose line is restricted at `as_of`: label (restored within the horizon), the true
    cause, whether the red line holds, and what they did since the restriction; one row per user."""
    past = events[events["event_time"] < as_of]
    status = past[past["event_type"].isin(["pl_restricted", "pl_restored"])].sort_values("event_time")
    last = status.groupby("user_id").last()
    out = last.loc[last["event_type"] == "pl_restricted", ["event_time"]].rename(columns={"event_time": "since"})
    cause = restrictions.set_index(["user_id", "event_time"])["cause"]
    out["cause"] = cause.reindex(pd.MultiIndex.from_arrays([out.index, out["since"]])).to_numpy()
    fut = events[(events["event_time"] >= as_of) & (events["event_time"] < as_of + horizon_days * DAY)]
    out["label"] = out.index.isin(fut.loc[fut["event_type"] == "pl_restored", "user_id"].unique())
    out["red_line"] = red_line_times(past).reindex(out.index).notna()
    since = past.join(out["since"], on="user_id", how="inner")
    since = since[since["event_time"] >= since["since"]]

    def count(mask: pd.Series) -> pd.Series:
        return since[mask].groupby("user_id").size().reindex(out.index, fill_value=0)

    repay = since["event_type"].str.endswith("repayment")
    out["late_since"] = count(repay & (since["days_past_due"] > 0))
    out["clean_since"] = count(repay & (since["days_past_due"] <= 0))
    out["inquiries_since"] = count(since["event_type"] == "credit_inquiry")
    out["appeals_since"] = count(since["event_type"] == "pl_appeal")
    scores = past[past["event_type"] == "credit_score"].sort_values("event_time")
    before = scores.merge(out["since"].reset_index(), on="user_id")
    before = before[before["event_time"] < before["since"]].groupby("user_id")["credit_score"].last()
    out["score_change"] = scores.groupby("user_id")["credit_score"].last().reindex(out.index) - before.reindex(out.index)
    out["days_restricted"] = (as_of - out["since"]) / DAY
    return out


def stacked_recovery(world: Path) -> pd.DataFrame:
    events = pd.read_parquet(world / "events.parquet")
    restrictions = pd.read_parquet(world / "truth_restrictions.parquet")
    frames = [recovery_population(events, restrictions, d).assign(as_of=d) for d in snapshot_dates(world)]
    return pd.concat(frames)
