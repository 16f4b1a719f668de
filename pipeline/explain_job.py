"""`linerisk explain`: one user's probability, band, reasons (en + zh), what helps, and the path back.

Argument parsing, I/O and printing only: the model comes from the registry (sha256-checked on
load), events are validated like every other job (bad rows quarantined, unusable input exits 2
with one line), and the explanation is `linerisk.explain` (models/view.py), for an active or a restricted line.
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


def render_restricted(view: dict[str, Any], model: str = "") -> str:
    """The restricted line's explanation as terminal text (English and Chinese)."""
    pct = lambda p: f"{100 * p:.1f}%"  # noqa: E731
    lines = [f"user {view['user_id']} at {view['as_of'][:10]}" + (f"  (models {model})" if model else ""),
             f"personal line: restricted since {(view['state_since'] or '?')[:10]}", ""]
    why = view["why_restricted"]
    lines.append(f"Why it was most likely restricted (restriction model as of {why['as_of'][:10]}: "
                 f"{pct(why['probability'])} within 90 days):")
    lines += _reason_lines(why["reasons"], "no family stood out")
    red, rest = view["red_line"], view["restore"]
    lines.append("")
    if red["holds"]:
        lines.append(f"Red line: HOLDS -- {red['text_en']}")
        lines.append(f"          {red['text_zh']}")
    else:
        lines.append("Red line: does not hold (no default over 90 days past due, fewer than two misuse flags)")
    lines.append(f"P(restored within 90 days): {pct(rest['probability_90d'])}   within a year: "
                 f"{pct(rest['probability_365d'])}")
    lines.append("expected: " + (f"by {rest['expected'][:10]} (the curve passes one half)" if rest["expected"]
                                 else "not within a year"))
    curve = np.asarray([c["probability"] for c in rest["curve"]])
    lines.append(f"  monthly for a year: {sparkline(curve)}  {pct(curve[0])} -> {pct(curve[-1])}")
    lines.append("What holds restoration back (SHAP on the restoration log-odds):")
    lines += _reason_lines(view["holding_back"], "nothing stands out")
    lines.append("What would bring it sooner:")
    if red["holds"]:
        lines.append("  nothing: past the red line the line does not come back")
    elif not view["actions"]:
        lines.append("  no action changes the outlook; the line lifts with time, if at all")
    for a in view["actions"]:
        when = f"expected by {a['expected'][:10]}" if a["expected"] else "not within a year"
        lines.append(f"  - {a['text_en']}")
        lines.append(f"    {a['text_zh']}")
        lines.append(f"    -> within 90 days {pct(a['probability_90d'])}, within a year {pct(a['probability_365d'])}, "
                     f"{when}")
    return "\n".join(lines)


def _reason_lines(reasons: list[dict[str, Any]], none_text: str) -> list[str]:
    """Ranked reason families, English then Chinese with the code; `none_text` when there are none."""
    rows = reasons or [{"rank": "-", "family": "none", "code": "", "text_en": none_text, "text_zh": "无",
                        "contribution": 0.0}]
    return [line for r in rows for line in (
        f"  {r['rank']}. {r['family']:<16} {r['contribution']:+.2f}  {r['text_en']}",
        f"     {'':<16} {'':>5}  {r['text_zh']}   [{r['code']}]")]


def render(view: dict[str, Any], model: str = "") -> str:
    """The explanation as terminal text (English and Chinese side by side)."""
    pct = lambda p: f"{100 * p:.1f}%"  # noqa: E731
    lines = [f"user {view['user_id']} at {view['as_of'][:10]}" + (f"  (model {model})" if model else "")]
    since = f" since {view['state_since'][:10]}" if view["state_since"] else ""
    lines.append(f"personal line: {view['line_state']}{since}"
                 + ("  -> recovery view below" if view["line_state"] == "restricted" else ""))
    lines.append(f"probability of a restriction within 90 days: {pct(view['probability'])}  band: {view['band']}")
    lines.append("")
    lines.append("Why (families pushing risk up against your best-achievable self; log-odds):")
    lines += _reason_lines(view["reasons"], "no family raises the risk")
    lines.append("What is helping you (against the average user):")
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
        when = plan["effective_date"]
        lines.append(f"  takes effect from {when} ({plan['effective_days']} days): the platform reviews behaviour "
                     "with a lag, so the plan's risk holds from then; keep the steps up until that date")
        lines.append(f"  自{when}起生效（{plan['effective_days']}天后）：平台复核行为有滞后，上述风险自该日起成立，请坚持到该日")
    return "\n".join(lines)


@click.command("explain")
@click.option("--model", "model_ref", default="linerisk@champion", show_default=True,
              help="Registered model: name@alias, name/version or name (= @champion).")
@click.option("--restore-model", "restore_model_ref", default="linerisk-restore@champion", show_default=True,
              help="Registered restoration model, for a restricted line.")
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
def command(model_ref: str, restore_model_ref: str, events_path: Path, users_path: Path | None, as_of: str, tz: str,
            user: str, threshold: float | None, as_json: bool) -> None:
    """Explain one user's restriction risk: probability, band, reasons, what helps, and the path back."""
    try:
        ts = to_utc_timestamp(as_of, tz)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--as-of") from None
    package = load_model_package(model_ref, expect="restrict")  # first: a wrong model fails before any data is read
    source = EventSource(events_path)
    users = read_users(users_path or users_path_for(events_path))
    key = _user_key(users, user)
    if not (users["user_id"] == key).any():  # before any event is read
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
    # the restoration model is loaded (and checked) only for a restricted line
    view = api.explain(validated, users, ts, key, package, threshold=threshold, restore_model=restore_model_ref,
                       tz=tz)  # checked once, above
    if as_json:
        click.echo(json.dumps(view, ensure_ascii=False, indent=1))
    elif view["line_state"] == "restricted":
        restore = view["restore_model"]
        click.echo(render_restricted(view, f"{package.name} v{package.version}, {restore['name']} v{restore['version']}"))
    else:
        click.echo(render(view, f"{package.name} v{package.version}"))


def main(argv: list[str] | None = None) -> int:
    """Run `linerisk explain` in-process; the exit status (tests call this)."""
    from linerisk.pipeline.cli import main as cli_main
    return cli_main(["explain", *(argv if argv is not None else sys.argv[1:])])
