"""`linerisk simulate`: write a synthetic world as a dataset directory of the events contract.

Chunks of users run on separate cores; events stream into one Parquet file. The directory
is assembled under a temporary name and renamed into place, so an interrupted run leaves
nothing half-written and can simply be run again.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections import Counter
from pathlib import Path

import click
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from linerisk.data.simulate import WorldParams, iter_world
from linerisk.data.world import CAUSES, CHANNELS
from linerisk.pipeline.config import build, load_toml
from linerisk.pipeline.io import sha256_file, write_json

FILES = ("events", "users", "truth_restrictions", "truth_snapshots", "truth_restorations",
         "truth_recovery_snapshots")


def write_world(p: WorldParams, out: Path, corrupt_rate: float = 0.0, jobs: int = 2,
                progress: bool = True) -> dict:
    """Simulate and write the dataset directory `out`; return the manifest."""
    out = Path(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        manifest = _write(p, tmp, corrupt_rate, jobs, progress)
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            out.rename(old)
            tmp.rename(out)
            shutil.rmtree(old)
        else:
            tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
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
    manifest = {
        "generator": "linerisk simulate",
        "seed": p.seed,
        "parameters": dataclasses.asdict(p),
        "corrupt_rate": corrupt_rate,
        "rows": {f: pq.ParquetFile(tmp / f"{f}.parquet").metadata.num_rows for f in files},
        "restrictions_by_cause": {c: causes.get(c, 0) for c in CAUSES},
        "restorations_by_channel": {c: channels.get(c, 0) for c in CHANNELS},
        "sha256": {f"{f}.parquet": sha256_file(tmp / f"{f}.parquet") for f in files},
    }
    write_json(manifest, tmp / "manifest.json")
    return manifest


@click.command("simulate")
@click.option("--users", type=click.IntRange(min=1), help="Number of users [config: 50000].")
@click.option("--months", type=click.IntRange(min=1), help="Months simulated [config: 24].")
@click.option("--seed", type=int, help="Random seed; same seed and parameters give identical files.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Dataset directory to write (replaced if it exists).")
@click.option("--corrupt-rate", type=click.FloatRange(0, 0.5), default=0.0, show_default=True,
              help="Fraction of event rows turned into bad records (listed in truth_corruption).")
@click.option("--oracle-users", type=click.IntRange(min=0), help="Sampled users per snapshot date for the oracle.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML file overriding the defaults.")
@click.option("--jobs", type=click.IntRange(min=1), default=2, show_default=True, help="Processes (chunks of 100k users).")
def command(users, months, seed, out, corrupt_rate, oracle_users, config_path, jobs):
    """Simulate the behaviour-log world: events, users and the truth behind them."""
    p = build(WorldParams, load_toml(config_path)["simulate"], "simulate", users=users, months=months, seed=seed,
              oracle_users=oracle_users)
    start = time.perf_counter()
    manifest = write_world(p, out, corrupt_rate, jobs)
    secs = time.perf_counter() - start
    causes = ", ".join(f"{c} {n:,}" for c, n in manifest["restrictions_by_cause"].items())
    back = ", ".join(f"{c} {n:,}" for c, n in manifest["restorations_by_channel"].items())
    rows = manifest["rows"]
    click.echo(f"simulated {p.users:,} users, {rows['events']:,} events, "
               f"{rows['truth_restrictions']:,} restrictions ({causes}), "
               f"{rows['truth_restorations']:,} restorations ({back}) in {secs:.1f} s -> {out}")
