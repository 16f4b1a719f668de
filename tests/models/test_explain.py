"""models.explain: additive SHAP, family reasons with real values, and fidelity metrics against a known truth."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from linerisk.features.compute import build_features
from linerisk.models import explain, scoring
from tests.models.explain_world import AS_OF, user_log, world_model


@pytest.fixture(scope="module")
def real_model(small_world):
    return world_model(small_world)


def test_shap_adds_up_to_the_raw_score(trained_model, synth_split):
    X = synth_split.test.drop(columns=["user_id", "as_of", "label"])
    ex = explain.explain_frame(trained_model.scorer_, X)
    np.testing.assert_allclose(ex.contributions.sum(axis=1), trained_model.raw_score(X), rtol=0, atol=1e-6)
    np.testing.assert_allclose(ex.scores["raw_score"], trained_model.raw_score(X), rtol=0, atol=1e-6)
    np.testing.assert_allclose(ex.scores["probability"], trained_model.predict_proba(X)[:, 1], rtol=0, atol=1e-9)
    np.testing.assert_allclose(ex.by_family.sum(axis=1) + ex.contributions["bias"], ex.scores["raw_score"], atol=1e-6)


def test_reasons_push_up_helpers_pull_down_and_quiet_families_are_silent(trained_model, synth_split):
    X = synth_split.test.drop(columns=["user_id", "as_of", "label"])
    s = explain.explain_frame(trained_model.scorer_, X).scores
    for j in (1, 2, 3):
        up, down = s[f"reason_{j}_contribution"].dropna(), s[f"help_{j}_contribution"].dropna()
        assert (up >= scoring.MIN_CONTRIBUTION).all() and (down <= -scoring.MIN_CONTRIBUTION).all()
    assert (s["reason_1_contribution"].fillna(0) >= s["reason_2_contribution"].fillna(0)).all()
    assert s["reason_1_family"].notna().mean() > 0.5 and s["help_1_family"].notna().mean() > 0.5


def test_early_repayment_user_gets_early_repayment_as_reason_one_with_the_real_value(real_model):
    events, users = user_log(early=8)
    features = build_features(events, AS_OF, users)
    s = explain.explain_frame(real_model.scorer_, features).scores.iloc[0]
    assert s["reason_1_family"] == "early_repayment"
    value = int(features[s["reason_1_code"].split(":")[1]].iloc[0])
    assert value >= 5 and str(value) in s["reason_1_text_en"] and str(value) in s["reason_1_text_zh"]
    assert s["reason_1_text_en"] != s["reason_1_text_zh"]

    calm = build_features(*user_log(early=0)[:1], AS_OF, users)
    calm_s = explain.explain_frame(real_model.scorer_, calm).scores.iloc[0]
    assert calm_s["probability"] < s["probability"]
    assert "early_repayment" not in {calm_s[f"reason_{j}_family"] for j in (1, 2, 3)}


# ---------------------------------------------------------------------------- fidelity on a hand-made truth

def _scores(rows):
    """rows: (user, as_of, probability, reason families)"""
    out = pd.DataFrame({"user_id": [r[0] for r in rows], "as_of": pd.to_datetime([r[1] for r in rows], utc=True),
                        "probability": [r[2] for r in rows]})
    for j in range(3):
        out[f"reason_{j + 1}_family"] = pd.array([r[3][j] if len(r[3]) > j else None for r in rows], dtype="string")
    return out


def _truth(rows):
    """rows: (user, as_of, {cause: hazard})"""
    causes = explain.CAUSES
    return pd.DataFrame({"user_id": [r[0] for r in rows], "as_of": pd.to_datetime([r[1] for r in rows], utc=True),
                         **{f"hazard_{c}": [r[2].get(c, 0.0) for r in rows] for c in causes}})


def test_driver_agreement_counts_the_riskiest_tenth_and_ignores_latent():
    rows, truth = [], []
    for u in range(20):  # 20 users, the 2 riskiest count
        rows.append((u, "2025-01-01", u / 100, ["overdue", "credit_score"] if u == 19 else ["utilisation"]))
        truth.append((u, "2025-01-01", {"overdue": 0.01, "latent": 0.5} if u >= 18 else {"utilisation": 0.01}))
    overall, table = explain.driver_agreement_at_3(_scores(rows), _truth(truth))
    assert overall == 0.5  # user 19 agrees, user 18 (reason utilisation, driver overdue) does not
    assert table.loc["overdue", "driver_agreement_at_3_n"] == 2


def test_cause_recall_first_restriction_in_horizon_latent_apart_and_bl_closure_blame():
    scores = _scores([(1, "2025-01-01", 0.5, ["overdue", "bl_closure"]),
                      (2, "2025-01-01", 0.4, ["credit_score", "overdue"]),
                      (3, "2025-01-01", 0.3, ["utilisation"]),
                      (4, "2025-01-01", 0.2, ["bl_closure"]),
                      (5, "2025-01-01", 0.1, ["overdue"])])
    restrictions = pd.DataFrame({
        "user_id": [1, 2, 2, 3, 4, 5],
        "event_time": pd.to_datetime(["2025-02-01", "2025-01-10", "2025-03-01", "2025-02-01", "2025-01-05",
                                      "2025-06-01"], utc=True),  # user 5: after the horizon
        "cause": ["overdue", "overdue", "credit_score", "latent", "bl_closure", "overdue"]})
    causes = explain.restriction_causes(scores, restrictions, horizon_days=90)
    assert causes.tolist()[:4] == ["overdue", "overdue", "latent", "bl_closure"] and pd.isna(causes.iloc[4])
    overall, table = explain.cause_recall_at_k(scores, causes)
    assert overall["cause_recall_at_1"] == pytest.approx(2 / 3)  # users 1, 4 (user 2's first reason is credit_score)
    assert overall["cause_recall_at_3"] == 1.0 and overall["latent_recall_at_3"] == 0.0
    assert table.loc["overdue", "cause_n"] == 2 and table.loc["latent", "cause_n"] == 1
    assert explain.bl_closure_false_blame(scores, causes) == pytest.approx(1 / 3)  # user 1 of users 1, 2, 3


def test_fidelity_metrics_flatten_to_mlflow_names_and_judge_goals():
    scores = _scores([(u, "2025-01-01", 1 - u / 10, ["overdue"]) for u in range(10)])
    truth = _truth([(u, "2025-01-01", {"overdue": 0.01}) for u in range(10)])
    restrictions = pd.DataFrame({"user_id": [0, 1], "event_time": pd.to_datetime(["2025-01-15"] * 2, utc=True),
                                 "cause": ["overdue", "overdue"]})
    fid = explain.fidelity_metrics(scores, truth, restrictions)
    flat = fid.flat_metrics()
    assert flat["fidelity_driver_agreement_at_3"] == 1.0 and flat["fidelity_cause_recall_at_3_overdue"] == 1.0
    assert flat["fidelity_cause_ceiling_at_3"] == 1.0
    assert fid.goals["driver_agreement_at_3"].endswith("met") and fid.goals["bl_closure_false_blame"].endswith("met")
    assert list(fid.overall_table().columns) == ["value", "goal"]


def test_the_fidelity_figure_draws_each_observable_family_with_a_case():
    scores = _scores([(1, "2025-01-01", 0.5, ["overdue", "utilisation"]), (2, "2025-01-01", 0.4, ["activity"]),
                      (3, "2025-01-01", 0.3, ["overdue"])])
    truth = _truth([(1, "2025-01-01", {"overdue": 0.01}), (2, "2025-01-01", {"multi_borrowing": 0.002}),
                    (3, "2025-01-01", {})])
    restrictions = pd.DataFrame({"user_id": [1, 2, 3], "event_time": pd.to_datetime(["2025-01-15"] * 3, utc=True),
                                 "cause": ["overdue", "multi_borrowing", "latent"]})
    fid = explain.fidelity_metrics(scores, truth, restrictions)
    left, right = fid.plot().axes
    assert [t.get_text() for t in left.get_xticklabels()] == ["overdue", "multi_borrowing"]  # latent left out
    heights = sorted(round(b.get_height(), 6) for b in left.patches)
    assert heights[0] == 0.0 and heights[-1] == 1.0  # multi_borrowing never named, overdue always


def test_named_reasons_without_a_true_hazard_are_counted_on_restricted_rows_only():
    scores = _scores([(1, "2025-01-01", 0.5, ["overdue", "utilisation", "activity"]),  # 2 of 3 have no hazard
                      (2, "2025-01-01", 0.4, ["multi_borrowing"]),                      # true of the user
                      (3, "2025-01-01", 0.3, ["utilisation"])])                          # not restricted
    truth = _truth([(1, "2025-01-01", {"overdue": 0.01}), (2, "2025-01-01", {"multi_borrowing": 0.002}),
                    (3, "2025-01-01", {})])
    restrictions = pd.DataFrame({"user_id": [1, 2], "event_time": pd.to_datetime(["2025-01-15"] * 2, utc=True),
                                 "cause": ["overdue", "multi_borrowing"]})
    causes = explain.restriction_causes(scores, restrictions)
    share, table = explain.zero_hazard_share(scores, causes, truth)
    assert share == pytest.approx(2 / 4)
    assert table.loc["utilisation", "named_n"] == 1 and table.loc["utilisation", "named_zero_hazard"] == 1.0
    assert table.loc["overdue", "named_zero_hazard"] == 0.0 and table.loc["activity", "named_zero_hazard"] == 1.0
    fid = explain.fidelity_metrics(scores, truth, restrictions)
    assert fid.overall["named_zero_hazard_share"] == pytest.approx(0.5)
    assert fid.goals["named_zero_hazard_share"].endswith("MISSED")
    assert fid.overall["cause_recall_at_3_present"] == 1.0


def test_the_per_family_floor_names_its_weakest_family():
    # 25 overdue restrictions all named; 25 utilisation ones, 5 of them named as something else
    rows = [(u, "2025-01-01", 0.5, ["overdue"]) for u in range(25)]
    rows += [(u, "2025-01-01", 0.5, ["utilisation" if u >= 30 else "credit_score"]) for u in range(25, 50)]
    truth = _truth([(u, "2025-01-01", {"overdue" if u < 25 else "utilisation": 0.01}) for u in range(50)])
    restrictions = pd.DataFrame({"user_id": list(range(50)), "event_time": pd.to_datetime(["2025-01-15"] * 50, utc=True),
                                 "cause": ["overdue"] * 25 + ["utilisation"] * 25})
    fid = explain.fidelity_metrics(_scores(rows), truth, restrictions)
    assert fid.overall["min_cause_recall_at_3_present_20plus"] == pytest.approx(0.8)
    assert fid.goals["min_cause_recall_at_3_present_20plus"] == ">= 0.90: MISSED (utilisation)"
