"""`linerisk score`: events + as_of -> one row per active user: probability, band, top-3 reasons.

Reading, writing and printing only: validation is data.schema, the scores of each chunk are
models.batch.score_users (what `linerisk.score` runs: features of the active lines, the
model's Scorer), drift counts are models.drift.

Bounded memory: users are taken in chunks of `--chunk-users` (sorted by user_id) and only the
events of one chunk are read at a time (a filtered Parquet scan: with events written in user
order, as `linerisk simulate` does, row-group statistics make that one pass over the file).
Event ids that may repeat across chunks are found first by a hash over the event_id column and
validated together, so duplicate detection is global. Output goes to `.<name>.<pid>-<random>.partial`
beside `--out` and is renamed into place at the end: a killed run leaves no output file, a re-run
removes the partial files of runs no longer alive and writes the same bytes as an uninterrupted run,
and two runs with the same `--out` never touch each other's partial file.
"""
from __future__ import annotations

import glob
import math
import os
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

from linerisk.data.schema import NO_ROWS, RowCount, validate_events
from linerisk.features.compute import to_utc_timestamp
from linerisk.models import drift
from linerisk.models.batch import SCORE_COLUMNS, score_users
from linerisk.models.scoring import BAND_NAMES
from linerisk.pipeline.config import timezone_option
from linerisk.pipeline.io import (EventSource, load_model_package, quarantine_path_for, read_users, temp_beside,
                         users_path_for, write_json, write_quarantine)

DEFAULT_CHUNK_USERS = 100_000


def drift_path_for(out: str | Path) -> Path:
    """Where the batch's drift counts go: `<out stem>.drift.json` beside the scores."""
    out = Path(out)
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


