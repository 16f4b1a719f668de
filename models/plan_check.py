"""Plans checked against the true world: each plan's behaviours carried out in the simulator from the full
state at as_of (data/intervene.py), with and without the plan on common random numbers, set against what
the models project.

Restriction plans (models/recover.py `plan_actions`): the model projects P(restricted within 90 days)
with the plan's features, which hold once its slowest behaviour has been kept long enough
(`effective_days`); the truth is P(restricted in the 90 days from that date), given not restricted before,
with and without the plan. Restoration plans (models/restore_plan.py `restoration_actions`): P(restored
within 90 days and a year) and the days until the curve passes one half, projected and true. A restriction
plan's behaviours are kept to the end of the window checked; a restoration action as long as its text asks
(90 days; an appeal is made once, on the first day), then the user's own behaviour resumes, as the
projection assumes.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np
import pandas as pd

from linerisk.data.errors import InputError
from linerisk.data.intervene import Futures, Intervention, paired, simulate_plan
from linerisk.data.simulate import WorldParams, states_at
from linerisk.data.world import State
from linerisk.features.compute import build_features, to_utc_timestamp
from linerisk.models.recover import apply_plan, plan_actions, recovery_threshold
from linerisk.models.restore_scoring import CURVE_DAYS
from linerisk.models.train import HORIZON_DAYS

# Every lever code (restriction levers of features/spec.py, restoration levers of models/restore_plan.py) ->
# the behaviour it asks for, as the simulator carries it out (`intervention` sets how long it is kept).
INTERVENTIONS: dict[str, Intervention] = {
    "no_early_repayment_90d": Intervention(no_early_repayment=True),
    "repay_on_time_90d": Intervention(repay_on_time=True),
    "no_fund_misuse_90d": Intervention(no_fund_misuse=True),
    "no_credit_applications_30d": Intervention(no_inquiries=True),
    "no_credit_applications_90d": Intervention(no_inquiries=True),
    "use_business_loan_90d": Intervention(business_loan_use=True),
    "contact_platform": Intervention(appeal=True, days=1),
}
YEAR_DAYS = CURVE_DAYS  # restoration plans are followed as far as the restoration curve goes


def intervention(code: str, days: int) -> Intervention:
    """The behaviour lever `code` asks for, kept `days` (an appeal is made once whatever `days`)."""
    try:
        iv = INTERVENTIONS[code]
    except KeyError:
        raise InputError(f"lever {code!r} names no behaviour the simulator can carry out "
                         f"(known: {', '.join(INTERVENTIONS)})") from None
    return iv if iv.appeal else dataclasses.replace(iv, days=days)


@dataclasses.dataclass
class Lines:
    """The world's state at as_of, chunk by chunk: user ids, line status and where each user's row is."""

    states: list[State]
    day: int

    def ids(self, mask: Callable[[State], np.ndarray]) -> np.ndarray:
        return np.concatenate([s.user_id[mask(s)] for s in self.states])


def world_day(p: WorldParams, as_of: pd.Timestamp) -> int:
    """The simulator's day of `as_of` (a UTC midnight after the world's first day, at most its end); else InputError."""
    day = int((as_of - p.start_ts) // pd.Timedelta(days=1))
    if as_of != p.start_ts + pd.Timedelta(days=day) or not 1 <= day <= p.days:
        end = p.start_ts + pd.Timedelta(days=p.days)
        raise InputError(f"as_of: {as_of:%Y-%m-%d %H:%M} is not a midnight inside the world "
                         f"({p.start_ts:%Y-%m-%d} .. {end:%Y-%m-%d})")
    return day


def world_lines(p: WorldParams, as_of: pd.Timestamp, on_day: Callable[[int], None] | None = None) -> Lines:
    """Re-simulate the world `p` to `as_of` (midnight, inside the world); InputError otherwise."""
    day = world_day(p, as_of)
    return Lines(list(states_at(p, day, on_day)), day)


def _check_reproduces(lines: Lines, users: pd.DataFrame) -> None:
    """The re-simulated users must be the world's (same ids and segments); else its recorded parameters do not
    describe it (another simulator version, or edited files) and its truth is unknown."""
    ids = lines.ids(lambda s: np.ones(s.n, bool))
    merchant = np.concatenate([s.merchant for s in lines.states])
    seg = users.set_index("user_id")["segment"].reindex(ids)
    if len(users) != len(ids) or seg.isna().any() or not np.array_equal((seg == "merchant").to_numpy(bool), merchant):
        raise InputError("the world's recorded parameters do not reproduce its users (simulated by another version, "
                         "or its files were changed): its truth is unknown")


def _forward(lines: Lines, user_ids: np.ndarray, days: int, p: WorldParams, seed: int, futures: int,
             interventions: tuple[Intervention, ...] = (), applied: np.ndarray | None = None,
             on_day: Callable[[int], None] | None = None) -> Futures:
    """One arm: `user_ids` simulated forward from as_of (chunk by chunk, users kept in the given order)."""
    parts, order = [], []
    for c, s in enumerate(lines.states):
        pos = pd.Index(s.user_id).get_indexer(user_ids)
        mine = np.flatnonzero(pos >= 0)
        if not len(mine):
            continue
        rows = pos[mine]
        sub = None if applied is None else np.asarray(applied)[:, mine]
        parts.append(simulate_plan(s, rows, lines.day, days, p, paired(seed + 7919 * c, len(rows), futures), futures,
                                   interventions, sub, on_day))
        order.append(mine)
    at = np.argsort(np.concatenate(order))
    return Futures(np.concatenate([f.restrict for f in parts], axis=2)[..., at],
                   np.concatenate([f.restore for f in parts], axis=2)[..., at],
                   np.concatenate([f.by_cause for f in parts], axis=1)[:, at])


@dataclasses.dataclass
class PlanMatrix:
    """Which lever each user's plan has: `codes` in order of first appearance, `applied` (codes, users),
    each code's days, and per user the plan's codes joined by commas."""

    codes: list[str]
    applied: np.ndarray
    days: dict[str, int]

    @classmethod
    def of(cls, steps: pd.DataFrame, users: np.ndarray) -> "PlanMatrix":
        """From plan rows (user_id, code, days) of `users`."""
        codes = list(dict.fromkeys(steps["code"]))
        applied = np.zeros((len(codes), len(users)), bool)
        applied[[codes.index(c) for c in steps["code"]], pd.Index(users).get_indexer(steps["user_id"])] = True
        return cls(codes, applied, dict(zip(steps["code"], steps["days"].astype(int))))

    def labels(self) -> list[str]:
        return [",".join(c for c, a in zip(self.codes, col) if a) for col in self.applied.T]


def _reduction(projected: np.ndarray, true: np.ndarray) -> dict[str, Any]:
    mp, mt = float(np.mean(projected)), float(np.mean(true))
    return {"n": int(len(true)), "mean_projected": mp, "mean_true": mt, "ratio": mp / mt if mt > 0 else None}


def check_restriction_plans(lines: Lines, p: WorldParams, events: pd.DataFrame, users: pd.DataFrame,
                            as_of: pd.Timestamp, scorer: Any, n_users: int, seed: int, futures: int,
                            on_day: Callable[[int], None] | None = None
                            ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per sampled active line with a plan: projected and true P(restricted), with and without the plan; and the
    summary figures. Users with a plan are those above the threshold with at least one effective lever."""
    threshold = recovery_threshold(scorer.band_edges)
    active = lines.ids(lambda s: s.pl.opened & ~s.restricted)
    feats = build_features(events[events["user_id"].isin(active)], as_of, users[users["user_id"].isin(active)])
    names = [f["name"] for f in scorer.spec["features"]]
    prob = scorer.probability(feats[names])
    above = feats.index[prob >= threshold].to_numpy()
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(above, min(n_users, len(above)), replace=False)) if len(above) else above
    plan = plan_actions(scorer, feats.loc[sample], threshold)
    has = plan.summary.index[plan.summary["n_steps"] > 0].to_numpy()
    steps = plan.steps[plan.steps["user_id"].isin(has)]
    if not len(has):
        raise InputError(f"no active line at {as_of:%Y-%m-%d} has a restriction plan (none above {threshold:.3f})")
    m = PlanMatrix.of(steps, has)
    codes, applied, days_of = m.codes, m.applied, m.days
    effect = plan.summary.loc[has, "effective_days"].to_numpy(np.int64)
    span = int(effect.max()) + HORIZON_DAYS
    ivs = tuple(intervention(c, span) for c in codes)

    base = _forward(lines, has, span, p, seed, futures, on_day=on_day)
    with_plan = _forward(lines, has, span, p, seed, futures, ivs, applied, on_day)
    frame = pd.DataFrame({
        "user_id": has, "levers": m.labels(),
        "effective_days": effect, "effective_date": [(as_of + pd.Timedelta(days=int(d))).strftime("%Y-%m-%d")
                                                     for d in effect],
        "projected_without": plan.summary.loc[has, "probability_now"].to_numpy(),
        "projected_with": plan.summary.loc[has, "final_probability"].to_numpy(),
        "true_without": base.restricted_within(effect, HORIZON_DAYS),
        "true_with": with_plan.restricted_within(effect, HORIZON_DAYS),
        "true_without_from_as_of": base.restricted_within(0, HORIZON_DAYS),
        "true_with_from_as_of": with_plan.restricted_within(0, HORIZON_DAYS)})
    projected = frame["projected_without"] - frame["projected_with"]
    true = frame["true_without"] - frame["true_with"]
    by_lever = {}
    for i, code in enumerate(codes):  # each lever alone, on the users whose plan has it
        who = applied[i]
        alone = scorer.probability(apply_plan(feats.loc[has[who]], [code], scorer.spec)[names])
        arm = _forward(lines, has[who], days_of[code] + HORIZON_DAYS, p, seed, futures,
                       (intervention(code, days_of[code] + HORIZON_DAYS),), np.ones((1, who.sum()), bool), on_day)
        ref = _forward(lines, has[who], days_of[code] + HORIZON_DAYS, p, seed, futures, on_day=on_day)
        by_lever[code] = {"days": days_of[code], **_reduction(
            frame.loc[who, "projected_without"].to_numpy() - alone,
            ref.restricted_within(days_of[code], HORIZON_DAYS) - arm.restricted_within(days_of[code], HORIZON_DAYS))}
    summary = {
        "n_plans": int(len(has)), "threshold": threshold,
        "share_lowering_true_risk": float((frame["true_with"] < frame["true_without"]).mean()),
        "share_under_threshold": float((frame["true_with"] < threshold).mean()),
        "projected_vs_true_reduction": {**_reduction(projected.to_numpy(), true.to_numpy()), "by_lever": by_lever},
        "from_as_of": {"share_lowering_true_risk": float((frame["true_with_from_as_of"]
                                                         < frame["true_without_from_as_of"]).mean()),
                       "projected_vs_true_reduction": _reduction(
                           projected.to_numpy(),
                           (frame["true_without_from_as_of"] - frame["true_with_from_as_of"]).to_numpy())},
    }
    return frame, summary


