"""`linerisk score`: events + as_of -> one row per user with a line (the Scores contract of architecture.md).

Active lines: probability, band and the top-3 reasons from the restriction model; restricted lines:
restore_probability, restore_expected and what holds restoration back from the restoration model
(`--restore-model`; `--active-only` scores the active lines alone). Reading, writing and printing
only: validation is data.schema, the scores of each chunk are models.batch.score_users (what
`linerisk.score` runs), drift counts are models.drift (restriction model, active lines).

Bounded memory: users are taken in partitions of `--chunk-users` (pipeline.partitions: one
filtered scan each, duplicate event ids checked globally first) and `score_partition` runs
validate -> features -> score on one at a time. In one process the partitions are appended to
`.<name>.<pid>-<random>.partial` beside `--out`, renamed into place at the end: a killed run
leaves no output file, a re-run removes the partial files of runs no longer alive and writes the
same bytes as an uninterrupted run, and two runs with the same `--out` never touch each other's
partial file. With `--scheduler` the same function runs per partition on Dask workers, each
writing a part file (pipeline.cluster).
"""
from __future__ import annotations

import glob
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import click
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from linerisk.data.schema import NO_ROWS, InputError, RowCount, Validated
from linerisk.features.compute import to_utc_timestamp
from linerisk.models import drift
from linerisk.models.batch import SCORE_COLUMNS, local_date, score_users
from linerisk.models.scoring import BAND_NAMES
from linerisk.pipeline.cluster import Runner, concat_parts, part_name, runner_for, scheduler_option, staged
from linerisk.pipeline.config import timezone_option
from linerisk.pipeline.io import (EventSource, atomic_path, load_model_package, publish, quarantine_path_for,
                                  read_users, temp_beside, users_path_for, write_json, write_quarantine)
from linerisk.pipeline.location import LOCATION, Location, Url, location
from linerisk.pipeline.partitions import Partition, global_candidates, partitions, read_partition

DEFAULT_CHUNK_USERS = 50_000
DEFAULT_RESTORE_MODEL = "models:/linerisk-restore@champion"


def drift_path_for(out: str | Path | Url) -> Location:
    """Where the batch's drift counts go: `<out stem>.drift.json` beside the scores."""
    out = location(out)
    return out.with_name(f"{out.stem}.drift.json")


