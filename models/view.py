"""One user's explanation as plain JSON-able data: what `linerisk explain --json` prints and
`linerisk.explain` returns. Probability, band, reasons and what helps come from `Scorer.explain`,
the path back from models/recover.py; for a restricted line, the way back (models/restore_plan.py);
no I/O.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from linerisk.models.scoring import N_REASONS, REASON_FIELDS


def _ranked(row: pd.Series, prefix: str) -> list[dict[str, Any]]:
    """`reason_j_*` / `help_j_*` columns of one scores row as a list of dicts (rank, family, code, texts, contribution)."""
    out = []
    for j in range(1, N_REASONS + 1):
        if pd.notna(row.get(f"{prefix}_{j}_family")):
            out.append({"rank": j, **{f: (float(row[f"{prefix}_{j}_{f}"]) if f == "contribution"
                                         else str(row[f"{prefix}_{j}_{f}"])) for f in REASON_FIELDS}})
    return out


def explain_user(scorer: Any, events: pd.DataFrame, users: pd.DataFrame, user_id: Any, as_of: object,
                 threshold: float | None = None, tz: str = "UTC") -> dict[str, Any]:
    """Everything `linerisk explain` shows for one user (validated events), as plain JSON-able data
    (day windows in `tz`)."""
    from linerisk.features.compute import build_features, to_utc_timestamp
    from linerisk.features.labels import line_state
    from linerisk.models.recover import path_back

    ts = to_utc_timestamp(as_of, tz)
    mine_users = users[users["user_id"] == user_id]
    mine = events[events["user_id"] == user_id]
    row = scorer.explain(build_features(mine, ts, mine_users, tz)).scores.iloc[0]
    state = line_state(mine, ts, mine_users, tz)
    way = path_back(scorer, mine, mine_users, [user_id], ts, threshold, tz)
    since = state["state_since"].iloc[0]
    recovery = way.time.recovery.iloc[0]
    summary = way.actions.summary.iloc[0]
    return {
        "user_id": user_id if isinstance(user_id, str) else int(user_id),
        "as_of": ts.isoformat(),
        "line_state": str(state["state"].iloc[0]),
        "state_since": None if pd.isna(since) else since.isoformat(),
        "probability": float(row["probability"]),
        "band": str(row["band"]),
        "reasons": _ranked(row, "reason"),
        "helping": _ranked(row, "help"),
        "recovery": {
            "threshold": float(recovery["threshold"]),
            "date": None if pd.isna(recovery["recovery_date"]) else recovery["recovery_date"].isoformat(),
            "days": None if pd.isna(recovery["recovery_days"]) else int(recovery["recovery_days"]),
            "curve": [{"days": int(d), "probability": float(p)}
                      for d, p in zip(way.time.curve["days"], way.time.curve["probability"])],
        },
        "plan": {
            "reached": bool(summary["reached"]),
            "final_probability": float(summary["final_probability"]),
            # the plan's probability holds once its slowest step has been kept long enough for the platform
            "effective_days": int(summary["effective_days"]),
            "effective_date": _local_day(ts + pd.Timedelta(days=int(summary["effective_days"])), tz),
            "steps": [{"step": int(s.step), "code": s.code, "family": s.family, "text_en": s.text_en,
                       "text_zh": s.text_zh, "probability": float(s.probability), "days": int(s.days),
                       "effective_date": _local_day(ts + pd.Timedelta(days=int(s.days)), tz)}
                      for s in way.actions.steps.itertuples()],
        },
    }


def _iso(value: Any) -> str | None:
    return None if pd.isna(value) else pd.Timestamp(value).isoformat()


def _local_day(value: Any, tz: str) -> str | None:
    """An instant as the date it falls on in `tz` (YYYY-MM-DD), as `linerisk score` writes restore_expected."""
    return None if pd.isna(value) else pd.Timestamp(value).tz_convert(tz).strftime("%Y-%m-%d")


CURVE_VIEW_DAYS = tuple(range(0, 366, 30)) + (365,)


def explain_restricted_user(scorer: Any, restore_scorer: Any, events: pd.DataFrame, users: pd.DataFrame,
                            user_id: Any, as_of: object, tz: str = "UTC") -> dict[str, Any]:
    """What `linerisk explain` shows for a restricted line, as plain JSON-able data: why it was most likely
    restricted, the red line, P(restored within 90 days and a year), the expected date, what holds it back and
    what would bring it sooner."""
    import numpy as np

    from linerisk.features.compute import build_features, to_utc_timestamp
    from linerisk.features.labels import line_state
    from linerisk.models.restore_plan import likely_minor, restoration_actions, why_restricted

    ts = to_utc_timestamp(as_of, tz)
    mine_users = users[users["user_id"] == user_id]
    mine = events[events["user_id"] == user_id]
    features = build_features(mine, ts, mine_users, tz)
    since = line_state(mine, ts, mine_users, tz)["state_since"]
    why = why_restricted(scorer, mine, mine_users, since, tz)
    row = restore_scorer.score(features.reset_index()).iloc[0]
    X = features[[f["name"] for f in restore_scorer.spec["features"]]]
    h = restore_scorer.hazards(X.astype("float64"))
    red = bool(row["red_line"])
    curve = restore_scorer.cumulative(h, list(CURVE_VIEW_DAYS), np.asarray([red]))[0]
    evidence = restore_scorer.red_line_evidence(X.iloc[0], ts)
    actions = restoration_actions(restore_scorer, features, likely_minor(why), ts)
    if (actions["code"] != "all").sum() < 2:  # one action: "all of the above" would only repeat it
        actions = actions[actions["code"] != "all"]
    first = why.iloc[0]
    return {
        "user_id": user_id if isinstance(user_id, str) else int(user_id),
        "as_of": ts.isoformat(),
        "line_state": "restricted",
        "state_since": _iso(since.iloc[0]),
        "probability": None,
        "band": None,
        "why_restricted": {"as_of": _iso(first["as_of"]), "probability": float(first["probability"]),
                           "likely_minor": bool(likely_minor(why)[0]), "reasons": _ranked(first, "reason")},
        "red_line": {"holds": red, **({k: evidence[k] for k in ("text_en", "text_zh", "date", "value")}
                                      if evidence else {})},
        "restore": {"probability_90d": float(row["restore_probability"]),
                    "probability_365d": float(row["restore_probability_365d"]),
                    "expected": _local_day(row["restore_expected"], tz),
                    "curve": [{"days": int(d), "probability": float(p)} for d, p in zip(CURVE_VIEW_DAYS, curve)]},
        "holding_back": _ranked(row, "reason"),
        "actions": [{"code": a.code, "text_en": a.text_en, "text_zh": a.text_zh, "days": int(a.days),
                     "probability_90d": float(a.probability), "probability_365d": float(a.probability_365d),
                     "expected": _local_day(a.expected, tz)}
                    for a in actions.itertuples()],
    }
