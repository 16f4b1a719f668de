"""A model on the real feature spec whose drivers are known, and hand-written user logs, for explain/recover tests.

Features come from the small simulated world (real distributions); the label is drawn from a
known logit in early repayments, overdue days, credit score and inquiries, so the test knows
which family must lead. Trained once per process (functools.cache).
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd

AS_OF = pd.Timestamp("2024-10-01", tz="UTC")
FAST = dict(num_threads=1, log_every=0, min_child_samples=20, n_estimators=150, early_stopping_rounds=20,
            learning_rate=0.15, max_depth=4)


def known_logit(X: pd.DataFrame) -> np.ndarray:
    return (-3.0 + 1.0 * X["early_repayment_count_90d"].clip(upper=5) + 0.04 * X["late_days_sum_90d"].clip(upper=60)
            + 0.02 * (620 - X["credit_score_latest"].fillna(620)).clip(-100, 150)
            + 0.5 * X["credit_inquiry_count_30d"].clip(upper=5)).to_numpy()


@functools.cache
def world_model(world: Path):
    """RestrictionModel on the registry spec, trained on small-world features with `known_logit` labels."""
    from linerisk.features import spec as feature_spec
    from linerisk.features.labels import build_panel
    from linerisk.models.train import TrainParams, registry_spec, train_model
    from linerisk.pipeline.io import read_events, read_users

    users = read_users(world / "users.parquet")
    events = read_events(world / "events.parquet", users).good
    snaps = pd.date_range("2024-04-01", "2024-09-01", freq="30D", tz="UTC")
    panel = build_panel(events, users, snaps, horizon_days=90).reset_index()
    rng = np.random.default_rng(0)
    label = (rng.random(len(panel)) < 1 / (1 + np.exp(-known_logit(panel)))).astype(np.int8)
    spec = registry_spec()
    names = feature_spec.feature_names()
    half = rng.random(len(panel)) < 0.7
    return train_model(panel.loc[half, names], label[half], panel.loc[~half, names], label[~half],
                       TrainParams(**FAST), spec)


def user_log(user_id: int = 1, early: int = 0, late_dpd: tuple[int, ...] = (), inquiries: int = 0,
             score: int = 700, as_of: pd.Timestamp = AS_OF) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(events, users) of one consumer with a personal line: monthly scores and on-time repayments for a
    year, plus `early` early repayments and late repayments (`late_dpd` days each) in the last 80 days and
    `inquiries` credit inquiries in the last 20 days."""
    start = as_of - pd.Timedelta(days=400)
    rows = [(start, "pl_open", 20_000.0, None, None)]
    for m in range(13):
        t = start + pd.Timedelta(days=30 * m + 5)
        rows += [(t, "credit_score", None, None, score), (t, "pl_drawdown", 1_000.0, None, None),
                 (t + pd.Timedelta(days=20), "pl_repayment", 1_000.0, 0, None)]
    recent = as_of - pd.Timedelta(days=80)
    for i in range(early):
        t = recent + pd.Timedelta(days=7 * i + 1)
        rows += [(t, "pl_drawdown", 500.0, None, None), (t + pd.Timedelta(hours=5), "pl_repayment", 500.0, -20, None)]
    for i, dpd in enumerate(late_dpd):
        rows.append((recent + pd.Timedelta(days=9 * i + 3), "pl_repayment", 800.0, dpd, None))
    for i in range(inquiries):
        rows.append((as_of - pd.Timedelta(days=2 + 3 * i), "credit_inquiry", None, None, None))
    events = pd.DataFrame(rows, columns=["event_time", "event_type", "amount", "days_past_due", "credit_score"])
    events.insert(0, "user_id", np.int64(user_id))
    events.insert(0, "event_id", [f"e{user_id}-{i}" for i in range(len(events))])
    events["event_time"] = pd.to_datetime(events["event_time"], utc=True)
    events["days_past_due"] = events["days_past_due"].astype("Int64")
    events["credit_score"] = events["credit_score"].astype("Int64")
    users = pd.DataFrame({"user_id": [np.int64(user_id)], "signup_date": [start.tz_localize(None)],
                          "segment": ["consumer"]})
    return events.sort_values("event_time", kind="stable").reset_index(drop=True), users
