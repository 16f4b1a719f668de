"""Scores of a batch of users at as_of (the Scores contract): features of the lines active then, the
model package's Scorer, the model's name and version. `linerisk score` runs it per chunk of users,
`linerisk.score` on a whole frame, so both give the same rows.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from linerisk.data.errors import InputError
from linerisk.models.scoring import reason_columns

SCORE_COLUMNS = ["user_id", "as_of", "probability", "band", *reason_columns(), "model_name", "model_version"]


def require_feature_spec(package: Any) -> None:
    """Refuse a model whose feature spec is not this code's: features built here would feed it wrong columns."""
    from linerisk.features.spec import spec_hash

    if package.spec_hash != spec_hash():
        raise InputError(f"model {package.name} v{package.version} was trained on feature spec "
                         f"{package.spec_hash[:12] or '(none)'}, but this code builds spec {spec_hash()[:12]}: "
                         "use a model trained on the current feature spec")


def score_users(package: Any, events: pd.DataFrame, users: pd.DataFrame, as_of: pd.Timestamp
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(scores in SCORE_COLUMNS, their feature rows) for the users of `users` whose line is active at `as_of`.

    `events` are validated rows (data.schema); the features are returned for drift counts."""
    from linerisk.features.labels import active_features

    features = active_features(events, as_of, users).reset_index()
    if not len(features):
        return pd.DataFrame({c: pd.Series(dtype="object") for c in SCORE_COLUMNS}), features
    scores = package.scorer.score(features)
    scores["model_name"], scores["model_version"] = package.name, package.version
    return scores[SCORE_COLUMNS], features
