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
