"""The declarative feature registry: the single source of truth for what the model sees.

Compute, monotone constraints, reason codes and recovery levers all read `FEATURES`;
nothing else in the project lists feature names. A recovery action ("stop early repayments for
90 days") is declared on the features it moves (`levers`); models/recover.py reads them from the
model's spec. Each entry names its `source` (which
events), `aggregation` (how they are reduced) and `window`; features/compute.py maps
each aggregation kind to one vectorised function.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from linerisk.features import valuefmt

# The world's cause families (shared/design/world.md), then families that are not causes.
CAUSE_FAMILIES = ("overdue", "early_repayment", "fund_misuse", "credit_score", "multi_borrowing",
                  "utilisation", "bl_closure")
FAMILIES = CAUSE_FAMILIES + ("activity", "tenure")

# Aggregations with no value for a user without such events (NaN): these need a `none_*` text.
MAY_BE_MISSING = ("share", "last_dpd", "last", "change", "min", "days_since_last", "days_since_first", "balance",
                  "utilisation", "limit", "limit_change_ratio")

# How a value is shown in a reason text.
UNITS = ("count", "money", "share", "days", "score", "points", "ratio", "flag")

# Aggregation kinds understood by features/compute.py (kept here so the spec validates itself).
AGGREGATIONS = ("count", "sum", "share", "flag", "max_dpd", "sum_dpd_capped", "last_dpd", "last", "change",
                "min", "days_since_last", "days_since_first", "balance", "utilisation", "limit",
                "limit_change_ratio", "line_open", "line_closed", "days_since_signup", "segment_merchant")


@dataclass(frozen=True)
class Lever:
    """How one recovery action moves this feature; features naming the same `action` move together.

    The feature moves `to` a value (a share of feature `of`'s value when `of` is given: the balance
    to 50% of the limit) or `by` an amount, never past its risk direction (models/recover.py). One
    feature per action carries the action's texts; `{value}` shows that feature's current value."""

    action: str              # stable code, e.g. "no_early_repayment_90d"
    to: float | None = None
    by: float | None = None
    of: str | None = None
    text_en: str = ""
    text_zh: str = ""

    def check(self, feature: "Feature") -> None:
        where = f"feature {feature.name}: lever {self.action}"
        if (self.to is None) == (self.by is None):
            raise ValueError(f"{where}: give exactly one of to or by")
        if self.of is not None and self.to is None:
            raise ValueError(f"{where}: of needs to (a share of another feature)")
        if not (feature.actionable and feature.direction != 0):
            raise ValueError(f"{where}: only an actionable feature with a risk direction can be moved")
        if bool(self.text_en) != bool(self.text_zh):
            raise ValueError(f"{where}: give both text_en and text_zh, or neither")
        if self.text_en and ("{value}" not in self.text_en or "{value}" not in self.text_zh):
            raise ValueError(f"{where}: lever texts need a {{value}} slot")


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
    levers: tuple[Lever, ...] = ()  # recovery actions that move this feature

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"feature {self.name}: unknown family {self.family!r}")
        if self.direction not in (-1, 0, 1):
            raise ValueError(f"feature {self.name}: direction must be -1, 0 or +1")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"feature {self.name}: unknown aggregation {self.aggregation!r}")
        if self.unit not in UNITS:
            raise ValueError(f"feature {self.name}: unknown unit {self.unit!r}")
        if "{value}" not in self.text_en or "{value}" not in self.text_zh:
            raise ValueError(f"feature {self.name}: reason texts need a {{value}} slot")
        if self.aggregation in MAY_BE_MISSING and not (self.none_en and self.none_zh):
            raise ValueError(f"feature {self.name}: {self.aggregation} can be missing; give none_en and none_zh")
        for lever in self.levers:
            lever.check(self)


# Levers shared by several features of one action (the action's texts sit on one feature).
_REPAY = Lever("repay_on_time_90d", to=0.0)
_NO_EARLY = Lever("no_early_repayment_90d", to=0.0)

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


FEATURES: tuple[Feature, ...] = (
    # --- overdue: the simulator's overdue hazard reads late_days_sum_90d, counts and max dpd
    Feature("late_days_sum_90d", "overdue", 90, "sum_dpd_capped", 1, True,
            "{value} days overdue in total (each repayment capped at 120) in the last 90 days",
            "近90天累计逾期{value}天（单笔最多计120天）", source="repayment.late", unit="days",
            levers=(Lever("repay_on_time_90d", to=0.0,
                           text_en="Clear the overdue balance and repay on time for 90 days (now: {value} days overdue in the last 90 days)",
                           text_zh="结清逾期欠款并连续90天按时还款（近90天累计逾期{value}天）"),)),
    Feature("late_repayment_count_90d", "overdue", 90, "count", 1, True,
            "{value} late repayments in the last 90 days", "近90天逾期还款{value}次", source="repayment.late",
            levers=(_REPAY,)),
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
            levers=(_REPAY,)),
    Feature("max_dpd_365d", "overdue", 365, "max_dpd", 1, True,
            "up to {value} days past due in the last 365 days", "近365天最长逾期{value}天", source="repayment", unit="days"),
    Feature("last_dpd", "overdue", None, "last_dpd", 1, True,
            "the latest repayment was {value} days late", "最近一笔还款逾期{value}天", source="repayment", unit="days",
            none_en="no repayment on record", none_zh="无还款记录",
            levers=(_REPAY,)),
    Feature("days_since_late_repayment", "overdue", None, "days_since_last", -1, True,
            "last late repayment {value} days ago", "距上次逾期还款{value}天", source="repayment.late", unit="days",
            none_en="no late repayment on record", none_zh="无逾期还款记录"),
    # --- early repayment: read by the platform as "little need to borrow"
    Feature("early_repayment_count_90d", "early_repayment", 90, "count", 1, True,
            "{value} early repayments in the last 90 days", "近90天提前还款{value}次", source="repayment.early",
            levers=(Lever("no_early_repayment_90d", to=0.0,
                           text_en="Stop early repayments for 90 days (now: {value} in the last 90 days)",
                           text_zh="90天内不再提前还款（近90天提前还款{value}次）"),)),
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
            source="bl_fund_misuse"),
    Feature("fund_misuse_amount_180d", "fund_misuse", 180, "sum", 1, True,
            "{value} flagged as misused in the last 180 days", "近180天被认定违规使用的资金{value}",
            source="bl_fund_misuse", unit="money"),
    Feature("days_since_fund_misuse", "fund_misuse", None, "days_since_last", -1, True,
            "last fund-misuse flag {value} days ago", "距上次资金用途违规{value}天", source="bl_fund_misuse", unit="days",
            none_en="no fund-misuse flag on record", none_zh="无资金用途违规记录"),
    # --- credit score
    Feature("credit_score_latest", "credit_score", None, "last", -1, True,
            "credit score is {value}", "信用分为{value}", source="credit_score", unit="score",
            none_en="no credit score on record", none_zh="无信用分记录",
            levers=(Lever("credit_score_up_30", by=30.0, text_en="Raise the credit score by 30 points (now: {value})",
                           text_zh="将信用分提高30分（目前{value}）"),
                    Lever("credit_score_up_60", by=60.0, text_en="Raise the credit score by 60 points (now: {value})",
                          text_zh="将信用分提高60分（目前{value}）"))),
    Feature("credit_score_change_90d", "credit_score", 90, "change", -1, True,
            "credit score changed by {value} points in the last 90 days", "近90天信用分变化{value}分",
            source="credit_score", unit="points",
            none_en="no credit-score change on record in the last 90 days", none_zh="近90天无信用分变化记录",
            levers=(Lever("credit_score_up_30", by=30.0), Lever("credit_score_up_60", by=60.0))),
    Feature("credit_score_min_365d", "credit_score", 365, "min", -1, True,
            "credit score was as low as {value} in the last 365 days", "近365天信用分最低{value}",
            source="credit_score", unit="score",
            none_en="no credit score on record in the last 365 days", none_zh="近365天无信用分记录"),
    # --- multi-borrowing: credit applications elsewhere
    Feature("credit_inquiry_count_30d", "multi_borrowing", 30, "count", 1, True,
            "{value} credit inquiries in the last 30 days", "近30天征信查询{value}次", source="credit_inquiry",
            levers=(Lever("no_credit_applications_30d", to=0.0,
                           text_en="Make no new credit applications for 30 days (now: {value} in the last 30 days)",
                           text_zh="30天内不再申请其他贷款（近30天征信查询{value}次）"),
                    Lever("no_credit_applications_90d", to=0.0))),
    Feature("credit_inquiry_count_90d", "multi_borrowing", 90, "count", 1, True,
            "{value} credit inquiries in the last 90 days", "近90天征信查询{value}次", source="credit_inquiry",
            levers=(Lever("no_credit_applications_90d", to=0.0,
                           text_en="Make no new credit applications for 90 days (now: {value} in the last 90 days)",
                           text_zh="90天内不再申请其他贷款（近90天征信查询{value}次）"),)),
    Feature("credit_inquiry_count_365d", "multi_borrowing", 365, "count", 1, True,
            "{value} credit inquiries in the last 365 days", "近365天征信查询{value}次", source="credit_inquiry"),
    # --- utilisation of the personal line
    Feature("pl_balance", "utilisation", None, "balance", 1, True,
            "{value} outstanding on the personal line", "借呗待还余额{value}", source="pl", unit="money",
            none_en="no personal line", none_zh="未开通借呗",
            levers=(Lever("utilisation_to_50", to=0.5, of="pl_limit"), Lever("utilisation_to_30", to=0.3, of="pl_limit"))),
    Feature("pl_limit", "utilisation", None, "limit", 0, False,
            "personal-line limit is {value}", "借呗额度为{value}", source="pl_limit", unit="money",
            none_en="no personal line", none_zh="未开通借呗"),
    Feature("pl_utilisation", "utilisation", None, "utilisation", 1, True,
            "{value} of the personal-line limit is in use", "借呗额度已使用{value}", source="pl", unit="share",
            none_en="no personal line", none_zh="未开通借呗",
            levers=(Lever("utilisation_to_50", to=0.5,
                           text_en="Pay the personal line down to 50% of its limit (now: {value} in use)",
                           text_zh="将借呗使用额度降至50%以下（目前已使用{value}）"),
                    Lever("utilisation_to_30", to=0.3,
                          text_en="Pay the personal line down to 30% of its limit (now: {value} in use)",
                          text_zh="将借呗使用额度降至30%以下（目前已使用{value}）"))),
    Feature("pl_limit_change_count_365d", "utilisation", 365, "count", 0, False,
            "{value} personal-line limit changes in the last 365 days", "近365天借呗额度调整{value}次",
            source="pl_limit_change"),
    Feature("pl_limit_change_ratio", "utilisation", None, "limit_change_ratio", 0, False,
            "the last limit change set the personal line to {value} of its previous limit",
            "最近一次额度调整后借呗额度为原额度的{value}", source="pl_limit", unit="ratio",
            none_en="no limit change on record", none_zh="无额度调整记录"),
    # --- business-loan closure: at most a small, short effect in the world
    Feature("bl_is_closed", "bl_closure", None, "line_closed", 0, False,
            "business loan closed: {value}", "网商贷已关闭：{value}", source="bl", unit="flag"),
    Feature("bl_closed_60d", "bl_closure", 60, "flag", 1, False,
            "business loan closed in the last 60 days: {value}", "近60天关闭网商贷：{value}", source="bl_close",
            unit="flag"),
    Feature("days_since_bl_close", "bl_closure", None, "days_since_last", -1, False,
            "business loan closed {value} days ago", "网商贷已关闭{value}天", source="bl_close", unit="days",
            none_en="business loan never closed", none_zh="网商贷从未关闭"),
    # --- activity: repayment timing mix and line history (history only: events before as_of)
    Feature("on_time_repayment_count_90d", "activity", 90, "count", 0, True,
            "{value} on-time repayments in the last 90 days", "近90天按时还款{value}次", source="repayment.on_time"),
    Feature("on_time_repayment_share_90d", "activity", 90, "share", 0, True,
            "{value} of repayments in the last 90 days were on time", "近90天{value}的还款按时",
            source="repayment.on_time", unit="share",
            none_en="no repayments in the last 90 days", none_zh="近90天无还款"),
    Feature("pl_restriction_count_365d", "activity", 365, "count", 0, False,
            "personal line restricted {value} times in the last 365 days", "近365天借呗被限制{value}次",
            source="pl_restricted"),
    Feature("days_since_pl_restored", "activity", None, "days_since_last", 0, False,
            "personal line restored {value} days ago", "借呗恢复已{value}天", source="pl_restored", unit="days",
            none_en="personal line never restored", none_zh="借呗从未恢复"),
    *_activity(),
    # --- tenure and product holding; an open business loan marks a merchant with credit, not a closure
    Feature("bl_is_open", "tenure", None, "line_open", 0, False,
            "business loan open: {value}", "网商贷在用：{value}", source="bl", unit="flag"),
    Feature("days_since_pl_open", "tenure", None, "days_since_first", 0, False,
            "personal line opened {value} days ago", "借呗已开通{value}天", source="pl_open", unit="days",
            none_en="no personal line", none_zh="未开通借呗"),
    Feature("days_since_signup", "tenure", None, "days_since_signup", 0, False,
            "on the platform for {value} days", "注册已{value}天", source="users", unit="days"),
    Feature("is_merchant", "tenure", None, "segment_merchant", 0, False,
            "merchant account: {value}", "商家用户：{value}", source="users", unit="flag"),
)


def feature_names() -> list[str]:
    return [f.name for f in FEATURES]


def spec_hash() -> str:
    """sha256 of the spec: a model refuses features built from another spec."""
    payload = json.dumps([asdict(f) for f in FEATURES], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def monotone_constraints() -> list[int]:
    """LightGBM `monotone_constraints`, one entry per feature in spec order."""
    return [f.direction for f in FEATURES]


def features_by_family() -> dict[str, list[Feature]]:
    """Features grouped by family (every family present, in FAMILIES order)."""
    out: dict[str, list[Feature]] = {fam: [] for fam in FAMILIES}
    for f in FEATURES:
        out[f.family].append(f)
    return out


_BY_NAME = {f.name: f for f in FEATURES}
if len(_BY_NAME) != len(FEATURES):
    raise ValueError("feature names in FEATURES must be unique")


def check_levers(features: tuple[Feature, ...]) -> None:
    """Each recovery action: one family, exactly one feature carrying its texts, `of` naming a feature."""
    names = {f.name for f in features}
    family: dict[str, set[str]] = {}
    texts: dict[str, int] = {}
    for f in features:
        for lever in f.levers:
            family.setdefault(lever.action, set()).add(f.family)
            texts[lever.action] = texts.get(lever.action, 0) + bool(lever.text_en)
            if lever.of is not None and lever.of not in names:
                raise ValueError(f"feature {f.name}: lever {lever.action} refers to unknown feature {lever.of!r}")
    for action, fams in family.items():
        if len(fams) > 1:
            raise ValueError(f"lever {action}: moves features of several families ({', '.join(sorted(fams))})")
        if texts[action] != 1:
            raise ValueError(f"lever {action}: exactly one feature must carry its texts (found {texts[action]})")


check_levers(FEATURES)


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
