"""`linerisk score`: events + as_of -> one row per active user: probability, band, top-3 reasons.

Wiring and I/O only: validation is data.schema, features are features.compute.build_features
(the training function), scoring and reasons are models.scoring.Scorer, drift is models.drift.

Bounded memory: users are taken in chunks of `--chunk-users` (sorted by user_id) and only the
events of one chunk are read at a time (a filtered Parquet scan: with events written in user
order, as `linerisk simulate` does, row-group statistics make that one pass over the file).
Event ids that may repeat across chunks are found first by a hash over the event_id column and
validated together, so duplicate detection is global. Output goes to `.<name>.partial` beside
`--out` and is renamed into place at the end: a killed run leaves no output file, and a re-run
overwrites the partial file and writes the same bytes as an uninterrupted run.
"""
from __future__ import annotations

import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import click
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from tqdm import tqdm

from linerisk.data.schema import validate_events
from linerisk.features.compute import to_utc_timestamp
from linerisk.features.labels import active_features
from linerisk.models import drift
from linerisk.models.scoring import BAND_NAMES, reason_columns
from linerisk.pipeline.cluster import Runner, part_name, runner_for, scheduler_option, staged
from linerisk.pipeline.io import (EventSource, atomic_path, load_model_package, quarantine_path_for, read_users,
                                  users_path_for, write_json, write_quarantine)

DEFAULT_CHUNK_USERS = 100_000
SCORE_COLUMNS = ["user_id", "as_of", "probability", "band", *reason_columns(), "model_name", "model_version"]


def drift_path_for(out: str | Path) -> Path:
    """Where the batch's drift counts go: `<out stem>.drift.json` beside the scores."""
    out = Path(out)
    return out.with_name(f"{out.stem}.drift.json")


def partial_path_for(out: str | Path) -> Path:
    """The in-progress file: `.<name>.partial` beside the output (overwritten by the next run)."""
    out = Path(out)
    return out.with_name(f".{out.name}.partial")


# ---------------------------------------------------------------------------- reading events by user range

def _user_ranges(user_ids: pd.Series, chunk_users: int) -> Iterator[tuple[int, int, ds.Expression | None]]:
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


# ---------------------------------------------------------------------------- one partition

@dataclass(frozen=True)
class Partition:
    """A range of the sorted users, the event filter that covers exactly them, and the good rows of
    the globally validated duplicate candidates that belong to them (None when there are none)."""

    index: int
    users: pd.DataFrame
    where: ds.Expression | None
    extra: pd.DataFrame | None = None


@dataclass
class PartScores:
    """What scoring one partition gives: its scores (None once written to a part file) and counts."""

    scores: pd.DataFrame | None
    rows_read: int
    quarantined: pd.DataFrame
    users_scored: int = 0
    bands: dict[str, int] = field(default_factory=dict)
    counts: dict[str, Any] | None = None


def partitions(users: pd.DataFrame, chunk_users: int, exclude: ds.Expression | None = None,
               special_good: pd.DataFrame | None = None) -> Iterator[Partition]:
    """The sorted `users` in ranges of about `chunk_users`; events of ids decided globally are excluded
    from every filter and handed to their user's partition instead."""
    for i, (lo, hi, where) in enumerate(_user_ranges(users["user_id"], chunk_users)):
        part_users = users.iloc[lo:hi]
        where = exclude if where is None else (where if exclude is None else where & exclude)
        extra = None
        if special_good is not None:
            extra = special_good[special_good["user_id"].isin(part_users["user_id"])]
        yield Partition(i, part_users, where, extra)