def _half_days(curve: np.ndarray) -> np.ndarray:
    """Days until a (days, users) P(restored by day) curve passes one half; NaN when not within it."""
    reached = curve >= 0.5
    return np.where(reached.any(axis=0), reached.argmax(axis=0) + 1.0, np.nan)


def _median_days(days: np.ndarray) -> float | None:
    """Median days to restoration, a line not restored within a year counting as later than any."""
    m = float(np.median(np.where(np.isnan(days), np.inf, days))) if len(days) else np.inf
    return None if not np.isfinite(m) else m


def check_restoration_plans(lines: Lines, p: WorldParams, events: pd.DataFrame, users: pd.DataFrame,
                            as_of: pd.Timestamp, scorer: Any, restore_scorer: Any, n_users: int, seed: int,
                            futures: int, on_day: Callable[[int], None] | None = None
                            ) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per sampled restricted line with a way back: projected and true P(restored within 90 days and a year)
    and days until restoration is more likely than not, with and without the plan (every useful lever). Each
    action is kept as long as its text asks (`days`: 90, an appeal made once), then behaviour is the user's own
    again, as the projection assumes (the line as it stands once the action is done, followed by the curve)."""
    from linerisk.features.labels import line_state
    from linerisk.models.restore_plan import likely_minor, restoration_actions, why_restricted

    restricted = lines.ids(lambda s: s.restricted)
    rng = np.random.default_rng(seed + 1)
    sample = np.sort(rng.choice(restricted, min(n_users, len(restricted)), replace=False))
    mine_ev, mine_users = events[events["user_id"].isin(sample)], users[users["user_id"].isin(sample)]
    feats = build_features(mine_ev, as_of, mine_users).loc[sample]
    since = line_state(mine_ev, as_of, mine_users)["state_since"].loc[sample]
    why = why_restricted(scorer, mine_ev, mine_users, since)
    actions = restoration_actions(restore_scorer, feats, likely_minor(why.loc[sample]), as_of)
    if not len(actions):
        raise InputError(f"no restricted line at {as_of:%Y-%m-%d} has a restoration plan")
    has = np.sort(actions.loc[actions["code"] == "all", "user_id"].unique())
    levers = actions[(actions["code"] != "all") & actions["user_id"].isin(has)]
    m = PlanMatrix.of(levers, has)
    codes, applied, days_of = m.codes, m.applied, m.days  # each action kept as long as its text asks
    ivs = tuple(intervention(c, days_of[c]) for c in codes)
    base = _forward(lines, has, YEAR_DAYS, p, seed, futures, on_day=on_day)
    with_plan = _forward(lines, has, YEAR_DAYS, p, seed, futures, ivs, applied, on_day)
    X = feats.loc[has, [f["name"] for f in restore_scorer.spec["features"]]].astype(np.float64)
    red = restore_scorer.red_line(X)
    h = restore_scorer.hazards(X)
    now = restore_scorer.cumulative(h, [HORIZON_DAYS, YEAR_DAYS], red)
    plan_rows = actions[actions["code"] == "all"].set_index("user_id").loc[has]
    true_now, true_plan = base.restored_by(), with_plan.restored_by()
    frame = pd.DataFrame({
        "user_id": has, "levers": m.labels(),
        "effective_days": plan_rows["days"].to_numpy(int),
        "projected_without_90d": now[:, 0], "projected_with_90d": plan_rows["probability"].to_numpy(),
        "projected_without_365d": now[:, 1], "projected_with_365d": plan_rows["probability_365d"].to_numpy(),
        "true_without_90d": true_now[HORIZON_DAYS - 1], "true_with_90d": true_plan[HORIZON_DAYS - 1],
        "true_without_365d": true_now[YEAR_DAYS - 1], "true_with_365d": true_plan[YEAR_DAYS - 1],
        "projected_days_without": restore_scorer.median_days(h, red),
        "projected_days_with": ((plan_rows["expected"] - as_of) / pd.Timedelta(days=1)).to_numpy(np.float64),
        "true_days_without": _half_days(true_now), "true_days_with": _half_days(true_plan)})
    gain = {f"{w}": _reduction((frame[f"projected_with_{w}"] - frame[f"projected_without_{w}"]).to_numpy(),
                               (frame[f"true_with_{w}"] - frame[f"true_without_{w}"]).to_numpy())
            for w in ("90d", "365d")}
    summary = {
        "n_plans": int(len(has)),
        "share_raising_true_restoration": float((frame["true_with_365d"] > frame["true_without_365d"]).mean()),
        "projected_vs_true_gain": gain,
        "days_to_restoration": {k: _median_days(frame[k].to_numpy()) for k in
                                ("projected_days_without", "projected_days_with", "true_days_without",
                                 "true_days_with")},
        "by_lever": {},
    }
    for i, code in enumerate(codes):  # each lever alone (followed a year), on the users whose plan has it
        who = applied[i]
        mine = levers[levers["code"] == code].set_index("user_id").loc[has[who]]
        arm = _forward(lines, has[who], YEAR_DAYS, p, seed, futures, (intervention(code, days_of[code]),),
                       np.ones((1, who.sum()), bool), on_day)
        ref = _forward(lines, has[who], YEAR_DAYS, p, seed, futures, on_day=on_day)  # same rows: same numbers
        summary["by_lever"][code] = {"days": days_of[code], **_reduction(
            mine["probability_365d"].to_numpy() - now[who, 1],
            arm.restored_by()[YEAR_DAYS - 1] - ref.restored_by()[YEAR_DAYS - 1])}
    return frame, summary


def validate_plans(p: WorldParams, events: pd.DataFrame, users: pd.DataFrame, as_of: object, scorer: Any,
                   restore_scorer: Any | None = None, n_users: int = 500, seed: int = 0, futures: int = 16,
                   on_day: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Restriction (and, with `restore_scorer`, restoration) plans of a simulated world checked against its
    truth at `as_of`: per user rows and the summary (see the module docstring). Deterministic in `seed`."""
    ts = to_utc_timestamp(as_of)
    lines = world_lines(p, ts, on_day)
    _check_reproduces(lines, users)
    frame, summary = check_restriction_plans(lines, p, events, users, ts, scorer, n_users, seed, futures,
                                             on_day=on_day)
    out = {"as_of": ts.strftime("%Y-%m-%d"), "seed": seed, "futures": futures,
           "summary": summary, "users": _records(frame)}
    if restore_scorer is not None:
        rframe, rsummary = check_restoration_plans(lines, p, events, users, ts, scorer, restore_scorer, n_users,
                                                   seed, futures, on_day)
        out["summary"]["restoration"] = rsummary
        out["restoration_users"] = _records(rframe)
    return out


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as JSON-able dicts (NaN -> None)."""
    clean = frame.astype(object).where(frame.notna(), None)
    return [{k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
            for row in clean.to_dict("records")]


def plot_plans(result: dict[str, Any]):
    """The plan-validity figure of a `validate_plans` result: projected against true change per plan (restriction
    plans, and restoration plans within a year), and per lever the mean projected and true change."""
    from matplotlib.figure import Figure

    panels = [("restriction plans: risk reduction", result["users"], "projected_without", "projected_with",
               "true_without", "true_with", result["summary"]["projected_vs_true_reduction"]["by_lever"], -1)]
    if result.get("restoration_users"):
        panels.append(("restoration plans: gain within a year", result["restoration_users"], "projected_without_365d",
                       "projected_with_365d", "true_without_365d", "true_with_365d",
                       result["summary"]["restoration"]["by_lever"], 1))
    fig = Figure(figsize=(10, 4 * len(panels)))
    axes = np.atleast_2d(fig.subplots(len(panels), 2))
    for (title, rows, pw, pp, tw, tp, by_lever, sign), (scatter, bars) in zip(panels, axes):
        frame = pd.DataFrame(rows)
        projected = sign * (frame[pp] - frame[pw]).to_numpy(dtype=float)
        true = sign * (frame[tp] - frame[tw]).to_numpy(dtype=float)
        scatter.scatter(projected, true, s=8, alpha=0.5)
        both = np.concatenate([projected, true, [0.0, 1e-3]])
        lo, hi = float(np.nanmin(both)), float(np.nanmax(both))
        scatter.plot([lo, hi], [lo, hi], "k:", lw=1, label="projected = true")
        scatter.axhline(0, color="grey", lw=0.5)
        scatter.plot([projected.mean()], [true.mean()], "r*", ms=14, label="mean")
        scatter.set(xlabel="projected", ylabel="true (simulated forward)")
        scatter.set_title(f"{title}, per plan", fontsize=10)
        scatter.legend(loc="upper left", fontsize=8)
        codes = list(by_lever)
        y = np.arange(len(codes))
        bars.barh(y - 0.2, [by_lever[c]["mean_projected"] for c in codes], 0.4, label="projected")
        bars.barh(y + 0.2, [by_lever[c]["mean_true"] for c in codes], 0.4, label="true")
        bars.set_yticks(y, [f"{c} (n={by_lever[c]['n']})" for c in codes], fontsize=8)
        bars.invert_yaxis()
        bars.set_title("each lever alone: mean projected and true", fontsize=10)
        bars.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def summary_table(result: dict[str, Any]) -> str:
    """The plan-validity table (Markdown) of a `validate_plans` result: per lever and for whole plans."""
    s = result["summary"]
    fmt = lambda v, d=3: "-" if v is None else f"{v:.{d}f}"  # noqa: E731
    lines = ["| restriction plans | n | takes effect after | projected reduction | true reduction | projected / true |",
             "|---|---:|---:|---:|---:|---:|"]
    red = s["projected_vs_true_reduction"]
    for code, v in red["by_lever"].items():
        lines.append(f"| {code} alone | {v['n']} | {v['days']} d | {fmt(v['mean_projected'])} | "
                     f"{fmt(v['mean_true'])} | {fmt(v['ratio'], 2)} |")
    lines.append(f"| **whole plan** | {red['n']} | its slowest step | {fmt(red['mean_projected'])} | "
                 f"{fmt(red['mean_true'])} | {fmt(red['ratio'], 2)} |")
    early = s["from_as_of"]["projected_vs_true_reduction"]
    lines.append(f"| whole plan, counted from as_of | {early['n']} | 0 d | {fmt(early['mean_projected'])} | "
                 f"{fmt(early['mean_true'])} | {fmt(early['ratio'], 2)} |")
    lines.append("")
    lines.append(f"share of plans lowering the true risk: {100 * s['share_lowering_true_risk']:.1f}% "
                 f"(counted from as_of: {100 * s['from_as_of']['share_lowering_true_risk']:.1f}%); "
                 f"true risk with the plan under the threshold ({s['threshold']:.3f}): "
                 f"{100 * s['share_under_threshold']:.1f}%")
    r = s.get("restoration")
    if r:
        lines += ["", "| restoration plans | n | projected gain, 90 d | true gain, 90 d | projected gain, a year | "
                      "true gain, a year |", "|---|---:|---:|---:|---:|---:|"]
        for code, v in r["by_lever"].items():
            lines.append(f"| {code} alone | {v['n']} | | | {fmt(v['mean_projected'])} | {fmt(v['mean_true'])} |")
        g90, g365 = r["projected_vs_true_gain"]["90d"], r["projected_vs_true_gain"]["365d"]
        lines.append(f"| **whole plan** | {r['n_plans']} | {fmt(g90['mean_projected'])} | {fmt(g90['mean_true'])} | "
                     f"{fmt(g365['mean_projected'])} | {fmt(g365['mean_true'])} |")
        d = r["days_to_restoration"]
        lines += ["", f"share of restoration plans raising the true chance within a year: "
                      f"{100 * r['share_raising_true_restoration']:.1f}%; median days to restoration (more likely "
                      f"than not; '-': not within a year): without the plan projected {fmt(d['projected_days_without'], 0)}"
                      f", true {fmt(d['true_days_without'], 0)}; with it projected {fmt(d['projected_days_with'], 0)}, "
                      f"true {fmt(d['true_days_with'], 0)}"]
    return "\n".join(lines)
