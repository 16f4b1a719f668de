"""The declarative feature registry: the single source of truth for what the model sees.

Compute, monotone constraints, reason codes and recovery levers all read `FEATURES`;
nothing else in the project lists feature names. A recovery action ("stop early repayments for
90 days") is declared on the features it moves (`levers`, of the restriction model; `restore_levers`,
of the restoration model, with the days each takes and when it applies); models/recover.py reads
them from the model's spec, where a model's view names its own as `levers`. Each entry names its `source` (which
events), `aggregation` (how they are reduced) and `window`; features/compute.py maps
each aggregation kind to one vectorised function.
Two models read the registry: `targets` says which (the restriction model of active lines,
"restrict", and the restoration model of restricted lines, "restore"), and each target has
its own monotone direction (`direction` for restrict, `restore_direction` for restore), so
the restriction model keeps exactly its own feature set while the restoration model adds
the since-restriction features. `features_for(target)` is a model's view of the registry.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace

from linerisk.data.schema import RED_LINE_DPD, RED_LINE_MISUSE_FLAGS
from linerisk.features import valuefmt

# The world's cause families (shared/design/world.md), then families that are not causes.
CAUSE_FAMILIES = ("overdue", "early_repayment", "fund_misuse", "credit_score", "multi_borrowing",
                  "utilisation", "bl_closure")
# `restriction` (how long the line has been shut), `appeal` (contacting the platform) and
# `red_line` (a default or repeated misuse: never restored) are the restoration model's own.
FAMILIES = CAUSE_FAMILIES + ("activity", "tenure", "restriction", "appeal", "red_line")
# Families that record what happened to the user, not what the user does: never an action's own.
OUTCOME_FAMILIES = ("credit_score",)
# Causes the platform lifts readily, also on appeal (shared/design/world.md "Restoration").
MINOR_CAUSES = ("early_repayment", "bl_closure", "utilisation", "multi_borrowing")

# The models that read the registry: P(restricted within the horizon) of an active line, and
# P(restored within the horizon) of a restricted one.
TARGETS = ("restrict", "restore")
# Where a window is cut: "as_of" [as_of - window, as_of); "since_restricted" the part of that
# window after the line's current restriction began; "restricted" [restriction - window, restriction),
# the behaviour that led to it. Anchored features are NaN for lines that are not restricted.
ANCHORS = ("as_of", "since_restricted", "restricted")

# Aggregations with no value for a user without such events (NaN): these need a `none_*` text.
MAY_BE_MISSING = ("share", "last_dpd", "last", "change", "min", "days_since_last", "days_since_first", "balance",
                  "utilisation", "limit", "limit_change_ratio", "change_since_restriction")

# How a value is shown in a reason text.
UNITS = ("count", "money", "share", "days", "score", "points", "ratio", "flag", "weighted")

# Aggregation kinds understood by features/compute.py (kept here so the spec validates itself).
AGGREGATIONS = ("count", "sum", "share", "flag", "max_dpd", "sum_dpd_capped", "last_dpd", "last", "change",
                "min", "days_since_last", "days_since_first", "balance", "utilisation", "limit",
                "limit_change_ratio", "line_open", "line_closed", "days_since_signup", "segment_merchant",
                "days_restricted", "change_since_restriction", "count_older", "decayed_count", "peak_count")


@dataclass(frozen=True)
class Lever:
    """How one recovery action moves this feature; features naming the same `action` move together.

    The feature moves `to` a value or `by` an amount (with `of`, per unit of feature `of`'s value: the
    balance to 50% of the limit, the score by 3.75 points per recent inquiry), never past its risk
    direction (models/recover.py). One feature per action carries the action's texts; `{value}`
    shows that feature's current value. An action moves one family's behaviour; a feature of
    another family moves only `by` ... `of` a behaviour (a consequence, like the score)."""

    action: str              # stable code, e.g. "no_early_repayment_90d"
    to: float | None = None
    by: float | None = None
    of: str | None = None
    text_en: str = ""
    text_zh: str = ""

    def check(self, feature: "Feature", direction: int | None = None) -> None:
        """Refuse a declaration models/recover.py could not apply (`direction`: the target's, default restrict's)."""
        where = f"feature {feature.name}: lever {self.action}"
        direction = feature.direction if direction is None else direction
        if (self.to is None) == (self.by is None) and not (self.shows_only() and self.text_en):
            raise ValueError(f"{where}: give exactly one of to or by")
        if not (feature.actionable and direction != 0):
            raise ValueError(f"{where}: only an actionable feature with a risk direction can be moved")
        if bool(self.text_en) != bool(self.text_zh):
            raise ValueError(f"{where}: give both text_en and text_zh, or neither")
        if self.text_en and ("{value}" not in self.text_en or "{value}" not in self.text_zh):
            raise ValueError(f"{where}: lever texts need a {{value}} slot")

    def shows_only(self) -> bool:
        """True for a restoration action's texts on a feature it does not move (the value they show)."""
        return False


# When a restoration action applies, besides "not past the red line" (models/restore_plan.py decides each):
# "likely_minor": the restriction model's top reason on the day of the restriction is one of MINOR_CAUSES;
# a condition of CONDITION_FEATURES: where one of its features is positive ("bl_open": only an open business
# loan can be drawn; "owes": an instalment can only be repaid on time where something is owed). `linerisk
# validate-plans` found both actions offered where the world gives them nothing to act on: they truly changed
# nothing there.
CONDITION_FEATURES = {"bl_open": ("bl_is_open",), "owes": ("pl_balance", "bl_balance")}
LEVER_CONDITIONS = ("", "likely_minor", *CONDITION_FEATURES)


