"""`linerisk features`: validated events -> point-in-time features (optionally a labelled panel).

All I/O lives here; the computation is features.compute / features.labels. Bad rows go to
`<out stem>.quarantine.parquet` with their rule; unusable input exits 2 with one line.
"""
from __future__ import annotations

import json
from pathlib import Path

import click
import pandas as pd
from tqdm import tqdm

from linerisk.data.schema import InputError
from linerisk.features.compute import features_from_prepared, prepare_events, to_utc_timestamp
from linerisk.features.labels import default_snapshots, panel_block
from linerisk.features.spec import FEATURES, spec_hash
from linerisk.pipeline.config import timezone_option
from linerisk.pipeline.io import quarantine_path_for, read_events, read_users, users_path_for, write_quarantine, write_table


def describe_spec(as_json: bool = False) -> str:
    """The feature spec as a readable table (or JSON): name, family, window, direction, actionable, texts
    (and, in JSON, the recovery levers that move each feature)."""
    rows = [{"name": f.name, "family": f.family, "window": f.window, "aggregation": f.aggregation,
             "source": f.source, "direction": f.direction, "actionable": f.actionable,
             "text_en": f.text_en, "text_zh": f.text_zh, "none_en": f.none_en, "none_zh": f.none_zh,
             "levers": [lever.action for lever in f.levers]} for f in FEATURES]
    if as_json:
        return json.dumps({"spec_hash": spec_hash(), "features": rows}, ensure_ascii=False, indent=2)
    width = max(len(r["name"]) for r in rows)
    lines = [f"{'name':<{width}}  {'family':<16} {'window':>6}  {'dir':>3}  {'act':<3}  text (en / zh)"]
    for r in rows:
        window = "all" if r["window"] is None else f"{r['window']}d"
        lines.append(f"{r['name']:<{width}}  {r['family']:<16} {window:>6}  {r['direction']:>+3d}  "
                     f"{'yes' if r['actionable'] else 'no':<3}  {r['text_en']} / {r['text_zh']}")
    lines.append(f"{len(rows)} features, spec hash {spec_hash()[:12]}")
    return "\n".join(lines)


def _parse_as_of(values: tuple[str, ...], tz: str) -> list[pd.Timestamp] | str:
    if values == ("auto",):
        return "auto"
    try:
        return [to_utc_timestamp(v, tz) for v in values]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--as-of") from None


@click.command("features")
@click.option("--events", "events_path", type=click.Path(path_type=Path), help="Events: Parquet file/dir or CSV.")
@click.option("--users", "users_path", type=click.Path(path_type=Path),
              help="Users table (default: users.parquet in an events directory, else beside the events file).")
@click.option("--as-of", "as_of", multiple=True,
              help="Snapshot time (date = midnight in --timezone, or ISO time); repeat for several, or 'auto' with --labels.")
@click.option("--labels", is_flag=True, help="Add the 90-day label; keep only users whose line is active.")
@click.option("--horizon-days", default=90, show_default=True, type=click.IntRange(min=1), help="Label horizon.")
@click.option("--out", "out", type=click.Path(path_type=Path), help="Output Parquet (or .csv) file.")
@timezone_option
@click.option("--describe", is_flag=True, help="Print the feature spec and exit.")
@click.option("--json", "as_json", is_flag=True, help="With --describe: print JSON.")
def command(events_path: Path | None, users_path: Path | None, as_of: tuple[str, ...], labels: bool,
            horizon_days: int, out: Path | None, tz: str, describe: bool, as_json: bool) -> None:
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

    if not events_path.exists():
        raise InputError(f"events: {events_path} does not exist")
    users = read_users(users_path or users_path_for(events_path))
    validated = read_events(events_path, users, tz)
    events = validated.good
    if events.empty:
        raise InputError(f"events: {events_path} has no usable rows ({validated.account(0, 0).summary()})")

    if snapshots == "auto":
        snapshots = default_snapshots(events, horizon_days=horizon_days, tz=tz)
        if not snapshots:
            raise InputError(f"events: {events_path} spans too little time for a {horizon_days}-day horizon")
    if labels:
        prep = prepare_events(events, users, sort_by_day=True, tz=tz)  # prepared once for every snapshot
        blocks = [panel_block(prep, t, horizon_days)
                  for t in tqdm(snapshots, desc="panel", unit="snapshot", disable=None)]
        frame, cut = pd.concat(blocks), max(snapshots) + pd.Timedelta(days=horizon_days)  # labels read the horizon
    elif len(snapshots) == 1:
        prep = prepare_events(events, users, until=snapshots[0], tz=tz)
        frame, cut = features_from_prepared(prep, snapshots[0]), None
    else:
        prep = prepare_events(events, users, sort_by_day=True, tz=tz)
        frame = pd.concat([features_from_prepared(prep, t)
                           for t in tqdm(snapshots, desc="features", unit="snapshot", disable=None)])
        cut = max(snapshots)
    count = validated.account(*prep.consumed(cut))
    click.echo(count.summary(), err=True)
    count.check()

    write_table(frame.reset_index(), out)
    quarantine = quarantine_path_for(out)
    write_quarantine(validated.quarantined, quarantine)
    what = f"{len(frame):,} rows x {len(FEATURES)} features"
    if labels:
        what += f", positive rate {frame['label'].mean():.1%}"
    click.echo(f"wrote {out} ({what}); quarantine {quarantine} ({len(validated.quarantined):,} rows)", err=True)