def score_partition(part: Partition, source: EventSource, as_of: pd.Timestamp, package,
                    pause: float = 0.0) -> PartScores:
    """Validate -> features -> score one partition: the one function both the single-process and the
    cluster path run, so their rows are the same."""
    checked = validate_events(source.read(part.where), part.users)
    events = checked.good
    if part.extra is not None and len(part.extra):
        events = pd.concat([events, part.extra], ignore_index=True)
    features = active_features(events, as_of, part.users).reset_index()
    del events
    result = PartScores(None, checked.n_read, checked.quarantined)
    if len(features):
        scores = package.scorer.score(features)
        scores["model_name"], scores["model_version"] = package.name, package.version
        result.scores = scores[SCORE_COLUMNS]
        result.users_scored = len(scores)
        result.bands = {band: int(n) for band, n in scores["band"].value_counts().items()}
        result.counts = drift.batch_counts(features, scores["probability"].to_numpy(), package.reference)
    if pause:
        time.sleep(pause)
    return result


def score_part_file(part: Partition, source: EventSource, as_of: pd.Timestamp, package, staging: Path,
                    fmt: str, schema: pa.Schema, pause: float = 0.0) -> PartScores:
    """`score_partition`, then its scores written atomically as the partition's part file (on a worker)."""
    result = score_partition(part, source, as_of, package, pause)
    frame = result.scores if result.scores is not None else pd.DataFrame(columns=SCORE_COLUMNS)
    with atomic_path(staging / part_name(part.index, f".{fmt}")) as tmp:
        writer = _Writer(tmp, fmt, schema)
        try:
            writer.write(frame)
        finally:
            writer.close()
    result.scores = None
    return result


# ---------------------------------------------------------------------------- the run

@dataclass
class ScoreRun:
    """Counts of one scoring run (returned to tests, printed as the summary)."""

    out: Path
    users_scored: int = 0
    rows_read: int = 0
    rows_used: int = 0
    quarantined: list[pd.DataFrame] = field(default_factory=list)
    bands: dict[str, int] = field(default_factory=lambda: dict.fromkeys(BAND_NAMES, 0))
    counts: dict[str, Any] | None = None
    score_psi: float = float("nan")
    seconds: float = 0.0
    partitions: int = 0

    @property
    def rows_quarantined(self) -> int:
        return sum(len(q) for q in self.quarantined)

    def add(self, part: PartScores) -> None:
        """Fold one partition's counts in (drift counts are sums, so the merged PSI is the global one)."""
        self.partitions += 1
        self.rows_read += part.rows_read
        self.quarantined.append(part.quarantined)
        self.users_scored += part.users_scored
        for band, n in part.bands.items():
            self.bands[band] += n
        if part.counts is not None:
            self.counts = drift.merge_counts(self.counts, part.counts)

    def summary(self) -> str:
        bands = ", ".join(f"{b} {n:,}" for b, n in self.bands.items())
        return (f"scored {self.users_scored:,} active users in {self.seconds:.1f} s "
                f"({self.users_scored / max(self.seconds, 1e-9):,.0f} users/s)\n"
                f"rows read {self.rows_read:,} = used {self.rows_used:,} + quarantined {self.rows_quarantined:,}\n"
                f"bands: {bands}\n"
                f"score PSI vs training reference: {self.score_psi:.4f} ({drift.psi_band(self.score_psi)})\n"
                f"wrote {self.out}")


def _arrow_schema(user_id_type: pa.DataType) -> pa.Schema:
    types = {"user_id": user_id_type, "as_of": pa.timestamp("us", tz="UTC"), "probability": pa.float64()}
    return pa.schema([(c, types.get(c, pa.float64() if c.endswith("_contribution") else pa.string()))
                      for c in SCORE_COLUMNS])


class _Writer:
    """Appends chunks to the partial file as Parquet row groups or CSV lines."""

    def __init__(self, path: Path, fmt: str, schema: pa.Schema):
        self.path, self.fmt, self.schema = path, fmt, schema
        self.parquet = pq.ParquetWriter(path, schema) if fmt == "parquet" else None
        self.csv = open(path, "w", encoding="utf-8", newline="") if fmt == "csv" else None
        self.header = True

    def write(self, frame: pd.DataFrame) -> None:
        if self.parquet is not None:
            self.parquet.write_table(pa.Table.from_pandas(frame, schema=self.schema, preserve_index=False))
        else:
            frame.to_csv(self.csv, header=self.header, index=False)
            self.header = False

    def close(self) -> None:
        if self.parquet is not None:
            self.parquet.close()
        if self.csv is not None:
            self.csv.close()


