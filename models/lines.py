"""The Scores contract (architecture.md): every user with a line, active or restricted, in one frame.

Active lines get the restriction model's answer (probability, band, what pushes risk up);
restricted lines the restoration model's (restore_probability, restore_expected, what holds
restoration back); both carry `red_line`. Pure: feature frames in, score frames out.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from linerisk.models.restore_scoring import red_line_mask
from linerisk.models.scoring import reason_columns

SCORE_COLUMNS = ["user_id", "as_of", "line_state", "probability", "band", "restore_probability", "restore_expected",
                 "red_line", *reason_columns(), "model_name", "model_version", "restore_model_version"]


def score_lines(features: pd.DataFrame, scorer: Any, restore_scorer: Any | None = None,
                red_line_rules: list[dict[str, Any]] | None = None) -> pd.DataFrame:
    """The contract's columns (model names and versions aside) for `features` (user_id, as_of, line_state, the
    spec's features), in its row order. Without `restore_scorer` only active lines may be given; the red line
    of active lines follows `red_line_rules` (default: the restoration scorer's)."""
    state = features["line_state"].to_numpy(dtype=object)
    active, restricted = state == "active", state == "restricted"
    if restricted.any() and restore_scorer is None:
        raise ValueError(f"{int(restricted.sum())} restricted line(s) but no restoration model to score them")
    rules = red_line_rules if red_line_rules is not None else restore_scorer.red_line_rules
    parts = []
    if active.any():
        rows = features[active]
        out = scorer.score(rows)
        out["red_line"] = red_line_mask(rows, rules)
        parts.append(out)
    if restricted.any():
        out = restore_scorer.score(features[restricted])
        parts.append(out.drop(columns=["restore_probability_365d", "restore_expected_days"]))
    if not parts:
        return pd.DataFrame(columns=SCORE_COLUMNS[:-3])
    scored = pd.concat(parts).loc[features.index]
    scored.insert(2, "line_state", features["line_state"].astype("string"))
    for col in ("probability", "restore_probability"):
        if col not in scored:
            scored[col] = np.nan
    for col in ("band", "restore_expected"):
        if col not in scored:
            scored[col] = pd.NaT if col == "restore_expected" else pd.array([None] * len(scored), dtype="string")
    scored["restore_expected"] = pd.to_datetime(scored["restore_expected"], utc=True)
    scored["band"] = scored["band"].astype("string")
    scored["red_line"] = scored["red_line"].astype(bool)
    return scored[[c for c in SCORE_COLUMNS[:-3]]]
