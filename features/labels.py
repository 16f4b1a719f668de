"""Line state and horizon labels per the events contract, and the stacked snapshot panel.

State at as_of = the last pl_restricted / pl_restored before as_of (active if none, given a
pl_open before as_of). Label = 1 when an active line gets a pl_restricted in [as_of, as_of + horizon).
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import pandas as pd

from linerisk.features.compute import (DAY_US, PreparedEvents, Snapshot, time_us, _us, features_from_prepared,
                                       line_state_arrays, prepare_events, to_utc_timestamp)
from linerisk.features.spec import features_for

STATES = ("no_line", "active", "restricted")


_state_arrays = line_state_arrays  # (state code into STATES, time it began in µs or -inf) per user row
# The population of each target at as_of and the event that ends a row's wait (its label).
POPULATION = {"restrict": 1, "restore": 2}
LABEL_EVENT = {"restrict": "pl_restricted", "restore": "pl_restored"}


def line_state(events: pd.DataFrame, as_of: object, users: pd.DataFrame | None = None,
               tz: str = "UTC") -> pd.DataFrame:
    """Per user at as_of: `state` (no_line / active / restricted) and `state_since` (UTC time it began)."""
    ts = to_utc_timestamp(as_of, tz)
    prep = prepare_events(events, users, until=ts, tz=tz)
    state, since = _state_arrays(prep, _us(ts))
    since_ts = pd.to_datetime(np.where(np.isfinite(since), since, np.nan), unit="us", utc=True).as_unit("us")
    return pd.DataFrame({"state": pd.Categorical.from_codes(state, STATES),
                         "state_since": since_ts}, index=prep.user_ids.copy())


def active_features(events: pd.DataFrame, as_of: object, users: pd.DataFrame | None = None,
                    tz: str = "UTC") -> pd.DataFrame:
    """Features at as_of of the users whose line is active then (the population scored), events prepared once."""
    return active_from_prepared(prepare_events(events, users, until=as_of, tz=tz), as_of)


def active_from_prepared(prep: PreparedEvents, as_of: object) -> pd.DataFrame:
    """Features at as_of of the users whose line is active then, from prepared events."""
    ts = to_utc_timestamp(as_of, prep.tz)
    state, _ = _state_arrays(prep, _us(ts))
    return features_from_prepared(prep, ts, features_for("restrict"))[state == 1]


def first_event_days(prep: PreparedEvents, as_of_us: int, event_type: str) -> np.ndarray:
    """Days from as_of to each user's first `event_type` event at or after as_of (NaN when none is logged)."""
    first = np.full(prep.n_users, np.inf)
    b = prep.block(event_type)
    later = b.t >= as_of_us
    np.minimum.at(first, b.u[later], b.t[later].astype(np.float64))
    return np.where(np.isfinite(first), (first - as_of_us) / DAY_US, np.nan)


def line_features(events: pd.DataFrame, as_of: object, users: pd.DataFrame | None = None,
                  features: tuple | None = None, tz: str = "UTC") -> pd.DataFrame:
    """Features at as_of (all registry entries, or `features`) of the users with a personal line, plus
    `line_state` (active / restricted): the population scored, events prepared once."""
    return line_from_prepared(prepare_events(events, users, until=as_of, tz=tz), as_of, features)


def line_from_prepared(prep: PreparedEvents, as_of: object, features: tuple | None = None) -> pd.DataFrame:
    """`line_features` from prepared events."""
    ts = to_utc_timestamp(as_of, prep.tz)
    state, _ = _state_arrays(prep, _us(ts))
    frame = features_from_prepared(prep, ts, features_for(None) if features is None else features)
    frame["line_state"] = pd.array(np.asarray(STATES, dtype=object)[state], dtype="string")
    return frame[state > 0]


