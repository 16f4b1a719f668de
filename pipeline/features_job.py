"""`linerisk features`: validated events -> point-in-time features (optionally a labelled panel).

All I/O lives here; the computation is features.compute / features.labels. Bad rows go to
`<out stem>.quarantine.parquet` with their rule; unusable input exits 2 with one line. With
`--scheduler` each partition of users is validated and featurised on a Dask worker by the same
`features_frame`, into a dataset of part files (rows as in one process, partition by partition).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import click
import pandas as pd
import pyarrow.parquet as pq
from tqdm import tqdm

from linerisk.data.schema import NO_ROWS, InputError, RowCount
from linerisk.features.compute import features_from_prepared, prepare_events, to_utc_timestamp
from linerisk.features.labels import default_snapshots, panel_block
from linerisk.features.spec import FEATURES, TARGETS, feature_names, spec_hash
from linerisk.pipeline.cluster import Runner, concat_parts, part_name, runner_for, scheduler_option, staged
from linerisk.pipeline.config import timezone_option
from linerisk.pipeline.io import (EventSource, quarantine_path_for, read_events, read_users, users_path_for,
                                  write_quarantine, write_table)
from linerisk.pipeline.location import LOCATION, Location, has_glob, location, open_read
from linerisk.pipeline.partitions import Partition, global_candidates, partitions, read_partition


def describe_spec(as_json: bool = False) -> str:
    """The feature spec as a readable table (or JSON): name, family, window, directions per target, actionable,
    texts (and, in JSON, the recovery levers that move each feature)."""
    rows = [{"name": f.name, "family": f.family, "window": f.window, "anchor": f.anchor, "aggregation": f.aggregation,
             "source": f.source, "targets": list(f.targets), "direction": f.direction,
             "restore_direction": f.restore_direction, "actionable": f.actionable,
             "text_en": f.text_en, "text_zh": f.text_zh, "none_en": f.none_en, "none_zh": f.none_zh,
             "levers": [lever.action for lever in f.levers],
             "restore_levers": [lever.action for lever in f.restore_levers]} for f in FEATURES]
    if as_json:
        return json.dumps({"spec_hash": {t: spec_hash(t) for t in TARGETS}, "features": rows}, ensure_ascii=False,
                          indent=2)
    width = max(len(r["name"]) for r in rows)
    lines = [f"{'name':<{width}}  {'family':<16} {'window':>6}  {'restrict':>8}  {'restore':>7}  {'act':<3}  "
             "text (en / zh)"]
    for r in rows:
        window = "all" if r["window"] is None else f"{r['window']}d"
        window += "" if r["anchor"] == "as_of" else ("<R" if r["anchor"] == "restricted" else ">R")
        dirs = [f"{r[key]:>+{w}d}" if t in r["targets"] else f"{'-':>{w}}"
                for t, key, w in (("restrict", "direction", 8), ("restore", "restore_direction", 7))]
        lines.append(f"{r['name']:<{width}}  {r['family']:<16} {window:>6}  {dirs[0]}  {dirs[1]}  "
                     f"{'yes' if r['actionable'] else 'no':<3}  {r['text_en']} / {r['text_zh']}")
    lines.append(f"{len(rows)} features ({', '.join(f'{t}: {len(feature_names(t))}' for t in TARGETS)}); "
                 "window <R ends at the restriction, >R starts no earlier than it; spec hash "
                 + ", ".join(f"{t} {spec_hash(t)[:12]}" for t in TARGETS))
    return "\n".join(lines)


def _parse_as_of(values: tuple[str, ...], tz: str) -> list[pd.Timestamp] | str:
    if values == ("auto",):
        return "auto"
    try:
        return [to_utc_timestamp(v, tz) for v in values]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--as-of") from None


@click.command("features")
@click.option("--events", "events_path", type=LOCATION,
              help="Events: Parquet file, dataset directory or glob, or CSV; a path or an fsspec URL.")
@click.option("--users", "users_path", type=LOCATION,
              help="Users table (default: users.parquet in an events directory, else beside the events file).")
@click.option("--as-of", "as_of", multiple=True,
              help="Snapshot time (date = midnight in --timezone, or ISO time); repeat for several, or 'auto' with --labels.")
@click.option("--labels", is_flag=True,
              help="Add the label and keep the target's population (restrict: active lines; restore: restricted).")
@click.option("--target", type=click.Choice(TARGETS), default="restrict", show_default=True,
              help="With --labels: which model's panel (its features, population and label).")
@click.option("--horizon-days", default=90, show_default=True, type=click.IntRange(min=1), help="Label horizon.")
@click.option("--out", "out", type=LOCATION, help="Output Parquet (or .csv) file: a path or an fsspec URL.")
@timezone_option
@click.option("--describe", is_flag=True, help="Print the feature spec and exit.")
@click.option("--json", "as_json", is_flag=True, help="With --describe: print JSON.")
@click.option("--chunk-users", default=100_000, show_default=True, type=click.IntRange(min=1),
              help="With --scheduler: users per partition.")
@click.option("--single-file", is_flag=True,
              help="With --scheduler: one --out file instead of a dataset directory of part files.")
@scheduler_option
def command(events_path: Location | None, users_path: Location | None, as_of: tuple[str, ...], labels: bool, target: str,
            horizon_days: int, out: Location | None, tz: str, describe: bool, as_json: bool, chunk_users: int,
            single_file: bool, scheduler: str | None) -> None:
    """Build point-in-time features (events strictly before --as-of), optionally with labels."""
    if describe:
        click.echo(describe_spec(as_json))
        return
    for name, value in (("--events", events_path), ("--as-of", as_of), ("--out", out)):
        if not value:
            raise click.UsageError(f"{name} is required (or use --describe)")
    snapshots = _parse_as_of(as_of, tz)
    if snapshots == "auto" and not labels:
        raise click.UsageError("--as-of auto needs --labels")

    if not has_glob(events_path) and not events_path.exists():
        raise InputError(f"events: {events_path} does not exist")
    users = read_users(users_path or users_path_for(events_path))
    if scheduler:
        if target != "restrict":
            raise click.UsageError("--scheduler builds the restriction features (--target restrict)")
        if snapshots == "auto":
            raise click.UsageError("--as-of auto reads the whole log at once; give the dates with --scheduler")
        with runner_for(scheduler) as runner:
            built = features_distributed(events_path, users, snapshots, labels, horizon_days, out, runner,
                                         chunk_users, single_file, tz)
        click.echo(built.rows_count.summary(), err=True)
        click.echo(built.summary(labels), err=True)
        return
    validated = read_events(events_path, users, tz)
    events = validated.good
    if events.empty:
        raise InputError(f"events: {events_path} has no usable rows ({validated.account(0, 0).summary()})")

    if snapshots == "auto":
        snapshots = default_snapshots(events, horizon_days=horizon_days, tz=tz)
        if not snapshots:
            raise InputError(f"events: {events_path} spans too little time for a {horizon_days}-day horizon")
    frame, consumed = features_frame(events, users, snapshots, labels, horizon_days, tz, progress=True, target=target)
    count = validated.account(*consumed)
    click.echo(count.summary(), err=True)
    count.check()

    write_table(frame.reset_index(), out)
    quarantine = quarantine_path_for(out)
    write_quarantine(validated.quarantined, quarantine)
    built = Built(out, len(frame), int(frame["label"].sum()) if labels else 0, len(validated.quarantined),
                  target=target)
    click.echo(built.summary(labels), err=True)


def features_frame(events: pd.DataFrame, users: pd.DataFrame, snapshots: list[pd.Timestamp], labels: bool,
                   horizon_days: int, tz: str = "UTC", progress: bool = False, target: str = "restrict"
                   ) -> tuple[pd.DataFrame, tuple[int, int]]:
    """Features of `users` at each snapshot (stacked), or the labelled panel of the target's lines; and
    (rows the features consumed, rows at or after the cut) for the row count."""
    def bar(items, desc):
        return tqdm(items, desc=desc, unit="snapshot", disable=None if progress else True)

    if labels:
        prep = prepare_events(events, users, sort_by_day=True, tz=tz)  # prepared once for every snapshot
        frame = pd.concat([panel_block(prep, t, horizon_days, target) for t in bar(snapshots, "panel")])
        # labels read the horizon; the restoration panel's survival columns read the whole log
        cut = None if target == "restore" else max(snapshots) + pd.Timedelta(days=horizon_days)
    elif len(snapshots) == 1:
        prep = prepare_events(events, users, until=snapshots[0], tz=tz)
        frame, cut = features_from_prepared(prep, snapshots[0]), None
    else:
        prep = prepare_events(events, users, sort_by_day=True, tz=tz)
        frame = pd.concat([features_from_prepared(prep, t) for t in bar(snapshots, "features")])
        cut = max(snapshots)
    return frame, prep.consumed(cut)


@dataclass
class Built:
    """What a features run wrote: rows, positives (with labels), quarantined rows and the row count."""

    out: Location
    rows: int = 0
    positives: int = 0
    quarantined: int = 0
    rows_count: RowCount = NO_ROWS
    target: str = "restrict"

    def summary(self, labels: bool) -> str:
        what = f"{self.rows:,} rows x {len(feature_names(self.target) if labels else FEATURES)} features"
        if labels:
            what += f", positive rate {self.positives / max(self.rows, 1):.1%}"
        return f"wrote {self.out} ({what}); quarantine {quarantine_path_for(self.out)} ({self.quarantined:,} rows)"


def features_part_file(part: Partition, source: EventSource, snapshots: list[pd.Timestamp], labels: bool,
                       horizon_days: int, staging: Location, fmt: str = "parquet", tz: str = "UTC"
                       ) -> tuple[Built, pd.DataFrame]:
    """One partition's features (the same `features_frame`) written atomically as its part file (on a worker)."""
    events, checked = read_partition(part, source, tz)
    frame, consumed = features_frame(events, part.users, snapshots, labels, horizon_days, tz)
    write_table(frame.reset_index(), staging / part_name(part.index, f".{fmt}"), fmt)
    built = Built(staging, len(frame), int(frame["label"].sum()) if labels else 0, len(checked.quarantined),
                  checked.account(*consumed))
    return built, checked.quarantined


