"""Point-in-time features: events + as_of -> one row per user, driven by features.spec.FEATURES.

Only events with `event_time < as_of` are used. Events are split once into per-type blocks
(`prepare_events`); a look-back window is then a slice of a day-ordered block or a mask over
an unordered one, and every aggregation is one vectorised numpy reduction (bincount /
ufunc.at) over user rows. Both cores: Arrow and numpy release the GIL, so preparation and
the two halves of the feature list run in threads.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from linerisk.data.schema import EVENT_FIELDS, EVENT_TYPES, parse_times, require_columns, type_codes
from linerisk.features.spec import FEATURES, Feature, feature_names

DAY_US = 86_400_000_000
DPD_CAP = 120  # the overdue hazard counts at most 120 days per repayment

# source name -> (event types, filter on days_past_due); "<type>.<filter>" shares divide by "<type>".
_REPAY = ("bl_repayment", "pl_repayment")
SOURCES: dict[str, tuple[tuple[str, ...], str | None]] = {
    **{t: ((t,), None) for t in EVENT_TYPES},
    "repayment": (_REPAY, None),
    **{f"repayment.{k}": (_REPAY, k) for k in ("early", "on_time", "late")},
    **{f"{t}.{k}": ((t,), k) for t in _REPAY for k in ("early", "on_time", "late")},
    "pl_limit": (("pl_open", "pl_limit_change"), None),
    "default": (("bl_default", "pl_default"), None),
    "dpd": ((*_REPAY, "bl_default", "pl_default"), None),  # every event that carries days past due
}
_DPD_FILTERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "early": lambda d: d < 0, "on_time": lambda d: d == 0, "late": lambda d: d > 0,
}


def to_utc_timestamp(value: object, tz: str = "UTC") -> pd.Timestamp:
    """A time (Timestamp, date, ISO string) as a tz-aware UTC Timestamp in microseconds: a naive time is
    wall-clock time in `tz` (a date is midnight there), a time with an offset keeps its instant."""
    ts = pd.Timestamp(value)
    if ts is pd.NaT:
        raise ValueError(f"not a time: {value!r}")
    if ts.tzinfo is None:
        ts = ts.tz_localize(tz, ambiguous=True, nonexistent="shift_forward")
    return ts.tz_convert("UTC").as_unit("us")


def _us(ts: pd.Timestamp) -> int:
    return int(ts.value // 1000)


NONE = np.iinfo(np.int64).min  # "no event" for int64 times


@dataclass(frozen=True)
class Block:
    """Events of one type: user row, time (µs since epoch) and values.

    When the rows are ordered by UTC day, `day_start[k]` is the first row on day `day0 + k`
    (the last entry is the row count) and a time range is whole-day slices plus at most two
    partial days; otherwise (`day_start` None, e.g. a log ordered by user) it is a mask.
    """

    u: np.ndarray                       # int32 row in PreparedEvents.user_ids
    t: np.ndarray                       # int64 µs
    day0: int = 0
    day_start: np.ndarray | None = None
    amount: np.ndarray | None = None    # float64
    dpd: np.ndarray | None = None       # float32 (exact for integers)
    score: np.ndarray | None = None     # float32
    t_min: int = 0
    t_max: int = -1

    def _start(self, day: int) -> int:
        k = min(max(day - self.day0, 0), len(self.day_start) - 1)
        return int(self.day_start[k])

    def rows(self, lo_us: int | None, hi_us: int) -> list[slice | np.ndarray]:
        """Pieces (slices or row arrays) selecting rows with lo_us <= t < hi_us (no lower bound if None)."""
        if not len(self.t) or hi_us <= self.t_min or (lo_us is not None and lo_us > self.t_max):
            return []
        if lo_us is not None and lo_us <= self.t_min:
            lo_us = None
        if self.day_start is None:
            if lo_us is None and hi_us > self.t_max:
                return [slice(0, len(self.t))]
            keep = self.t < hi_us if lo_us is None else (self.t >= lo_us) & (self.t < hi_us)
            return [np.flatnonzero(keep)]
        d_hi = hi_us // DAY_US
        end_full, end_all = self._start(d_hi), self._start(d_hi + 1)
        if lo_us is None:
            full, edges = slice(0, end_full), [(end_full, end_all)]
        else:
            d_lo = lo_us // DAY_US
            if d_lo >= d_hi:
                full, edges = slice(0, 0), [(self._start(d_lo), end_all)]
            else:
                full, edges = slice(self._start(d_lo + 1), end_full), [(self._start(d_lo), self._start(d_lo + 1)),
                                                                       (end_full, end_all)]
        pieces: list[slice | np.ndarray] = [full] if full.stop > full.start else []
        for a, b in edges:
            if b > a:
                t = self.t[a:b]
                keep = t < hi_us if lo_us is None else (t >= lo_us) & (t < hi_us)
                if keep.any():
                    pieces.append(a + np.flatnonzero(keep))
        return pieces


_EMPTY = Block(np.zeros(0, np.int32), np.zeros(0, np.int64), amount=np.zeros(0), dpd=np.zeros(0, np.float32),
               score=np.zeros(0, np.float32))


@dataclass(frozen=True)
class PreparedEvents:
    """Events reshaped for fast snapshots: built once, reused for every as_of of a panel."""

    user_ids: pd.Index
    blocks: dict[str, Block]
    signup_us: np.ndarray | None = None  # float64 µs per user (NaN unknown)
    merchant: np.ndarray | None = None   # float32 0/1 per user (NaN unknown)
    until_us: int | None = None          # events at or after this were dropped
    n_future: int = 0                    # how many: rows at or after until_us
    tz: str = "UTC"                      # the zone whose local days the windows count

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    def consumed(self, cut: object | None = None) -> tuple[int, int]:
        """(rows the features can read: in a block and before `cut`, rows at or after `cut` or until_us).

        Rows dropped for any other reason are in neither, so a caller's row count shows them."""
        if cut is None:
            return sum(len(b.t) for b in self.blocks.values()), self.n_future
        cut_us = _us(to_utc_timestamp(cut, self.tz))
        used = sum(int(np.count_nonzero(b.t < cut_us)) for b in self.blocks.values())
        return used, self.n_future + sum(len(b.t) for b in self.blocks.values()) - used

    def block(self, event_type: str) -> Block:
        return self.blocks.get(event_type, _EMPTY)