def horizon_labels(prep: PreparedEvents, as_of_us: int, horizon_days: int,
                   event_type: str = "pl_restricted") -> np.ndarray:
    """1 where an `event_type` event falls in [as_of, as_of + horizon), else 0 (int8 per user row)."""
    snap = Snapshot(prep, as_of_us)
    hits = np.zeros(prep.n_users, dtype=bool)
    for b, rows, _ in snap.parts(event_type, lo_us=as_of_us, hi_us=snap.day_edge(horizon_days)):
        hits[b.u[rows]] = True
    return hits.astype(np.int8)


def panel_block(prep: PreparedEvents, as_of: object, horizon_days: int = 90, target: str = "restrict") -> pd.DataFrame:
    """The target's features plus `label` at one as_of, for the target's population at as_of.

    restrict: active lines, label = restricted within the horizon. restore: restricted lines, label =
    restored within the horizon, plus `restore_days` (days to the first pl_restored, NaN if none is
    logged) and `followup_days` (days of log after as_of), the survival view of the same rows."""
    ts = to_utc_timestamp(as_of, prep.tz)
    state, _ = _state_arrays(prep, _us(ts))
    frame = features_from_prepared(prep, ts, features_for(target))
    frame["label"] = horizon_labels(prep, _us(ts), horizon_days, LABEL_EVENT[target])
    if target == "restore":
        frame["restore_days"] = first_event_days(prep, _us(ts), "pl_restored")
        end = max((b.t_max for b in prep.blocks.values()), default=_us(ts))
        frame["followup_days"] = float((end - _us(ts)) / DAY_US)
    return frame[state == POPULATION[target]]


def iter_panel(events: pd.DataFrame, users: pd.DataFrame | None, snapshots: Iterable[object],
               horizon_days: int = 90, tz: str = "UTC", target: str = "restrict") -> Iterator[pd.DataFrame]:
    """Panel blocks one as_of at a time (events prepared once), so a caller can show progress."""
    prep = prepare_events(events, users, sort_by_day=True, tz=tz)  # sorted once, sliced by every snapshot
    for as_of in snapshots:
        yield panel_block(prep, as_of, horizon_days, target)


def build_panel(events: pd.DataFrame, users: pd.DataFrame | None, snapshots: Iterable[object],
                horizon_days: int = 90, tz: str = "UTC", target: str = "restrict") -> pd.DataFrame:
    """Stacked snapshots: index user_id, the target's spec columns, `as_of`, `label`; (user_id, as_of) is unique.

    target "restrict": active lines, label restricted within the horizon; "restore": restricted lines,
    label restored within the horizon (see panel_block)."""
    if target not in POPULATION:
        raise ValueError(f"unknown target {target!r} (expected one of {', '.join(POPULATION)})")
    blocks = list(iter_panel(events, users, snapshots, horizon_days, tz, target))
    if not blocks:
        raise ValueError("build_panel: no snapshots given")
    return pd.concat(blocks)


def default_snapshots(events: pd.DataFrame, horizon_days: int = 90, warmup_days: int = 180,
                      step_days: int = 90, tz: str = "UTC") -> list[pd.Timestamp]:
    """Local midnights (of `tz`, as UTC instants) every `step_days` after a warm-up, each with a full
    horizon before the last event.

    The warm-up counts from the first behaviour event: `bl_open` / `pl_open` rows may date from
    long before the log starts (accounts opened at signup), so they do not start the clock.
    """
    t = time_us(events["event_time"], tz)
    behaviour = ~events["event_type"].isin(["bl_open", "pl_open"]).to_numpy(dtype=bool, na_value=False)
    if not behaviour.any():
        return []
    first = pd.Timestamp(int(t[behaviour].min()), unit="us", tz="UTC").tz_convert(tz).normalize().tz_localize(None)
    last = pd.Timestamp(int(t.max()), unit="us", tz="UTC")
    out, day = [], first + pd.Timedelta(days=warmup_days)
    while to_utc_timestamp(day + pd.Timedelta(days=horizon_days), tz) <= last:
        out.append(to_utc_timestamp(day, tz))
        day += pd.Timedelta(days=step_days)
    return out
