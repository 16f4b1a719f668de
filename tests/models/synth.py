"""A small synthetic panel: label ~ Bernoulli(sigmoid(linear in features)), stacked snapshots.

Stands in for features.labels.build_panel in model tests (no simulator needed).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

# (name, family, direction, true coefficient)
SYNTH_FEATURES = (
    ("overdue_days_max_90d", "overdue", 1, 1.2),
    ("early_repayments_90d", "early_repayment", 1, 0.6),
    ("credit_score_last", "credit_score", -1, -0.9),
    ("utilisation_last", "utilisation", 1, 0.5),
    ("logins_30d", "activity", 0, 0.0),
)


def synth_spec() -> dict:
    from linerisk.models.train import model_spec

    rows = [{"name": n, "family": fam, "direction": d} for n, fam, d, _ in SYNTH_FEATURES]
    return model_spec(features=rows)


def make_panel(n_users: int = 1500, n_snapshots: int = 6, seed: int = 0, step_days: int = 90,
               intercept: float = -2.2) -> pd.DataFrame:
    """One row per (user_id, as_of); float32 features in spec order, `as_of`, `label`."""
    rng = np.random.default_rng(seed)
    frames = []
    start = pd.Timestamp("2024-01-01")
    for k in range(n_snapshots):
        X = rng.normal(size=(n_users, len(SYNTH_FEATURES))).astype(np.float32)
        logit = intercept + X @ np.array([c for *_, c in SYNTH_FEATURES])
        label = (rng.random(n_users) < 1 / (1 + np.exp(-logit))).astype(np.int8)
        frame = pd.DataFrame(X, columns=[n for n, *_ in SYNTH_FEATURES])
        frame.insert(0, "as_of", start + pd.Timedelta(days=step_days * k))
        frame.insert(0, "user_id", np.arange(n_users, dtype=np.int64))
        frame["label"] = label
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)
