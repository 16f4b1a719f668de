"""models.treeshap must reproduce LightGBM's pred_contrib exactly on every kind of tree."""
from __future__ import annotations

import gc
import logging
import weakref

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from linerisk.models import treeshap

TOL = 1e-9


def _train(X, y, rounds=15, categorical=(), **params) -> lgb.Booster:
    base = {"objective": "binary", "verbose": -1, "num_threads": 2, "seed": 0,
            "min_data_in_leaf": 5, "num_leaves": 15, "deterministic": True}
    base.update(params)
    ds = lgb.Dataset(X, y, categorical_feature=list(categorical) or "auto")
    return lgb.train(base, ds, num_boost_round=rounds)


def _data(n=400, n_features=6, seed=0, nan_rate=0.1, zero_rate=0.1):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, n_features))
    X[rng.random(X.shape) < zero_rate] = 0.0
    X[rng.random(X.shape) < nan_rate] = np.nan
    logit = np.nan_to_num(X[:, 0]) - np.nan_to_num(X[:, 1]) * np.isnan(X[:, 2]) + (X[:, 3] == 0)
    y = (rng.random(n) < 1 / (1 + np.exp(-2 * logit))).astype(int)
    return X, y


def _assert_matches(booster, X, num_iteration=None):
    expected = booster.predict(X, pred_contrib=True, num_iteration=num_iteration)
    got = treeshap.shap_values(booster, X, num_iteration=num_iteration)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL)
    raw = booster.predict(X, raw_score=True, num_iteration=num_iteration)
    np.testing.assert_allclose(got.sum(axis=1), raw, rtol=0, atol=1e-6)
    return got


@pytest.mark.parametrize("num_leaves,max_depth", [(4, -1), (15, 4), (31, 8), (63, 6)])
def test_matches_pred_contrib_on_numerical_trees_with_nan_and_zero(num_leaves, max_depth):
    X, y = _data(seed=num_leaves)
    booster = _train(X, y, num_leaves=num_leaves, max_depth=max_depth)
    _assert_matches(booster, X)


def test_matches_pred_contrib_with_zero_as_missing():
    X, y = _data(seed=1, zero_rate=0.3)
    booster = _train(X, y, zero_as_missing=True)
    dump = booster.dump_model()
    assert "Zero" in str(dump["tree_info"])
    _assert_matches(booster, X)


def test_matches_pred_contrib_with_use_missing_false():
    X, y = _data(seed=2)
    booster = _train(X, y, use_missing=False)
    _assert_matches(booster, X)


def _deep_two_feature_forest(n_features: int):
    """Rows with 5% missing and a deep forest whose paths split on the first two features again and again."""
    rng = np.random.default_rng(3)
    X = rng.normal(size=(1000, n_features))
    X[rng.random(X.shape) < 0.05] = np.nan
    y = (np.sin(3 * np.nan_to_num(X[:, 0])) + np.nan_to_num(X[:, 1]) ** 2 > 0.7).astype(int)
    return X, _train(X, y, rounds=10, num_leaves=63, max_depth=12, min_data_in_leaf=2)


def test_matches_pred_contrib_when_the_same_feature_splits_repeatedly_on_a_path():
    X, booster = _deep_two_feature_forest(n_features=2)
    forest = treeshap.explainer_for(booster).forest
    depths = np.diff(forest.tree_int_start)
    assert forest.max_k == 2 and depths.max() > 10  # deep paths over two features: many repeats
    _assert_matches(booster, X)


def test_matches_pred_contrib_with_categorical_splits():
    rng = np.random.default_rng(4)
    n = 600
    X = rng.normal(size=(n, 4))
    X[:, 1] = rng.integers(0, 40, n)  # many categories -> multi-word bitsets
    X[:, 3] = rng.integers(0, 5, n)
    y = ((np.isin(X[:, 1], [1, 3, 7, 33, 38])) ^ (X[:, 3] == 2) ^ (X[:, 0] > 0.5)).astype(int)
    booster = _train(X, y, categorical=[1, 3], min_data_per_group=5, cat_smooth=1, max_cat_to_onehot=4)
    assert "==" in str(booster.dump_model()["tree_info"])
    Xq = X.copy()
    # unseen, negative, fractional, huge and missing category values follow LightGBM's rules
    Xq[:8, 1] = [np.nan, -1, -0.5, 3.7, 99, 1e12, 2**31, 33.0]
    Xq[8:12, 3] = [np.nan, -3, 7, 2.2]
    _assert_matches(booster, Xq)


