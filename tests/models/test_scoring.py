"""Scorer: reasons with codes and texts, the same with or without the numba kernel, one row = batch."""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from linerisk.models import scoring
from linerisk.models.scoring import MIN_CONTRIBUTION, Scorer, prepare_features, reason_columns
from tests.models.synth import SYNTH_FEATURES

NAMES = [n for n, *_ in SYNTH_FEATURES]
TEXTS = {"overdue_days_max_90d": ("up to {value} days past due", "最长逾期{value}天", "days"),
         "utilisation_last": ("{value} of the limit in use", "额度已使用{value}", "share")}


@pytest.fixture(scope="module")
def scorer(trained_model) -> Scorer:
    """The synthetic model with reason texts on two features (the others fall back to `name = value`)."""
    spec = {**trained_model.spec_, "features": [
        {**f, **dict(zip(("text_en", "text_zh", "unit"), TEXTS[f["name"]]))} if f["name"] in TEXTS else f
        for f in trained_model.spec_["features"]]}
    return Scorer(trained_model.booster_text_, trained_model.calibrator_, spec)


@pytest.fixture(scope="module")
def frame(synth_split) -> pd.DataFrame:
    return synth_split.test[["user_id", "as_of", *NAMES]].head(400).reset_index(drop=True)


def test_reason_columns_follow_the_scores_contract(scorer, frame):
    out = scorer.score(frame)
    assert list(out.columns) == ["user_id", "as_of", "probability", "band", *reason_columns()]
    contrib = scorer.family_contributions(frame)
    for i in range(0, len(out), 37):
        row, fam = out.iloc[i], contrib.iloc[i]
        up = fam[fam >= MIN_CONTRIBUTION].sort_values(ascending=False, kind="stable")
        for k in range(1, 4):
            if k <= len(up):
                assert row[f"reason_{k}_family"] == up.index[k - 1]
                assert row[f"reason_{k}_contribution"] == pytest.approx(up.iloc[k - 1], abs=1e-12)
            else:
                assert pd.isna(row[f"reason_{k}_family"]) and pd.isna(row[f"reason_{k}_code"])
                assert pd.isna(row[f"reason_{k}_text_en"]) and np.isnan(row[f"reason_{k}_contribution"])


def test_codes_and_texts_name_the_driving_feature_with_the_users_value(scorer, frame):
    out = scorer.score(frame)
    overdue = out["reason_1_code"] == "overdue:overdue_days_max_90d"
    assert overdue.any()
    values = frame.loc[overdue, "overdue_days_max_90d"]
    assert out.loc[overdue, "reason_1_text_en"].tolist() == [f"up to {v:,.0f} days past due" for v in values]
    assert out.loc[overdue, "reason_1_text_zh"].tolist() == [f"最长逾期{v:,.0f}天" for v in values]
    util = out["reason_1_code"] == "utilisation:utilisation_last"
    assert out.loc[util, "reason_1_text_en"].tolist() == [f"{v * 100:.0f}% of the limit in use"
                                                         for v in frame.loc[util, "utilisation_last"]]
    other = out["reason_1_code"] == "early_repayment:early_repayments_90d"
    assert out.loc[other, "reason_1_text_en"].str.startswith("early_repayments_90d = ").all()


def test_the_spec_formatter_and_the_scorer_agree(small_world):
    from linerisk.features import spec as feature_spec

    for name, value in (("pl_utilisation", 0.734), ("pl_balance", 12345.67), ("credit_score_change_90d", -23.0),
                        ("bl_closed_60d", 1.0), ("credit_score_latest", float("nan"))):
        f = feature_spec.get(name)
        X = pd.DataFrame({name: [value]}, dtype="float32")
        spec = {"features": [dataclasses.asdict(f)]}  # what a registered model carries
        en, zh = scoring._texts(X, np.array([[0]]), spec)
        assert en[0, 0] == feature_spec.reason_text(f, np.float32(value), "en")
        assert zh[0, 0] == feature_spec.reason_text(f, np.float32(value), "zh")


def test_kernel_and_pred_contrib_give_the_same_scores_for_a_path_shap_package(scorer, frame, monkeypatch):
    path = Scorer(scorer.booster.model_to_string(), scorer.calibrator,
                  {k: v for k, v in scorer.spec.items() if k != "attribution"})
    X = prepare_features(frame, path.spec)
    np.testing.assert_allclose(path.shap_values(X), path.booster.predict(X, pred_contrib=True), atol=1e-9)
    fast = path.score(frame)
    monkeypatch.setattr(scoring, "explainer_for", None)
    slow = path.score(frame)
    pd.testing.assert_frame_equal(fast, slow, check_exact=False, atol=1e-9, rtol=0)


def test_a_reference_package_without_the_kernel_refuses_to_give_reasons(scorer, frame, monkeypatch):
    assert "attribution" in scorer.spec
    monkeypatch.setattr(scoring, "explainer_for", None)
    with pytest.raises(RuntimeError, match="numba"):
        scorer.score(frame)
    assert len(scorer.score(frame, reasons=False)) == len(frame)


