"""Training: the out-of-time split, determinism, monotonicity, calibration and the estimator contract."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError

from linerisk.models.evaluate import expected_calibration_error
from linerisk.models.train import (RestrictionModel, TrainParams, baseline_proba, fit_calibrator, model_spec,
                          monotone_constraints, params_from_dict, reference_distributions, split_out_of_time,
                          split_random, train_baseline, train_model)
from linerisk.models.scoring import apply_calibrator, prepare_features
from tests.conftest import FAST
from tests.models.synth import SYNTH_FEATURES, make_panel, synth_spec

NAMES = [n for n, *_ in SYNTH_FEATURES]


def _fit(split, **overrides):
    s = split
    return train_model(s.train[NAMES], s.train["label"], s.valid[NAMES], s.valid["label"],
                       TrainParams(**{**FAST, **overrides}), synth_spec())


# ---------------------------------------------------------------------------- split

def test_out_of_time_split_shares_no_snapshot_and_no_train_horizon_overlaps_validation():
    panel = make_panel(n_users=50, n_snapshots=12, step_days=30)  # monthly snapshots, 90-day horizon
    train, valid, test = split_out_of_time(panel, valid_snapshots=2, test_snapshots=1, horizon_days=90)
    snaps = [set(part["as_of"]) for part in (train, valid, test)]
    assert not (snaps[0] & snaps[1]) and not (snaps[1] & snaps[2]) and not (snaps[0] & snaps[2])
    assert max(snaps[0]) < min(snaps[1]) <= max(snaps[1]) < min(snaps[2])
    horizon = pd.Timedelta(days=90)
    assert (train["as_of"] + horizon <= valid["as_of"].min()).all()
    assert (valid["as_of"] + horizon <= test["as_of"].min()).all()
    assert test["as_of"].nunique() == 1 and test["as_of"].max() == panel["as_of"].max()
    assert valid["as_of"].nunique() == 2


def test_out_of_time_split_with_90_day_snapshots_drops_nothing(synth_panel, synth_split):
    assert sum(len(p) for p in synth_split) == len(synth_panel)


def test_out_of_time_split_refuses_a_panel_with_too_few_snapshots():
    panel = make_panel(n_users=20, n_snapshots=3, step_days=30)
    with pytest.raises(ValueError, match="snapshot"):
        split_out_of_time(panel, valid_snapshots=1, test_snapshots=1, horizon_days=90)


def test_random_split_is_stratified_60_20_20(synth_panel):
    train, valid, test = split_random(synth_panel, "label", seed=1)
    n = len(synth_panel)
    assert (len(train), len(valid), len(test)) == pytest.approx((0.6 * n, 0.2 * n, 0.2 * n), abs=2)
    rate = synth_panel["label"].mean()
    for part in (train, valid, test):
        assert part["label"].mean() == pytest.approx(rate, abs=0.005)
    assert not set(train.index) & set(test.index)


# ---------------------------------------------------------------------------- model behaviour

def test_two_trainings_give_identical_predictions(synth_split, trained_model):
    again = _fit(synth_split)
    X = synth_split.test[NAMES]
    assert again.booster_text_ == trained_model.booster_text_
    np.testing.assert_array_equal(again.predict_proba(X), trained_model.predict_proba(X))


def test_raising_a_plus_one_feature_never_lowers_probability(synth_split, trained_model):
    X = synth_split.test[NAMES].head(300)
    for f in synth_spec()["features"]:
        if f["direction"] == 0:
            continue
        previous = trained_model.predict_proba(X)[:, 1]
        for step in np.linspace(-3, 3, 13):
            p = trained_model.predict_proba(X.assign(**{f["name"]: X[f["name"]] + step}))[:, 1]
            if step > -3:
                diff = (p - previous) * f["direction"]
                assert diff.min() >= -1e-12, f"{f['name']} (direction {f['direction']}) moved the wrong way"
            previous = p


def test_monotone_constraints_follow_the_spec_and_categoricals_are_unconstrained():
    frame = pd.DataFrame({"a": [1.0, 2.0], "city": ["x", "y"]})
    spec = model_spec(X=frame)
    assert spec["categories"] == {"city": ["x", "y"]}
    spec["features"][0]["direction"] = 1
    spec["features"][1]["direction"] = 1
    assert monotone_constraints(spec) == [1, 0]
    assert monotone_constraints(synth_spec()) == [d for _, _, d, _ in SYNTH_FEATURES]


def test_calibration_lowers_ece_on_held_out_data():
    rng = np.random.default_rng(3)
    logit = rng.normal(-2, 1.5, size=40_000)
    y = (rng.random(len(logit)) < 1 / (1 + np.exp(-logit))).astype(int)
    raw = 2.5 * logit + 1.0  # an over-confident, shifted score
    fit, held = slice(0, 20_000), slice(20_000, None)
    for method in ("isotonic", "sigmoid"):
        cal = fit_calibrator(raw[fit], y[fit], method)
        before = expected_calibration_error(y[held], 1 / (1 + np.exp(-raw[held])))
        after = expected_calibration_error(y[held], apply_calibrator(raw[held], cal))
        assert after < before / 3, (method, before, after)


def test_auto_calibration_picks_isotonic_only_with_enough_events():
    rng = np.random.default_rng(0)
    raw = rng.normal(size=120_000)
    few = (rng.random(120_000) < 0.2).astype(int)
    many = (rng.random(120_000) < 0.5).astype(int)
    assert fit_calibrator(raw, few)["method"] == "sigmoid"
    assert fit_calibrator(raw, many)["method"] == "isotonic"


def test_trained_model_is_calibrated_and_beats_chance_on_test(synth_split, trained_model):
    y = synth_split.test["label"].to_numpy()
    p = trained_model.predict_proba(synth_split.test)[:, 1]
    from linerisk.models.evaluate import evaluate
    m = evaluate(y, p)
    assert m["auc"] > 0.75 and m["ece"] < 0.05


def test_score_returns_probability_band_and_reasons_that_push_risk_up(synth_split, trained_model):
    scores = trained_model.score(synth_split.test[NAMES].head(200))
    assert list(scores.columns[:2]) == ["probability", "band"]
    assert set(scores["band"].unique()) <= {"low", "medium", "high", "very_high"}
    np.testing.assert_allclose(scores["probability"], trained_model.predict_proba(synth_split.test.head(200))[:, 1])
    c1, c2 = scores["reason_1_contribution"], scores["reason_2_contribution"]
    assert (c1.dropna() > 0).all() and (c1[c2.notna()] >= c2.dropna()).all()
    assert scores["reason_1_family"].isna().equals(c1.isna())


# ---------------------------------------------------------------------------- estimator contract

def test_predicting_before_fit_raises_not_fitted():
    with pytest.raises(NotFittedError, match="not fitted"):
        RestrictionModel().predict_proba(pd.DataFrame({"a": [1.0]}))


def test_a_missing_feature_column_is_named(synth_split, trained_model):
    with pytest.raises(ValueError, match="missing: logins_30d"):
        trained_model.predict_proba(synth_split.test[NAMES].drop(columns=["logins_30d"]))


def test_string_columns_become_categoricals_and_unseen_values_still_score():
    panel = make_panel(n_users=400, n_snapshots=1, seed=2)
    panel["city"] = np.where(panel["overdue_days_max_90d"] > 0.5, "a", "b")
    train, valid, test = split_random(panel, "label")
    cols = [*NAMES, "city"]
    model = train_model(train[cols], train["label"], valid[cols], valid["label"], TrainParams(**FAST))
    assert model.spec_["categories"]["city"] == ["a", "b"]
    p = model.predict_proba(test[cols].assign(city="never-seen"))[:, 1]
    assert np.isfinite(p).all()


def test_params_from_dict_overrides_and_rejects_unknown_keys():
    assert params_from_dict({"max_depth": 7}).max_depth == 7
    with pytest.raises(ValueError, match="unknown training parameter.*max_dept"):
        params_from_dict({"max_dept": 7})
    with pytest.raises(ValueError, match="calibration"):
        TrainParams(calibration="beta")


def test_baseline_and_reference_distributions(synth_split, trained_model):
    s = synth_split
    base = train_baseline(s.train[NAMES], s.train["label"])
    p = baseline_proba(base, s.test[NAMES])
    assert p.shape == (len(s.test),) and ((0 < p) & (p < 1)).all()
    ref = reference_distributions(s.train[NAMES], trained_model.predict_proba(s.train)[:, 1], synth_spec())
    for name in NAMES:
        entry = ref["features"][name]
        assert sum(entry["counts"]) + entry["missing"] == len(s.train)
        assert len(entry["counts"]) == len(entry["edges"]) + 1
    assert sum(ref["score"]["counts"]) == len(s.train)


def test_a_frame_with_exactly_the_registry_columns_trains_under_the_registry_spec():
    from linerisk.features import spec as feature_spec

    if not feature_spec.FEATURES:
        pytest.skip("feature registry is empty")
    rng = np.random.default_rng(0)
    names = feature_spec.feature_names("restrict")
    X = pd.DataFrame(rng.normal(size=(600, len(names))).astype("float32"), columns=names)
    y = (rng.random(600) < 1 / (1 + np.exp(-(X.iloc[:, 0] - 2)))).astype(int)
    model = train_model(X[:400], y[:400], X[400:], y[400:], TrainParams(**{**FAST, "n_estimators": 20}))
    assert model.spec_["spec_hash"] == feature_spec.spec_hash()
    assert monotone_constraints(model.spec_) == feature_spec.monotone_constraints()


@pytest.mark.parametrize("method", ["sigmoid", "isotonic"])
def test_json_calibrator_reproduces_sklearns_calibrated_probabilities(method):
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.frozen import FrozenEstimator

    from linerisk.models.train import _RawScore

    rng = np.random.default_rng(3)
    raw = rng.normal(-2.0, 1.2, 5000)
    y = (rng.random(5000) < 1 / (1 + np.exp(-(0.7 * raw + 0.4)))).astype(int)
    sk = CalibratedClassifierCV(FrozenEstimator(_RawScore().fit()), method=method).fit(raw.reshape(-1, 1), y)
    expected = np.clip(sk.predict_proba(raw.reshape(-1, 1))[:, 1], 1e-4, 1 - 1e-4) if method == "isotonic" \
        else sk.predict_proba(raw.reshape(-1, 1))[:, 1]
    np.testing.assert_allclose(apply_calibrator(raw, fit_calibrator(raw, y, method)), expected, atol=1e-12)


def test_the_reasons_reference_is_an_ordinary_value_of_the_low_risk_rows(synth_split, trained_model):
    names = [f["name"] for f in trained_model.spec_["features"]]
    X = synth_split.train[names]
    raw = trained_model.raw_score(X)
    params = TrainParams()
    reference = trained_model.spec_["attribution"]["reference"]
    for f in trained_model.spec_["features"]:
        if f["direction"] == 0:
            assert f["name"] not in reference  # unconstrained features are never moved
            continue
        share, q = ((params.reference_low_risk_share_up, params.reference_quantile_up) if f["direction"] > 0
                    else (params.reference_low_risk_share, params.reference_quantile_down))
        low = X[raw <= np.quantile(raw, share)]
        assert reference[f["name"]] == pytest.approx(float(np.nanquantile(low[f["name"]].to_numpy(float), q)))


def test_a_spec_without_risk_directions_keeps_path_shap(synth_split):
    names = [n for n, *_ in SYNTH_FEATURES]
    s = synth_split
    spec = model_spec(X=s.train[names])  # external table: every feature unconstrained
    model = RestrictionModel(TrainParams(**FAST), spec).fit(s.train[names], s.train["label"], s.valid[names],
                                                            s.valid["label"])
    assert "attribution" not in model.spec_
    X = s.test[names].head(50)
    np.testing.assert_allclose(model.scorer_.attributions(prepare_features(X, spec)),
                               model.booster_.predict(prepare_features(X, spec), pred_contrib=True), atol=1e-9)


def test_training_reports_the_rows_the_embargo_leaves_out():
    import linerisk

    panel = make_panel(n_users=400, n_snapshots=12, step_days=30)  # monthly snapshots, 90-day horizon
    result = linerisk.train(panel, **FAST)
    kept = sum(len(part) for part in result.split)
    assert 0 < kept < len(panel)
    assert f"rows left out (embargo)</th><td>{len(panel) - kept:,}" in result.report_html.replace("\n", "")
