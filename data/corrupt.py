"""Bad data on purpose: turn a fraction of event rows into records that break the contract.

Each corrupted row breaks exactly one rule of data.schema.RULES, so validation can be
tested end to end: the quarantined rows must be exactly the ones listed here.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from linerisk.data.schema import DEFAULT_TYPES, EVENT_FIELDS, RED_LINE_DPD, RULES


def _eligible(events: pd.DataFrame, rule: str) -> np.ndarray:
    """Rows on which a corruption of kind `rule` breaks that rule and no other."""
    etype = events["event_type"]
    if rule == "negative_amount":
        return (events["amount"] > 0).to_numpy()
    if rule == "score_out_of_range":
        return (etype == "credit_score").to_numpy()
    if rule == "dpd_out_of_range":
        return etype.isin(DEFAULT_TYPES).to_numpy()
    return np.ones(len(events), dtype=bool)


def _apply(events: pd.DataFrame, rows: np.ndarray, rule: str, rng: np.random.Generator) -> None:
    """Break `rule` on `rows` in place (the frame is the caller's copy)."""
    if rule == "missing_required":
        required = {t: next((f for f, how in spec.items() if how == "req"), "event_id")
                    for t, spec in EVENT_FIELDS.items()}
        cols = rng.choice(np.array(["event_id", "user_id", "event_time", "field"], dtype=object), len(rows))
        field = events.loc[rows, "event_type"].map(required).to_numpy(dtype=object)
        cols = np.where(cols == "field", field, cols)
        for col in np.unique(cols):
            events.loc[rows[cols == col], col] = None
    elif rule == "unknown_event_type":
        events.loc[rows, "event_type"] = "pl_teleport"
    elif rule == "unparseable_time":
        events.loc[rows, "event_time"] = "2024-13-45T25:61:00Z"
    elif rule == "must_be_null":
        score_rows = rows[events.loc[rows, "event_type"].to_numpy() == "credit_score"]
        other = rows[events.loc[rows, "event_type"].to_numpy() != "credit_score"]
        events.loc[other, "credit_score"] = 700
        events.loc[score_rows, "amount"] = 1.0
    elif rule == "negative_amount":
        events.loc[rows, "amount"] = -events.loc[rows, "amount"]
    elif rule == "score_out_of_range":
        events.loc[rows, "credit_score"] = rng.choice([120, 999], len(rows))
    elif rule == "dpd_out_of_range":
        events.loc[rows, "days_past_due"] = rng.integers(0, RED_LINE_DPD + 1, len(rows))
    elif rule == "unknown_user":
        events.loc[rows, "user_id"] = -events.loc[rows, "user_id"]
    elif rule == "duplicate_event_id":
        # Copy the id of the row just before, which is left intact: the later row is the duplicate.
        events.loc[rows, "event_id"] = events.loc[rows - 1, "event_id"].to_numpy()


def corrupt_events(events: pd.DataFrame, rate: float, rng: np.random.Generator,
                   first_row: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Corrupt about `rate` of the rows, every kind in turn; return (events, truth_corruption).

    `event_time` becomes ISO-8601 text so that unparseable times can exist; truth rows give
    the row's position in the written file (`first_row` + position here) and the rule.
    """
    events = events.copy()
    events["event_time"] = events["event_time"].dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ").astype(object)
    for col in ("event_id", "event_type"):
        events[col] = events[col].astype(object)
    for col in ("user_id", "days_past_due", "credit_score"):
        events[col] = events[col].astype("Int64")
    n = len(events)
    k = int(round(rate * n))
    taken = np.zeros(n, dtype=bool)
    truth = []
    for j, rule in enumerate(RULES):
        want = k // len(RULES) + (j < k % len(RULES))
        ok = _eligible(events, rule) & ~taken
        if rule == "duplicate_event_id":
            # Needs an intact predecessor that nothing else touches.
            ok[0] = False
            ok[1:] &= ~taken[:-1]
        cand = np.flatnonzero(ok)
        rows = np.sort(rng.choice(cand, min(want, len(cand)), replace=False))
        if rule == "duplicate_event_id":
            rows = rows[np.diff(rows, prepend=-2) > 1]  # never two adjacent duplicates
            taken[rows - 1] = True  # the originals stay intact
        taken[rows] = True
        _apply(events, rows, rule, rng)
        truth.append(pd.DataFrame({"row": rows + first_row, "rule": rule}))
    truth_frame = pd.concat(truth, ignore_index=True).sort_values("row", kind="stable").reset_index(drop=True)
    truth_frame["rule"] = truth_frame["rule"].astype("string")
    return events, truth_frame
