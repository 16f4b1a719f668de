"""Line state and horizon labels per the events contract, and the stacked snapshot panel.

State at as_of = the last pl_restricted / pl_restored before as_of (active if none, given a
pl_open before as_of). Label = 1 when an active line gets a pl_restricted in [as_of, as_of + horizon).
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import pandas as pd

from linerisk.features.compute import (PreparedEvents, Snapshot, _time_us, _us, features_from_prepared,
                              prepare_events, to_utc_timestamp)

STATES = ("no_line", "active", "restricted")


def _state_arrays(prep: PreparedEvents, as_of_us: int) -> tuple[np.ndarray, np.ndarray]:
    """(state code into STATES, time the state began in µs or -inf) per user row."""
    snap = Snapshot(prep, as_of_us)
    opened = snap.last("pl_open", "time")[0]
    restricted = snap.last("pl_restricted", "time")[0]
    restored = snap.last("pl_restored", "time")[0]
    has_line = np.isfinite(opened)
    is_restricted = has_line & np.isfinite(restricted) & (restricted >= restored)
    state = np.where(is_restricted, 2, np.where(has_line, 1, 0)).astype(np.int8)
    since = np.where(is_restricted, restricted, np.where(restored > opened, restored, opened))
    return state, since


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
    return features_from_prepared(prep, ts)[state == 1]


def horizon_labels(prep: PreparedEvents, as_of_us: int, horizon_days: int) -> np.ndarray:
    """1 where a pl_restricted event falls in [as_of, as_of + horizon), else 0 (int8 per user row)."""
    snap = Snapshot(prep, as_of_us)
    hits = np.zeros(prep.n_users, dtype=bool)
    for b, rows, _ in snap.parts("pl_restricted", lo_us=as_of_us, hi_us=snap.day_edge(horizon_days)):
        hits[b.u[rows]] = True
    return hits.astype(np.int8)


def panel_block(prep: PreparedEvents, as_of: object, horizon_days: int = 90) -> pd.DataFrame:
    """Features plus `label` at one as_of, for users whose line is active at as_of."""
    ts = to_utc_timestamp(as_of, prep.tz)
    state, _ = _state_arrays(prep, _us(ts))
    active = state == 1
    frame = features_from_prepared(prep, ts)
    frame["label"] = horizon_labels(prep, _us(ts), horizon_days)
    return frame[active]


def iter_panel(events: pd.DataFrame, users: pd.DataFrame | None, snapshots: Iterable[object],
               horizon_days: int = 90, tz: str = "UTC") -> Iterator[pd.DataFrame]:
    """Panel blocks one as_of at a time (events prepared once), so a caller can show progress."""
    prep = prepare_events(events, users, sort_by_day=True, tz=tz)  # sorted once, sliced by every snapshot
    for as_of in snapshots:
        yield panel_block(prep, as_of, horizon_days)


def build_panel(events: pd.DataFrame, users: pd.DataFrame | None, snapshots: Iterable[object],
                horizon_days: int = 90, tz: str = "UTC") -> pd.DataFrame:
    """Stacked snapshots: index user_id, spec columns, `as_of`, `label`; (user_id, as_of) is unique."""
    blocks = list(iter_panel(events, users, snapshots, horizon_days, tz))
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
    t = _time_us(events["event_time"], tz)
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