def test_matches_pred_contrib_for_pandas_categorical_columns():
    rng = np.random.default_rng(5)
    n = 500
    df = pd.DataFrame({
        "amount": rng.normal(size=n),
        "channel": pd.Categorical(rng.choice(["app", "web", "branch", "phone"], n)),
        "score": rng.normal(size=n),
    })
    y = ((df["channel"].isin(["web", "phone"])) & (df["amount"] > 0)).astype(int).to_numpy()
    booster = _train(df, y, min_data_per_group=5, max_cat_to_onehot=2)
    query = df.copy()
    # categories in another order plus an unseen one: LightGBM remaps via pandas_categorical
    query["channel"] = pd.Categorical(
        list(rng.choice(["phone", "web", "app", "branch", "kiosk"], n)),
        categories=["phone", "web", "kiosk", "app", "branch"])
    _assert_matches(booster, query)


def test_matches_pred_contrib_when_some_features_are_never_used():
    X, y = _data(seed=6, n_features=8)
    X[:, 5] = 1.0  # constant: never split on
    X[:, 7] = np.nan
    booster = _train(X, y)
    got = _assert_matches(booster, X)
    assert np.all(got[:, [5, 7]] == 0.0)


def test_matches_pred_contrib_for_single_leaf_trees():
    X, y = _data(seed=7)
    booster = _train(X, y, rounds=5, min_data_in_leaf=10_000)
    assert all(t["num_leaves"] == 1 for t in booster.dump_model()["tree_info"])
    got = _assert_matches(booster, X)
    assert np.all(got[:, :-1] == 0.0)


def test_matches_pred_contrib_for_a_mix_of_single_leaf_and_split_trees():
    X, y = _data(seed=8)
    stump = _train(X, y, rounds=1, min_data_in_leaf=10_000)
    booster = lgb.train({"objective": "binary", "verbose": -1, "num_threads": 2, "min_data_in_leaf": 5},
                        lgb.Dataset(X, y), num_boost_round=4, init_model=stump)
    leaves = [t["num_leaves"] for t in booster.dump_model()["tree_info"]]
    assert leaves[0] == 1 < min(leaves[1:])
    _assert_matches(booster, X)


def test_uses_best_iteration_of_an_early_stopped_model_like_lightgbm():
    X, y = _data(n=800, seed=9)
    train, valid = lgb.Dataset(X[:500], y[:500]), lgb.Dataset(X[500:], y[500:])
    params = {"objective": "binary", "verbose": -1, "num_threads": 2, "learning_rate": 0.3,
              "num_leaves": 31, "min_data_in_leaf": 2}
    # keep_training_booster keeps the trees after best_iteration (otherwise they are dropped)
    booster = lgb.train(params, train, num_boost_round=200, valid_sets=[valid],
                        callbacks=[lgb.early_stopping(3, verbose=False)], keep_training_booster=True)
    assert 0 < booster.best_iteration < booster.num_trees()
    _assert_matches(booster, X)
    _assert_matches(booster, X, num_iteration=2)
    _assert_matches(booster, X, num_iteration=-1)


def test_deep_leaves_computed_per_row_give_the_same_values():
    X, y = _data(seed=10, n_features=8)
    booster = _train(X, y, num_leaves=31, max_depth=8)
    expected = booster.predict(X, pred_contrib=True)
    explainer = treeshap.TreeShap(booster, max_table_depth=2).fit()
    modes = set(explainer.leaf_mode.tolist())
    assert {treeshap._DIRECT, treeshap._PAIR, treeshap._SINGLE} <= modes
    np.testing.assert_allclose(explainer.shap_values(X), expected, rtol=0, atol=TOL)


def test_tiny_values_count_as_zero_like_lightgbm():
    X, y = _data(seed=11, zero_rate=0.3)
    booster = _train(X, y, zero_as_missing=True)
    Xq = np.where(X == 0.0, 1e-36, X)  # LightGBM treats |x| <= 1e-35 as zero
    Xq[:20, 0] = -1e-36
    _assert_matches(booster, Xq)


def test_accepts_float32_read_only_input_and_regression_objective():
    X, y = _data(seed=12)
    booster = _train(X, X[:, 0] * 2 + np.nan_to_num(X[:, 1]) + y, objective="regression")
    _assert_matches(booster, X.astype(np.float32))
    X.flags.writeable = False
    _assert_matches(booster, X)


def test_precompute_is_cached_per_booster():
    X, y = _data(seed=13)
    booster = _train(X, y)
    assert treeshap.explainer_for(booster) is treeshap.explainer_for(booster)
    other = _train(X, y, num_leaves=4)
    assert treeshap.explainer_for(other) is not treeshap.explainer_for(booster)


