"""The way back for a restricted line: why it was most likely restricted, and what would bring it back sooner.

Why: the restriction model's reasons as of the day the line was restricted (its features from the
events before that day), the same SHAP families `linerisk explain` shows for an active line.

What would bring it sooner: restoration levers, behaviours a user can carry out (repay on time for
90 days, no new credit applications, use the business loan normally and repay it on time, contact
the platform when the likely cause is minor), declared on the features they move (features/spec.py
`restore_levers`, with the days each takes and when it applies) and read from the restoration
model's own spec (models/recover.py `spec_levers`). Each moves the restoration model's features the way
it would once done (only ever towards restoration, by the spec's restore directions) and advances
the line's clock by the time it takes; the credit score is left where it is (it moves through these
behaviours, it is not an action of its own). A line past the red line has no path back: no action.
Pure functions over DataFrames.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from linerisk.features import valuefmt
from linerisk.features.compute import build_features, to_utc_timestamp
from linerisk.features.spec import CONDITION_FEATURES, MINOR_CAUSES
from linerisk.models.recover import lever_values, spec_levers
from linerisk.models.restore_scoring import CURVE_DAYS
from linerisk.models.scoring import Scorer


def why_restricted(scorer: Scorer, events: pd.DataFrame, users: pd.DataFrame, restricted_since: pd.Series,
                   tz: str = "UTC") -> pd.DataFrame:
    """The restriction model's answer per user as of the day its line was restricted (events before that local
    day): probability and the reason columns, indexed by user_id. `restricted_since`: user_id -> restriction time."""
    from linerisk.models.explain import explain_frame

    local = pd.to_datetime(restricted_since, utc=True).dt.tz_convert(tz).dt.normalize()
    days = local.dt.tz_convert("UTC")
    parts = []
    for day, ids in days.groupby(days).groups.items():  # one feature pass per distinct day
        mine = users[users["user_id"].isin(ids)]
        features = build_features(events[events["user_id"].isin(ids)], day, mine, tz)
        ex = explain_frame(scorer, features)
        parts.append(ex.scores.assign(as_of=day))
    return pd.concat(parts).loc[restricted_since.index] if parts else pd.DataFrame()


def why_restricted_fidelity(scorer: Scorer, events: pd.DataFrame, users: pd.DataFrame, restricted_since: pd.Series,
                            truth_restrictions: pd.DataFrame) -> tuple[dict[str, float], pd.DataFrame]:
    """How often "why it was restricted" names the cause the simulator drew: recall@1/@3 of the restriction
    model's reasons on the day of each line's restriction (latent apart), overall and per cause."""
    from linerisk.models.explain import cause_recall_at_k

    why = why_restricted(scorer, events, users, restricted_since)
    truth = pd.DataFrame({"user_id": truth_restrictions["user_id"].to_numpy(),
                          "day": pd.to_datetime(truth_restrictions["event_time"], utc=True).dt.normalize(),
                          "cause": truth_restrictions["cause"].astype(str).to_numpy()})
    keys = pd.DataFrame({"user_id": restricted_since.index.to_numpy(),
                         "day": pd.to_datetime(restricted_since, utc=True).dt.normalize().to_numpy()})
    cause = keys.merge(truth.drop_duplicates(["user_id", "day"], keep="last"), on=["user_id", "day"], how="left")
    return cause_recall_at_k(why, pd.Series(pd.array(cause["cause"].to_numpy(), dtype="string"), index=why.index))


def likely_minor(why: pd.DataFrame) -> np.ndarray:
    """True where the restriction model's top reason on the day of the restriction is a minor cause."""
    return why["reason_1_family"].isin(MINOR_CAUSES).to_numpy(dtype=bool, na_value=False)


# An action is listed only when it raises P(restored within 90 days or within a year) by at least this much
# (half a percentage point, so the figures shown differ from the status quo's): a line restricted for long has had its fill of
# on-time repayments, and "repay on time" then changes nothing, in the model as in the world.
MIN_GAIN = 0.005