def test_reasons_compare_the_user_with_the_best_achievable_self(scorer, frame):
    """Owen values against the reference: rows add up to f(x) - f(r), the last column is f(r),
    and a user already at or better than the reference everywhere has nothing to explain."""
    X = prepare_features(frame, scorer.spec)
    values = scorer.attributions(X)
    A = X.to_numpy(dtype=np.float64)
    R = scoring.reference_rows(A, scorer.spec)
    np.testing.assert_allclose(values[:, -1], scorer.booster.predict(R, raw_score=True), atol=1e-9)
    np.testing.assert_allclose(values.sum(axis=1), scorer.raw_score(frame), atol=1e-9)
    assert (values[:, :-1] >= -1e-12).all()  # monotone model, every move lowers risk: nothing pulls down
    clean = pd.DataFrame(R, columns=X.columns)
    assert np.abs(scorer.attributions(clean)[:, :-1]).max() == 0.0


def test_the_packages_attribution_is_the_brute_force_owen_value_against_its_reference_rows(scorer, frame):
    """Scorer.attributions is exactly its definition: Owen values (spec families as players) of
    v(S) = f(x_S, r_rest) with r = reference_rows(x), enumerated coalition by coalition."""
    from tests.models.test_treeshap import _brute_owen

    X = prepare_features(frame.head(60), scorer.spec)
    A = X.to_numpy(dtype=np.float64)
    R = scoring.reference_rows(A, scorer.spec)
    assert (A != R).any(axis=1).mean() > 0.5  # most rows are moved somewhere
    values = scorer.attributions(X)
    groups = list(scoring.family_ids(scorer.spec))
    for i in range(len(A)):
        phi, base = _brute_owen(scorer.booster, A[i], R[i], groups)
        np.testing.assert_allclose(values[i, :-1], phi, rtol=0, atol=1e-9)
        assert values[i, -1] == pytest.approx(base, abs=1e-9)


def test_one_row_at_a_time_equals_the_batch(scorer, frame):
    batch = scorer.score(frame.head(40))
    singles = pd.concat([scorer.score(frame.iloc[[i]]) for i in range(40)])
    pd.testing.assert_frame_equal(singles, batch)


def test_family_attributions_add_up_to_the_raw_score(scorer, frame):
    X = prepare_features(frame, scorer.spec)
    bias = scorer.attributions(X)[:, -1]
    total = scorer.family_contributions(frame).sum(axis=1).to_numpy() + bias
    np.testing.assert_allclose(total, scorer.raw_score(frame), atol=1e-9)


def test_more_overdue_never_lowers_the_probability(scorer, frame):
    worse = frame.assign(overdue_days_max_90d=frame["overdue_days_max_90d"] + 1.0)
    assert (scorer.probability(worse) >= scorer.probability(frame) - 1e-12).all()


def test_explain_gives_the_batch_score_and_reasons_and_helpers_that_mirror_them(scorer, frame):
    scores, ex = scorer.score(frame), scorer.explain(frame)
    cols = ["probability", "band", *reason_columns()]
    pd.testing.assert_frame_equal(ex.scores[cols], scores[cols])
    np.testing.assert_allclose(ex.contributions.sum(axis=1), ex.scores["raw_score"], atol=1e-9)
    pd.testing.assert_frame_equal(ex.by_family, scorer.family_contributions(frame))
    # what helps is the reasons' mirror image: the same ranking on -SHAP
    X = prepare_features(frame, scorer.spec)
    down = scoring.reasons_frame(-scorer.shap_values(X), X, scorer.spec)
    np.testing.assert_allclose(ex.scores["help_1_contribution"].fillna(0), -down["reason_1_contribution"].fillna(0))
    assert (ex.scores["help_1_family"].fillna("") == down["reason_1_family"].fillna("")).all()


def test_the_input_matrix_reads_a_frame_as_lightgbm_reads_the_prepared_frame():
    """Ints, float32, bools, text categories (seen, unseen, missing) and NaN: Layout.matrix gives the
    booster what it reads from prepare_features' frame, so the one-block path changes no answer."""
    from linerisk.models.train import TrainParams, split_random, train_model
    from tests.conftest import FAST
    from tests.models.synth import make_panel

    panel = make_panel(n_users=400, n_snapshots=1, seed=2)
    panel["city"] = np.where(panel["overdue_days_max_90d"] > 0.5, "a", "b")
    train, valid, test = split_random(panel, "label")
    cols = [*NAMES, "city"]
    model = train_model(train[cols], train["label"], valid[cols], valid["label"], TrainParams(**FAST))
    scorer = model.scorer_
    frame = test[cols].head(60).copy()
    frame["logins_30d"] = frame["logins_30d"].round().astype("int64")
    frame["credit_score_last"] = frame["credit_score_last"].astype("float32")
    frame["early_repayments_90d"] = frame["early_repayments_90d"] > 0
    frame.loc[frame.index[:5], "city"] = "never-seen"
    frame.loc[frame.index[5:9], "city"] = None
    frame.loc[frame.index[9:12], "utilisation_last"] = np.nan
    prepared = prepare_features(frame, scorer.spec)
    np.testing.assert_array_equal(scorer.booster.predict(scorer.layout.matrix(frame), raw_score=True),
                                  scorer.booster.predict(prepared, raw_score=True))
    np.testing.assert_allclose(scorer.shap_values(scorer.layout.matrix(frame)),
                               scorer.booster.predict(prepared, pred_contrib=True), atol=1e-9)
    assert scorer.score(frame)["reason_1_family"].notna().any()
