"""The feature spec: complete, documented, and the helpers the model and explainer need."""
from __future__ import annotations

import pytest

from linerisk.features import spec
from linerisk.features.compute import AGGREGATORS, SOURCES
from linerisk.features.spec import FAMILIES, FEATURES, Feature, reason_text


@pytest.mark.parametrize("target", spec.TARGETS)
def test_each_model_reads_between_30_and_80_uniquely_named_features(target):
    names = spec.feature_names(target)
    assert 30 <= len(names) <= 80
    assert len(set(spec.feature_names())) == len(spec.feature_names())


def test_every_feature_is_documented_in_english_and_chinese():
    for f in FEATURES:
        assert f.text_en.strip() and f.text_zh.strip(), f.name
        assert "{value}" in f.text_en and "{value}" in f.text_zh, f.name
        assert spec.reason_text(f, 1.0, "en") and spec.reason_text(f, 1.0, "zh")


def test_every_feature_has_a_computation():
    special = {"pl", "bl", "users"}
    for f in FEATURES:
        assert f.aggregation in AGGREGATORS, f.name
        assert f.source in SOURCES or f.source in special, f.name


def test_every_family_has_features():
    groups = spec.features_by_family()
    assert list(groups) == list(FAMILIES)
    assert all(groups[fam] for fam in FAMILIES)


@pytest.mark.parametrize("name", ["late_days_sum_90d", "late_repayment_count_90d", "max_dpd_90d", "max_dpd_365d",
                                  "early_repayment_count_90d", "bl_early_repayment_count_90d",
                                  "pl_early_repayment_count_90d", "fund_misuse_count_180d", "credit_score_latest",
                                  "credit_score_change_90d", "credit_score_min_365d", "credit_inquiry_count_30d",
                                  "pl_utilisation", "bl_closed_60d", "days_since_bl_close"])
def test_features_the_simulator_hazard_reads_exist(name):
    assert spec.get(name).family in spec.CAUSE_FAMILIES


def test_monotone_constraints_follow_spec_order_and_risk_direction():
    constraints = spec.monotone_constraints()
    assert constraints == [f.direction for f in FEATURES if "restrict" in f.targets]
    assert spec.get("late_repayment_count_90d").direction == 1
    assert spec.get("early_repayment_count_90d").direction == 1
    assert spec.get("credit_score_latest").direction == -1


def test_the_restoration_model_reads_each_feature_in_its_own_direction():
    restore = dict(zip(spec.feature_names("restore"), spec.monotone_constraints("restore")))
    # a better score and clean repayment since the restriction bring the line back; late ones and
    # new applications hold it back; the red-line evidence only ever lowers the chance
    assert restore["credit_score_latest"] == 1 and spec.get("credit_score_latest").direction == -1
    assert restore["credit_score_change_since"] == 1
    assert restore["on_time_repayment_count_since"] == 1 and restore["late_repayment_count_since"] == -1
    assert restore["credit_inquiry_count_since"] == -1 and restore["appeal_pending_count"] == 1
    assert all(restore[f.name] <= 0 for f in FEATURES if f.family == "red_line")


def test_the_restriction_model_keeps_its_own_features_and_no_since_restriction_one():
    restrict = spec.features_for("restrict")
    assert all(f.anchor == "as_of" for f in restrict)
    assert {f.family for f in restrict} == set(spec.CAUSE_FAMILIES) | {"activity", "tenure"}
    assert [f.name for f in restrict] == [f.name for f in FEATURES if "restrict" in f.targets]


def test_get_unknown_feature_names_it():
    with pytest.raises(KeyError, match="no_such_feature"):
        spec.get("no_such_feature")


def test_reason_text_formats_counts_shares_money_and_flags():
    assert spec.reason_text("bl_early_repayment_count_90d", 3.0) == \
        "3 early repayments on the business loan in the last 90 days"
    assert spec.reason_text("bl_early_repayment_count_90d", 3.0, "zh") == "近90天网商贷提前还款3次"
    assert spec.reason_text("pl_utilisation", 0.734) == "73% of the personal-line limit is in use"
    assert spec.reason_text("pl_balance", 12345.67) == "¥12,346 outstanding on the personal line"
    assert spec.reason_text("credit_score_change_90d", -23.0) == "credit score changed by -23 points in the last 90 days"
    assert spec.reason_text("bl_closed_60d", 1.0, "zh") == "近60天关闭网商贷：是"
    assert spec.reason_text("credit_score_latest", float("nan")) == "no credit score on record"


def test_spec_hash_is_stable_and_changes_with_the_spec(monkeypatch):
    first = spec.spec_hash()
    assert first == spec.spec_hash()
    monkeypatch.setattr(spec, "FEATURES", FEATURES[1:])
    assert spec.spec_hash() != first


