"""`linerisk simulate`: write a synthetic world as a dataset directory of the events contract.

Chunks of users run on separate cores; events stream into one Parquet file. The directory
is assembled under a temporary name and renamed into place, so an interrupted run leaves
nothing half-written and can simply be run again. With `--scheduler` each chunk (its own
random stream, so the world does not depend on where it ran) is simulated on a Dask worker
and every table is a dataset directory of part files.
"""
from __future__ import annotations

import dataclasses
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import click
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from linerisk.data.simulate import WorldParams, corrupt_chunk, iter_world, simulate_chunk
from linerisk.data.world import CAUSES, CHANNELS
from linerisk.pipeline.cluster import Runner, Staging, part_name, runner_for, scheduler_option, staged
from linerisk.pipeline.config import build, load_toml
from linerisk.pipeline.io import atomic_path, sha256_file, write_json, written_locally
from linerisk.pipeline.location import LOCATION, Location

FILES = ("events", "users", "truth_restrictions", "truth_snapshots", "truth_restorations",
         "truth_recovery_snapshots")


def write_world(p: WorldParams, out: Location, corrupt_rate: float = 0.0, jobs: int = 2,
                progress: bool = True, runner: Runner | None = None) -> dict:
    """Simulate and write the dataset directory `out`; return the manifest.

    With a distributed `runner` every chunk of users is simulated on a worker and each table is
    a dataset directory of part files (`events.parquet/part-00000.parquet`, ...) holding the same
    rows as one process writes for the same seed."""
    with staged(out) as staging:
        if runner is not None and runner.distributed:
            manifest = _write_distributed(p, staging, corrupt_rate, runner, progress)
        else:
            with written_locally(staging.path) as tmp:
                manifest = _write(p, tmp, corrupt_rate, jobs, progress)
                names = [f.relative_to(tmp).as_posix() for f in tmp.rglob("*") if f.is_file()]
            staging.commit(names)
    return manifest


def _write(p: WorldParams, tmp: Path, corrupt_rate: float, jobs: int, progress: bool) -> dict:
    users, restrictions, snapshots, corruption = [], [], [], []
    restorations, recovery = [], []
    writer = None
    with tqdm(total=p.users, unit="user", desc="simulate", disable=None if progress else True,
              bar_format="{l_bar}{bar}| {n:,.0f}/{total:,} users [{elapsed}<{remaining}]") as bar:
        for tables in iter_world(p, corrupt_rate, jobs, on_users=bar.update):
            events = tables.events
            if tables.corruption is not None:
                corruption.append(tables.corruption)
            if writer is None:
                writer = pq.ParquetWriter(tmp / "events.parquet", events.schema)
            writer.write_table(events, row_group_size=1 << 20)
            users.append(tables.users)
            restrictions.append(tables.restrictions)
            snapshots.append(tables.snapshots)
            restorations.append(tables.restorations)
            recovery.append(tables.recovery_snapshots)
    writer.close()
    pq.write_table(pa.concat_tables(users), tmp / "users.parquet")
    pq.write_table(pa.concat_tables(restrictions), tmp / "truth_restrictions.parquet")
    pq.write_table(pa.concat_tables(snapshots), tmp / "truth_snapshots.parquet")
    pq.write_table(pa.concat_tables(restorations), tmp / "truth_restorations.parquet")
    pq.write_table(pa.concat_tables(recovery), tmp / "truth_recovery_snapshots.parquet")
    files = list(FILES)
    if corruption:
        pq.write_table(pa.concat_tables(corruption), tmp / "truth_corruption.parquet")
        files.append("truth_corruption")
    causes = Counter(pa.concat_tables(restrictions)["cause"].to_pylist())
    channels = Counter(pa.concat_tables(restorations)["channel"].to_pylist())
    rows = {f: pq.ParquetFile(tmp / f"{f}.parquet").metadata.num_rows for f in files}
    sha = {f"{f}.parquet": sha256_file(tmp / f"{f}.parquet") for f in files}
    return _manifest(p, tmp, corrupt_rate, rows, causes, channels, sha)


def _manifest(p: WorldParams, root: Location, corrupt_rate: float, rows: dict[str, int], causes: Counter,
              channels: Counter, sha256: dict[str, str]) -> dict:
    manifest = {
        "generator": "linerisk simulate",
        "seed": p.seed,
        "parameters": dataclasses.asdict(p),
        "corrupt_rate": corrupt_rate,
        "rows": rows,
        "restrictions_by_cause": {c: causes.get(c, 0) for c in CAUSES},
        "restorations_by_channel": {c: channels.get(c, 0) for c in CHANNELS},
        "sha256": sha256,
    }
    write_json(manifest, root / "manifest.json")
    return manifest