def time_us(col: pd.Series, tz: str = "UTC") -> np.ndarray:
    """Times as int64 µs since the epoch (UTC); naive times are wall-clock times in `tz`."""
    if isinstance(col.dtype, pd.DatetimeTZDtype) or (tz == "UTC" and pd.api.types.is_datetime64_dtype(col.dtype)):
        return col.to_numpy(dtype="datetime64[us]").view(np.int64)  # no copy for UTC input
    times = parse_times(col, tz)
    if (times.isna() & col.notna()).any():
        raise ValueError(f"{col.name}: unparseable times, or local times that do not exist or occur twice in {tz} "
                         "(validate first: they are quarantined as unparseable_time)")
    return times.to_numpy(dtype="datetime64[us]").view(np.int64)


def _user_positions(user_ids: pd.Index, col: pd.Series) -> np.ndarray:
    """Row of each event's user in `user_ids` (int32, -1 when unknown); O(1) per event for dense integer ids."""
    n = len(user_ids)
    if (n and pd.api.types.is_integer_dtype(user_ids.dtype) and pd.api.types.is_integer_dtype(col.dtype)
            and not isinstance(col.dtype, pd.api.extensions.ExtensionDtype)
            and user_ids.is_monotonic_increasing and int(user_ids[-1]) - int(user_ids[0]) + 1 == n):
        values = col.to_numpy()
        first = int(user_ids[0])
        pos = np.empty(len(values), dtype=np.int32)
        np.subtract(values, first, out=pos, casting="unsafe")
        if len(values) and (values.min() < first or values.max() >= first + n):
            pos[(values < first) | (values >= first + n)] = -1
        return pos
    return user_ids.get_indexer(col).astype(np.int32)


def _gather(col: pd.Series, idx: np.ndarray, dtype: type) -> np.ndarray:
    """col[idx] as a plain numpy array of `dtype`, missing values as NaN."""
    if isinstance(col.dtype, np.dtype) and col.dtype.kind == "f":
        return col.to_numpy()[idx].astype(dtype, copy=False)  # zero-copy view, then one numpy take
    return np.asarray(col.array[idx].to_numpy(dtype=dtype, na_value=np.nan))