def test_each_target_has_its_own_spec_hash_and_a_restore_only_change_leaves_the_restriction_hash(monkeypatch):
    restrict, restore = spec.spec_hash("restrict"), spec.spec_hash("restore")
    assert restrict != restore
    assert FEATURES[-1].targets == ("restore",)
    monkeypatch.setattr(spec, "FEATURES", FEATURES[:-1])
    assert spec.spec_hash("restrict") == restrict and spec.spec_hash("restore") != restore


def test_a_feature_without_a_value_slot_is_rejected():
    with pytest.raises(ValueError, match="value"):
        spec.Feature("x", "activity", 30, "count", 0, True, "no slot", "无", source="bl_close")


def test_a_missing_value_reads_as_no_record_not_as_n_a():
    assert reason_text("days_since_fund_misuse", float("nan")) == "no fund-misuse flag on record"
    assert reason_text("days_since_fund_misuse", float("nan"), "zh") == "无资金用途违规记录"
    assert reason_text("days_since_fund_misuse", 12) == "last fund-misuse flag 12 days ago"


def test_a_feature_that_can_be_missing_must_say_what_none_means():
    with pytest.raises(ValueError, match="give none_en and none_zh"):
        Feature("x", "overdue", None, "days_since_last", -1, True, "{value} days", "{value}天", unit="days")


def test_every_cause_family_a_user_can_act_on_has_a_lever_with_texts_in_both_languages():
    from linerisk.models.recover import spec_levers
    from linerisk.models.train import registry_spec

    levers = spec_levers(registry_spec())
    # the credit score is an outcome: it moves with the inquiry levers, never as a lever of its own; paying the
    # line down (utilisation) is offered no more: checked in the simulator, it lowers the true risk far less
    # than the model projects (README, "Plans checked against the true world")
    assert {lv.family for lv in levers} == {"overdue", "early_repayment", "fund_misuse", "multi_borrowing"}
    for lv in levers:
        assert "{value}" in lv.text_en and "{value}" in lv.text_zh and lv.text_en != lv.text_zh, lv.code
        assert lv.shown in {name for name, *_ in lv.moves}, lv.code


def test_a_lever_on_a_feature_the_user_cannot_move_or_without_one_target_is_refused():
    from linerisk.features.spec import Lever, check_levers

    base = dict(name="x_count_90d", family="overdue", window=90, aggregation="count", direction=1, actionable=True,
                text_en="{value} x", text_zh="{value} 次", source="repayment.late")
    with pytest.raises(ValueError, match="only an actionable feature"):
        Feature(**{**base, "actionable": False}, levers=(Lever("stop_x", to=0.0),))
    with pytest.raises(ValueError, match="exactly one of to or by"):
        Feature(**base, levers=(Lever("stop_x", to=0.0, by=1.0),))
    silent = Feature(**base, levers=(Lever("stop_x", to=0.0),))
    with pytest.raises(ValueError, match="exactly one feature must carry its texts"):
        check_levers((silent,))
    texted = Feature(**{**base, "name": "y"}, levers=(Lever("stop_x", to=0.0, of="nope", text_en="a {value}",
                                                             text_zh="乙{value}"),))
    with pytest.raises(ValueError, match="unknown feature 'nope'"):
        check_levers((silent, texted))


# The restoration model's actions: codes another part of the project keys on (the simulator's interventions).
RESTORE_CODES = ("repay_on_time_90d", "no_credit_applications_90d", "use_business_loan_90d", "contact_platform")


def test_the_restoration_levers_come_from_the_restoration_spec_with_their_days_and_when_they_apply():
    from linerisk.models.recover import spec_levers
    from linerisk.models.train import registry_spec

    restore = registry_spec("restore")
    levers = {lv.code: lv for lv in spec_levers(restore)}
    assert tuple(levers) == RESTORE_CODES
    assert {c: lv.days for c, lv in levers.items()} == {**dict.fromkeys(RESTORE_CODES[:3], 90), "contact_platform": 0}
    assert {c for c, lv in levers.items() if lv.only_if == "likely_minor"} == {"contact_platform"}
    assert levers["use_business_loan_90d"].only_if == "bl_open" and levers["repay_on_time_90d"].only_if == "owes"
    for needs in spec.CONDITION_FEATURES.values():  # a condition names features of the model's own spec
        assert set(needs) <= {f["name"] for f in restore["features"]}
    names = {f["name"] for f in restore["features"]}
    for lv in levers.values():
        assert lv.shown in names and lv.moves and {n for n, *_ in lv.moves} <= names, lv.code
        assert "{value}" in lv.text_en and "{value}" in lv.text_zh, lv.code
        # an outcome is never an action: no restoration lever moves the credit score
        assert lv.family not in spec.OUTCOME_FAMILIES, lv.code
        assert not {spec.get(n).family for n, *_ in lv.moves} & set(spec.OUTCOME_FAMILIES), lv.code
    # the restriction model's plan keeps its own levers: no appeal, no condition; their days are those of the
    # windows they clear plus the review's lag (when the projection holds, models/recover.py), not the
    # restoration spec's
    restrict = spec_levers(registry_spec("restrict"))
    assert "contact_platform" not in {lv.code for lv in restrict} and all(lv.only_if == "" for lv in restrict)
    assert {lv.code: lv.days for lv in restrict}["no_credit_applications_30d"] == 30 + spec.REVIEW_LAG_DAYS
    assert all("restore_levers" not in f for f in restore["features"] + registry_spec("restrict")["features"])


