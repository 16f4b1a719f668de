"""Fixtures for the feature tests: a hand-written log with known answers and a random rich log."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from linerisk.data.schema import DEFAULT_TYPES, EVENT_FIELDS, EVENT_TYPES

AS_OF = pd.Timestamp("2025-07-01", tz="UTC")
DAY = pd.Timedelta(days=1)


def make_events(rows: list[tuple], start_id: int = 0) -> pd.DataFrame:
    """Contract-typed events from (user_id, event_type, time offset from AS_OF, amount, dpd, score) rows."""
    frame = pd.DataFrame(rows, columns=["user_id", "event_type", "offset", "amount", "days_past_due", "credit_score"])
    offset = frame.pop("offset")
    offset = offset.map(lambda o: o if isinstance(o, pd.Timedelta) else o * DAY)
    return pd.DataFrame({
        "event_id": pd.array([f"e{start_id + i}" for i in range(len(frame))], dtype="string"),
        "user_id": frame["user_id"].astype("int64"),
        "event_time": (AS_OF + pd.to_timedelta(offset)).astype("datetime64[us, UTC]"),
        "event_type": frame["event_type"].astype("string"),
        "amount": frame["amount"].astype("float64"),
        "days_past_due": frame["days_past_due"].astype("Int32"),
        "credit_score": frame["credit_score"].astype("Int32"),
    })


N = None
TINY_ROWS = [
    # user 1, merchant: a bit of everything
    (1, "bl_open", -400, 50000, N, N),
    (1, "pl_open", -300, 10000, N, N),
    (1, "bl_drawdown", -200, 20000, N, N),
    (1, "bl_drawdown", -20, 5000, N, N),
    (1, "bl_repayment", -60, 3000, -5, N),
    (1, "bl_repayment", -40, 3000, 0, N),
    (1, "bl_repayment", -10, 3000, 10, N),
    (1, "pl_drawdown", -100, 4000, N, N),
    (1, "pl_repayment", -80, 1000, -2, N),
    (1, "pl_repayment", -5, 1000, 150, N),
    (1, "bl_fund_misuse", -150, 8000, N, N),
    (1, "credit_score", -200, N, N, 700),
    (1, "credit_score", -95, N, N, 680),
    (1, "credit_score", -30, N, N, 640),
    (1, "credit_inquiry", -10, N, N, N),
    (1, "credit_inquiry", -25, N, N, N),
    (1, "credit_inquiry", -70, N, N, N),
    (1, "pl_limit_change", -50, 8000, N, N),
    (1, "pl_restricted", 0, N, N, N),          # exactly at as_of: future, so label 1
    # user 2, consumer: restricted at as_of
    (2, "pl_open", -200, 5000, N, N),
    (2, "pl_restricted", -30, N, N, N),
    (2, "credit_score", -15, N, N, 500),
    (2, "pl_restricted", 10, N, N, N),
    # user 3, consumer: restricted, then restored; next restriction exactly at as_of + 90 days
    (3, "pl_open", -300, 3000, N, N),
    (3, "pl_restricted", -200, N, N, N),
    (3, "pl_restored", -100, N, N, N),
    (3, "credit_score", -40, N, N, 720),
    (3, "pl_restricted", 90, N, N, N),
    # user 4, merchant: closed the business loan; window edges
    (4, "bl_open", -500, 20000, N, N),
    (4, "bl_repayment", pd.Timedelta(days=-90), 500, 0, N),                # exactly 90 days back: inside
    (4, "bl_repayment", pd.Timedelta(days=-90, seconds=-1), 500, 3, N),    # a second earlier: outside 90d
    (4, "bl_close", -45, N, N, N),
    (4, "pl_open", -100, 6000, N, N),
    (4, "bl_drawdown", 0, 999, N, N),          # exactly at as_of: not a feature input
    (4, "pl_restricted", 89, N, N, N),
    # user 5, consumer: personal line opens only after as_of
    (5, "pl_open", 5, 2000, N, N),
]


@pytest.fixture
def tiny_events() -> pd.DataFrame:
    return make_events(TINY_ROWS)


@pytest.fixture
def tiny_users() -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": np.array([1, 2, 3, 4, 5], dtype="int64"),
        "signup_date": pd.to_datetime(["2023-01-01", "2024-06-01", "2024-01-01", "2023-06-01", "2025-06-01"]).astype("datetime64[s]"),
        "segment": pd.array(["merchant", "consumer", "consumer", "merchant", "consumer"], dtype="string"),
    })


def random_log(n_users: int = 300, n_events: int = 30_000, days: int = 730, seed: int = 0,
               start: pd.Timestamp = pd.Timestamp("2024-01-01", tz="UTC")) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(events, users) in the contract's types with every event type well represented; ids 1000.. (dense)."""
    rng = np.random.default_rng(seed)
    types = np.asarray(EVENT_TYPES)[rng.integers(0, len(EVENT_TYPES), n_events)]
    needs = {f: np.isin(types, [t for t, s in EVENT_FIELDS.items() if s.get(f) == "req"]) for f in
             ("amount", "days_past_due", "credit_score")}
    amount = np.where(needs["amount"], rng.gamma(2.0, 2000.0, n_events).round(2), np.nan)
    dpd = np.where(needs["days_past_due"], rng.integers(-20, 40, n_events), 0)
    dpd = np.where(np.isin(types, DEFAULT_TYPES), dpd + 111, dpd)  # a default is beyond 90 days past due
    dpd = pd.array(dpd, dtype="Int32")
    dpd[~needs["days_past_due"]] = pd.NA
    score = pd.array(np.where(needs["credit_score"], rng.integers(350, 951, n_events), 0), dtype="Int32")
    score[~needs["credit_score"]] = pd.NA
    micros = rng.integers(0, days * 86_400_000_000, n_events)
    events = pd.DataFrame({
        "event_id": pd.array([f"r{i}" for i in range(n_events)], dtype="string"),
        "user_id": rng.integers(1000, 1000 + n_users, n_events).astype("int64"),
        "event_time": (start + pd.to_timedelta(micros, unit="us")).astype("datetime64[us, UTC]"),
        "event_type": pd.array(types, dtype="string"),
        "amount": amount,
        "days_past_due": dpd,
        "credit_score": score,
    })
    users = pd.DataFrame({
        "user_id": np.arange(1000, 1000 + n_users, dtype="int64"),
        "signup_date": (start.tz_localize(None) - pd.to_timedelta(rng.integers(0, 400, n_users), unit="D")
                        ).astype("datetime64[s]"),
        "segment": pd.array(np.where(rng.random(n_users) < 0.45, "merchant", "consumer"), dtype="string"),
    })
    return events, users


@pytest.fixture(scope="session")
def rich_log() -> tuple[pd.DataFrame, pd.DataFrame]:
    return random_log()
