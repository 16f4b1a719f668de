"""`linerisk explain`: one user's probability, band, reasons (en + zh), what helps, and the path back.

Argument parsing, I/O and printing only: the model comes from the registry (sha256-checked on
load), events are validated like every other job (bad rows quarantined, unusable input exits 2
with one line), and the explanation is `linerisk.explain` (models/view.py).
"""
from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Any

import click
import numpy as np
import pandas as pd
import pyarrow.dataset as ds

from linerisk import api
from linerisk.data.schema import InputError, validate_events
from linerisk.features.compute import prepare_events, to_utc_timestamp
from linerisk.pipeline.config import timezone_option
from linerisk.pipeline.io import EventSource, linerisk_home, load_model_package, read_users, users_path_for, write_quarantine

SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: np.ndarray, top: float = 1.0) -> str:
    """Values in [0, top] as block characters (one per value)."""
    v = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64)) / max(top, 1e-12), 0, 1)
    return "".join(SPARK[int(round(x * (len(SPARK) - 1)))] for x in v)


def _user_key(users: pd.DataFrame, user: str) -> Any:
    """--user converted to the users table's id type."""
    if pd.api.types.is_integer_dtype(users["user_id"].dtype):
        try:
            return int(user)
        except ValueError:
            raise InputError(f"user {user!r} is not in the users table (user ids are integers)") from None
    return str(user)


def render(view: dict[str, Any], model: str = "") -> str:
    """The explanation as terminal text (English and Chinese side by side)."""
    pct = lambda p: f"{100 * p:.1f}%"  # noqa: E731
    lines = [f"user {view['user_id']} at {view['as_of'][:10]}" + (f"  (model {model})" if model else "")]
    since = f" since {view['state_since'][:10]}" if view["state_since"] else ""
    lines.append(f"personal line: {view['line_state']}{since}"
                 + ("  -> recovery view below" if view["line_state"] == "restricted" else ""))
    lines.append(f"probability of a restriction within 90 days: {pct(view['probability'])}  band: {view['band']}")
    lines.append("")
    lines.append("Why (families pushing risk up; SHAP, log-odds):")
    for r in view["reasons"] or [{"rank": "-", "family": "none", "code": "", "text_en": "no family raises the risk",
                                  "text_zh": "无", "contribution": 0.0}]:
        lines.append(f"  {r['rank']}. {r['family']:<16} {r['contribution']:+.2f}  {r['text_en']}")
        lines.append(f"     {'':<16} {'':>5}  {r['text_zh']}   [{r['code']}]")
    lines.append("What is helping you:")
    for r in view["helping"] or [{"rank": "-", "family": "none", "text_en": "-", "text_zh": "-", "contribution": 0.0}]:
        lines.append(f"  {r['rank']}. {r['family']:<16} {r['contribution']:+.2f}  {r['text_en']} / {r['text_zh']}")
    rec, plan = view["recovery"], view["plan"]
    lines.append("")
    lines.append(f"Path back (below {pct(rec['threshold'])}):")
    curve = np.asarray([c["probability"] for c in rec["curve"]])
    if rec["date"]:
        when = "already below" if rec["days"] == 0 else f"on {rec['date'][:10]} ({rec['days']} days)"
        lines.append(f"  with time alone (no new adverse events): {when}")
    else:
        lines.append("  with time alone (no new adverse events): not within a year")
    lines.append(f"  weekly for a year: {sparkline(curve, max(curve.max(), rec['threshold']))}  "
                 f"{pct(curve[0])} -> {pct(curve[-1])}")
    if not plan["steps"]:
        lines.append("  by acting now: nothing to do")
    else:
        lines.append("  by acting now:" + ("" if plan["reached"] else
                                           f" (the best available plan stays at {pct(plan['final_probability'])})"))
        for s in plan["steps"]:
            lines.append(f"    {s['step']}. {s['text_en']}  -> {pct(s['probability'])}")
            lines.append(f"       {s['text_zh']}")
    return "\n".join(lines)


@click.command("explain")
@click.option("--model", "model_ref", default="linerisk@champion", show_default=True,
              help="Registered model: name@alias, name/version or name (= @champion).")
@click.option("--events", "events_path", type=click.Path(path_type=Path), required=True,
              help="Events: Parquet file/dir or CSV.")
@click.option("--users", "users_path", type=click.Path(path_type=Path),
              help="Users table (default: users.parquet in an events directory, else beside the events file).")
@click.option("--as-of", "as_of", required=True, help="Snapshot time (date = midnight in --timezone, or ISO time).")
@timezone_option
@click.option("--user", "user", required=True, help="The user to explain.")
@click.option("--threshold", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Recovery threshold [default: upper edge of the medium band].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def command(model_ref: str, events_path: Path, users_path: Path | None, as_of: str, tz: str, user: str,
            threshold: float | None, as_json: bool) -> None:
    """Explain one user's restriction risk: probability, band, reasons, what helps, and the path back."""
    try:
        ts = to_utc_timestamp(as_of, tz)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--as-of") from None
    package = load_model_package(model_ref)  # first: a wrong model fails before any data is read
    source = EventSource(events_path)
    users = read_users(users_path or users_path_for(events_path))
    key = _user_key(users, user)
    if not (users["user_id"] == key).any():
        raise InputError(f"user {user!r} is not in the users table ({len(users):,} users)")
    # only this user's rows are read and validated (a duplicate id shared with another user goes unseen here)
    validated = validate_events(source.read(ds.field("user_id") == key), users, tz)
    count = validated.account(*prepare_events(validated.good, users[users["user_id"] == key], until=ts,
                                              tz=tz).consumed())
    click.echo(count.summary(), err=True)
    count.check()
    if len(validated.quarantined):
        stamp = f"{dt.datetime.now():%Y%m%d-%H%M%S}"
        path = linerisk_home() / "quarantine" / f"explain-{stamp}.quarantine.parquet"
        write_quarantine(validated.quarantined, path)
        click.echo(f"quarantine: {path} ({len(validated.quarantined):,} rows)", err=True)
    view = api.explain(validated.good, users, ts, key, package, threshold=threshold, tz=tz)
    click.echo(json.dumps(view, ensure_ascii=False, indent=1) if as_json
               else render(view, f"{package.name} v{package.version}"))


def main(argv: list[str] | None = None) -> int:
    """Run `linerisk explain` in-process; the exit status (tests call this)."""
    from linerisk.pipeline.cli import main as cli_main
    return cli_main(["explain", *(argv if argv is not None else sys.argv[1:])])
