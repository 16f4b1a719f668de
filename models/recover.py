"""The path back: when the risk falls below a band threshold with time alone, and which actions get it there now.

Time: from the user's events before as_of, with no new adverse events, features are recomputed at
as_of + 0, 7, ..., 364 days in one `build_features` call (each future date is a copy of the log
shifted back in time, so every (user, date) pair is one row at the same as_of). Activity and
tenure features (direction 0) are held at their as_of values: the user keeps using the lines as
now. A risk feature follows its aged value only as far as ageing lowers risk by its monotone
direction, keeping its least risky value so far otherwise (e.g. a repayment share whose window
has emptied into "no data"). With the model's monotone constraints and a
monotone calibrator, the projected probability therefore never rises.

Action: the levers the model's spec declares on its actionable features (features/spec.py
`levers`, e.g. "stop early repayments for 90 days", "make no new credit applications for 30 days"),
each a behaviour and its direction-respecting move to a plausible value, and the days it must be kept
before its projection holds (`Lever.days`); an outcome such
as the credit score is never a lever, it moves only as the behaviours that drive it do. Every combination of at most one lever per family is scored in one predict call; the plan
is the smallest set that brings the probability below the threshold (lowest probability among
equals), ordered greedily by what each step adds. Pure functions over DataFrames.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from linerisk.features import valuefmt
from linerisk.features.compute import DAY_US, _us, build_features, time_us
from linerisk.features.spec import REVIEW_LAG_DAYS
from linerisk.models.scoring import BAND_NAMES, Scorer

STEP_DAYS = 7
HORIZON_DAYS = 365
TARGET_BAND = "medium"  # recovered: probability below the upper edge of this band
NEGLIGIBLE = 0.005  # a plan that cannot reach the threshold skips levers gaining less than this


def recovery_threshold(edges: tuple[float, ...], band: str = TARGET_BAND) -> float:
    """Upper probability edge of `band` (default medium: out of the high and very-high bands)."""
    position = BAND_NAMES.index(band)
    if position >= len(edges):
        raise ValueError(f"band {band!r} has no upper edge (edges {edges})")
    return float(edges[position])


# ---------------------------------------------------------------------------- time

def _shifted_logs(events: pd.DataFrame, users: pd.DataFrame, user_ids: pd.Index, as_of: pd.Timestamp,
                  offsets: np.ndarray, tz: str = "UTC") -> tuple[pd.DataFrame, pd.DataFrame]:
    """One pseudo-user per (user, offset): the user's events before as_of moved `offset` days earlier
    (naive times read in `tz`, as the features read them).

    Features at as_of of pseudo-user (i, j) equal user i's features at as_of + offsets[j] with no
    new events; pseudo ids are i * len(offsets) + j."""
    pos = user_ids.get_indexer(events["user_id"])
    t_all = time_us(events["event_time"], tz)
    mine = (pos >= 0) & (t_all < _us(as_of))
    ev = events.loc[mine, ["event_type", "amount", "days_past_due", "credit_score"]].reset_index(drop=True)
    t_us = t_all[mine]
    n_off = len(offsets)
    shift = offsets.astype(np.int64) * DAY_US
    rep = np.repeat(np.arange(len(ev)), n_off)
    j = np.tile(np.arange(n_off), len(ev))
    shifted = ev.iloc[rep].reset_index(drop=True)
    shifted.insert(0, "user_id", pos[mine][rep].astype(np.int64) * n_off + j)
    shifted.insert(1, "event_time", pd.to_datetime(t_us[rep] - shift[j], unit="us", utc=True))
    u = users.set_index("user_id").reindex(user_ids)
    signup = time_us(u["signup_date"], tz)
    pseudo = pd.DataFrame({
        "user_id": np.arange(len(user_ids) * n_off, dtype=np.int64),
        "signup_date": pd.to_datetime(np.repeat(signup, n_off) - np.tile(shift, len(user_ids)), unit="us", utc=True),
        "segment": np.repeat(u["segment"].to_numpy(dtype=object), n_off)})
    return shifted, pseudo


def age_features(steps: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """Projected values from raw recomputed values `steps` (n, steps, p), step 0 = as_of.

    Direction-0 features keep the as_of value; a risk feature follows its recomputed value only
    while that is its least risky value so far (running min for +1, running max for -1), so it
    never moves back up; a value that vanishes into NaN ("no data") keeps the last one."""
    direction = np.asarray([f.get("direction", 0) for f in spec["features"]], dtype=np.float64)
    sign = np.where(direction == 0, 1.0, direction)
    now = steps[:, :1, :]
    risk = sign * np.where(np.isnan(steps) & ~np.isnan(now), now, steps)  # lower = less risky
    best = sign * np.minimum.accumulate(risk, axis=1)  # NaN at as_of stays NaN (held)
    return np.where(direction == 0, now, best)


@dataclass
class TimeProjection:
    """Probability per user and future date with no new adverse events, and the first date below threshold."""

    curve: pd.DataFrame     # user_id, days, date, probability (one row per user and step)
    recovery: pd.DataFrame  # index user_id: probability_now, threshold, recovery_date, recovery_days


def project_time(scorer: Scorer, events: pd.DataFrame, users: pd.DataFrame, user_ids: Any, as_of: object,
                 threshold: float | None = None, step_days: int = STEP_DAYS,
                 horizon_days: int = HORIZON_DAYS, tz: str = "UTC") -> TimeProjection:
    """Recompute features forward every `step_days` up to `horizon_days` with no new events; score all at once.
    Day windows count local days of `tz`, as where the features at as_of were built."""
    from linerisk.features.compute import to_utc_timestamp

    ts = to_utc_timestamp(as_of, tz)
    ids = pd.Index(np.atleast_1d(np.asarray(user_ids)), name="user_id")
    offsets = np.arange(0, horizon_days, step_days)
    threshold = recovery_threshold(scorer.band_edges) if threshold is None else float(threshold)
    shifted, pseudo = _shifted_logs(events, users, ids, ts, offsets, tz)
    names = [f["name"] for f in scorer.spec["features"]]
    raw = build_features(shifted, ts, pseudo, tz)[names].to_numpy(dtype=np.float64)
    steps = raw.reshape(len(ids), len(offsets), len(names))
    projected = age_features(steps, scorer.spec).reshape(-1, len(names))
    p = scorer.probability(pd.DataFrame(projected, columns=names)).reshape(len(ids), len(offsets))
    dates = ts + pd.to_timedelta(offsets, unit="D")
    curve = pd.DataFrame({"user_id": np.repeat(ids.to_numpy(), len(offsets)), "days": np.tile(offsets, len(ids)),
                          "date": np.tile(dates.to_numpy(), len(ids)), "probability": p.ravel()})
    below = p < threshold
    first = np.where(below.any(axis=1), below.argmax(axis=1), -1)
    days = np.where(first >= 0, offsets[np.maximum(first, 0)], np.nan)
    recovery = pd.DataFrame({"probability_now": p[:, 0], "threshold": threshold,
                             "recovery_date": ts + pd.to_timedelta(days, unit="D"), "recovery_days": days}, index=ids)
    return TimeProjection(curve, recovery)


# ---------------------------------------------------------------------------- action

@dataclass(frozen=True)
class Lever:
    """One action a user can take: the features it moves and its texts, gathered from the spec's `levers`.

    `moves`: (feature, to, by, of) per moved feature (see features.spec.Lever); `shown` is the
    feature whose current value fills `{value}` in the texts. `days`: how long the behaviour must be kept
    before its projection holds: a restoration action's days (features.spec.RestoreLever); a restriction
    action's are the longest window it clears plus the review's lag (features.spec.REVIEW_LAG_DAYS), as
    the platform sees behaviour only then. `only_if`: when a restoration
    action applies (the restriction model's are "")."""

    code: str
    family: str
    text_en: str
    text_zh: str
    moves: tuple[tuple[str, float | None, float | None, str | None], ...]
    shown: str
    days: int = 0
    only_if: str = ""


def spec_levers(spec: dict[str, Any]) -> tuple[Lever, ...]:
    """The recovery actions a model's spec declares (either model's: its `levers`), in order of first appearance."""
    actions: dict[str, dict[str, Any]] = {}
    for f in spec["features"]:
        for lv in f.get("levers") or ():
            entry = actions.setdefault(lv["action"], {"family": f["family"], "moves": [], "texts": None, "window": 0})
            if lv.get("to") is not None or lv.get("by") is not None:  # else its texts only show this feature
                entry["moves"].append((f["name"], lv.get("to"), lv.get("by"), lv.get("of")))
                if not (lv.get("by") is not None and lv.get("of") is not None):  # the behaviour, not a consequence
                    entry["window"] = max(entry["window"], int(f.get("window") or 0))
            if lv.get("text_en"):  # the feature with the texts is the behaviour: its family is the lever's
                days = lv.get("days")  # a restoration action's own; a restriction action's: from its windows
                entry["texts"] = (lv["text_en"], lv["text_zh"], f["name"], None if days is None else int(days),
                                  str(lv.get("only_if", "")))
                entry["family"] = f["family"]
    return tuple(Lever(code, e["family"], e["texts"][0], e["texts"][1], tuple(e["moves"]), e["texts"][2],
                       e["window"] + REVIEW_LAG_DAYS if e["texts"][3] is None else e["texts"][3], e["texts"][4])
                 for code, e in actions.items() if e["texts"] is not None)


# plausible ranges by unit (values outside are clipped)
_RANGES = {"share": (0.0, 1.0), "score": (350.0, 950.0), "count": (0.0, np.inf), "days": (0.0, np.inf),
           "money": (0.0, np.inf)}


def lever_values(levers: tuple[Lever, ...], X: pd.DataFrame, spec: dict[str, Any],
                 toward_target: bool = False) -> list[dict[int, np.ndarray]]:
    """Per lever, {feature column: new value per row}, direction-respecting and in range: it only ever lowers
    the model's probability, or with `toward_target` (the restoration model, whose target is good) raises it.

    Features outside the spec, not actionable or unconstrained are left alone; a NaN stays NaN."""
    position = {f["name"]: i for i, f in enumerate(spec["features"])}
    out = []
    for lever in levers:
        moves = {}
        for name, to, by, of in lever.moves:
            entry = spec["features"][position[name]] if name in position else None
            if entry is None or not entry.get("actionable", False) or entry.get("direction", 0) == 0:
                continue
            cur = X[name].to_numpy(dtype=np.float64)
            per = X[of].to_numpy(dtype=np.float64) if of is not None else 1.0  # `of`: per unit of that feature
            target = cur + by * np.nan_to_num(per) if by is not None else to * per
            new = np.broadcast_to(np.asarray(target, dtype=np.float64), cur.shape)
            lo, hi = _RANGES.get(entry.get("unit", ""), (-np.inf, np.inf))
            new = np.clip(new, lo, hi)
            up = entry["direction"] > 0 if toward_target else entry["direction"] < 0  # which way is better
            new = np.maximum(cur, new) if up else np.minimum(cur, new)
            moves[position[name]] = np.where(np.isnan(cur), cur, new)
        out.append(moves)
    return out


def _lever_grid(levers: tuple[Lever, ...]) -> tuple[list[str], list[list[int]], np.ndarray]:
    """Families, the lever indices of each family, and every combination as a (C, families) level matrix
    (0 = no lever of that family, l = its l-th lever); the row of a combination is its mixed-radix code."""
    families = list(dict.fromkeys(lv.family for lv in levers))
    members = [[i for i, lv in enumerate(levers) if lv.family == fam] for fam in families]
    grid = np.asarray(list(itertools.product(*[range(len(m) + 1) for m in members])), dtype=np.int64)
    return families, members, grid


@dataclass
class ActionPlan:
    """Per user the plan's steps and its outcome."""

    steps: pd.DataFrame    # user_id, step, code, family, text_en, text_zh, probability (after the step), days
    # (kept before the step's effect shows: the projected probability holds from as_of + days)
    summary: pd.DataFrame  # index user_id: probability_now, threshold, final_probability, reached, n_steps,
    # effective_days (the plan's probability holds from as_of + this many days: its slowest step)
    features: pd.DataFrame  # index user_id: the feature row after the whole plan (to re-check from scratch)


def plan_actions(scorer: Scorer, features: pd.DataFrame, threshold: float | None = None,
                 levers: tuple[Lever, ...] | None = None) -> ActionPlan:
    """The smallest set of levers (at most one per family) that brings each row's probability below threshold.

    `features`: one row per user (index user_id), the spec's columns. All combinations for all rows are
    scored in one call; when no combination reaches the threshold, the plan is the one with the lowest
    probability (fewest levers among equals) and `reached` is False.
    """
    threshold = recovery_threshold(scorer.band_edges) if threshold is None else float(threshold)
    levers = spec_levers(scorer.spec) if levers is None else levers
    names = [f["name"] for f in scorer.spec["features"]]
    base = features[names].to_numpy(dtype=np.float64)
    n = len(base)
    values = lever_values(levers, features[names], scorer.spec)
    families, members, grid = _lever_grid(levers)
    effective = np.zeros((len(levers), n), dtype=bool)  # does the lever change anything for the row
    for i, moves in enumerate(values):
        for col, new in moves.items():
            effective[i] |= ~np.isclose(new, base[:, col], equal_nan=True)

    rows = np.broadcast_to(base, (len(grid), n, len(names))).copy()  # combination-major
    size = np.zeros((len(grid), n), dtype=np.int64)
    for c, levels in enumerate(grid):
        for f, level in enumerate(levels):
            if level:
                lever = members[f][level - 1]
                for col, new in values[lever].items():
                    rows[c, :, col] = new
                size[c] += effective[lever]
    p = scorer.probability(pd.DataFrame(rows.reshape(-1, len(names)), columns=names)).reshape(len(grid), n)

    # choose: fewest effective levers reaching the threshold, then lowest probability; else the fewest
    # levers within NEGLIGIBLE of the lowest probability (a lever that gains less is not worth a step)
    reach = p < threshold
    key_reach = np.where(reach, size + p, np.inf)  # p < 1: the lever count decides first
    key_best = np.where(p <= p.min(axis=0) + NEGLIGIBLE, size + p, np.inf)
    chosen = np.where(reach.any(axis=0), np.argmin(key_reach, axis=0), np.argmin(key_best, axis=0))
    levels = grid[chosen]  # (n, families)
    levels = np.where(_effective_levels(levels, members, effective), levels, 0)  # drop no-op levers

    # greedy order: add the chosen family whose lever lowers the probability most, one step at a time;
    # a combination's row in `grid` is its mixed-radix code, so every partial plan is a lookup
    radix = _radix(members)
    lever_of = np.full((len(members), max(map(len, members), default=0) + 1), -1, dtype=np.int64)
    for f, m in enumerate(members):
        lever_of[f, 1: len(m) + 1] = m
    cur = np.zeros(n, dtype=np.int64)
    remaining = levels > 0
    step_rows = []
    for step in range(1, len(families) + 1):
        users = np.flatnonzero(remaining.any(axis=1))
        if not len(users):
            break
        cand = cur[users, None] + np.where(remaining[users], levels[users], 0) * radix[None, :]
        cand_p = np.where(remaining[users], p[cand, users[:, None]], np.inf)
        pick = np.argmin(cand_p, axis=1)
        cur[users] = cand[np.arange(len(users)), pick]
        remaining[users, pick] = False
        step_rows.append((users, np.full(len(users), step), lever_of[pick, levels[users, pick]],
                          cand_p[np.arange(len(users)), pick]))
    steps = _steps_frame(step_rows, features, levers, scorer.spec)
    final_code = (levels * radix[None, :]).sum(axis=1)
    final_p = p[final_code, np.arange(n)]
    lever_days = np.asarray([lv.days for lv in levers] + [0], dtype=np.int64)  # index -1: no lever
    effective_days = lever_days[lever_of[np.arange(len(members))[None, :], levels]].max(axis=1, initial=0)
    summary = pd.DataFrame({"probability_now": p[0], "threshold": threshold, "final_probability": final_p,
                            "reached": final_p < threshold, "n_steps": (levels > 0).sum(axis=1),
                            "effective_days": effective_days}, index=features.index)
    final = pd.DataFrame(rows[final_code, np.arange(n)], columns=names, index=features.index)
    return ActionPlan(steps, summary, final)


def _radix(members: list[list[int]]) -> np.ndarray:
    """Mixed-radix place value of each family's level: itertools.product order, so code = row of the grid."""
    bases = np.asarray([len(m) + 1 for m in members], dtype=np.int64)
    if not len(bases):
        return bases
    return np.concatenate([np.cumprod(bases[::-1])[::-1][1:], [1]]).astype(np.int64)


def _effective_levels(levels: np.ndarray, members: list[list[int]], effective: np.ndarray) -> np.ndarray:
    """(n, families) True where the chosen level's lever changes something for that row."""
    out = np.zeros(levels.shape, dtype=bool)
    for f, m in enumerate(members):
        for level, lever in enumerate(m, start=1):
            out[:, f] |= (levels[:, f] == level) & effective[lever]
    return out


def _steps_frame(step_rows: list[tuple[np.ndarray, ...]], features: pd.DataFrame, levers: tuple[Lever, ...],
                 spec: dict[str, Any]) -> pd.DataFrame:
    """One row per (user, step): the lever's code, family, texts filled with the user's current value, probability."""
    cols = {"user_id": [], "step": [], "code": [], "family": [], "text_en": [], "text_zh": [], "probability": [],
            "days": []}
    units = {f["name"]: f.get("unit", "") for f in spec["features"]}
    ids = features.index.to_numpy()
    for users, step, lever, prob in step_rows:
        for i, lv, pr in zip(users, lever, prob):  # strings are per row by nature; rows = steps taken
            lv_ = levers[lv]
            value = features[lv_.shown].iloc[i] if lv_.shown in features else np.nan
            unit = units.get(lv_.shown, "")
            cols["user_id"].append(ids[i])
            cols["code"].append(lv_.code)
            cols["family"].append(lv_.family)
            cols["text_en"].append(valuefmt.fill_template(lv_.text_en, unit, value, "en"))
            cols["text_zh"].append(valuefmt.fill_template(lv_.text_zh, unit, value, "zh"))
            cols["probability"].append(float(pr))
            cols["days"].append(lv_.days)
        cols["step"].extend(step.tolist())
    out = pd.DataFrame(cols)
    return out.sort_values(["user_id", "step"], kind="stable").reset_index(drop=True) if len(out) else out


@dataclass
class PathBack:
    """The way below the threshold for each user: with time alone (`time`) and by acting now (`actions`)."""

    time: TimeProjection
    actions: ActionPlan


def path_back(scorer: Scorer, events: pd.DataFrame, users: pd.DataFrame, user_ids: Any, as_of: object,
              threshold: float | None = None, tz: str = "UTC") -> PathBack:
    """Time projection and action plan for `user_ids` at `as_of`, from their validated events (days in `tz`)."""
    from linerisk.features.compute import to_utc_timestamp

    ts = to_utc_timestamp(as_of, tz)
    ids = pd.Index(np.atleast_1d(np.asarray(user_ids)), name="user_id")
    mine = users[users["user_id"].isin(ids)]
    threshold = recovery_threshold(scorer.band_edges) if threshold is None else float(threshold)
    features = build_features(events[events["user_id"].isin(ids)], ts, mine, tz).reindex(ids)
    return PathBack(project_time(scorer, events, mine, ids, ts, threshold, tz=tz),
                    plan_actions(scorer, features, threshold))


def apply_plan(features: pd.DataFrame, codes: list[str], spec: dict[str, Any],
               levers: tuple[Lever, ...] | None = None) -> pd.DataFrame:
    """`features` with the levers named in `codes` applied (in order), computed afresh from the current values."""
    by_code = {lv.code: lv for lv in (spec_levers(spec) if levers is None else levers)}
    names = [f["name"] for f in spec["features"]]
    out = features.copy()
    for code in codes:
        for col, new in lever_values((by_code[code],), out[names], spec)[0].items():
            out[names[col]] = new.astype(out[names[col]].dtype, copy=False)
    return out