def features_distributed(events_path: Location, users: pd.DataFrame, snapshots: list[pd.Timestamp], labels: bool,
                         horizon_days: int, out: Location, runner: Runner, chunk_users: int = 100_000,
                         single_file: bool = False, tz: str = "UTC") -> Built:
    """Features per partition of users on the runner's workers: a dataset of part files at `out`
    (one file with `single_file`), the quarantine of every partition merged beside it and the row
    count summed over the partitions (checked as a whole: a candidate row is read globally, used locally)."""
    source = EventSource(events_path)
    users = users.sort_values("user_id", kind="stable", ignore_index=True)
    candidates = global_candidates(source, users, runner, tz)
    built = Built(out, rows_count=candidates.rows())
    quarantined = []
    if candidates.checked is not None:
        built.quarantined = len(candidates.checked.quarantined)
        quarantined.append(candidates.checked.quarantined)
    parts = list(partitions(users, chunk_users, candidates))
    fmt = "csv" if location(out).suffix == ".csv" else "parquet"
    with staged(out, in_place=not single_file) as staging:
        for part, q in runner.map(features_part_file, parts, source, snapshots, labels, horizon_days, staging.path,
                                  fmt, tz):
            built.rows += part.rows
            built.positives += part.positives
            built.quarantined += part.quarantined
            built.rows_count += part.rows_count
            quarantined.append(q)
        if built.rows_count.used == 0 and built.rows_count.future == 0:
            raise InputError(f"events: {events_path} has no usable rows ({built.rows_count.summary()})")
        built.rows_count.check()
        write_quarantine(pd.concat(quarantined, ignore_index=True), quarantine_path_for(out))
        names = [part_name(p.index, f".{fmt}") for p in parts]
        if single_file:
            schema = None
            if fmt == "parquet":
                with open_read(staging.path / names[0]) as fh:
                    schema = pq.read_schema(fh)
            concat_parts([staging.path / n for n in names], out, fmt, schema)
        else:
            staging.commit(names)
    return built