@dataclass
class WrittenChunk:
    """What a worker wrote for one chunk: row counts and sha256 per part file, causes, channels, corruption truth."""

    rows: dict[str, int]
    sha256: dict[str, str]
    causes: Counter
    channels: Counter
    corruption: pd.DataFrame | None


def simulate_part(chunk: tuple[int, int, int], p: WorldParams, corrupt_rate: float, staging: Location) -> WrittenChunk:
    """Simulate one chunk of users (the same `simulate_chunk` as one process) and write each table's
    part file atomically (on a worker)."""
    index, first, n = chunk
    tables = simulate_chunk(p, index, first, n)
    corruption = None
    if corrupt_rate > 0:
        corrupt_chunk(p, index, tables, corrupt_rate)  # rows numbered from the chunk's first: offset by the client
        corruption = tables.corruption.to_pandas()
    events = tables.events
    written = WrittenChunk({}, {}, Counter(tables.restrictions["cause"].to_pylist()),
                           Counter(tables.restorations["channel"].to_pylist()), corruption)
    for name, table in zip(FILES, (events, tables.users, tables.restrictions, tables.snapshots, tables.restorations,
                                   tables.recovery_snapshots), strict=True):
        rel = f"{name}.parquet/{part_name(index, '.parquet')}"
        path = staging / rel
        with atomic_path(path) as tmp:
            pq.write_table(table, tmp, row_group_size=1 << 20)
        written.rows[name] = table.num_rows
        written.sha256[rel] = sha256_file(path)
    return written


def _write_distributed(p: WorldParams, staging: Staging, corrupt_rate: float, runner: Runner, progress: bool) -> dict:
    chunks = p.chunks()
    rows, sha, causes, channels, corruption = Counter(), {}, Counter(), Counter(), []
    with tqdm(total=p.users, unit="user", desc="simulate", disable=None if progress else True) as bar:
        for (_, _, n), part in zip(chunks, runner.map(simulate_part, chunks, p, corrupt_rate, staging.path)):
            if part.corruption is not None:
                corruption.append(part.corruption.assign(row=part.corruption["row"] + rows["events"]))
            rows.update(part.rows)
            sha.update(part.sha256)
            causes.update(part.causes)
            channels.update(part.channels)
            bar.update(n)
    names = list(sha)
    if corruption:
        truth = pa.Table.from_pandas(pd.concat(corruption, ignore_index=True), preserve_index=False)
        with atomic_path(staging.path / "truth_corruption.parquet") as tmp:
            pq.write_table(truth, tmp)
        rows["truth_corruption"] = truth.num_rows
        sha["truth_corruption.parquet"] = sha256_file(staging.path / "truth_corruption.parquet")
        names.append("truth_corruption.parquet")
    manifest = _manifest(p, staging.path, corrupt_rate, dict(rows), causes, channels, sha)
    staging.commit([*names, "manifest.json"])
    return manifest




@click.command("simulate")
@click.option("--users", type=click.IntRange(min=1), help="Number of users [config: 50000].")
@click.option("--months", type=click.IntRange(min=1), help="Months simulated [config: 24].")
@click.option("--seed", type=int, help="Random seed; same seed and parameters give identical files.")
@click.option("--out", type=LOCATION, required=True,
              help="Dataset directory to write (replaced if it exists): a path or an fsspec URL.")
@click.option("--corrupt-rate", type=click.FloatRange(0, 0.5), default=0.0, show_default=True,
              help="Fraction of event rows turned into bad records (listed in truth_corruption).")
@click.option("--oracle-users", type=click.IntRange(min=0), help="Sampled users per snapshot date for the oracle.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML file overriding the defaults.")
@click.option("--jobs", type=click.IntRange(min=1), default=2, show_default=True, help="Processes (chunks of 100k users).")
@scheduler_option
def command(users, months, seed, out, corrupt_rate, oracle_users, config_path, jobs, scheduler):
    """Simulate the behaviour-log world: events, users and the truth behind them."""
    p = build(WorldParams, load_toml(config_path)["simulate"], "simulate", users=users, months=months, seed=seed,
              oracle_users=oracle_users)
    start = time.perf_counter()
    with runner_for(scheduler) as runner:
        manifest = write_world(p, out, corrupt_rate, jobs, runner=runner)
    secs = time.perf_counter() - start
    causes = ", ".join(f"{c} {n:,}" for c, n in manifest["restrictions_by_cause"].items())
    back = ", ".join(f"{c} {n:,}" for c, n in manifest["restorations_by_channel"].items())
    rows = manifest["rows"]
    click.echo(f"simulated {p.users:,} users, {rows['events']:,} events, "
               f"{rows['truth_restrictions']:,} restrictions ({causes}), "
               f"{rows['truth_restorations']:,} restorations ({back}) in {secs:.1f} s -> {out}")