def condition_holds(condition: str, features: pd.DataFrame, minor: np.ndarray) -> np.ndarray:
    """Where a restoration lever's `only_if` holds (features.spec.LEVER_CONDITIONS): always (""), where the
    likely cause is minor (`minor`), or where one of the condition's CONDITION_FEATURES is positive."""
    if condition == "":
        return np.ones(len(features), dtype=bool)
    if condition == "likely_minor":
        return np.asarray(minor, dtype=bool)
    if condition not in CONDITION_FEATURES:
        raise ValueError(f"restoration levers: unknown condition {condition!r} in the model's spec")
    needs = list(CONDITION_FEATURES[condition])
    missing = [f for f in needs if f not in features.columns]
    if missing:
        raise ValueError(f"restoration levers: condition {condition!r} needs feature(s) {', '.join(missing)}")
    return (features[needs].astype(np.float64).fillna(0.0) > 0).any(axis=1).to_numpy()


def restoration_actions(scorer: Any, features: pd.DataFrame, minor: np.ndarray, as_of: object) -> pd.DataFrame:
    """Per restricted user (features indexed by user_id) and lever that helps (MIN_GAIN): the lever's code,
    texts, days it takes, and, counted from today, P(restored within 90 days and within a year) and the expected
    date (while the action takes its days the line halfway to where it leads, as its behaviour counts from the
    first day; the line as it then stands after; which levers help is judged on that end state alone); a last row `all`
    per user, the plan: every lever that helps, done together (it takes the longest one's days). Levers: the
    restoration model's spec's (features/spec.py `restore_levers`). None past the red line; a lever `only_if`
    "likely_minor" (contacting the platform) only where `minor`, one `only_if` a condition of
    features.spec.CONDITION_FEATURES only where one of its features is positive (using the business loan: it is
    open; repaying on time: something is owed)."""
    ts = to_utc_timestamp(as_of)
    levers = spec_levers(scorer.spec)
    applies = {c: condition_holds(c, features, minor) for c in dict.fromkeys(lv.only_if for lv in levers)}
    names = [f["name"] for f in scorer.spec["features"]]
    units = {f["name"]: f.get("unit", "count") for f in scorer.spec["features"]}
    X = features[names].astype(np.float64)
    red = scorer.red_line(X)
    clocks = [f["name"] for f in scorer.spec["features"] if f.get("aggregation") == "days_restricted"]
    days_grid = np.arange(CURVE_DAYS + 1)
    now = scorer.cumulative(scorer.hazards(X), days_grid, red)  # status quo, from today

    def projected(frame: pd.DataFrame, keep: np.ndarray, wait: np.ndarray, accrue: bool = False) -> np.ndarray:
        """P(restored by each day from today) of rows `keep` of `frame`, the action taking `wait` days: while it
        is under way the status quo, or with `accrue` the line halfway to `frame` (its behaviour counts from the
        first day: an instalment paid on time today is one already)."""
        after = np.empty((len(keep), len(days_grid)))
        for w in np.unique(wait):  # the line once the action is done stands `w` days after today
            at = wait == w
            after[at] = scorer.cumulative(scorer.hazards(frame.iloc[keep[at]], int(w) // scorer.period_days),
                                          days_grid, red[keep[at]])
        during = now[keep]
        if accrue and len(keep) and wait.max() > 0:  # an action done on the day (an appeal) has no meantime
            x, f = X.iloc[keep].to_numpy(), frame.iloc[keep].to_numpy()
            mid = pd.DataFrame(np.where(np.isnan(x), f, (x + f) / 2), index=X.index[keep], columns=X.columns)
            mid[clocks] = X.iloc[keep][clocks]  # today's clock: the curve chains the periods from here
            during = scorer.cumulative(scorer.hazards(mid), days_grid, red[keep])
        return _from_today(during, after, wait)

    out, plan, plan_days = [], X.copy(), np.zeros(len(X), dtype=np.int64)
    helped = np.zeros(len(X), dtype=bool)
    for lever in levers:
        moves = lever_values((lever,), X, scorer.spec, toward_target=True)[0]
        new, changed = X.copy(), np.zeros(len(X), dtype=bool)
        for col, value in moves.items():
            changed |= ~np.isclose(value, X.iloc[:, col].to_numpy(), equal_nan=True)
            new.iloc[:, col] = value
        for name in clocks:
            new[name] = X[name] + lever.days
        keep = np.flatnonzero(changed & ~red & applies[lever.only_if])
        wait = np.full(len(keep), lever.days)
        helps = _gain(projected(new, keep, wait), now[keep], scorer.period_days) >= MIN_GAIN  # chosen on its end state alone
        keep = keep[helps]
        curve = projected(new, keep, wait[helps], accrue=True)
        for col, value in moves.items():  # the plan: every lever that helps the user
            plan.iloc[keep, col] = value[keep]
        plan_days[keep] = np.maximum(plan_days[keep], lever.days)
        helped[keep] = True
        out.append(_rows(X.index[keep], lever.code, lever.family,
                         *_texts(lever, features[lever.shown].to_numpy()[keep], units.get(lever.shown, "count")),
                         np.full(len(keep), lever.days), curve, ts, scorer.period_days))
    for name in clocks:
        plan[name] = X[name] + plan_days
    keep = np.flatnonzero(helped)
    out.append(_rows(X.index[keep], "all", None, "All of the above", "以上全部做到", plan_days[keep],
                     projected(plan, keep, plan_days[keep], accrue=True), ts, scorer.period_days))
    frames = [f for f in out if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else out[-1]


def _gain(curve: np.ndarray, now: np.ndarray, period: int) -> np.ndarray:
    """How much an action raises P(restored) within one period (90 days) or within a year, whichever is more."""
    return np.maximum(curve[:, period] - now[:, period], curve[:, CURVE_DAYS] - now[:, CURVE_DAYS])


def _rows(user_ids: pd.Index, code: str, family: str | None, text_en: Any, text_zh: Any, days: np.ndarray,
          curve: np.ndarray, ts: pd.Timestamp, period: int) -> pd.DataFrame:
    """One action's rows: its texts, days, P(restored within one period (90 days) and a year) and the date the
    curve passes one half (NaT: not within a year)."""
    reached = curve >= 0.5
    median = np.where(reached.any(axis=1), reached.argmax(axis=1), np.nan)
    return pd.DataFrame({
        "user_id": user_ids, "code": code, "family": family, "text_en": text_en, "text_zh": text_zh,
        "days": days.astype(int), "probability": curve[:, period], "probability_365d": curve[:, CURVE_DAYS],
        "expected": ts + pd.to_timedelta(median, unit="D")})


def _from_today(now: np.ndarray, after: np.ndarray, wait: np.ndarray) -> np.ndarray:
    """P(restored by day t) from today: the status-quo curve `now` while the action takes `wait` days, then the
    curve of the line as it stands once the action is done (`after`, counted from its completion)."""
    t = np.arange(now.shape[1])[None, :]
    shifted = np.take_along_axis(after, np.clip(t - wait[:, None], 0, now.shape[1] - 1), axis=1)
    at_wait = np.take_along_axis(now, np.minimum(wait, now.shape[1] - 1)[:, None], axis=1)
    return np.where(t < wait[:, None], now, 1.0 - (1.0 - at_wait) * (1.0 - shifted))


def _texts(lever: Any, values: np.ndarray, unit: str) -> tuple[list[str], list[str]]:
    """The lever's English and Chinese texts filled with each user's current value (features.valuefmt)."""
    return tuple([valuefmt.fill_template(text, unit, v, lang) for v in values]
                 for text, lang in ((lever.text_en, "en"), (lever.text_zh, "zh")))