def test_cache_does_not_keep_boosters_alive():
    X, y = _data(seed=16)
    booster = _train(X, y, rounds=2)
    treeshap.shap_values(booster, X[:5])
    ref = weakref.ref(booster)
    del booster
    gc.collect()
    assert ref() is None


def test_multiclass_falls_back_to_pred_contrib_with_one_log_line(caplog):
    rng = np.random.default_rng(14)
    X = rng.normal(size=(300, 4))
    y = rng.integers(0, 3, 300)
    booster = lgb.train({"objective": "multiclass", "num_class": 3, "verbose": -1, "num_threads": 2},
                        lgb.Dataset(X, y), num_boost_round=3)
    with caplog.at_level(logging.INFO, logger="linerisk.models.treeshap"):
        got = treeshap.shap_values(booster, X)
        treeshap.shap_values(booster, X)
    np.testing.assert_array_equal(got, booster.predict(X, pred_contrib=True))
    assert len([r for r in caplog.records if "falling back" in r.getMessage()]) == 1


def test_rejects_wrong_number_of_features():
    X, y = _data(seed=15)
    booster = _train(X, y)
    with pytest.raises(ValueError, match="features"):
        treeshap.shap_values(booster, X[:, :-1])


# ---------------------------------------------------------------------------- baseline / Owen values

def _brute_owen(booster, x, r, groups):
    """Owen values of v(S) = f(x_S, r_rest) by enumerating every coalition (singleton groups: Shapley)."""
    from itertools import combinations
    from math import factorial

    p = len(x)
    masks = np.array(np.meshgrid(*[[0, 1]] * p, indexing="ij")).reshape(p, -1).T.astype(bool)
    value = dict(zip(map(tuple, masks), booster.predict(np.where(masks, x, r), raw_score=True)))
    v = lambda S: value[tuple(i in S for i in range(p))]  # noqa: E731
    labels = sorted(set(groups))
    members = {g: [i for i in range(p) if groups[i] == g] for g in labels}
    phi = np.zeros(p)
    for g in labels:
        others = [h for h in labels if h != g]
        for size in range(len(others) + 1):
            for outer in combinations(others, size):
                w_outer = factorial(size) * factorial(len(labels) - size - 1) / factorial(len(labels))
                base = {i for h in outer for i in members[h]}
                for i in members[g]:
                    rest = [j for j in members[g] if j != i]
                    for t in range(len(rest) + 1):
                        for inner in combinations(rest, t):
                            w = w_outer * factorial(t) * factorial(len(rest) - t) / factorial(len(rest) + 1)
                            S = base | set(inner)
                            phi[i] += w * (v(S | {i}) - v(S))
    return phi, v(set())


@pytest.mark.parametrize("groups", [[0, 1, 2, 3, 4, 5], [0, 0, 1, 1, 1, 2], [0, 0, 0, 0, 0, 0], [2, 0, 2, 0, 1, 1]])
def test_baseline_values_match_brute_force_shapley_and_owen(groups):
    X, y = _data(n=600, seed=7)
    booster = _train(X, y, rounds=12, num_leaves=31, max_depth=6)
    R = X[np.random.default_rng(1).permutation(len(X))]
    got = treeshap.TreeShap(booster).baseline_values(X[:25], R[:25], np.asarray(groups))
    for i in range(25):
        phi, base = _brute_owen(booster, X[i], R[i], groups)
        np.testing.assert_allclose(got[i, :-1], phi, rtol=0, atol=TOL)
        assert got[i, -1] == pytest.approx(base, abs=TOL)


def test_baseline_values_add_up_to_the_difference_to_the_reference_on_repeated_splits():
    X, booster = _deep_two_feature_forest(n_features=3)
    R = X[::-1].copy()
    got = treeshap.TreeShap(booster).baseline_values(X, R, np.array([0, 0, 1]))
    np.testing.assert_allclose(got[:, -1], booster.predict(R, raw_score=True), atol=1e-9)
    np.testing.assert_allclose(got.sum(axis=1), booster.predict(X, raw_score=True), atol=1e-9)
    for i in range(0, 1000, 97):
        phi, _ = _brute_owen(booster, X[i], R[i], [0, 0, 1])
        np.testing.assert_allclose(got[i, :-1], phi, atol=TOL)


def test_baseline_values_of_a_row_against_itself_are_zero():
    X, y = _data(seed=8)
    booster = _train(X, y)
    got = treeshap.TreeShap(booster).baseline_values(X, X)
    assert np.abs(got[:, :-1]).max() == 0.0
    np.testing.assert_allclose(got[:, -1], booster.predict(X, raw_score=True), atol=1e-9)
