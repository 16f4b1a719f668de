"""Simulate the world for one block of users: events, users and the truth (world.md).

`simulate_chunk` is pure given its parameters: the same seed, parameters and chunk index
give the same tables. Users are simulated in fixed-size chunks, each with its own random
stream, so memory stays bounded and chunks can run on separate cores.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from linerisk.data.world import (CAUSES, CHANNELS, CODE, EVENT_CODES, RESTORE_FACTORS, Behaviour, Draws, Events,
                                 Hazards, Overrides, Restoration, State, appeals, init_state, open_products,
                                 restore_factors, restore_hazard, restrict_and_restore, step)

CHUNK_USERS = 100_000  # fixed: part of what a seed means, so never derived from the machine

EVENTS_SCHEMA = pa.schema([
    ("event_id", pa.string()), ("user_id", pa.int64()), ("event_time", pa.timestamp("us", tz="UTC")),
    ("event_type", pa.string()), ("amount", pa.float64()), ("days_past_due", pa.int32()),
    ("credit_score", pa.int32()),
])


@dataclass(frozen=True)
class WorldParams:
    """Everything that defines a simulated world; the seed and these give identical files."""

    users: int = 50_000
    months: int = 24
    seed: int = 0
    start: str = "2024-01-01"
    oracle_users: int = 10_000
    oracle_futures: int = 8
    warmup_days: int = 180
    snapshot_every_days: int = 90
    horizon_days: int = 90
    behaviour: Behaviour = field(default_factory=Behaviour)
    hazards: Hazards = field(default_factory=Hazards)
    restoration: Restoration = field(default_factory=Restoration)

    @property
    def start_ts(self) -> pd.Timestamp:
        return pd.Timestamp(self.start, tz="UTC")

    @property
    def days(self) -> int:
        return int((self.start_ts + pd.DateOffset(months=self.months) - self.start_ts).days)

    @property
    def snapshot_days(self) -> list[int]:
        """Snapshot days: every `snapshot_every_days` after the warm-up, horizon inside the run."""
        return list(range(self.warmup_days, self.days - self.horizon_days + 1, self.snapshot_every_days))

    def chunks(self) -> list[tuple[int, int, int]]:
        """(chunk index, first user id, number of users) for every chunk."""
        return [(i, lo + 1, min(CHUNK_USERS, self.users - lo))
                for i, lo in enumerate(range(0, self.users, CHUNK_USERS))]


@dataclass
class ChunkTables:
    events: pa.Table
    users: pa.Table
    restrictions: pa.Table
    snapshots: pa.Table
    restorations: pa.Table
    recovery_snapshots: pa.Table
    corruption: pa.Table | None = None  # which event rows were broken on purpose (see data.corrupt)


@dataclass
class World:
    """A simulated world in memory: the contract's events and users and the truth behind them
    (the same tables `linerisk simulate` writes as Parquet files)."""

    events: pd.DataFrame
    users: pd.DataFrame
    truth_restrictions: pd.DataFrame
    truth_snapshots: pd.DataFrame
    truth_restorations: pd.DataFrame
    truth_recovery_snapshots: pd.DataFrame
    truth_corruption: pd.DataFrame | None = None
    params: "WorldParams | None" = None  # what simulated it: re-simulates its full state (validate_plans)


def iter_world(p: "WorldParams", corrupt_rate: float = 0.0, jobs: int = 1,
               on_users: Callable[[float], None] | None = None) -> Iterator[ChunkTables]:
    """Every chunk's tables in chunk order (on `jobs` processes; in-process with per-day progress when
    there is one chunk), corrupted at `corrupt_rate` with rows numbered across chunks.

    `on_users(n)` is called as users are done (fractions of a chunk in the in-process case)."""
    chunks = p.chunks()
    if len(chunks) == 1 or jobs == 1:
        results = (simulate_chunk(p, chunk, first, n,
                                  on_day=None if on_users is None else (lambda d, n=n: on_users(n / p.days)))
                   for chunk, first, n in chunks)
        progress = (0 for _ in chunks)
    else:
        from joblib import Parallel, delayed

        parallel = Parallel(n_jobs=min(jobs, len(chunks)), return_as="generator")
        results = parallel(delayed(simulate_chunk)(p, *c) for c in chunks)
        progress = (n for _, _, n in chunks)
    rows = 0
    for chunk, (tables, done) in enumerate(zip(results, progress)):
        if done and on_users is not None:
            on_users(done)
        if corrupt_rate > 0:
            corrupt_chunk(p, chunk, tables, corrupt_rate, first_row=rows)
        rows += tables.events.num_rows
        yield tables


def corrupt_chunk(p: "WorldParams", chunk: int, tables: ChunkTables, corrupt_rate: float, first_row: int = 0
                  ) -> ChunkTables:
    """Break `corrupt_rate` of the chunk's event rows (its own random stream, so a chunk is corrupted the
    same wherever it runs); `tables.corruption` numbers the rows from `first_row`."""
    from linerisk.data.corrupt import corrupt_events

    rng = np.random.default_rng(np.random.SeedSequence(p.seed, spawn_key=(chunk, 99)))
    frame, truth = corrupt_events(tables.events.to_pandas(), corrupt_rate, rng, first_row=first_row)
    tables.events = pa.Table.from_pandas(frame, preserve_index=False)
    tables.corruption = pa.Table.from_pandas(truth, preserve_index=False)
    return tables


def simulate_world(p: "WorldParams", corrupt_rate: float = 0.0, jobs: int = 1) -> World:
    """The whole world in memory, table for table what `linerisk simulate` writes for `p`."""
    parts = list(iter_world(p, corrupt_rate, jobs))

    def stack(name: str) -> pd.DataFrame:
        return pa.concat_tables([getattr(t, name) for t in parts]).to_pandas()

    corruption = stack("corruption") if corrupt_rate > 0 else None
    return World(stack("events"), stack("users"), stack("restrictions"), stack("snapshots"), stack("restorations"),
                 stack("recovery_snapshots"), corruption, p)


def oracle_probs(s: State, active: np.ndarray, restricted: np.ndarray, day: int, p: WorldParams,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """P(restricted within the horizon) for the active lines and P(restored within the horizon)
    for the restricted ones, given the full state now: means over simulated futures.

    The futures are copies of the sampled users, stacked so all run in one vectorised pass;
    every copy draws its own random numbers, and the main run's stream is untouched. In a
    future nothing fires and no review lifts, so each line keeps its status: a restricted line
    stays so with probability exp(-summed auto-lift hazard) x the product of (1 - each review's chance).
    """
    idx = np.concatenate([active, restricted])
    if len(idx) == 0:
        return np.empty(0), np.empty(0)
    futures = s.take(np.tile(idx, p.oracle_futures))
    restrict, restore = run_futures(futures, day, p.horizon_days, p, rng)
    prob = np.where(np.tile(np.r_[np.ones(len(active), bool), np.zeros(len(restricted), bool)], p.oracle_futures),
                    -np.expm1(-restrict), -np.expm1(-restore))
    prob = prob.reshape(p.oracle_futures, len(idx)).mean(axis=0)
    return prob[:len(active)], prob[len(active):]


def run_futures(futures: State, day: int, days: int, p: WorldParams, rng: np.random.Generator | Draws,
                ov: Overrides | None = None, daily: bool = False, on_day: Callable[[int], None] | None = None
                ) -> tuple[np.ndarray, ...]:
    """Simulate `futures` (copies of users' states) over `days` from `day`, as the oracle does: nothing fires
    and no review lifts; returns each row's summed restriction hazard and summed restoration hazard
    (-log of the chance of staying restricted), after the last day or (`daily`) after each day, (days, n),
    then with `daily` the restriction hazard summed over the days per cause, (n, len(CAUSES)).
    `ov`: behaviour a plan imposes (the intervention mode, data/intervene.py)."""
    restrict, restore = np.zeros(futures.n), np.zeros(futures.n)
    kept, by_cause = [], np.zeros((futures.n, len(CAUSES)))
    for t in range(day, day + days):
        h = step(futures, t, rng, None, p.behaviour, p.hazards, ov)
        restrict += h.sum(axis=1)
        if daily:
            by_cause += h
        due, chance = appeals(futures, t, rng, None, p.restoration, ov)
        restore[due] -= np.log1p(-np.minimum(chance, 1.0 - 1e-12))
        lift, h = restore_hazard(futures, t, p.restoration)
        restore[lift] += h
        if daily:
            kept.append((restrict.copy(), restore.copy()))
        if on_day is not None:
            on_day(t)
    if not daily:
        return restrict, restore
    if not kept:
        return np.empty((0, futures.n)), np.empty((0, futures.n)), by_cause
    return np.stack([k[0] for k in kept]), np.stack([k[1] for k in kept]), by_cause


def states_at(p: WorldParams, day: int, on_day: Callable[[int], None] | None = None) -> Iterator[State]:
    """Each chunk's full state at midnight of `day` (before that day's step), re-simulated from the seed
    exactly as the main run reached it (the oracle's stream is separate, so skipping it changes nothing)."""
    for chunk, first, n in p.chunks():
        s, ev, (rng, _, _) = start_chunk(p, chunk, first, n)
        for t in range(day):
            advance(s, t, p, rng, ev)
            ev.blocks.clear()  # the events are already written; only the state is needed
            if on_day is not None:
                on_day(t)
        yield s


def _event_table(ev: Events, s: State, p: WorldParams, rng: np.random.Generator) -> pa.Table:
    """Turn the accumulated event arrays into the contract's table, sorted by user and time."""
    idx, day, code, amount, dpd, score = ev.columns()
    # Time of day: opens first, restriction decisions last, everything else in between.
    sec = rng.integers(3_600, 79_200, len(idx))
    opens = (code == CODE["pl_open"]) | (code == CODE["bl_open"])
    status = (code == CODE["pl_restricted"]) | (code == CODE["pl_restored"])  # decided at day's end
    sec[opens] = rng.integers(0, 3_600, int(opens.sum()))
    sec[status] = rng.integers(79_200, 86_400, int(status.sum()))
    micros = (p.start_ts.value // 1_000) + (day.astype(np.int64) * 86_400 + sec) * 1_000_000
    order = np.lexsort((code, micros, idx))
    idx, code, micros = idx[order], code[order], micros[order]
    uid = s.user_id[idx]
    first = np.r_[0, np.flatnonzero(np.diff(idx)) + 1]
    seq = np.arange(len(idx)) - np.repeat(first, np.diff(np.r_[first, len(idx)]))
    event_id = pc.binary_join_element_wise(pc.cast(pa.array(uid), pa.string()),
                                           pc.cast(pa.array(seq), pa.string()), "-")
    names = pa.array(np.asarray(EVENT_CODES, dtype=object)[code], pa.string())
    return pa.table({
        "event_id": event_id,
        "user_id": pa.array(uid, pa.int64()),
        "event_time": pa.array(micros, pa.timestamp("us", tz="UTC")),
        "event_type": names,
        "amount": pa.array(amount[order], pa.float64(), from_pandas=True),
        "days_past_due": pa.array(dpd[order], pa.float64(), from_pandas=True).cast(pa.int32()),
        "credit_score": pa.array(score[order], pa.float64(), from_pandas=True).cast(pa.int32()),
    }, schema=EVENTS_SCHEMA)


def _users_table(s: State, p: WorldParams) -> pa.Table:
    signup = (p.start_ts.tz_localize(None).to_datetime64().astype("datetime64[D]")
              + s.signup_day.astype("timedelta64[D]"))
    return pa.table({
        "user_id": pa.array(s.user_id, pa.int64()),
        "signup_date": pa.array(signup, pa.date32()),
        "segment": pa.array(np.where(s.merchant, "merchant", "consumer").astype(object), pa.string()),
    })


def _component_columns(h: np.ndarray) -> dict[str, np.ndarray]:
    return {f"hazard_{c}": h[:, i] for i, c in enumerate(CAUSES)}


def start_chunk(p: WorldParams, chunk: int, first_user: int, n: int
                ) -> tuple[State, Events, tuple[np.random.Generator, ...]]:
    """The chunk's users on day 0 (those who joined before the run have their products) and its
    three random streams: the main run, the oracle's futures, the events' times of day."""
    streams = np.random.SeedSequence(p.seed, spawn_key=(chunk,)).spawn(3)
    rngs = tuple(np.random.default_rng(x) for x in streams)
    s = init_state(np.arange(first_user, first_user + n, dtype=np.int64), p.days, rngs[0], p.behaviour)
    ev = Events()
    open_products(s, -1, ev, at_or_before=True)  # users who joined before the run starts
    return s, ev, rngs


def advance(s: State, day: int, p: WorldParams, rng: np.random.Generator, ev: Events
            ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """One day of the main run: behaviour, appeals, then the day's restrictions and restorations.
    Returns the restriction hazards in force and `restrict_and_restore`'s (fired, cause, restored, channel)."""
    h = step(s, day, rng, ev, p.behaviour, p.hazards)
    reviews = appeals(s, day, rng, ev, p.restoration)
    return h, restrict_and_restore(s, day, rng, ev, reviews, p.restoration)


def simulate_chunk(p: WorldParams, chunk: int, first_user: int, n: int,
                   on_day: Callable[[int], None] | None = None) -> ChunkTables:
    """Simulate users `first_user .. first_user + n - 1` over the whole run."""
    s, ev, (rng, rng_oracle, rng_time) = start_chunk(p, chunk, first_user, n)
    sample_frac = min(1.0, p.oracle_users / max(p.users, 1))
    snapshot_days = set(p.snapshot_days)
    restr: list[tuple[np.ndarray, ...]] = []
    restored: list[tuple[np.ndarray, ...]] = []
    snaps: list[dict[str, np.ndarray]] = []
    recovery: list[dict[str, np.ndarray]] = []
    pending: list[dict] = []

    for day in range(p.days):
        if day in snapshot_days:
            # State at as_of = this midnight: the line was opened on an earlier day; active or restricted.
            sampled = s.pl.opened & (s.sample_u < sample_frac)
            idx, ridx = np.flatnonzero(sampled & ~s.restricted), np.flatnonzero(sampled & s.restricted)
            oracle, restore_oracle = oracle_probs(s, idx, ridx, day, p, rng_oracle)
            pending.append({"day": day, "idx": idx, "path": np.zeros(len(idx)),
                            "oracle": oracle, "comp": s.hazard[idx].copy()})
            recovery.append(_recovery_rows(s, ridx, day, restore_oracle, p))
        h, (fired, cause, back, channel) = advance(s, day, p, rng, ev)
        for snap in pending:
            snap["path"] += h[snap["idx"]].sum(axis=1)
        if len(fired):
            restr.append((fired, np.full(len(fired), day, np.int32), cause, h[fired]))
        if len(back):
            restored.append((back, np.full(len(back), day, np.int32), s.restricted_cause[back], channel,
                             day - s.restricted_day[back]))  # restored lines were not re-restricted today
        for snap in [x for x in pending if day == x["day"] + p.horizon_days - 1]:
            pending.remove(snap)
            snaps.append({"user_id": s.user_id[snap["idx"]],
                          "as_of": np.full(len(snap["idx"]), snap["day"], np.int32),
                          "oracle_prob": snap["oracle"], "path_prob": -np.expm1(-snap["path"]),
                          **_component_columns(snap["comp"])})
        if on_day is not None:
            on_day(day)

    events = _event_table(ev, s, p, rng_time)
    return ChunkTables(events, _users_table(s, p), _restrictions_table(restr, s, events, p),
                       _snapshots_table(snaps, p), _restorations_table(restored, s, events, p),
                       _recovery_table(recovery, s, events, p))


def _recovery_rows(s: State, idx: np.ndarray, day: int, prob: np.ndarray, p: WorldParams) -> dict[str, np.ndarray]:
    """One snapshot's rows of truth_recovery_snapshots: the restricted lines and their true state."""
    factors = restore_factors(s, idx, day, p.restoration)
    return {"user_id": s.user_id[idx], "as_of": np.full(len(idx), day, np.int32),
            "cause": s.restricted_cause[idx], "since_day": s.restricted_day[idx].copy(),
            "red_line": s.red_line[idx].copy(), "restore_oracle_prob": prob,
            **{f"restore_{f}": factors[f] for f in RESTORE_FACTORS}}


def _event_days(events: pa.Table, event_type: str, p: WorldParams) -> pd.DataFrame:
    """user_id, day and event_time of every `event_type` event (at most one per user and day)."""
    ev = events.filter(pc.equal(events["event_type"], event_type)).select(["user_id", "event_time"]).to_pandas()
    ev["day"] = ((ev["event_time"] - p.start_ts) // pd.Timedelta(days=1)).astype(np.int32)
    return ev


def _restrictions_table(restr: list, s: State, events: pa.Table, p: WorldParams) -> pa.Table:
    """truth_restrictions: user, the event's time, the drawn cause and every component then."""
    if restr:
        idx, day, cause, comp = (np.concatenate(x) for x in zip(*restr))
    else:
        idx, day, cause, comp = (np.empty(0, np.int64), np.empty(0, np.int32), np.empty(0, np.int64),
                                 np.empty((0, len(CAUSES))))
    truth = pd.DataFrame({"user_id": s.user_id[idx], "day": day, "cause": np.asarray(CAUSES)[cause],
                          **_component_columns(comp)})
    # The event_time recorded for the same restriction (at most one per user and day).
    truth = truth.merge(_event_days(events, "pl_restricted", p), on=["user_id", "day"], how="left",
                        validate="one_to_one")
    truth = truth.sort_values(["user_id", "event_time"], kind="stable")
    cols = ["user_id", "event_time", "cause"] + [f"hazard_{c}" for c in CAUSES]
    return pa.Table.from_pandas(truth[cols], preserve_index=False)


def _snapshots_table(snaps: list[dict], p: WorldParams) -> pa.Table:
    cols = ["user_id", "as_of", "oracle_prob", "path_prob"] + [f"hazard_{c}" for c in CAUSES]
    if not snaps:
        frame = pd.DataFrame({c: pd.Series(dtype=float) for c in cols})
    else:
        frame = pd.DataFrame({c: np.concatenate([x[c] for x in snaps]) for c in cols})
    frame["user_id"] = frame["user_id"].astype(np.int64)
    frame["as_of"] = p.start_ts + pd.to_timedelta(frame["as_of"].astype(np.int64), unit="D")
    frame = frame.sort_values(["as_of", "user_id"], kind="stable")
    return pa.Table.from_pandas(frame, preserve_index=False)


def _restorations_table(restored: list, s: State, events: pa.Table, p: WorldParams) -> pa.Table:
    """truth_restorations: user, the pl_restored event's time, the cause it ends, channel, days restricted."""
    if restored:
        idx, day, cause, channel, days = (np.concatenate(x) for x in zip(*restored))
    else:
        idx, day, cause, channel, days = (np.empty(0, t) for t in (np.int64, np.int32, np.int8, np.int8, np.int32))
    truth = pd.DataFrame({"user_id": s.user_id[idx], "day": day, "cause": np.asarray(CAUSES)[cause.astype(np.intp)],
                          "channel": np.asarray(CHANNELS)[channel.astype(np.intp)],
                          "days_restricted": days.astype(np.int32)})
    truth = truth.merge(_event_days(events, "pl_restored", p), on=["user_id", "day"], how="left",
                        validate="one_to_one").sort_values(["user_id", "event_time"], kind="stable")
    cols = ["user_id", "event_time", "cause", "channel", "days_restricted"]
    return pa.Table.from_pandas(truth[cols], preserve_index=False)


def _recovery_table(rows: list[dict], s: State, events: pa.Table, p: WorldParams) -> pa.Table:
    """truth_recovery_snapshots: restricted lines at each snapshot with restore_oracle_prob and factors."""
    factor_cols = [f"restore_{f}" for f in RESTORE_FACTORS]
    keys = ["user_id", "as_of", "cause", "since_day", "red_line", "restore_oracle_prob"] + factor_cols
    frame = pd.DataFrame({c: np.concatenate([r[c] for r in rows]) if rows else np.empty(0) for c in keys})
    frame["user_id"] = frame["user_id"].astype(np.int64)
    frame["cause"] = np.asarray(CAUSES, dtype=object)[frame["cause"].to_numpy(np.intp)]
    frame["red_line"] = frame["red_line"].astype(bool)
    since = _event_days(events, "pl_restricted", p).rename(columns={"day": "since_day", "event_time": "restricted_since"})
    frame = frame.assign(since_day=frame["since_day"].astype(np.int32)).merge(
        since, on=["user_id", "since_day"], how="left", validate="many_to_one")
    frame["as_of"] = p.start_ts + pd.to_timedelta(frame["as_of"].astype(np.int64), unit="D")
    frame = frame.sort_values(["as_of", "user_id"], kind="stable")
    cols = ["user_id", "as_of", "cause", "restricted_since", "red_line", "restore_oracle_prob"] + factor_cols
    return pa.Table.from_pandas(frame[cols], preserve_index=False)