def _day_index(idx: np.ndarray, t_all: np.ndarray, sort_by_day: bool
               ) -> tuple[np.ndarray, np.ndarray, int, np.ndarray | None]:
    """(rows, times, first day, per-day row offsets or None) for one type's rows.

    Rows already in time order get a day index for free; otherwise they are sorted by day
    (16-bit radix) only when `sort_by_day`, which pays off when many snapshots reuse the
    blocks, and left as they are (windows become masks) if not.
    """
    t = t_all[idx]
    in_order = bool((t[1:] >= t[:-1]).all())
    if not in_order and not sort_by_day:
        return idx, t, 0, None
    day = t // DAY_US
    day0, n_days = int(day[0] if in_order else day.min()), int(day.max() - day.min()) + 1
    if not in_order:
        if n_days >= 2**15:
            return idx, t, 0, None
        by_day = np.argsort((day - day0).astype(np.int16), kind="stable")
        idx, t, day = idx[by_day], t[by_day], day[by_day]
    return idx, t, day0, np.searchsorted(day, np.arange(day0, day0 + n_days + 1)).astype(np.int64)


def prepare_events(events: pd.DataFrame, users: pd.DataFrame | None = None,
                   until: object | None = None, sort_by_day: bool = False, tz: str = "UTC") -> PreparedEvents:
    """Split events into per-type blocks keyed to user rows; `events` is not modified.

    Rows are `users` in their order when given (events of other users raise ValueError: validation
    quarantines them as unknown_user first), else the sorted users seen in events before `until`.
    Events at or after `until` are dropped (and counted, `n_future`).
    `sort_by_day` orders each type by day once so that later snapshots slice instead of mask.
    Naive times (events, `until`, signup dates) are wall-clock times in `tz`, whose local days the
    windows count.
    """
    require_columns(events, ("user_id", "event_time", "event_type", "amount", "days_past_due", "credit_score"), "events")
    t_all = time_us(events["event_time"], tz)
    until_us = None if until is None else _us(to_utc_timestamp(until, tz))
    keep = None if until is None else t_all < until_us
    if users is not None:
        user_ids = pd.Index(users["user_id"], name="user_id")
    else:
        seen = events["user_id"] if keep is None else events["user_id"][keep]
        user_ids = pd.Index(pd.unique(seen), name="user_id").sort_values()
    with ThreadPoolExecutor(2) as pool:  # Arrow and numpy release the GIL: the two run side by side
        codes_job = pool.submit(type_codes, events["event_type"])
        pos = _user_positions(user_ids, events["user_id"])
        codes = codes_job.result()
    if users is not None and (pos < 0).any():
        stranger = events["user_id"].to_numpy()[np.flatnonzero(pos < 0)[0]]
        raise ValueError(f"events: {int((pos < 0).sum()):,} row(s) of users missing from the users table "
                         f"(e.g. {stranger}); validate them first (they are quarantined as unknown_user)")

    valid = pos >= 0
    if keep is not None:
        valid &= keep
    key = np.where(valid, codes, np.int8(-1))
    del valid

    def one_block(k: int) -> tuple[str, Block] | None:
        idx = np.flatnonzero(key == k)  # ascending rows of this type: one pass, run in both threads
        if not len(idx):
            return None
        idx, t, day0, day_start = _day_index(idx, t_all, sort_by_day)
        spec = EVENT_FIELDS[EVENT_TYPES[k]]
        return EVENT_TYPES[k], Block(
            u=pos[idx], t=t, day0=day0, day_start=day_start, t_min=int(t.min()), t_max=int(t.max()),
            amount=_gather(events["amount"], idx, np.float64) if "amount" in spec else None,
            dpd=_gather(events["days_past_due"], idx, np.float32) if "days_past_due" in spec else None,
            score=_gather(events["credit_score"], idx, np.float32) if "credit_score" in spec else None)

    with ThreadPoolExecutor(2) as pool:
        blocks = dict(b for b in pool.map(one_block, range(len(EVENT_TYPES))) if b is not None)

    signup = merchant = None
    if users is not None:
        if "signup_date" in users:
            signup = time_us(users["signup_date"], tz).astype(np.float64)
            signup[users["signup_date"].isna().to_numpy()] = np.nan
        if "segment" in users:
            merchant = (users["segment"] == "merchant").to_numpy(dtype=np.float32, na_value=np.nan)
    return PreparedEvents(user_ids, blocks, signup, merchant, until_us,
                          0 if keep is None else int(len(keep) - np.count_nonzero(keep)), tz)


Piece = slice | np.ndarray