@dataclass(frozen=True)
class RestoreLever(Lever):
    """A restoration action's texts, on the feature whose value they show: the days the action takes before
    the line is re-scored and when it applies (LEVER_CONDITIONS). The feature may only be shown (neither
    `to` nor `by`): "repay on time for 90 days" shows the late repayments since the restriction, which it
    cannot undo. The other features the action moves carry plain Levers in `restore_levers`."""

    days: int = 0
    only_if: str = ""

    def check(self, feature: "Feature", direction: int | None = None) -> None:
        super().check(feature, direction)
        where = f"feature {feature.name}: lever {self.action}"
        if not self.text_en:
            raise ValueError(f"{where}: a RestoreLever carries the action's texts")
        if not (isinstance(self.days, int) and 0 <= self.days <= 365):
            raise ValueError(f"{where}: days must be a whole number from 0 to 365")
        if self.only_if not in LEVER_CONDITIONS:
            raise ValueError(f"{where}: only_if must be one of {LEVER_CONDITIONS}")

    def shows_only(self) -> bool:
        return self.to is None and self.by is None


@dataclass(frozen=True)
class Feature:
    """One feature: how it is computed, how the model may use it, and how it is explained."""

    name: str
    family: str          # one of FAMILIES
    window: int | None   # look-back in days; None = all history before as_of
    aggregation: str     # one of AGGREGATIONS
    direction: int       # monotone constraint for the model: +1, -1 or 0
    actionable: bool     # can the user change it by their own behaviour
    text_en: str         # reason text, `{value}` is the user's value
    text_zh: str
    source: str = ""     # which events feed it, e.g. "bl_repayment.early" (see compute.SOURCES)
    unit: str = "count"  # how `{value}` is rendered: one of UNITS
    none_en: str = ""    # text when the user has no value (no such event before as_of); needed where one can be missing
    none_zh: str = ""
    levers: tuple[Lever, ...] = ()  # recovery actions (restriction model) that move this feature
    restore_levers: tuple[Lever, ...] = ()  # restoration actions that move (or show) it, by restore_direction
    targets: tuple[str, ...] = ("restrict",)  # the models that use it (TARGETS)
    restore_direction: int = 0  # monotone constraint on P(restored) where the restoration model uses it
    anchor: str = "as_of"       # where the window is cut (ANCHORS)
    half_life: int | None = None  # decayed_count only: days after which an event weighs half (the review's memory)
    sub_window: int | None = None  # peak_count only: the most events in any span of this many days in the window

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"feature {self.name}: unknown family {self.family!r}")
        if self.direction not in (-1, 0, 1) or self.restore_direction not in (-1, 0, 1):
            raise ValueError(f"feature {self.name}: direction must be -1, 0 or +1")
        if not self.targets or not set(self.targets) <= set(TARGETS):
            raise ValueError(f"feature {self.name}: targets must be a non-empty subset of {TARGETS}")
        if self.anchor not in ANCHORS:
            raise ValueError(f"feature {self.name}: unknown anchor {self.anchor!r}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"feature {self.name}: unknown aggregation {self.aggregation!r}")
        if (self.aggregation == "decayed_count") != (self.half_life is not None):
            raise ValueError(f"feature {self.name}: a decayed_count needs a half_life, and only it takes one")
        if (self.aggregation == "peak_count") != (self.sub_window is not None):
            raise ValueError(f"feature {self.name}: a peak_count needs a sub_window, and only it takes one")
        if self.sub_window is not None and not (isinstance(self.sub_window, int) and self.window is not None
                                                and 0 < self.sub_window < self.window):
            raise ValueError(f"feature {self.name}: sub_window must be a whole number of days shorter than the window")
        if self.half_life is not None and not (isinstance(self.half_life, int) and 0 < self.half_life <= 365):
            raise ValueError(f"feature {self.name}: half_life must be a whole number of days from 1 to 365")
        if self.unit not in UNITS:
            raise ValueError(f"feature {self.name}: unknown unit {self.unit!r}")
        if "{value}" not in self.text_en or "{value}" not in self.text_zh:
            raise ValueError(f"feature {self.name}: reason texts need a {{value}} slot")
        if self.aggregation in MAY_BE_MISSING and not (self.none_en and self.none_zh):
            raise ValueError(f"feature {self.name}: {self.aggregation} can be missing; give none_en and none_zh")
        for lever in self.levers:  # in the restoration view these are its restore_levers
            lever.check(self)
        if self.restore_levers and "restore" not in self.targets:
            raise ValueError(f"feature {self.name}: restore_levers on a feature the restoration model does not read")
        for lever in self.restore_levers:
            lever.check(self, self.restore_direction)


# The credit score is an outcome, not something a user can do: no lever of its own. In this world
# (data/world.py, the monthly score report) its target loses 5 points per credit inquiry of the last
# 30 days and each monthly report moves 75% of the way there, so making no applications also lifts
# the score by about 3.75 points per recent inquiry at the next report, projected with the inquiry
# levers. (Clearing arrears lifts the target by 60 while an instalment is overdue, but no feature
# shows whether one is overdue now, so that effect is left out.)
SCORE_POINTS_PER_INQUIRY = 0.75 * 5.0
# The platform reviews behaviour with a lag (world.md: its view of each hazard follows behaviour with a
# 90-day smoothing): a behaviour's change shows in its decisions only once the windows it clears have drained
# and this many days more have passed, so a restriction lever's projection holds from window + lag
# (models/recover.py `Lever.days`). At the window's end alone only about 60% of the change shows over the
# next 90 days (1 - (1 - 1/e)^2 for a window the length of the lag), a lag later about 85%: measured by
# `linerisk validate-plans`, the projected reduction was 1.42x the true one counted from the window's end,
# 1.09x from window + lag (README "Plans checked against the true world").
REVIEW_LAG_DAYS = 90
_SCORE_AFTER_NO_INQUIRIES = tuple(Lever(action, by=SCORE_POINTS_PER_INQUIRY, of="credit_inquiry_count_30d")
                                  for action in ("no_credit_applications_30d", "no_credit_applications_90d"))
def _decays(action: str, days: int, name: str, half_life: int) -> Lever:
    """A recency-weighted count after `days` without such events: every weight has halved days / half_life times
    (events leaving the window only lower it further; the plan never moves a feature past its risk direction)."""
    return Lever(action, by=0.5 ** (days / half_life) - 1.0, of=name)


# Levers shared by several features of one action (the action's texts sit on one feature).
_REPAY = Lever("repay_on_time_90d", to=0.0)
_NO_EARLY = Lever("no_early_repayment_90d", to=0.0)
_NO_APPLICATIONS = Lever("no_credit_applications_90d", to=0.0)
# Restoration actions take 90 days of behaviour before the line is re-scored (an appeal is reviewed within
# days: 0). Repaying on time for 90 days gives about three on-time instalments, and using the business loan
# normally two drawdowns repaid on time.
RESTORE_ACTION_DAYS = 90

_PRODUCT = {"bl": ("business loan", "网商贷"), "pl": ("personal line", "借呗")}


def _activity() -> tuple[Feature, ...]:
    """Drawdown and repayment counts and amounts per product and window (behaviour volume)."""
    out = []
    for p, (en, zh) in _PRODUCT.items():
        for what, what_en, what_zh in (("drawdown", "drawdowns", "借款"), ("repayment", "repayments", "还款")):
            for w in (30, 90, 180, 365):
                out.append(Feature(
                    f"{p}_{what}_count_{w}d", "activity", w, "count", 0, True,
                    f"{{value}} {what_en} on the {en} in the last {w} days", f"近{w}天{zh}{what_zh}{{value}}次",
                    source=f"{p}_{what}", unit="count"))
                out.append(Feature(
                    f"{p}_{what}_amount_{w}d", "activity", w, "sum", 0, True,
                    f"{{value}} in {what_en} on the {en} in the last {w} days", f"近{w}天{zh}{what_zh}金额{{value}}",
                    source=f"{p}_{what}", unit="money"))
    return tuple(out)


BOTH = TARGETS  # a feature both models read
RESTORE = ("restore",)
# Days an appeal stays under review (the world's review lands within about 2-10 days): an older
# appeal on a line still restricted was turned down.
APPEAL_REVIEW_DAYS = 10

# The red line: evidence in the events after which a line never comes back. Each rule: the
# feature, the value at which it holds, the feature that dates it, and how it is stated.
RED_LINE_CAP = 0.01  # the most a red-line line is ever given, for every horizon
RED_LINE = (
    {"feature": "default_count_ever", "at_least": 1, "dated_by": "days_since_default", "unit": "count",
     "text_en": "a default (over 90 days past due) on record, the last on {date}",
     "text_zh": "有违约记录（逾期超90天），最近一次在{date}"},
    {"feature": "max_dpd_ever", "at_least": RED_LINE_DPD + 1, "dated_by": "days_since_default", "unit": "days",
     "text_en": "a repayment {value} days past due, beyond the 90-day red line (default dated {date})",
     "text_zh": "曾逾期{value}天，超过90天红线（违约日期{date}）"},
    {"feature": "fund_misuse_count_ever", "at_least": RED_LINE_MISUSE_FLAGS, "dated_by": "days_since_fund_misuse", "unit": "count",
     "text_en": "{value} fund-misuse flags on the business loan, the last on {date}",
     "text_zh": "网商贷资金用途违规{value}次，最近一次在{date}"},
)


def _restoration() -> tuple[Feature, ...]:
    """The restoration model's own features: behaviour since the current restriction, the behaviour that
    led to it (the likely cause), appeals and their outcome so far, and the red-line evidence."""
    def since(name, family, aggregation, source, d, en, zh, unit="count", window=None, **kw):
        return Feature(name, family, window, aggregation, 0, kw.pop("actionable", True), en, zh, source=source,
                       unit=unit, targets=RESTORE, restore_direction=d, anchor="since_restricted", **kw)

    def before(name, family, aggregation, source, window, d, en, zh, unit="count", **kw):
        return Feature(name, family, window, aggregation, 0, False, en, zh, source=source, unit=unit,
                       targets=RESTORE, restore_direction=d, anchor="restricted", **kw)

    def ever(name, aggregation, source, d, en, zh, unit="count", **kw):
        return Feature(name, "red_line", None, aggregation, 0, False, en, zh, source=source, unit=unit,
                       targets=RESTORE, restore_direction=d, **kw)

    return (
        since("days_restricted", "restriction", "days_restricted", "pl_restricted", 0,
              "restricted for {value} days", "借呗已被限制{value}天", unit="days", actionable=False),
        since("on_time_repayment_count_since", "overdue", "count", "repayment.on_time", +1,
              "{value} on-time repayments since the restriction", "限制以来按时还款{value}次",
              restore_levers=(Lever("repay_on_time_90d", by=3.0), Lever("use_business_loan_90d", by=2.0))),
        since("late_repayment_count_since", "overdue", "count", "repayment.late", -1,
              "{value} late repayments since the restriction", "限制以来逾期还款{value}次",
              restore_levers=(RestoreLever(
                  "repay_on_time_90d", days=RESTORE_ACTION_DAYS, only_if="owes",
                  text_en="Repay every instalment on time for 90 days (now: {value} late repayments since the restriction)",
                  text_zh="连续90天按时还款（限制以来逾期还款{value}次）"),)),
        since("max_dpd_since", "overdue", "max_dpd", "repayment", -1,
              "up to {value} days past due since the restriction", "限制以来最长逾期{value}天", unit="days"),
        since("early_repayment_count_since", "early_repayment", "count", "repayment.early", 0,
              "{value} early repayments since the restriction", "限制以来提前还款{value}次"),
        since("credit_score_change_since", "credit_score", "change_since_restriction", "credit_score", +1,
              "credit score changed by {value} points since the restriction", "限制以来信用分变化{value}分",
              unit="points", none_en="no credit score on record", none_zh="无信用分记录"),
        since("credit_inquiry_count_since", "multi_borrowing", "count", "credit_inquiry", -1,
              "{value} credit applications since the restriction", "限制以来征信查询{value}次",
              restore_levers=(RestoreLever(
                  "no_credit_applications_90d", days=RESTORE_ACTION_DAYS,
                  text_en="Make no new credit applications for 90 days (now: {value} since the restriction)",
                  text_zh="90天内不再申请其他贷款（限制以来征信查询{value}次）"),)),
        since("bl_drawdown_count_since", "activity", "count", "bl_drawdown", +1,
              "{value} business-loan drawdowns since the restriction", "限制以来网商贷借款{value}次",
              restore_levers=(RestoreLever(
                  "use_business_loan_90d", by=2.0, days=RESTORE_ACTION_DAYS, only_if="bl_open",
                  text_en="Use the business loan normally and repay it on time for 90 days "
                          "(now: {value} drawdowns since the restriction)",
                  text_zh="90天内正常使用网商贷并按时还款（限制以来借款{value}次）"),)),
        since("fund_misuse_count_since", "fund_misuse", "count", "bl_fund_misuse", -1,
              "{value} fund-misuse flags since the restriction", "限制以来资金用途违规{value}次"),
        since("appeal_pending_count", "appeal", "count", "pl_appeal", +1,
              f"{{value}} appeals to the platform in the last {APPEAL_REVIEW_DAYS} days, under review",
              f"近{APPEAL_REVIEW_DAYS}天联系平台申诉{{value}}次，审核中", window=APPEAL_REVIEW_DAYS,
              restore_levers=(RestoreLever(
                  "contact_platform", to=1.0, days=0, only_if="likely_minor",
                  text_en="Contact the platform to ask for a review: the likely cause is minor "
                          "(now: {value} appeals under review)",
                  text_zh="主动联系平台申请复核：可能的原因较轻（目前审核中的申诉{value}次）"),)),
        since("appeal_rejected_count", "appeal", "count_older", "pl_appeal", -1,
              "{value} appeals since the restriction reviewed without a lift", "限制以来申诉{value}次未获恢复",
              window=APPEAL_REVIEW_DAYS, actionable=False),
        before("late_days_sum_before_restriction", "overdue", "sum_dpd_capped", "repayment.late", 90, -1,
               "{value} days overdue in the 90 days before the restriction", "限制前90天累计逾期{value}天", unit="days"),
        before("early_repayment_count_before_restriction", "early_repayment", "count", "repayment.early", 180, 0,
               "{value} early repayments in the 180 days before the restriction", "限制前180天提前还款{value}次"),
        before("late_repayment_count_before_restriction", "overdue", "count", "repayment.late", 180, -1,
               "{value} late repayments in the 180 days before the restriction", "限制前180天逾期还款{value}次"),
        before("max_dpd_before_restriction", "overdue", "max_dpd", "repayment", 365, -1,
               "up to {value} days past due in the year before the restriction", "限制前一年最长逾期{value}天",
               unit="days"),
        before("credit_score_min_before_restriction", "credit_score", "min", "credit_score", 365, 0,
               "credit score was as low as {value} in the year before the restriction", "限制前一年信用分最低{value}",
               unit="score", none_en="no credit score on record before the restriction", none_zh="限制前无信用分记录"),
        before("credit_inquiry_count_year_before_restriction", "multi_borrowing", "count", "credit_inquiry", 365, 0,
               "{value} credit inquiries in the year before the restriction", "限制前一年征信查询{value}次"),
        before("fund_misuse_count_before_restriction", "fund_misuse", "count", "bl_fund_misuse", 180, -1,
               "{value} fund-misuse flags in the 180 days before the restriction", "限制前180天资金用途违规{value}次"),
        before("credit_inquiry_count_before_restriction", "multi_borrowing", "count", "credit_inquiry", 90, 0,
               "{value} credit inquiries in the 90 days before the restriction", "限制前90天征信查询{value}次"),
        before("bl_closed_before_restriction", "bl_closure", "flag", "bl_close", 180, 0,
               "business loan closed in the 180 days before the restriction: {value}", "限制前180天关闭网商贷：{value}",
               unit="flag"),
        before("credit_score_at_restriction", "credit_score", "last", "credit_score", None, 0,
               "credit score was {value} when the line was restricted", "限制时信用分为{value}", unit="score",
               none_en="no credit score on record before the restriction", none_zh="限制前无信用分记录"),
        before("pl_utilisation_at_restriction", "utilisation", "utilisation", "pl", None, 0,
               "{value} of the personal-line limit was in use when the line was restricted", "限制时借呗额度已使用{value}",
               unit="share", none_en="no personal line", none_zh="未开通借呗"),
        Feature("days_since_repayment", "overdue", None, "days_since_last", 0, True, "last repayment {value} days ago",
                "距上次还款{value}天", source="repayment", unit="days", none_en="no repayment on record",
                none_zh="无还款记录", targets=RESTORE),
        Feature("bl_balance", "utilisation", None, "balance", 0, True, "{value} outstanding on the business loan",
                "网商贷待还余额{value}", source="bl", unit="money", none_en="no business loan", none_zh="未开通网商贷",
                targets=RESTORE),
        ever("max_dpd_ever", "max_dpd", "dpd", -1, "up to {value} days past due on record", "历史最长逾期{value}天",
             unit="days"),
        ever("default_count_ever", "count", "default", -1, "{value} defaults (over 90 days past due) on record",
             "历史违约（逾期超90天）{value}次"),
        ever("days_since_default", "days_since_last", "default", 0, "last default {value} days ago", "距上次违约{value}天",
             unit="days", none_en="no default on record", none_zh="无违约记录"),
        ever("fund_misuse_count_ever", "count", "bl_fund_misuse", -1, "{value} fund-misuse flags on record",
             "历史资金用途违规{value}次"),
    )


FEATURES: tuple[Feature, ...] = (
    # --- overdue: the simulator's overdue hazard reads late_days_sum_90d, counts and max dpd
    Feature("late_days_sum_90d", "overdue", 90, "sum_dpd_capped", 1, True,
            "{value} days overdue in total (each repayment capped at 120) in the last 90 days",
            "近90天累计逾期{value}天（单笔最多计120天）", source="repayment.late", unit="days",
            levers=(Lever("repay_on_time_90d", to=0.0,
                           text_en="Clear the overdue balance and repay on time for 90 days (now: {value} days overdue in the last 90 days)",
                           text_zh="结清逾期欠款并连续90天按时还款（近90天累计逾期{value}天）"),), targets=BOTH, restore_direction=-1,
            restore_levers=(_REPAY,)),
    Feature("late_repayment_count_90d", "overdue", 90, "count", 1, True,
            "{value} late repayments in the last 90 days", "近90天逾期还款{value}次", source="repayment.late",
            levers=(_REPAY,), targets=BOTH, restore_direction=-1, restore_levers=(_REPAY,)),
    Feature("bl_late_repayment_count_90d", "overdue", 90, "count", 1, True,
            "{value} late repayments on the business loan in the last 90 days", "近90天网商贷逾期还款{value}次",
            source="bl_repayment.late",
            levers=(_REPAY,)),
    Feature("pl_late_repayment_count_90d", "overdue", 90, "count", 1, True,
            "{value} late repayments on the personal line in the last 90 days", "近90天借呗逾期还款{value}次",
            source="pl_repayment.late",
            levers=(_REPAY,)),
    Feature("late_repayment_count_365d", "overdue", 365, "count", 1, True,
            "{value} late repayments in the last 365 days", "近365天逾期还款{value}次", source="repayment.late"),
    Feature("late_repayment_share_90d", "overdue", 90, "share", 1, True,
            "{value} of repayments in the last 90 days were late", "近90天{value}的还款逾期",
            source="repayment.late", unit="share",
            none_en="no repayments in the last 90 days", none_zh="近90天无还款",
            levers=(_REPAY,)),
    Feature("max_dpd_90d", "overdue", 90, "max_dpd", 1, True,
            "up to {value} days past due in the last 90 days", "近90天最长逾期{value}天", source="repayment", unit="days",
            levers=(_REPAY,), targets=BOTH, restore_direction=-1, restore_levers=(_REPAY,)),
    Feature("max_dpd_365d", "overdue", 365, "max_dpd", 1, True,
            "up to {value} days past due in the last 365 days", "近365天最长逾期{value}天", source="repayment", unit="days"),
    Feature("last_dpd", "overdue", None, "last_dpd", 1, True,
            "the latest repayment was {value} days late", "最近一笔还款逾期{value}天", source="repayment", unit="days",
            none_en="no repayment on record", none_zh="无还款记录",
            levers=(_REPAY,), targets=BOTH, restore_direction=-1, restore_levers=(_REPAY,)),
    Feature("days_since_late_repayment", "overdue", None, "days_since_last", -1, True,
            "last late repayment {value} days ago", "距上次逾期还款{value}天", source="repayment.late", unit="days",
            none_en="no late repayment on record", none_zh="无逾期还款记录"),
    # --- early repayment: read by the platform as "little need to borrow"
    Feature("early_repayment_count_90d", "early_repayment", 90, "count", 1, True,
            "{value} early repayments in the last 90 days", "近90天提前还款{value}次", source="repayment.early",
            levers=(Lever("no_early_repayment_90d", to=0.0,
                           text_en="Stop early repayments for 90 days (now: {value} in the last 90 days)",
                           text_zh="90天内不再提前还款（近90天提前还款{value}次）"),), targets=BOTH),
    Feature("bl_early_repayment_count_90d", "early_repayment", 90, "count", 1, True,
            "{value} early repayments on the business loan in the last 90 days", "近90天网商贷提前还款{value}次",
            source="bl_repayment.early",
            levers=(_NO_EARLY,)),
    Feature("pl_early_repayment_count_90d", "early_repayment", 90, "count", 1, True,
            "{value} early repayments on the personal line in the last 90 days", "近90天借呗提前还款{value}次",
            source="pl_repayment.early",
            levers=(_NO_EARLY,)),
    Feature("early_repayment_share_90d", "early_repayment", 90, "share", 1, True,
            "{value} of repayments in the last 90 days were early", "近90天{value}的还款为提前还款",
            source="repayment.early", unit="share",
            none_en="no repayments in the last 90 days", none_zh="近90天无还款",
            levers=(_NO_EARLY,)),
    Feature("early_repayment_count_365d", "early_repayment", 365, "count", 1, True,
            "{value} early repayments in the last 365 days", "近365天提前还款{value}次", source="repayment.early"),
    # --- fund misuse on the business loan
    Feature("fund_misuse_count_90d", "fund_misuse", 90, "count", 1, True,
            "{value} fund-misuse flags on the business loan in the last 90 days", "近90天网商贷资金用途违规{value}次",
            source="bl_fund_misuse",
            levers=(Lever("no_fund_misuse_90d", to=0.0,
                           text_en="Use business-loan funds only as agreed for 90 days (now: {value} flags in the last 90 days)",
                           text_zh="90天内按约定用途使用网商贷资金（近90天违规{value}次）"),)),
    Feature("fund_misuse_count_180d", "fund_misuse", 180, "count", 1, True,
            "{value} fund-misuse flags on the business loan in the last 180 days", "近180天网商贷资金用途违规{value}次",
            source="bl_fund_misuse"),
    Feature("fund_misuse_count_365d", "fund_misuse", 365, "count", 1, True,
            "{value} fund-misuse flags on the business loan in the last 365 days", "近365天网商贷资金用途违规{value}次",
            source="bl_fund_misuse", targets=BOTH, restore_direction=-1),
    Feature("fund_misuse_amount_180d", "fund_misuse", 180, "sum", 1, True,
            "{value} flagged as misused in the last 180 days", "近180天被认定违规使用的资金{value}",
            source="bl_fund_misuse", unit="money"),
    Feature("days_since_fund_misuse", "fund_misuse", None, "days_since_last", -1, True,
            "last fund-misuse flag {value} days ago", "距上次资金用途违规{value}天", source="bl_fund_misuse", unit="days",
            none_en="no fund-misuse flag on record", none_zh="无资金用途违规记录", targets=BOTH),
    # --- credit score
    Feature("credit_score_latest", "credit_score", None, "last", -1, True,
            "credit score is {value}", "信用分为{value}", source="credit_score", unit="score",
            none_en="no credit score on record", none_zh="无信用分记录", levers=_SCORE_AFTER_NO_INQUIRIES, targets=BOTH, restore_direction=+1),
    Feature("credit_score_change_90d", "credit_score", 90, "change", -1, True,
            "credit score changed by {value} points in the last 90 days", "近90天信用分变化{value}分",
            source="credit_score", unit="points",
            none_en="no credit-score change on record in the last 90 days", none_zh="近90天无信用分变化记录",
            levers=_SCORE_AFTER_NO_INQUIRIES, targets=BOTH, restore_direction=+1),
    Feature("credit_score_min_365d", "credit_score", 365, "min", -1, True,
            "credit score was as low as {value} in the last 365 days", "近365天信用分最低{value}",
            source="credit_score", unit="score",
            none_en="no credit score on record in the last 365 days", none_zh="近365天无信用分记录", targets=BOTH),
    # --- multi-borrowing: credit applications elsewhere
    Feature("credit_inquiry_count_30d", "multi_borrowing", 30, "count", 1, True,
            "{value} credit inquiries in the last 30 days", "近30天征信查询{value}次", source="credit_inquiry",
            levers=(Lever("no_credit_applications_30d", to=0.0,
                           text_en="Make no new credit applications for 30 days (now: {value} in the last 30 days); "
                                   "the credit score then recovers about 4 points per recent inquiry at its next "
                                   "monthly report",
                           text_zh="30天内不再申请其他贷款（近30天征信查询{value}次）；下次月度更新时每次查询约可回升4分信用分"),
                    _NO_APPLICATIONS), targets=BOTH, restore_direction=-1, restore_levers=(_NO_APPLICATIONS,)),
    Feature("credit_inquiry_count_90d", "multi_borrowing", 90, "count", 1, True,
            "{value} credit inquiries in the last 90 days", "近90天征信查询{value}次", source="credit_inquiry",
            levers=(Lever("no_credit_applications_90d", to=0.0,
                           text_en="Make no new credit applications for 90 days (now: {value} in the last 90 days); "
                                   "the credit score then recovers about 4 points per inquiry of the last 30 days "
                                   "at its next monthly report",
                           text_zh="90天内不再申请其他贷款（近90天征信查询{value}次）；下次月度更新时近30天每次查询约可回升4分信用分"),), targets=BOTH, restore_direction=-1,
            restore_levers=(_NO_APPLICATIONS,)),
    Feature("credit_inquiry_count_365d", "multi_borrowing", 365, "count", 1, True,
            "{value} credit inquiries in the last 365 days", "近365天征信查询{value}次", source="credit_inquiry"),
    # Recency-weighted counts and the busiest 30 days: the platform reviews behaviour with a lag, so a burst of
    # applications weighs on the line for months after the window counts drop it; half-lives a month and a quarter
    # (README "Features that track the lagged review": the same for early repayments named more ordinary ones).
    *(Feature(f"credit_inquiry_decayed_hl{h}", "multi_borrowing", 365, "decayed_count", 1, True,
              f"{{value}} credit inquiries weighted by recency (one {h} days old counts half)",
              f"按时间加权的征信查询{{value}}次（{h}天前的一次计一半）", source="credit_inquiry", unit="weighted",
              half_life=h, levers=tuple(_decays(a, d, f"credit_inquiry_decayed_hl{h}", h)
                                        for a, d in (("no_credit_applications_30d", 30),
                                                     ("no_credit_applications_90d", 90))))
      for h in (30, 90)),
    Feature("credit_inquiry_peak_30d_180d", "multi_borrowing", 180, "peak_count", 1, True,
            "up to {value} credit inquiries within 30 days in the last 180 days", "近180天内任意30天征信查询最多{value}次",
            source="credit_inquiry", sub_window=30),
    # --- utilisation of the personal line. No lever: paying the line down (to 50% or 30% of its limit) was
    # checked against the simulator (`linerisk validate-plans`) and lowers the true risk about a fifth as much
    # as the model projects (high utilisation mostly marks stress the model cannot see; the world's own
    # utilisation hazard is small), for only ~70% of users, so the plan no longer offers it.
    Feature("pl_balance", "utilisation", None, "balance", 1, True,
            "{value} outstanding on the personal line", "借呗待还余额{value}", source="pl", unit="money",
            none_en="no personal line", none_zh="未开通借呗", targets=BOTH),
    Feature("pl_limit", "utilisation", None, "limit", 0, False,
            "personal-line limit is {value}", "借呗额度为{value}", source="pl_limit", unit="money",
            none_en="no personal line", none_zh="未开通借呗"),
    Feature("pl_utilisation", "utilisation", None, "utilisation", 1, True,
            "{value} of the personal-line limit is in use", "借呗额度已使用{value}", source="pl", unit="share",
            none_en="no personal line", none_zh="未开通借呗", targets=BOTH),
    Feature("pl_limit_change_count_365d", "utilisation", 365, "count", 0, False,
            "{value} personal-line limit changes in the last 365 days", "近365天借呗额度调整{value}次",
            source="pl_limit_change"),
    Feature("pl_limit_change_ratio", "utilisation", None, "limit_change_ratio", 0, False,
            "the last limit change set the personal line to {value} of its previous limit",
            "最近一次额度调整后借呗额度为原额度的{value}", source="pl_limit", unit="ratio",
            none_en="no limit change on record", none_zh="无额度调整记录"),
    # --- business-loan closure: at most a small, short effect in the world
    Feature("bl_is_closed", "bl_closure", None, "line_closed", 0, False,
            "business loan closed: {value}", "网商贷已关闭：{value}", source="bl", unit="flag", targets=BOTH),
    Feature("bl_closed_60d", "bl_closure", 60, "flag", 1, False,
            "business loan closed in the last 60 days: {value}", "近60天关闭网商贷：{value}", source="bl_close",
            unit="flag"),
    Feature("days_since_bl_close", "bl_closure", None, "days_since_last", -1, False,
            "business loan closed {value} days ago", "网商贷已关闭{value}天", source="bl_close", unit="days",
            none_en="business loan never closed", none_zh="网商贷从未关闭", targets=BOTH),
    # --- activity: repayment timing mix and line history (history only: events before as_of)
    Feature("on_time_repayment_count_90d", "activity", 90, "count", 0, True,
            "{value} on-time repayments in the last 90 days", "近90天按时还款{value}次", source="repayment.on_time", targets=BOTH, restore_direction=+1,
            restore_levers=(Lever("repay_on_time_90d", to=3.0),)),
    Feature("on_time_repayment_share_90d", "activity", 90, "share", 0, True,
            "{value} of repayments in the last 90 days were on time", "近90天{value}的还款按时",
            source="repayment.on_time", unit="share",
            none_en="no repayments in the last 90 days", none_zh="近90天无还款"),
    Feature("pl_restriction_count_365d", "activity", 365, "count", 0, False,
            "personal line restricted {value} times in the last 365 days", "近365天借呗被限制{value}次",
            source="pl_restricted", targets=BOTH),
    Feature("days_since_pl_restored", "activity", None, "days_since_last", 0, False,
            "personal line restored {value} days ago", "借呗恢复已{value}天", source="pl_restored", unit="days",
            none_en="personal line never restored", none_zh="借呗从未恢复"),
    *_activity(),
    # --- tenure and product holding; an open business loan marks a merchant with credit, not a closure
    Feature("bl_is_open", "tenure", None, "line_open", 0, False,
            "business loan open: {value}", "网商贷在用：{value}", source="bl", unit="flag", targets=BOTH),
    Feature("days_since_pl_open", "tenure", None, "days_since_first", 0, False,
            "personal line opened {value} days ago", "借呗已开通{value}天", source="pl_open", unit="days",
            none_en="no personal line", none_zh="未开通借呗"),
    Feature("days_since_signup", "tenure", None, "days_since_signup", 0, False,
            "on the platform for {value} days", "注册已{value}天", source="users", unit="days", targets=BOTH),
    Feature("is_merchant", "tenure", None, "segment_merchant", 0, False,
            "merchant account: {value}", "商家用户：{value}", source="users", unit="flag", targets=BOTH),
    *_restoration(),
)


def features_for(target: str | None = None) -> tuple[Feature, ...]:
    """The registry as one model sees it: its features in spec order, `direction` and `levers` its own
    (the restoration view's `levers` are the restore_levers; no view keeps restore_levers). None: all entries."""
    if target is None:
        return FEATURES
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r} (expected one of {', '.join(TARGETS)})")
    mine = tuple(f for f in FEATURES if target in f.targets)
    if target == "restrict":
        return tuple(replace(f, restore_levers=()) for f in mine)
    return tuple(replace(f, direction=f.restore_direction, levers=f.restore_levers, restore_levers=()) for f in mine)


