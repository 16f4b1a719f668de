"""One user's explanation as plain JSON-able data: what `linerisk explain --json` prints and
`linerisk.explain` returns. Probability, band, reasons and what helps come from `Scorer.explain`,
the path back from models/recover.py; no I/O.
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
            "steps": [{"step": int(s.step), "code": s.code, "family": s.family, "text_en": s.text_en,
                       "text_zh": s.text_zh, "probability": float(s.probability)}
                      for s in way.actions.steps.itertuples()],
        },
    }
