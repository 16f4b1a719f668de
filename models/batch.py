"""Scores of a batch of users at as_of (the Scores contract): features of the lines then, the restriction
package's Scorer for active lines and the restoration package's for restricted ones, names and versions. `linerisk score` runs it per chunk of users,
`linerisk.score` on a whole frame, so both give the same rows.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from linerisk.data.errors import InputError
from linerisk.features.compute import prepare_events
from linerisk.features.labels import line_from_prepared
from linerisk.features.spec import RED_LINE, features_for
from linerisk.models.lines import SCORE_COLUMNS, score_lines

TARGET_NAMES = {"restrict": "restriction", "restore": "restoration"}


def require_feature_spec(package: Any, expect: str | None = None) -> None:
    """Refuse a model whose feature spec is not this code's (features built here would feed it wrong columns),
    or, with `expect` ("restrict" / "restore"), one that predicts the other target."""
    from linerisk.features.spec import TARGETS, spec_hash

    target = package.target
    if target not in TARGETS:
        raise InputError(f"model {package.name} v{package.version} predicts {target!r}, which this code does not know")
    if expect is not None and target != expect:
        raise InputError(f"model {package.name} v{package.version} is a {TARGET_NAMES[target]} model; "
                         f"this needs a {TARGET_NAMES[expect]} model")
    if package.spec_hash != spec_hash(target):
        raise InputError(f"model {package.name} v{package.version} was trained on feature spec "
                         f"{package.spec_hash[:12] or '(none)'}, but this code builds spec {spec_hash(target)[:12]} "
                         f"for {target}: use a model trained on the current feature spec")


def local_date(times: pd.Series, tz: str) -> pd.Series:
    """Instants as the calendar date they fall on in `tz` (a midnight, NaT kept), written as a date."""
    return pd.to_datetime(times, utc=True).dt.tz_convert(tz).dt.tz_localize(None).dt.normalize().astype("datetime64[s]")


def score_users(package: Any, events: pd.DataFrame, users: pd.DataFrame, as_of: pd.Timestamp, tz: str = "UTC",
                restore: Any | None = None) -> tuple[pd.DataFrame, pd.DataFrame, tuple[int, int]]:
    """(scores in SCORE_COLUMNS, their feature rows, (rows used, rows at/after as_of)) for the users of
    `users` with a personal line at `as_of`: active lines by `package`, restricted ones by the restoration
    package `restore` (None: active lines only).

    `events` are validated rows (data.schema; naive times and day windows in `tz`); the features are
    returned for drift counts, the row counts for the run's accounting (data.schema.RowCount)."""
    prep = prepare_events(events, users, until=as_of, tz=tz)
    red_line_names = {r["feature"] for r in RED_LINE}
    needed = None if restore is not None else tuple(f for f in features_for(None)
                                                    if "restrict" in f.targets or f.name in red_line_names)
    features = line_from_prepared(prep, as_of, needed).reset_index()
    if restore is None:
        features = features[features["line_state"] == "active"].reset_index(drop=True)
    consumed = prep.consumed()
    if not len(features):
        return pd.DataFrame({c: pd.Series(dtype="object") for c in SCORE_COLUMNS}), features, consumed
    rules = None if restore is not None else [dict(r) for r in RED_LINE]
    scores = score_lines(features, package.scorer, None if restore is None else restore.scorer, rules)
    scores["restore_expected"] = local_date(scores["restore_expected"], tz)
    scores["model_name"], scores["model_version"] = package.name, package.version
    scores["restore_model_version"] = None if restore is None else restore.version
    return scores[SCORE_COLUMNS], features, consumed
