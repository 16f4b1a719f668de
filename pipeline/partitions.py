"""Users in partitions, each read and validated on its own, with the checks that need the whole file kept global.

The users are sorted and cut into ranges; each range's events are one filtered scan of the
events file (with events written in user order, row-group statistics make that one pass).
An event_id may repeat across ranges, so rows whose id may repeat anywhere are found first
(a hash over the event_id column, see `EventSource.duplicate_candidates`) and validated
together; they are left out of every range's scan and their good rows handed to their
user's range. The same partitions, in the same order, are used in one process and on a
cluster, so both read, validate and quarantine exactly the same rows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import pandas as pd
import pyarrow.dataset as ds

from linerisk.data.schema import NO_ROWS, RowCount, Validated, validate_events
from linerisk.pipeline.cluster import Runner
from linerisk.pipeline.io import EventSource


def user_ranges(user_ids: pd.Series, chunk_users: int) -> Iterator[tuple[int, int, ds.Expression | None]]:
    """(start, stop, filter) per chunk of the sorted users; the filters cover every possible user_id
    (below the first, above the last, null) exactly once, so every event row is read once."""
    n = len(user_ids)
    k = max(1, math.ceil(n / chunk_users))
    bounds = [round(i * n / k) for i in range(k + 1)]
    col = ds.field("user_id")
    ids = user_ids.to_numpy(dtype=object)  # Python scalars for Arrow expressions
    for i in range(k):
        lo, hi = bounds[i], bounds[i + 1]
        last, prev = ids[hi - 1], ids[lo - 1]
        if k == 1:
            where = None
        elif i == 0:
            where = (col <= last) | col.is_null()
        elif i == k - 1:
            where = col > prev
        else:
            where = (col > prev) & (col <= last)
        yield lo, hi, where


@dataclass(frozen=True)
class Partition:
    """A range of the sorted users, the event filter that covers exactly them, and the good rows of
    the globally validated duplicate candidates that belong to them (None when there are none)."""

    index: int
    users: pd.DataFrame
    where: ds.Expression | None
    extra: pd.DataFrame | None = None
    unique_ids: bool = False  # every row whose event_id may repeat is left out (the candidates were checked)


@dataclass(frozen=True)
class Candidates:
    """The globally validated rows whose event_id may repeat: their check, and the filter leaving them out."""

    checked: Validated | None
    exclude: ds.Expression | None

    @property
    def good(self) -> pd.DataFrame | None:
        return None if self.checked is None else self.checked.good

    def rows(self) -> RowCount:
        """Their share of the row count: read here, quarantined here, used by their users' partitions."""
        return NO_ROWS if self.checked is None else self.checked.account(0, 0)


def global_candidates(source: EventSource, users: pd.DataFrame, runner: Runner | None = None,
                      tz: str = "UTC") -> Candidates:
    """Rows whose event_id may repeat anywhere in the file, validated together (duplicates are global)."""
    special = source.duplicate_candidates(runner)
    if not special.num_rows:
        return Candidates(None, None)
    ids = special.column("event_id").drop_null().unique()
    return Candidates(validate_events(special.to_pandas(), users, tz), ~ds.field("event_id").isin(ids))


def partitions(users: pd.DataFrame, chunk_users: int, candidates: Candidates | None = None) -> Iterator[Partition]:
    """The sorted `users` in ranges of about `chunk_users`; the candidates' rows are excluded from
    every filter and their good rows handed to their user's partition instead."""
    exclude = candidates.exclude if candidates else None
    good = candidates.good if candidates else None
    for i, (lo, hi, where) in enumerate(user_ranges(users["user_id"], chunk_users)):
        part_users = users.iloc[lo:hi]
        where = exclude if where is None else (where if exclude is None else where & exclude)
        extra = None if good is None else good[good["user_id"].isin(part_users["user_id"])]
        yield Partition(i, part_users, where, extra, unique_ids=candidates is not None)


def read_partition(part: Partition, source: EventSource, tz: str = "UTC") -> tuple[pd.DataFrame, Validated]:
    """The partition's usable events (its own good rows plus its share of the candidates) and its
    validation (which counts only the rows it read itself). With the candidates checked, its filter
    leaves out every row whose event_id may repeat anywhere, so its ids are unique and the duplicate
    rule (a hash of every id) is not run again."""
    checked = validate_events(source.read(part.where), part.users, tz, unique_ids=part.unique_ids)
    events = checked.good
    if part.extra is not None and len(part.extra):
        events = pd.concat([events, part.extra], ignore_index=True)
    return events, checked