def feature_records(target: str) -> list[dict]:
    """One target's view as the plain rows a model's spec carries (features/spec.py's fields, `levers` the
    target's own; restore_levers, empty in every view, and an unset half_life or sub_window left out so records are as before them)."""
    rows = [asdict(f) for f in features_for(target)]
    for row in rows:
        del row["restore_levers"]
        for extra in ("half_life", "sub_window"):  # only their aggregations carry them: other records stay as they were
            if row[extra] is None:
                del row[extra]
    return rows


def feature_names(target: str | None = None) -> list[str]:
    """Names in spec order: every registry entry, or one target's features."""
    return [f.name for f in features_for(target)]


def records_hash(rows: list[dict]) -> str:
    """sha256 of feature records (key order aside): the identity of a model's features."""
    return hashlib.sha256(json.dumps(rows, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def spec_hash(target: str = "restrict") -> str:
    """sha256 of one model's view of the spec: a model refuses features built from another spec."""
    return records_hash(feature_records(target))


def monotone_constraints(target: str = "restrict") -> list[int]:
    """LightGBM `monotone_constraints` of one target's model, one entry per feature in spec order."""
    return [f.direction for f in features_for(target)]


def features_by_family() -> dict[str, list[Feature]]:
    """Features grouped by family (every family present, in FAMILIES order)."""
    out: dict[str, list[Feature]] = {fam: [] for fam in FAMILIES}
    for f in FEATURES:
        out[f.family].append(f)
    return out


_BY_NAME = {f.name: f for f in FEATURES}
if len(_BY_NAME) != len(FEATURES):
    raise ValueError("feature names in FEATURES must be unique")


def check_levers(features: tuple[Feature, ...], one_family: bool = True) -> None:
    """Each recovery action of one model's view: exactly one feature carrying its texts, `of` naming a feature,
    never a credit-score feature's texts (an outcome, not an action) and, with `one_family` (the restriction plan
    takes at most one lever per family), one family (features of others only as consequences, `by` ... `of`)."""
    names = {f.name for f in features}
    family: dict[str, set[str]] = {}
    texts: dict[str, int] = {}
    for f in features:
        for lever in f.levers:
            if not (lever.by is not None and lever.of is not None):
                family.setdefault(lever.action, set()).add(f.family)
            texts[lever.action] = texts.get(lever.action, 0) + bool(lever.text_en)
            if lever.text_en and f.family in OUTCOME_FAMILIES:
                raise ValueError(f"feature {f.name}: lever {lever.action}: a {f.family} feature is an outcome, "
                                 "not an action (it moves through the behaviours that drive it)")
            if lever.of is not None and lever.of not in names:
                raise ValueError(f"feature {f.name}: lever {lever.action} refers to unknown feature {lever.of!r}")
    for action, fams in family.items():
        if one_family and len(fams) > 1:
            raise ValueError(f"lever {action}: moves features of several families ({', '.join(sorted(fams))})")
        if texts[action] != 1:
            raise ValueError(f"lever {action}: exactly one feature must carry its texts (found {texts[action]})")


for _target in TARGETS:
    check_levers(features_for(_target), one_family=_target == "restrict")


def get(name: str) -> Feature:
    """The spec entry called `name`; KeyError names the unknown feature."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown feature {name!r}") from None


def format_value(feature: Feature | str, value: object, lang: str = "en") -> str:
    """A feature value as shown to people: ints as ints, shares as percent, money rounded."""
    f = get(feature) if isinstance(feature, str) else feature
    return valuefmt.format_value(f.unit, value, lang)


def reason_text(feature: Feature | str, value: object, lang: str = "en") -> str:
    """The feature's reason text in `lang` ("en" or "zh") with the value filled in."""
    f = get(feature) if isinstance(feature, str) else feature
    if lang not in ("en", "zh"):
        raise ValueError(f"lang must be 'en' or 'zh', got {lang!r}")
    return valuefmt.fill_template(f.text_en if lang == "en" else f.text_zh, f.unit, value, lang,
                                  f.none_en if lang == "en" else f.none_zh)
