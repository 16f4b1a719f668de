"""Scores of a batch of users at as_of (the Scores contract): features of the lines active then, the
model package's Scorer, the model's name and version. `linerisk score` runs it per chunk of users,
`linerisk.score` on a whole frame, so both give the same rows.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from linerisk.data.errors import InputError
from linerisk.features.compute import prepare_events
from linerisk.features.labels import active_from_prepared
from linerisk.models.scoring import reason_columns

SCORE_COLUMNS = ["user_id", "as_of", "probability", "band", *reason_columns(), "model_name", "model_version"]


def require_feature_spec(package: Any) -> None:
    """Refuse a model whose feature spec is not this code's: features built here would feed it wrong columns."""
    from linerisk.features.spec import spec_hash

    if package.spec_hash != spec_hash():
        raise InputError(f"model {package.name} v{package.version} was trained on feature spec "
                         f"{package.spec_hash[:12] or '(none)'}, but this code builds spec {spec_hash()[:12]}: "
                         "use a model trained on the current feature spec")


def score_users(package: Any, events: pd.DataFrame, users: pd.DataFrame, as_of: pd.Timestamp, tz: str = "UTC"
                ) -> tuple[pd.DataFrame, pd.DataFrame, tuple[int, int]]:
    """(scores in SCORE_COLUMNS, their feature rows, (rows used, rows at/after as_of)) for the users of
    `users` whose line is active at `as_of`.

    `events` are validated rows (data.schema; naive times and day windows in `tz`); the features are
    returned for drift counts, the row counts for the run's accounting (data.schema.RowCount)."""
    prep = prepare_events(events, users, until=as_of, tz=tz)
    features = active_from_prepared(prep, as_of).reset_index()
    consumed = prep.consumed()
    if not len(features):
        return pd.DataFrame({c: pd.Series(dtype="object") for c in SCORE_COLUMNS}), features, consumed
    scores = package.scorer.score(features)
    scores["model_name"], scores["model_version"] = package.name, package.version
    return scores[SCORE_COLUMNS], features, consumed