def partial_paths(out: str | Path) -> list[Path]:
    """The in-progress files of runs writing `out`: `.<name>.<pid>-<random>.partial` beside it."""
    out = Path(out)
    return sorted(out.parent.glob(f".{glob.escape(out.name)}.*.partial"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def claim_partial(out: str | Path | Url) -> Path:
    """A new partial file for this run; first removes those whose run (by pid in the name) is gone.
    For a Url it is a local temporary file, uploaded whole at the end."""
    out = location(out)
    if isinstance(out, Url):
        return temp_beside(out, f".{out.name}.{os.getpid()}-", ".partial")
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in partial_paths(out):
        pid = stale.name[len(out.name) + 2:].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            stale.unlink(missing_ok=True)
    return temp_beside(out, f".{out.name}.{os.getpid()}-", ".partial")


# ---------------------------------------------------------------------------- one partition

@dataclass
class PartScores:
    """What scoring one partition gives: its scores (None once written to a part file) and counts."""

    scores: pd.DataFrame | None
    rows: RowCount
    quarantined: pd.DataFrame
    users_scored: int = 0
    restricted_scored: int = 0
    red_line: int = 0
    bands: dict[str, int] = field(default_factory=dict)
    counts: dict[str, Any] | None = None


def score_partition(part: Partition, source: EventSource, as_of: pd.Timestamp, package, tz: str = "UTC",
                    pause: float = 0.0, restore=None, read: list[tuple[pd.DataFrame, Validated]] | None = None
                    ) -> PartScores:
    """Validate -> features -> score one partition: the one function both the single-process and the
    cluster path run, so their rows are the same. `read`: a list holding the partition's
    `read_partition` when it was read ahead (taken out of it, so the events go once scored)."""
    events, checked = read.pop() if read else read_partition(part, source, tz)
    tally, quarantined = checked.account(0, 0), checked.quarantined  # `checked` holds the events: let them go
    del checked
    scores, features, consumed = score_users(package, events, part.users, as_of, tz, restore)
    del events
    rows = RowCount(tally.read, *consumed, tally.quarantined)
    result = PartScores(None, rows, quarantined)  # candidates: read globally, used here
    if len(features):
        result.scores = scores
        result.users_scored = len(scores)
        result.restricted_scored = int((scores["line_state"] == "restricted").sum())
        result.red_line = int(scores["red_line"].sum())
        result.bands = {band: int(n) for band, n in scores["band"].value_counts().items()}
        active = (scores["line_state"] == "active").to_numpy()
        if active.any():  # drift is the restriction model's: active lines only
            result.counts = drift.batch_counts(features[active], scores["probability"].to_numpy()[active],
                                               package.reference)
    if pause:
        time.sleep(pause)
    return result


def score_part_file(part: Partition, source: EventSource, as_of: pd.Timestamp, package, staging: Path,
                    fmt: str, schema: pa.Schema, tz: str = "UTC", pause: float = 0.0, restore=None) -> PartScores:
    """`score_partition`, then its scores written atomically as the partition's part file (on a worker)."""
    result = score_partition(part, source, as_of, package, tz, pause, restore)
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
    restricted_scored: int = 0
    red_line: int = 0
    rows: RowCount = NO_ROWS
    quarantined: list[pd.DataFrame] = field(default_factory=list)
    bands: dict[str, int] = field(default_factory=lambda: dict.fromkeys(BAND_NAMES, 0))
    counts: dict[str, Any] | None = None
    score_psi: float = float("nan")
    seconds: float = 0.0
    partitions: int = 0

    def add_candidates(self, checked: Validated) -> None:
        """Count the globally validated duplicate candidates (read once, before any partition; their
        good rows are counted as used by the partition that uses them)."""
        self.rows += checked.account(0, 0)
        self.quarantined.append(checked.quarantined)

    def add(self, part: PartScores) -> None:
        """Fold one partition's counts in (drift counts are sums, so the merged PSI is the global one)."""
        self.partitions += 1
        self.rows += part.rows
        self.quarantined.append(part.quarantined)
        self.users_scored += part.users_scored
        self.restricted_scored += part.restricted_scored
        self.red_line += part.red_line
        for band, n in part.bands.items():
            self.bands[band] += n
        if part.counts is not None:
            self.counts = drift.merge_counts(self.counts, part.counts)

    def summary(self) -> str:
        bands = ", ".join(f"{b} {n:,}" for b, n in self.bands.items())
        return (f"scored {self.users_scored:,} users with a line in {self.seconds:.1f} s "
                f"({self.users_scored / max(self.seconds, 1e-9):,.0f} users/s): "
                f"{self.users_scored - self.restricted_scored:,} active, {self.restricted_scored:,} restricted "
                f"({self.red_line:,} past the red line)\n"
                f"{self.rows.summary()}\n"
                f"bands: {bands}\n"
                f"score PSI vs training reference: {self.score_psi:.4f} ({drift.psi_band(self.score_psi)})\n"
                f"wrote {self.out}")


def _arrow_schema(user_id_type: pa.DataType) -> pa.Schema:
    types = {"user_id": user_id_type, "as_of": pa.timestamp("us", tz="UTC"), "probability": pa.float64(),
             "restore_probability": pa.float64(), "restore_expected": pa.date32(),
             "red_line": pa.bool_()}
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


def _finish(run: ScoreRun, package, as_of: pd.Timestamp, out: Path) -> None:
    """Accounting, the merged quarantine, the drift counts and the global score PSI (before the output is renamed in)."""
    run.rows.check()  # every row read was used, lay at/after as_of, or was quarantined
    quarantined = (pd.concat(run.quarantined, ignore_index=True) if run.rows.n_quarantined
                   else run.quarantined[0].iloc[:0] if run.quarantined else pd.DataFrame(columns=["rule"]))
    write_quarantine(quarantined, quarantine_path_for(out))
    reference = package.reference
    run.counts = run.counts or drift.batch_counts(None, np.zeros(0), reference)
    if reference.get("score") and run.counts.get("score", {}).get("n"):
        run.score_psi = drift.entry_psi(reference["score"], run.counts["score"])
    write_json({"model_name": package.name, "model_version": package.version, "as_of": str(as_of),
                "users_scored": run.users_scored - run.restricted_scored, **run.counts}, drift_path_for(out))


def _load_models(model_ref: str, restore_model_ref: str | None) -> tuple[Any, Any]:
    """The restriction package and (unless None) the restoration package, each sha256- and spec-checked."""
    package = load_model_package(model_ref, expect="restrict")
    try:
        restore = None if restore_model_ref is None else load_model_package(restore_model_ref, expect="restore")
    except InputError as exc:
        raise InputError(f"{exc} (restricted lines need a restoration model: train one with "
                         "`linerisk train --target restore`, or score with --active-only)") from None
    return package, restore


def score_events(events_path: Location, users_path: Location | None, as_of: pd.Timestamp, model_ref: str, out: Location,
                 fmt: str = "parquet", chunk_users: int = DEFAULT_CHUNK_USERS, progress: bool = True,
                 pause_after_chunk: float = 0.0, runner: Runner | None = None, single_file: bool = False,
                 tz: str = "UTC", restore_model_ref: str | None = DEFAULT_RESTORE_MODEL) -> ScoreRun:
    """Score every user with a personal line at `as_of` (active lines only when `restore_model_ref` is None);
    write `out`, its quarantine and the drift counts of the active lines. Naive event times are wall-clock
    times in `tz`, whose local days the feature windows count.

    With a distributed `runner` each partition is scored on a worker into a part file and `out` is
    a dataset directory of them (one file with `single_file`); the rows are the same either way."""
    started = time.perf_counter()
    runner = runner or Runner()
    out = location(out)
    source = EventSource(events_path)
    users = read_users(users_path or users_path_for(events_path))
    users = users.sort_values("user_id", kind="stable", ignore_index=True)
    run = ScoreRun(out)
    if runner.distributed:
        package, restore = _load_models(model_ref, restore_model_ref)
        candidates = global_candidates(source, users, runner, tz)
    else:
        with ThreadPoolExecutor(1) as pool:  # the global event-id pass (Arrow and numba, off the GIL) runs while
            job = pool.submit(global_candidates, source, users, runner, tz)  # the models load
            package, restore = _load_models(model_ref, restore_model_ref)
            candidates = job.result()
    if candidates.checked is not None:
        run.add_candidates(candidates.checked)
    parts = partitions(users, chunk_users, candidates)
    schema = _arrow_schema(pa.Table.from_pandas(users[["user_id"]], preserve_index=False).schema.field("user_id").type)
    bar = tqdm(total=len(users), unit="user", desc="score", disable=None if progress else True)
    with bar:
        if runner.distributed:
            _score_distributed(run, parts, source, as_of, package, restore, out, fmt, schema, runner, single_file,
                               tz, pause_after_chunk, bar)
        else:
            _score_here(run, parts, source, as_of, package, restore, out, fmt, schema, tz, pause_after_chunk, bar)
    run.seconds = time.perf_counter() - started
    return run


def read_ahead(parts: Iterable[Partition], source: EventSource, tz: str
               ) -> Iterator[tuple[Partition, list[tuple[pd.DataFrame, Validated]]]]:
    """Each partition with its `read_partition` (in a list the consumer empties, so nothing here keeps
    the events alive), the next one read on a second thread while this one is scored: the scan and
    much of validation run in Arrow and numpy, off the GIL, so both cores work. At most two
    partitions' events are held at once."""
    with ThreadPoolExecutor(1) as pool:
        it = iter(parts)
        current = next(it, None)
        pending = None if current is None else pool.submit(read_partition, current, source, tz)
        while current is not None:
            following = next(it, None)
            ahead = None if following is None else pool.submit(read_partition, following, source, tz)
            box = [pending.result()]
            pending = None
            yield current, box
            del box
            current, pending = following, ahead


def _score_here(run, parts, source, as_of, package, restore, out, fmt, schema, tz, pause, bar) -> None:
    """One process: partitions one after another, appended to one partial file renamed into place at the end."""
    partial = claim_partial(out)
    writer = _Writer(partial, fmt, schema)
    done = False
    try:
        for part, read in read_ahead(parts, source, tz):
            result = score_partition(part, source, as_of, package, tz, pause, restore, read)
            if result.scores is not None:
                writer.write(result.scores)
            run.add(result)
            bar.update(len(part.users))
        writer.close()
        _finish(run, package, as_of, out)
        publish(partial, out)
        done = True
    finally:
        if not done:
            writer.close()
            partial.unlink(missing_ok=True)


def _score_distributed(run, parts, source, as_of, package, restore, out, fmt, schema, runner, single_file, tz, pause,
                       bar) -> None:
    """On the cluster: one task per partition writes its part file into a staging directory, which
    becomes `out` (or is streamed into the single file `out`) once every part is there."""
    parts = list(parts)
    sizes = [len(p.users) for p in parts]
    with staged(out, in_place=not single_file) as staging:
        shared = runner.share(package)
        shared_restore = None if restore is None else runner.share(restore)
        results = runner.map(score_part_file, parts, source, as_of, shared, staging.path, fmt, schema, tz, pause,
                             shared_restore)
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
@click.option("--restore-model", "restore_model_ref", default=DEFAULT_RESTORE_MODEL, show_default=True,
              help="Registered restoration model, for the restricted lines.")
@click.option("--active-only", is_flag=True, help="Score the active lines only (no restoration model needed).")
@click.option("--events", "events_path", required=True, type=LOCATION,
              help="Events: Parquet file, dataset directory or glob, or CSV (the events contract); a path or an "
                   "fsspec URL (s3://... with s3fs installed).")
@click.option("--users", "users_path", type=LOCATION,
              help="Users table (default: users.parquet in an events directory, else beside the events file).")
@click.option("--as-of", "as_of", required=True,
              help="Score time (date = midnight in --timezone, or ISO time): events strictly before it.")
@timezone_option
@click.option("--out", required=True, type=LOCATION,
              help="Scores file (a path or an fsspec URL) (with --scheduler: a dataset directory of part files); also writes "
                   "<stem>.quarantine.parquet and <stem>.drift.json beside it.")
@click.option("--chunk-users", default=DEFAULT_CHUNK_USERS, show_default=True, type=click.IntRange(min=1),
              help="Users per chunk (bounds memory; the same value gives the same bytes).")
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv"]), help="Output format [default: from --out suffix].")
@click.option("--pause-after-chunk", type=float, default=0.0, hidden=True,
              help="Sleep this many seconds after each chunk (to test interrupted runs).")
@click.option("--single-file", is_flag=True,
              help="With --scheduler: one --out file instead of a dataset directory of part files.")
@scheduler_option
def command(model_ref: str, restore_model_ref: str, active_only: bool, events_path: Location,
            users_path: Location | None, as_of: str, tz: str, out: Location, chunk_users: int, fmt: str | None, pause_after_chunk: float,
            single_file: bool, scheduler: str | None) -> ScoreRun:
    """Score every user with a personal line at --as-of. Active lines: calibrated P(restricted within 90 days),
    band and the top-3 reasons; restricted lines: P(restored within 90 days), the expected date and what holds
    restoration back (family, code, text in English and Chinese, SHAP log-odds); the red line for both."""
    try:
        ts = to_utc_timestamp(as_of, tz)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--as-of") from None
    fmt = fmt or ("csv" if out.suffix == ".csv" else "parquet")
    with runner_for(scheduler) as runner:
        run = score_events(events_path, users_path, ts, model_ref, out, fmt, chunk_users,
                           pause_after_chunk=pause_after_chunk, runner=runner, single_file=single_file, tz=tz,
                           restore_model_ref=None if active_only else restore_model_ref)
    click.echo(run.summary())
    return run