def concat_parts(parts: list[Path], out: Path, fmt: str, schema: pa.Schema) -> None:
    """Part files, in order, into one file written atomically: Parquet row groups, or CSV lines under one header."""
    with atomic_path(out) as tmp:
        if fmt == "parquet":
            with pq.ParquetWriter(tmp, schema) as writer:
                for part in parts:
                    writer.write_table(pq.read_table(part, schema=schema))
            return
        with open(tmp, "wb") as dest:
            for i, part in enumerate(parts):
                with open(part, "rb") as src:
                    if i:
                        src.readline()  # each part repeats the header
                    shutil.copyfileobj(src, dest)


def _global_candidates(source: EventSource, users: pd.DataFrame, run: ScoreRun, runner: Runner
                       ) -> tuple[ds.Expression | None, pd.DataFrame | None]:
    """Rows whose event_id may repeat anywhere in the file, validated together (duplicates are global):
    the filter that excludes them from the partitions, and their good rows."""
    special = source.duplicate_candidates(runner)
    if not special.num_rows:
        return None, None
    ids = special.column("event_id").drop_null().unique()
    checked = validate_events(special.to_pandas(), users)
    run.add(PartScores(None, checked.n_read, checked.quarantined))
    run.partitions -= 1  # not a partition of users
    return ~ds.field("event_id").isin(ids), checked.good


def _finish(run: ScoreRun, package, as_of: pd.Timestamp, out: Path) -> None:
    """Accounting, the merged quarantine, the drift counts and the global score PSI (before the output is renamed in)."""
    run.rows_used = run.rows_read - run.rows_quarantined
    quarantined = (pd.concat(run.quarantined, ignore_index=True) if run.rows_quarantined
                   else run.quarantined[0].iloc[:0] if run.quarantined else pd.DataFrame(columns=["rule"]))
    write_quarantine(quarantined, quarantine_path_for(out))
    reference = package.reference
    run.counts = run.counts or drift.batch_counts(None, np.zeros(0), reference)
    if reference.get("score") and run.counts.get("score", {}).get("n"):
        run.score_psi = drift.entry_psi(reference["score"], run.counts["score"])
    write_json({"model_name": package.name, "model_version": package.version, "as_of": str(as_of),
                "users_scored": run.users_scored, **run.counts}, drift_path_for(out))


def score_events(events_path: Path, users_path: Path | None, as_of: pd.Timestamp, model_ref: str, out: Path,
                 fmt: str = "parquet", chunk_users: int = DEFAULT_CHUNK_USERS, progress: bool = True,
                 pause_after_chunk: float = 0.0, runner: Runner | None = None, single_file: bool = False) -> ScoreRun:
    """Score every user whose personal line is active at `as_of`; write `out`, its quarantine and drift counts.

    With a distributed `runner` each partition is scored on a worker into a part file and `out` is
    a dataset directory of them (one file with `single_file`); the rows are the same either way."""
    started = time.perf_counter()
    runner = runner or Runner()
    package = load_model_package(model_ref)
    source = EventSource(events_path)
    users = read_users(users_path or users_path_for(events_path))
    users = users.sort_values("user_id", kind="stable", ignore_index=True)
    run = ScoreRun(out)
    exclude, special_good = _global_candidates(source, users, run, runner)
    parts = partitions(users, chunk_users, exclude, special_good)
    schema = _arrow_schema(pa.Table.from_pandas(users[["user_id"]], preserve_index=False).schema.field("user_id").type)
    bar = tqdm(total=len(users), unit="user", desc="score", disable=None if progress else True)
    with bar:
        if runner.distributed:
            _score_distributed(run, parts, source, as_of, package, out, fmt, schema, runner, single_file,
                               pause_after_chunk, bar)
        else:
            _score_here(run, parts, source, as_of, package, out, fmt, schema, pause_after_chunk, bar)
    run.seconds = time.perf_counter() - started
    return run