def claim_partial(out: str | Path) -> Path:
    """A new partial file for this run; first removes those whose run (by pid in the name) is gone."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in partial_paths(out):
        pid = stale.name[len(out.name) + 2:].split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            stale.unlink(missing_ok=True)
    return temp_beside(out, f".{out.name}.{os.getpid()}-", ".partial")


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


# ---------------------------------------------------------------------------- the run

@dataclass
class ScoreRun:
    """Counts of one scoring run (returned to tests, printed as the summary)."""

    out: Path
    users_scored: int = 0
    rows: RowCount = NO_ROWS
    quarantined: list[pd.DataFrame] = field(default_factory=list)
    bands: dict[str, int] = field(default_factory=lambda: dict.fromkeys(BAND_NAMES, 0))
    counts: dict[str, Any] | None = None
    score_psi: float = float("nan")
    seconds: float = 0.0

    def summary(self) -> str:
        bands = ", ".join(f"{b} {n:,}" for b, n in self.bands.items())
        return (f"scored {self.users_scored:,} active users in {self.seconds:.1f} s "
                f"({self.users_scored / max(self.seconds, 1e-9):,.0f} users/s)\n"
                f"{self.rows.summary()}\n"
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


def score_events(events_path: Path, users_path: Path | None, as_of: pd.Timestamp, model_ref: str, out: Path,
                 fmt: str = "parquet", chunk_users: int = DEFAULT_CHUNK_USERS, progress: bool = True,
                 pause_after_chunk: float = 0.0, tz: str = "UTC") -> ScoreRun:
    """Score every user whose personal line is active at `as_of`; write `out`, its quarantine and drift counts.
    Naive event times are wall-clock times in `tz`, whose local days the feature windows count."""
    started = time.perf_counter()
    package = load_model_package(model_ref)
    source = EventSource(events_path)
    users = read_users(users_path or users_path_for(events_path))
    users = users.sort_values("user_id", kind="stable", ignore_index=True)
    run = ScoreRun(out)

    special = source.duplicate_candidates()  # rows whose event_id may repeat: validated together
    exclude = None
    if special.num_rows:
        ids = special.column("event_id").drop_null().unique()
        exclude = ~ds.field("event_id").isin(ids)
        checked = validate_events(special.to_pandas(), users, tz)
        run.quarantined.append(checked.quarantined)
        run.rows += checked.account(0, 0)  # their good rows are counted with the chunk that uses them
        special_good = checked.good
    del special

    partial = claim_partial(out)
    schema = _arrow_schema(pa.Table.from_pandas(users[["user_id"]], preserve_index=False).schema.field("user_id").type)
    writer = _Writer(partial, fmt, schema)
    reference = package.reference
    done = False
    try:
        with tqdm(total=len(users), unit="user", desc="score", disable=None if progress else True) as bar:
            for lo, hi, where in _user_ranges(users["user_id"], chunk_users):
                chunk_users_frame = users.iloc[lo:hi]
                where = exclude if where is None else (where if exclude is None else where & exclude)
                checked = validate_events(source.read(where), chunk_users_frame, tz)
                run.quarantined.append(checked.quarantined)
                events = checked.good
                if exclude is not None:
                    extra = special_good[special_good["user_id"].isin(chunk_users_frame["user_id"])]
                    events = pd.concat([events, extra], ignore_index=True) if len(extra) else events
                scores, features, consumed = score_users(package, events, chunk_users_frame, as_of, tz)
                run.rows += checked.account(*consumed)  # special rows: read above, used here
                del events
                if len(features):
                    writer.write(scores)
                    for band, n in scores["band"].value_counts().items():
                        run.bands[band] += int(n)
                    run.users_scored += len(scores)
                    run.counts = drift.merge_counts(run.counts, drift.batch_counts(
                        features, scores["probability"].to_numpy(), reference))
                bar.update(hi - lo)
                if pause_after_chunk:
                    time.sleep(pause_after_chunk)
        writer.close()
        run.rows.check()  # every row read was used, lay at/after as_of, or was quarantined
        quarantined = (pd.concat(run.quarantined, ignore_index=True) if run.rows.n_quarantined
                       else run.quarantined[0].iloc[:0] if run.quarantined else pd.DataFrame(columns=["rule"]))
        write_quarantine(quarantined, quarantine_path_for(out))
        run.counts = run.counts or drift.batch_counts(None, np.zeros(0), reference)
        if reference.get("score") and run.counts.get("score", {}).get("n"):
            run.score_psi = drift.entry_psi(reference["score"], run.counts["score"])
        write_json({"model_name": package.name, "model_version": package.version, "as_of": str(as_of),
                    "users_scored": run.users_scored, **run.counts}, drift_path_for(out))
        os.replace(partial, out)
        done = True
    finally:
        if not done:
            writer.close()
            partial.unlink(missing_ok=True)
    run.seconds = time.perf_counter() - started
    return run


@click.command("score")
@click.option("--model", "model_ref", default="models:/linerisk@champion", show_default=True,
              help="Registered model: name@alias or name/version (optionally models:/...).")
@click.option("--events", "events_path", required=True, type=click.Path(path_type=Path),
              help="Events: Parquet file/dir or CSV (the events contract).")
@click.option("--users", "users_path", type=click.Path(path_type=Path),
              help="Users table (default: users.parquet in an events directory, else beside the events file).")
@click.option("--as-of", "as_of", required=True,
              help="Score time (date = midnight in --timezone, or ISO time): events strictly before it.")
@timezone_option
@click.option("--out", required=True, type=click.Path(path_type=Path),
              help="Scores file; also writes <stem>.quarantine.parquet and <stem>.drift.json beside it.")
@click.option("--chunk-users", default=DEFAULT_CHUNK_USERS, show_default=True, type=click.IntRange(min=1),
              help="Users per chunk (bounds memory; the same value gives the same bytes).")
@click.option("--format", "fmt", type=click.Choice(["parquet", "csv"]), help="Output format [default: from --out suffix].")
@click.option("--pause-after-chunk", type=float, default=0.0, hidden=True,
              help="Sleep this many seconds after each chunk (to test interrupted runs).")
def command(model_ref: str, events_path: Path, users_path: Path | None, as_of: str, tz: str, out: Path,
            chunk_users: int, fmt: str | None, pause_after_chunk: float) -> ScoreRun:
    """Score every user whose personal line is active at --as-of: calibrated probability, band and the
    top-3 reasons (family, code, text in English and Chinese, SHAP log-odds), from the registered model."""
    try:
        ts = to_utc_timestamp(as_of, tz)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--as-of") from None
    fmt = fmt or ("csv" if out.suffix == ".csv" else "parquet")
    run = score_events(events_path, users_path, ts, model_ref, out, fmt, chunk_users,
                       pause_after_chunk=pause_after_chunk, tz=tz)
    click.echo(run.summary())
    return run