def test_a_restoration_lever_change_moves_only_the_restoration_spec_hash(monkeypatch):
    import dataclasses

    restrict, restore = spec.spec_hash("restrict"), spec.spec_hash("restore")
    i = next(i for i, f in enumerate(FEATURES) if f.name == "bl_drawdown_count_since")
    lever = dataclasses.replace(FEATURES[i].restore_levers[0], days=30)
    monkeypatch.setattr(spec, "FEATURES", (*FEATURES[:i], dataclasses.replace(FEATURES[i], restore_levers=(lever,)),
                                           *FEATURES[i + 1:]))
    assert spec.spec_hash("restrict") == restrict and spec.spec_hash("restore") != restore


def test_a_restoration_lever_on_an_outcome_or_with_an_unknown_condition_is_refused():
    import dataclasses

    from linerisk.features.spec import Lever, RestoreLever, check_levers

    texts = dict(text_en="Do x (now {value})", text_zh="做x（{value}）")
    score = with_restore_levers(spec.get("credit_score_latest"), (RestoreLever("raise_score", by=10.0, **texts),),
                                        levers=())
    with pytest.raises(ValueError, match="outcome, not an action"):  # as the restoration view sees it
        check_levers((dataclasses.replace(score, direction=1, levers=score.restore_levers),), one_family=False)
    with pytest.raises(ValueError, match="only_if must be one of"):
        with_restore_levers(spec.get("bl_drawdown_count_since"),
                                    (RestoreLever("use_bl", by=1.0, only_if="sometimes", **texts),))
    with pytest.raises(ValueError, match="restoration model does not read"):
        with_restore_levers(spec.get("bl_early_repayment_count_90d"), (RestoreLever("x", to=0.0, **texts),))
    with pytest.raises(ValueError, match="exactly one of to or by"):  # only an action's texts may move nothing
        with_restore_levers(spec.get("bl_drawdown_count_since"), (Lever("use_bl"),))


def with_restore_levers(feature: Feature, restore_levers: tuple, **changes) -> Feature:
    import dataclasses

    return dataclasses.replace(feature, restore_levers=restore_levers, **changes)


def test_a_decayed_count_needs_a_half_life_and_no_other_aggregation_takes_one():
    with pytest.raises(ValueError, match="half_life"):
        Feature("x", "multi_borrowing", 365, "decayed_count", 1, True, "{value}", "{value}", source="credit_inquiry")
    with pytest.raises(ValueError, match="half_life"):
        Feature("x", "multi_borrowing", 365, "count", 1, True, "{value}", "{value}", source="credit_inquiry",
                half_life=30)


def test_a_recency_weighted_count_reads_with_one_decimal_in_both_languages():
    assert reason_text("credit_inquiry_decayed_hl30", 1.234) == \
        "1.2 credit inquiries weighted by recency (one 30 days old counts half)"
    assert reason_text("credit_inquiry_decayed_hl30", 1.234, "zh") == "按时间加权的征信查询1.2次（30天前的一次计一半）"


def test_only_decayed_counts_carry_a_half_life_in_a_model_s_spec_records():
    for target in spec.TARGETS:
        for row in spec.feature_records(target):
            assert ("half_life" in row) == (row["aggregation"] == "decayed_count"), row["name"]


def test_a_plan_without_applications_lets_recency_weighted_counts_decay_by_their_half_life():
    import numpy as np
    import pandas as pd

    from linerisk.models.recover import lever_values, spec_levers

    view = {"features": spec.feature_records("restrict")}
    levers = {lv.code: lv for lv in spec_levers(view)}
    names = [f["name"] for f in view["features"]]
    X = pd.DataFrame([[2.0] * len(names)], columns=names)
    for code, expected in (("no_credit_applications_90d", {"credit_inquiry_decayed_hl30": 0.25,
                                                           "credit_inquiry_decayed_hl90": 1.0}),
                           ("no_credit_applications_30d", {"credit_inquiry_decayed_hl30": 1.0,
                                                           "credit_inquiry_decayed_hl90": 2.0 * 0.5 ** (1 / 3)})):
        moved = lever_values((levers[code],), X, view)[0]
        for name, value in expected.items():
            np.testing.assert_allclose(moved[names.index(name)], [value], err_msg=f"{code}: {name}")