@dataclass
class Snapshot:
    """One as_of over prepared events: window selection plus a cache of shared intermediates."""

    prep: PreparedEvents
    as_of_us: int
    cache: dict = field(default_factory=dict)
    family: dict = field(default_factory=dict)  # anchor -> the snapshot of this as_of with that anchor (`anchored`)
    anchor: str = "as_of"

    @property
    def n(self) -> int:
        return self.prep.n_users

    def anchored(self, anchor: str, since_us: np.ndarray | None = None) -> "Snapshot":
        """This as_of's snapshot with spec `anchor` ("as_of", "since_restricted", "restricted"; `since_us` as in
        AnchoredSnapshot, default this one's), made once per family: a feature built on several anchors (a
        change since the restriction) reuses what the features on each anchor already cached."""
        self.family.setdefault(self.anchor, self)
        if anchor not in self.family:
            since = getattr(self, "since_us", None) if since_us is None else since_us
            self.family[anchor] = (Snapshot(self.prep, self.as_of_us, family=self.family) if anchor == "as_of" else
                                   AnchoredSnapshot(self.prep, self.as_of_us, family=self.family, since_us=since,
                                                    anchor=anchor))
        return self.family[anchor]

    def day_edge(self, days: int) -> int:
        """µs of as_of moved `days` local days (negative: back), so windows are whole days of prep.tz."""
        if self.prep.tz == "UTC":
            return self.as_of_us + days * DAY_US
        key = ("day_edge", days)
        if key not in self.cache:
            local = pd.Timestamp(self.as_of_us, unit="us", tz="UTC").tz_convert(self.prep.tz).tz_localize(None)
            moved = (local + pd.Timedelta(days=days)).tz_localize(self.prep.tz, ambiguous=True, nonexistent="shift_forward")
            self.cache[key] = _us(moved.tz_convert("UTC"))
        return self.cache[key]

    def parts(self, source: str, window: int | None = None, lo_us: int | None = None,
              hi_us: int | None = None) -> list[tuple[Block, Piece, np.ndarray | None]]:
        """(block, rows, dpd filter mask or None) for `source` events in [as_of - window, as_of).

        `lo_us` / `hi_us` override the bounds (µs); no window and no `lo_us` means all history.
        """
        hi = self.as_of_us if hi_us is None else hi_us
        lo = lo_us if lo_us is not None else (None if window is None else self.day_edge(-window))
        types, flt = SOURCES[source]
        out = []
        for etype in types:
            b = self.prep.block(etype)
            key = ("rows", etype, lo, hi)
            if key not in self.cache:
                self.cache[key] = b.rows(lo, hi)
            for rows in self.cache[key]:
                out.append((b, rows, None if flt is None else _DPD_FILTERS[flt](b.dpd[rows])))
        return out

    def bincount(self, source: str, window: int | None, weight: Callable[[Block, Piece], np.ndarray] | None = None,
                 tag: str = "count") -> np.ndarray:
        """Per-user count (or weighted sum) of `source` events in the window; cached."""
        key = (tag, source, window)
        if key not in self.cache:
            # nested windows: add the ring [as_of - window, as_of - w) to the largest cached w < window
            inner = max((k[2] for k in self.cache if k[:2] == key[:2] and k[2] is not None
                         and window is not None and k[2] < window), default=None)
            total = np.zeros(self.n) if inner is None else self.cache[(tag, source, inner)].copy()
            hi = None if inner is None else self.day_edge(-inner)
            self.cache[key] = self._add_counts(total, self.parts(source, window, hi_us=hi), weight)
        return self.cache[key]

    def _add_counts(self, total: np.ndarray, parts: list[tuple[Block, Piece, np.ndarray | None]],
                    weight: Callable[[Block, Piece], np.ndarray] | None) -> np.ndarray:
        """`total` plus the per-user count (or `weight` sum) of the rows in `parts`."""
        for b, rows, m in parts:
            u = b.u[rows]
            w = None if weight is None else weight(b, rows)
            if m is not None:
                u, w = u[m], (None if w is None else w[m])
            total += np.bincount(u, weights=w, minlength=self.n)
        return total

    def last(self, source: str, value: str, window: int | None = None,
             hi_us: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(time µs as float, value) of each user's latest `source` event before `hi_us` (default as_of).

        Time is -inf and value NaN when there is none; ties in time take the largest value, so
        row order never matters.
        """
        key = ("last", source, value, window, hi_us)
        if key in self.cache:
            return self.cache[key]
        best_t = np.full(self.n, NONE, np.int64)
        best_v = np.full(self.n, np.nan)
        types, _ = SOURCES[source]
        parts = self.parts(source, window, hi_us=hi_us)
        for etype in types:
            pieces = []
            for b, rows, m in parts:
                if b is not self.prep.block(etype):
                    continue
                u, t = b.u[rows], b.t[rows]
                v = None if value == "time" else getattr(b, value)[rows]
                if m is not None:
                    u, t, v = u[m], t[m], (None if v is None else v[m])
                pieces.append((u, t, v))
            if not pieces:
                continue
            lt = np.full(self.n, NONE, np.int64)
            for u, t, _ in pieces:
                np.maximum.at(lt, u, t)
            if value != "time":
                vt = np.full(self.n, -np.inf)
                for u, t, v in pieces:
                    at_last = t == lt[u]
                    np.maximum.at(vt, u[at_last], v[at_last].astype(np.float64))
                newer = (lt >= best_t) & (lt != NONE)  # a later type in SOURCES wins a tie across types
                best_v = np.where(newer, vt, best_v)
            best_t = np.maximum(best_t, lt)
        t_float = np.where(best_t == NONE, -np.inf, best_t.astype(np.float64))
        self.cache[key] = (t_float, best_v)
        return self.cache[key]

    def days_since(self, t_us: np.ndarray) -> np.ndarray:
        """Days from `t_us` to as_of; NaN where there is no event (-inf)."""
        with np.errstate(invalid="ignore"):
            out = (self.as_of_us - t_us) / DAY_US
        out[~np.isfinite(t_us)] = np.nan
        return out


def line_state_arrays(prep: PreparedEvents, as_of_us: int) -> tuple[np.ndarray, np.ndarray]:
    """(state code: 0 no line, 1 active, 2 restricted; time the state began in µs or -inf) per user row.

    The events contract: the state is the last pl_restricted / pl_restored before as_of, active
    if none, given a pl_open before as_of."""
    snap = Snapshot(prep, as_of_us)
    opened = snap.last("pl_open", "time")[0]
    restricted = snap.last("pl_restricted", "time")[0]
    restored = snap.last("pl_restored", "time")[0]
    has_line = np.isfinite(opened)
    is_restricted = has_line & np.isfinite(restricted) & (restricted >= restored)
    state = np.where(is_restricted, 2, np.where(has_line, 1, 0)).astype(np.int8)
    since = np.where(is_restricted, restricted, np.where(restored > opened, restored, opened))
    return state, since


@dataclass
class AnchoredSnapshot(Snapshot):
    """A snapshot whose windows are cut per user at the line's current restriction (spec `anchor`).

    "since_restricted": [max(restriction, as_of - window), as_of); "restricted": [restriction - window,
    restriction). Users whose line is not restricted have no rows. Every aggregation of Snapshot
    works unchanged on it: only the row selection differs (a mask over the rows before as_of)."""

    since_us: np.ndarray = field(default_factory=lambda: np.zeros(0))  # float µs per user row, NaN if not restricted
    anchor: str = "since_restricted"

    def bounds(self, window: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Per-user [lo, hi) in µs (floats; lo = +inf where the line is not restricted)."""
        since = np.where(np.isnan(self.since_us), np.inf, self.since_us)
        span = np.inf if window is None else window * DAY_US
        if self.anchor == "since_restricted":  # the window's start in local days, as every as_of window
            start = -np.inf if window is None else float(self.day_edge(-window))
            return np.maximum(since, start), np.full(self.n, float(self.as_of_us))
        with np.errstate(invalid="ignore"):  # inf - inf where the line is not restricted: no rows either way
            return np.where(np.isinf(since), np.inf, since - span), since

    def parts(self, source: str, window: int | None = None, lo_us: int | None = None,
              hi_us: int | None = None) -> list[tuple[Block, Piece, np.ndarray | None]]:
        if lo_us is not None or hi_us is not None:
            raise ValueError("an anchored snapshot takes its bounds from the restriction, not from lo_us/hi_us")
        key = ("bounds", window)
        if key not in self.cache:
            self.cache[key] = self.bounds(window)
        lo, hi = self.cache[key]
        types, flt = SOURCES[source]
        out = []
        for etype in types:
            b = self.prep.block(etype)
            rkey = ("arows", etype, window)
            if rkey not in self.cache:
                rows = []
                for idx in self.restricted_rows(etype):
                    u, t = b.u[idx], b.t[idx]
                    rows.append(idx[(t >= lo[u]) & (t < hi[u])])
                self.cache[rkey] = [r for r in rows if len(r)]
            for rows in self.cache[rkey]:
                out.append((b, rows, None if flt is None else _DPD_FILTERS[flt](b.dpd[rows])))
        return out

    def bincount(self, source: str, window: int | None, weight: Callable[[Block, Piece], np.ndarray] | None = None,
                 tag: str = "count") -> np.ndarray:
        """Per-user count (or weighted sum) in the anchored window; windows are not nested here."""
        key = ("a" + tag, source, window)
        if key not in self.cache:
            self.cache[key] = self._add_counts(np.zeros(self.n), self.parts(source, window), weight)
        return self.cache[key]

    def restricted_rows(self, etype: str) -> list[np.ndarray]:
        """The `etype` rows before as_of of users whose line is restricted (the only rows an anchored window
        can hold), per piece of the block, in row order; worked out once per family, both anchors share them."""
        key = ("restricted_rows", etype)
        if key not in self.family:
            b, restricted = self.prep.block(etype), ~np.isnan(self.since_us)
            pieces = [np.arange(p.start, p.stop) if isinstance(p, slice) else p for p in b.rows(None, self.as_of_us)]
            self.family[key] = [idx[restricted[b.u[idx]]] for idx in pieces]
        return self.family[key]


def _amount(b: Block, rows: Piece) -> np.ndarray:
    return b.amount[rows]


def _capped_dpd(b: Block, rows: Piece) -> np.ndarray:
    return np.minimum(b.dpd[rows], DPD_CAP).astype(np.float64)


def _count(snap: Snapshot, f: Feature) -> np.ndarray:
    return snap.bincount(f.source, f.window)


def _sum(snap: Snapshot, f: Feature) -> np.ndarray:
    return snap.bincount(f.source, f.window, _amount, tag="amount")


def _share(snap: Snapshot, f: Feature) -> np.ndarray:
    base = snap.bincount(f.source.split(".")[0], f.window)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(base > 0, snap.bincount(f.source, f.window) / base, np.nan)


def _flag(snap: Snapshot, f: Feature) -> np.ndarray:
    return (snap.bincount(f.source, f.window) > 0).astype(np.float64)


def _max_dpd(snap: Snapshot, f: Feature) -> np.ndarray:
    """Largest days past due among repayments in the window; 0 when none was late."""
    out = np.zeros(snap.n)
    for b, rows, _ in snap.parts(f.source, f.window):
        d = b.dpd[rows]
        late = d > 0
        np.maximum.at(out, b.u[rows][late], d[late].astype(np.float64))
    return out


def _sum_dpd_capped(snap: Snapshot, f: Feature) -> np.ndarray:
    return snap.bincount(f.source, f.window, _capped_dpd, tag="dpd_capped")


def _last_dpd(snap: Snapshot, f: Feature) -> np.ndarray:
    """Days late of the latest repayment (0 when early or on time; NaN when none)."""
    return np.maximum(snap.last(f.source, "dpd")[1], 0)


def _value_field(source: str) -> str:
    return "score" if source == "credit_score" else "amount"


def _last(snap: Snapshot, f: Feature) -> np.ndarray:
    return snap.last(f.source, _value_field(f.source))[1]


def _change(snap: Snapshot, f: Feature) -> np.ndarray:
    """Latest value minus the latest value at or before as_of - window."""
    value = _value_field(f.source)
    then = snap.last(f.source, value, hi_us=snap.day_edge(-f.window) + 1)[1]
    return snap.last(f.source, value)[1] - then


def _min(snap: Snapshot, f: Feature) -> np.ndarray:
    out = np.full(snap.n, np.inf)
    value = _value_field(f.source)
    for b, rows, m in snap.parts(f.source, f.window):
        v, u = getattr(b, value)[rows].astype(np.float64), b.u[rows]
        if m is not None:
            v, u = v[m], u[m]
        np.minimum.at(out, u, v)
    out[np.isinf(out)] = np.nan
    return out


def _days_since_last(snap: Snapshot, f: Feature) -> np.ndarray:
    return snap.days_since(snap.last(f.source, "time", window=f.window)[0])


def _days_since_first(snap: Snapshot, f: Feature) -> np.ndarray:
    first = np.full(snap.n, np.iinfo(np.int64).max, np.int64)
    for b, rows, _ in snap.parts(f.source, f.window):
        np.minimum.at(first, b.u[rows], b.t[rows])
    return snap.days_since(np.where(first == np.iinfo(np.int64).max, -np.inf, first.astype(np.float64)))


def _balance(snap: Snapshot, f: Feature) -> np.ndarray:
    """Drawn minus repaid on the product over all history, floored at 0."""
    drawn = snap.bincount(f"{f.source}_drawdown", None, _amount, tag="amount")
    repaid = snap.bincount(f"{f.source}_repayment", None, _amount, tag="amount")
    return np.maximum(drawn - repaid, 0.0)


def _limit(snap: Snapshot, f: Feature) -> np.ndarray:
    return snap.last("pl_limit", "amount")[1]


def _utilisation(snap: Snapshot, f: Feature) -> np.ndarray:
    """Personal-line balance over the current limit (latest pl_open / pl_limit_change amount)."""
    limit = snap.last("pl_limit", "amount")[1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(limit > 0, _balance(snap, f) / limit, np.nan)


def _limit_change_ratio(snap: Snapshot, f: Feature) -> np.ndarray:
    """Latest limit over the limit before it (NaN with fewer than two limit events)."""
    latest_t, latest_v = snap.last(f.source, "amount")
    cut = np.where(np.isfinite(latest_t), latest_t, -np.inf)
    prev_t = np.full(snap.n, NONE, np.int64)
    prev_v = np.full(snap.n, -np.inf)
    pieces = []
    for b, rows, _ in snap.parts(f.source):
        u, t, v = b.u[rows], b.t[rows], b.amount[rows]
        before = t < cut[u]  # strictly earlier than the user's latest limit event
        pieces.append((u[before], t[before], v[before]))
        np.maximum.at(prev_t, pieces[-1][0], pieces[-1][1])
    for u, t, v in pieces:
        at_prev = t == prev_t[u]
        np.maximum.at(prev_v, u[at_prev], v[at_prev])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((prev_t != NONE) & (prev_v > 0), latest_v / prev_v, np.nan)


def _line_times(snap: Snapshot, product: str) -> tuple[np.ndarray, np.ndarray]:
    return snap.last(f"{product}_open", "time")[0], snap.last(f"{product}_close", "time")[0]


def _line_open(snap: Snapshot, f: Feature) -> np.ndarray:
    opened, closed = _line_times(snap, f.source)
    return (np.isfinite(opened) & (closed < opened)).astype(np.float64)


def _line_closed(snap: Snapshot, f: Feature) -> np.ndarray:
    opened, closed = _line_times(snap, f.source)
    return (np.isfinite(closed) & (closed >= opened)).astype(np.float64)


def _days_since_signup(snap: Snapshot, f: Feature) -> np.ndarray:
    if snap.prep.signup_us is None:
        return np.full(snap.n, np.nan)
    return (snap.as_of_us - snap.prep.signup_us) / DAY_US


def _segment_merchant(snap: Snapshot, f: Feature) -> np.ndarray:
    return np.full(snap.n, np.nan) if snap.prep.merchant is None else snap.prep.merchant


def _days_restricted(snap: AnchoredSnapshot, f: Feature) -> np.ndarray:
    return (snap.as_of_us - snap.since_us) / DAY_US


def _change_since_restriction(snap: AnchoredSnapshot, f: Feature) -> np.ndarray:
    """Latest value before as_of minus the latest value before the restriction (NaN without one before)."""
    value = _value_field(f.source)
    return snap.anchored("as_of").last(f.source, value)[1] - snap.anchored("restricted").last(f.source, value)[1]


def _count_older(snap: AnchoredSnapshot, f: Feature) -> np.ndarray:
    """Events in the anchored span but more than `window` days before as_of (e.g. appeals already reviewed)."""
    return snap.bincount(f.source, None) - snap.bincount(f.source, f.window)


def _decayed_count(snap: Snapshot, f: Feature) -> np.ndarray:
    """Events in the window, each weighted 0.5 ** (its age in days / half_life): recent ones count fully."""
    rate = np.log(0.5) / (f.half_life * DAY_US)

    def weight(b: Block, rows: Piece) -> np.ndarray:
        return np.exp(rate * (snap.as_of_us - b.t[rows]).astype(np.float64))

    return snap.bincount(f.source, f.window, weight, tag=f"decayed_hl{f.half_life}")


def _peak_count(snap: Snapshot, f: Feature) -> np.ndarray:
    """The most events in any `sub_window` days of the window: for each event, the user's events from it up to
    sub_window days later (and before as_of), maximised per user; 0 without events. One sort, no loop per user."""
    u, t = [], []
    for b, rows, m in snap.parts(f.source, f.window):
        u.append(b.u[rows] if m is None else b.u[rows][m])
        t.append(b.t[rows] if m is None else b.t[rows][m])
    out = np.zeros(snap.n)
    if not u or not sum(map(len, u)):
        return out
    u, t = np.concatenate(u).astype(np.int64), np.concatenate(t)
    order = np.lexsort((t, u))
    u, t = u[order], t[order]
    n = len(t)
    # events (kind 1) and each event's span end (kind 0, sorted before an event at the same time: the end is open)
    both_u, both_t = np.concatenate([u, u]), np.concatenate([t, t + f.sub_window * DAY_US])
    kind = np.concatenate([np.ones(n, np.int8), np.zeros(n, np.int8)])
    merged = np.lexsort((kind, both_t, both_u))
    is_end = kind[merged] == 0
    events_before = np.cumsum(~is_end) - ~is_end  # events sorted before each merged entry
    ends = merged[is_end] - n  # the event each span end belongs to, in merged order
    within = np.empty(n, np.int64)
    within[ends] = events_before[is_end] - ends  # events from the span's own event (index ends) up to its end
    np.maximum.at(out, u, within.astype(np.float64))
    return out


# aggregation kind -> vectorised function (Snapshot, Feature) -> one float per user row.
AGGREGATORS: dict[str, Callable[[Snapshot, Feature], np.ndarray]] = {
    "count": _count, "sum": _sum, "share": _share, "flag": _flag, "max_dpd": _max_dpd,
    "sum_dpd_capped": _sum_dpd_capped, "last_dpd": _last_dpd, "last": _last, "change": _change, "min": _min,
    "days_since_last": _days_since_last, "days_since_first": _days_since_first, "balance": _balance,
    "limit": _limit, "utilisation": _utilisation, "limit_change_ratio": _limit_change_ratio,
    "line_open": _line_open, "line_closed": _line_closed, "days_since_signup": _days_since_signup,
    "segment_merchant": _segment_merchant, "days_restricted": _days_restricted,
    "change_since_restriction": _change_since_restriction, "count_older": _count_older,
    "decayed_count": _decayed_count, "peak_count": _peak_count,
}


def _thread_groups(features: tuple[Feature, ...]) -> list[list[int]]:
    """Two groups of feature positions of similar cost: repayment-based features, and the rest."""
    def on_repayments(f: Feature) -> bool:
        return f.source == "pl" or (f.source in SOURCES and bool(set(SOURCES[f.source][0]) & set(_REPAY)))
    split = [[i for i, f in enumerate(features) if on_repayments(f)],
             [i for i, f in enumerate(features) if not on_repayments(f)]]
    return [g for g in split if g]


def features_from_prepared(prep: PreparedEvents, as_of: object,
                           features: tuple[Feature, ...] = FEATURES) -> pd.DataFrame:
    """Feature frame (index user_id, float32 columns in spec order, plus `as_of`) at one as_of."""
    ts = to_utc_timestamp(as_of, prep.tz)
    if prep.until_us is not None and _us(ts) > prep.until_us:
        raise ValueError(f"as_of {ts} is after the events were cut off at {pd.Timestamp(prep.until_us, unit='us', tz='UTC')}")
    values = np.empty((len(features), prep.n_users), dtype=np.float32)  # transposed: one float32 block, no copy
    since = None
    if any(f.anchor != "as_of" for f in features):
        state, began = line_state_arrays(prep, _us(ts))
        since = np.where(state == 2, began, np.nan)

    def run(group: list[int]) -> None:
        root = Snapshot(prep, _us(ts))  # one family of caches per thread: groups share few intermediates
        for i in group:
            f = features[i]
            values[i] = AGGREGATORS[f.aggregation](root.anchored(f.anchor, since), f)
            if f.anchor != "as_of":
                values[i][np.isnan(since)] = np.nan  # not restricted: the feature does not apply

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(run, _thread_groups(features)))
    out = pd.DataFrame(values.T, index=prep.user_ids.copy(), columns=[f.name for f in features], copy=False)
    out.index.name = "user_id"
    out["as_of"] = pd.Series(ts, index=out.index, dtype="datetime64[us, UTC]")
    return out


def build_features(events: pd.DataFrame, as_of: object, users: pd.DataFrame | None = None,
                   tz: str = "UTC") -> pd.DataFrame:
    """One row per user (all of `users`, else users with an event before as_of) from events before as_of;
    naive times and day windows are in `tz`.

    Pure: the same function serves training, scoring and the served model.
    """
    prep = prepare_events(events, users, until=as_of, tz=tz)
    return features_from_prepared(prep, as_of)


def check_features(frame: pd.DataFrame) -> None:
    """Raise ValueError unless `frame` has exactly the spec's columns in spec order (plus optional extras after)."""
    names = feature_names()
    got = [c for c in frame.columns if c in set(names)]
    if got != names:
        missing = [n for n in names if n not in frame.columns]
        raise ValueError(f"features: expected the spec's {len(names)} columns in order; missing {missing[:5]}"
                         if missing else "features: columns are not in spec order")