def _score_here(run, parts, source, as_of, package, out, fmt, schema, pause, bar) -> None:
    """One process: partitions one after another, appended to one partial file renamed into place at the end."""
    partial = partial_path_for(out)
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.unlink(missing_ok=True)
    writer = _Writer(partial, fmt, schema)
    done = False
    try:
        for part in parts:
            result = score_partition(part, source, as_of, package, pause)
            if result.scores is not None:
                writer.write(result.scores)
            run.add(result)
            bar.update(len(part.users))
        writer.close()
        _finish(run, package, as_of, out)
        os.replace(partial, out)
        done = True
    finally:
        if not done:
            writer.close()
            partial.unlink(missing_ok=True)


def _score_distributed(run, parts, source, as_of, package, out, fmt, schema, runner, single_file, pause, bar) -> None:
    """On the cluster: one task per partition writes its part file into a staging directory, which
    becomes `out` (or is streamed into the single file `out`) once every part is there."""
    parts = list(parts)
    sizes = [len(p.users) for p in parts]
    with staged(out) as staging:
        shared = runner.share(package)
        results = runner.map(score_part_file, parts, source, as_of, shared, staging.path, fmt, schema, pause)
        for size, result in zip(sizes, results):
            run.add(result)
            bar.update(size)
        names = [part_name(p.index, f".{fmt}") for p in parts]
        _finish(run, package, as_of, out)
        if single_file:
            concat_parts([staging.path / n for n in names], out, fmt, schema)
        else:
            staging.commit(names)


@click.command("score")
@click.option("--model", "model_ref", default="models:/linerisk@champion", show_default=True,
              help="Registered model: name@alias or name/version (optionally models:/...).")
@click.option("--events", "events_path", required=True, type=click.Path(path_type=Path),
              help="Events: Parquet file/dir or CSV (the events contract).")
@click.option("--users", "users_path", type=click.Path(path_type=Path),
              help="Users table (default: users.parquet beside the events).")
@click.option("--as-of", "as_of", required=True, help="Score time (UTC date or ISO time): events strictly before it.")
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Scores file; also writes <stem>.quarantine.parquet and <stem>.drift.json beside it.")
@click.option("--chunk-users", default=DEFAULT_CHUNK_USERS, show_default=True, type=click.IntRange(min=1),
              help="Users per chunk (bounds memory; the same value gives the same bytes).")
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv"]), help="Output format [default: from --out suffix].")
@click.option("--pause-after-chunk", type=float, default=0.0, hidden=True,
              help="Sleep this many seconds after each chunk (to test interrupted runs).")
@click.option("--single-file", is_flag=True,
              help="With --scheduler: one --out file instead of a dataset directory of part files.")
@scheduler_option
def command(model_ref: str, events_path: Path, users_path: Path | None, as_of: str, out: Path, chunk_users: int,
            fmt: str | None, pause_after_chunk: float, single_file: bool, scheduler: str | None) -> ScoreRun:
    """Score every user whose personal line is active at --as-of: calibrated probability, band and the
    top-3 reasons (family, code, text in English and Chinese, SHAP log-odds), from the registered model."""
    try:
        ts = to_utc_timestamp(as_of)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--as-of") from None
    fmt = fmt or ("csv" if out.suffix == ".csv" else "parquet")
    with runner_for(scheduler) as runner:
        run = score_events(events_path, users_path, ts, model_ref, out, fmt, chunk_users,
                           pause_after_chunk=pause_after_chunk, runner=runner, single_file=single_file)
    click.echo(run.summary())
    return run
