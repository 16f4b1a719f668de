"""Training: out-of-time split, a calibrated LightGBM model, and a logistic-regression baseline.

Pure functions and small estimators over DataFrames; no file I/O (pipeline/train_job.py
does that, models/registry.py logs to MLflow).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterable, NamedTuple

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.exceptions import NotFittedError
from sklearn.impute import SimpleImputer
from sklearn.frozen import FrozenEstimator
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from linerisk.models.scoring import DEFAULT_BAND_EDGES, Scorer, apply_calibrator, prepare_features

# "auto" calibration: isotonic only when the validation part has at least this many positives and
# negatives, else a 2-parameter sigmoid (Platt) on the raw log-odds. Measured on simulated worlds
# (20k and 100k users, 1.2k and 6.2k validation positives): LightGBM's raw scores are already close
# to calibrated, sigmoid kept AUC/PR-AUC exactly (it is strictly monotone), while isotonic's ties
# cost PR-AUC (0.407 -> 0.394 at 100k users) with no gain in ECE, Brier or log loss.
ISOTONIC_MIN_CLASS_COUNT = 50_000
# Isotonic output is kept inside [floor, 1 - floor]: a step with no events must not claim certainty.
ISOTONIC_FLOOR = 1e-4
HORIZON_DAYS = 90


@dataclass(frozen=True)
class TrainParams:
    """Everything that decides a training run. Defaults favour shallow trees: max_depth 6 keeps
    the fast TreeSHAP kernel (depth-limited) usable for reason codes."""

    learning_rate: float = 0.05
    num_leaves: int = 31
    max_depth: int = 6
    n_estimators: int = 2000
    early_stopping_rounds: int = 100
    min_child_samples: int = 100
    feature_fraction: float = 0.9
    lambda_l2: float = 1.0
    seed: int = 42
    num_threads: int = 2
    calibration: str = "auto"  # auto | isotonic | sigmoid
    valid_snapshots: int = 1
    test_snapshots: int = 1
    horizon_days: int = 90
    log_every: int = 100
    baseline_C: float = 1.0
    # Reasons compare a user with an achievable, ordinary-good self: each risk feature moved no further
    # than what a low-risk share of training rows shows at a quantile. Risk-raising counts and shares:
    # the lower-risk half's 60th percentile, so ordinary values (one inquiry, a third of the line used)
    # are no reason; scores and days-since: the lowest-risk tenth's 90th percentile (issue 16: the
    # lowest-risk tenth's 75th percentile on both sides named ordinary values, 9% of named reasons
    # with no hazard at as_of).
    reference_low_risk_share: float = 0.10  # risk-lowering features (scores, days since)
    reference_low_risk_share_up: float = 0.50  # risk-raising features (counts, shares, balances)
    reference_quantile_up: float = 0.60
    reference_quantile_down: float = 0.90

    def __post_init__(self) -> None:
        if self.calibration not in ("auto", "isotonic", "sigmoid"):
            raise ValueError(f"calibration must be auto, isotonic or sigmoid, not {self.calibration!r}")
        if not 1 <= self.max_depth <= 16:
            raise ValueError(f"max_depth must be in 1..16 (TreeSHAP cost grows with depth), not {self.max_depth}")
        for name in ("reference_low_risk_share", "reference_low_risk_share_up", "reference_quantile_up",
                     "reference_quantile_down"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], not {getattr(self, name)}")
        for name in ("valid_snapshots", "test_snapshots", "n_estimators", "early_stopping_rounds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")

    def lightgbm_params(self) -> dict[str, Any]:
        """LightGBM parameters: deterministic (fixed seed, deterministic=True, row-wise, fixed threads)."""
        return {
            "objective": "binary",
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "max_depth": self.max_depth,
            "min_child_samples": self.min_child_samples,
            "feature_fraction": self.feature_fraction,
            "lambda_l2": self.lambda_l2,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "num_threads": self.num_threads,
            "verbose": -1,
        }


def params_from_dict(values: dict[str, Any], base: TrainParams | None = None) -> TrainParams:
    """Override `base` (default TrainParams()) with `values`; unknown keys raise naming them."""
    base = base or TrainParams()
    known = {f.name for f in dataclasses.fields(TrainParams)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown training parameter(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return dataclasses.replace(base, **values)


# ---------------------------------------------------------------------------- spec

def model_spec(features: Iterable[Any] | None = None, X: pd.DataFrame | None = None,
               spec_hash: str | None = None) -> dict[str, Any]:
    """The plain-JSON spec a model carries: features (name, family, direction, ...) and the spec hash.

    From the feature registry (`features`, Feature dataclasses) or, for an external table, from
    the columns of `X` (each column its own family, unconstrained; string columns categorical).
    """
    if features is not None:
        rows = [dataclasses.asdict(f) if dataclasses.is_dataclass(f) else dict(f) for f in features]
        categories: dict[str, list[str]] = {}
    elif X is not None:
        rows = [{"name": str(c), "family": str(c), "direction": 0} for c in X.columns]
        categories = {str(c): sorted(X[c].dropna().astype(str).unique().tolist())
                      for c in X.columns if _is_categorical(X[c])}
    else:
        raise ValueError("model_spec needs the feature registry or a feature frame")
    if spec_hash is None:
        from linerisk.features.spec import records_hash

        spec_hash = records_hash(rows)
    return {"features": rows, "spec_hash": spec_hash, "categories": categories, "band_edges": list(DEFAULT_BAND_EDGES)}


def registry_spec(target: str = "restrict", period_days: int = HORIZON_DAYS) -> dict[str, Any]:
    """The model spec of one target's view of the feature registry (its features, directions and hash);
    a restoration curve's period is the label's horizon (`period_days`)."""
    from linerisk.features import spec as feature_spec

    spec = model_spec(features=feature_spec.feature_records(target), spec_hash=feature_spec.spec_hash(target))
    if target == "restore":  # what the restoration scorer needs besides the features
        spec.update(period_days=period_days,
                    red_line={"rules": [dict(r) for r in feature_spec.RED_LINE], "cap": feature_spec.RED_LINE_CAP})
    return {**spec, "target": target}


def default_spec(X: pd.DataFrame) -> dict[str, Any]:
    """The registry's spec of the target whose columns X has exactly (so monotone constraints apply), else one from X."""
    from linerisk.features import spec as feature_spec

    for target in feature_spec.TARGETS:
        if list(X.columns) == feature_spec.feature_names(target):
            return registry_spec(target)
    return model_spec(X=X)


def _is_categorical(col: pd.Series) -> bool:
    return not (pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col))


def monotone_constraints(spec: dict[str, Any]) -> list[int]:
    """LightGBM monotone constraints in spec order (categoricals are always 0)."""
    cats = spec.get("categories", {})
    return [0 if f["name"] in cats else int(f.get("direction", 0)) for f in spec["features"]]


# ---------------------------------------------------------------------------- splits

def utc_naive(values: pd.Series) -> pd.Series:
    """Times as naive UTC microseconds (naive input is taken as UTC), so aware and naive columns compare."""
    return pd.to_datetime(values, utc=True).dt.tz_localize(None).astype("datetime64[us]")


class Split(NamedTuple):
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame


def split_out_of_time(panel: pd.DataFrame, valid_snapshots: int = 1, test_snapshots: int = 1,
                      horizon_days: int = 90, time_col: str = "as_of") -> Split:
    """Train on earlier snapshots, validate on later ones, test on the latest.

    No snapshot is on two sides, and a part keeps only rows whose label window
    [as_of, as_of + horizon) ends by the next part's first as_of: snapshots in between
    (an embargo) are dropped, so no outcome is seen on both sides of an edge.
    """
    if time_col not in panel.columns:
        raise ValueError(f"panel has no {time_col!r} column to split on")
    times = utc_naive(panel[time_col])
    snaps = sorted(pd.Timestamp(t) for t in times.unique())
    horizon = pd.Timedelta(days=horizon_days)
    test_snaps = snaps[-test_snapshots:]
    valid_pool = [s for s in snaps if s + horizon <= test_snaps[0]]
    valid_snaps = valid_pool[-valid_snapshots:]
    train_snaps = [s for s in snaps if len(valid_snaps) and s + horizon <= valid_snaps[0]]
    if len(snaps) <= test_snapshots or len(valid_snaps) < valid_snapshots or not train_snaps:
        raise ValueError(
            f"panel has {len(snaps)} snapshot(s) in {time_col}; with a {horizon_days}-day horizon it needs "
            f"{test_snapshots} test + {valid_snapshots} validation snapshot(s) and earlier training snapshots, "
            "each part's label windows ending before the next part starts")
    parts = [panel.loc[times.isin(s).to_numpy()] for s in (train_snaps, valid_snaps, test_snaps)]
    return Split(*parts)


def split_random(frame: pd.DataFrame, label: str, seed: int = 42,
                 fractions: tuple[float, float, float] = (0.6, 0.2, 0.2), group: str | None = None) -> Split:
    """Stratified random 60/20/20 split, for tables without a time column. With `group` (an id column)
    whole ids are split, stratified by whether the id has any positive row, so no id is on two sides."""
    train_frac, valid_frac, test_frac = fractions
    if group is None:
        rest, test = train_test_split(frame, test_size=test_frac, stratify=frame[label], random_state=seed)
        train, valid = train_test_split(rest, test_size=valid_frac / (train_frac + valid_frac),
                                        stratify=rest[label], random_state=seed)
        return Split(train.sort_index(), valid.sort_index(), test.sort_index())
    by_id = frame.groupby(group, sort=True)[label].max()
    rest, test = train_test_split(by_id, test_size=test_frac, stratify=by_id, random_state=seed)
    train, valid = train_test_split(rest, test_size=valid_frac / (train_frac + valid_frac), stratify=rest,
                                    random_state=seed)
    return Split(*(frame[frame[group].isin(ids.index)] for ids in (train, valid, test)))


LEAK_AUC = 0.99


def suspicious_columns(frame: pd.DataFrame, label: str, columns: Iterable[str]) -> dict[str, str]:
    """Columns that cannot be honest features, each with why: integer or text values unique per row (an
    identifier), or a column that alone ranks the label with AUC above LEAK_AUC (the label leaking in)."""
    from sklearn.metrics import roc_auc_score

    y = frame[label].to_numpy()
    both = 0 < y.sum() < len(y)
    out = {}
    for c in columns:
        col = frame[c]
        numeric = pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)
        if (len(col) > 1 and not pd.api.types.is_float_dtype(col) and col.notna().all()
                and col.nunique() == len(col)):
            out[c] = "unique per row"
            continue
        if not both:
            continue
        if numeric:
            values = col.astype("float64")
            values = values.fillna(values.min() - 1 if values.notna().any() else 0.0)
        else:  # a category scored by its label rate
            values = frame.groupby(col.astype("string").fillna("<NA>"))[label].transform("mean")
        auc = roc_auc_score(y, values.to_numpy())
        auc = max(auc, 1 - auc)
        if auc > LEAK_AUC:
            out[c] = f"AUC {auc:.3f} on its own"
    return out


# ---------------------------------------------------------------------------- calibration

class _RawScore(ClassifierMixin, BaseEstimator):
    """The booster's raw log-odds, passed in as the one column of X, seen as a fitted classifier's
    decision function: so scikit-learn's CalibratedClassifierCV can calibrate them."""

    def fit(self, X=None, y=None) -> "_RawScore":
        self.classes_ = np.array([0, 1])
        return self

    def decision_function(self, X) -> np.ndarray:
        return np.asarray(X, dtype=np.float64)[:, 0]

    def predict(self, X) -> np.ndarray:
        return (self.decision_function(X) > 0).astype(np.int64)


def fit_calibrator(raw: np.ndarray, y: np.ndarray, method: str = "auto") -> dict[str, Any]:
    """Calibrate raw log-odds with CalibratedClassifierCV on a FrozenEstimator; return plain-JSON parameters.

    auto: isotonic when both classes have >= ISOTONIC_MIN_CLASS_COUNT rows, else sigmoid (Platt).
    The parameters, not the sklearn object, are kept: the model package holds no pickle.
    """
    raw = np.asarray(raw, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"calibration needs both classes in the validation part (positives {n_pos}, negatives {n_neg})")
    if method == "auto":
        method = "isotonic" if min(n_pos, n_neg) >= ISOTONIC_MIN_CLASS_COUNT else "sigmoid"
    if method not in ("isotonic", "sigmoid"):
        raise ValueError(f"unknown calibration method {method!r}")
    fitted = CalibratedClassifierCV(FrozenEstimator(_RawScore().fit()), method=method).fit(raw.reshape(-1, 1), y)
    calibrator = fitted.calibrated_classifiers_[0].calibrators[0]
    counts = {"n_pos": n_pos, "n_neg": n_neg}
    if method == "isotonic":  # a floor keeps log loss finite where a bin saw no positives
        return {"method": "isotonic", "x": calibrator.X_thresholds_.tolist(),
                "y": np.clip(calibrator.y_thresholds_, ISOTONIC_FLOOR, 1 - ISOTONIC_FLOOR).tolist(), **counts}
    # sklearn's sigmoid is expit(-(a_ * raw + b_)); apply_calibrator uses expit(a * raw + b)
    return {"method": "sigmoid", "a": -float(calibrator.a_), "b": -float(calibrator.b_), **counts}


# ---------------------------------------------------------------------------- model

class RestrictionModel:
    """Calibrated LightGBM classifier: P(line restricted within the horizon).

    `fit` trains with early stopping on the validation part, then calibrates on it. The
    learned state is text and JSON only (booster_text_, calibrator_, spec_): no pickle.
    """

    scorer_class = Scorer  # how a fitted package scores (the restoration model has its own)

    def __init__(self, params: TrainParams | None = None, spec: dict[str, Any] | None = None):
        self.params = params
        self.spec = spec

    def fit(self, X_train: pd.DataFrame, y_train, X_valid: pd.DataFrame, y_valid) -> "RestrictionModel":
        params = self.params or TrainParams()
        spec = self.spec or default_spec(X_train)
        Xt, Xv = prepare_features(X_train, spec), prepare_features(X_valid, spec)
        lgb_params = params.lightgbm_params() | {"monotone_constraints": monotone_constraints(spec)}
        dtrain = lgb.Dataset(Xt, label=np.asarray(y_train), free_raw_data=True)
        dvalid = lgb.Dataset(Xv, label=np.asarray(y_valid), reference=dtrain)
        callbacks = [lgb.early_stopping(params.early_stopping_rounds, verbose=params.log_every > 0)]
        if params.log_every > 0:
            callbacks.append(lgb.log_evaluation(params.log_every))
        booster = lgb.train(lgb_params, dtrain, num_boost_round=params.n_estimators,
                            valid_sets=[dvalid], valid_names=["valid"], callbacks=callbacks)
        best = int(booster.best_iteration or booster.current_iteration())
        return self.calibrate(booster.model_to_string(num_iteration=best), best, X_valid, y_valid, spec, X_train)

    def calibrate(self, booster_text: str, best_iteration: int, X_valid: pd.DataFrame, y_valid,
                  spec: dict[str, Any] | None = None, X_reference: pd.DataFrame | None = None) -> "RestrictionModel":
        """Take a grown booster (from `fit`, or from lightgbm.dask on a cluster) and calibrate it on the
        validation part: the same model, whichever way the trees were grown. The reasons' reference
        profile comes from `X_reference` (the training part; default the validation part)."""
        params = self.params or TrainParams()
        spec = spec or self.spec or default_spec(X_valid)
        self.best_iteration_ = best_iteration
        self.booster_text_ = booster_text
        self.spec_ = spec
        self.feature_names_in_ = np.asarray([f["name"] for f in spec["features"]], dtype=object)
        self.n_features_in_ = len(self.feature_names_in_)
        self.scorer_ = Scorer(self.booster_text_, {"method": "none"}, spec)
        self.calibrator_ = fit_calibrator(self.scorer_.raw_score(X_valid), np.asarray(y_valid), params.calibration)
        self.scorer_ = self.scorer_class(self.booster_text_, self.calibrator_, spec)
        # the restriction model's reasons compare a user with an achievable, ordinary-good self (issue 16); the
        # restoration model keeps path-dependent SHAP
        X_reference = X_valid if X_reference is None else X_reference
        reference = (attribution_reference(prepare_features(X_reference, spec), self.scorer_.raw_score(X_reference),
                                           spec, params) if self.scorer_class is Scorer else None)
        if reference:  # a spec without directional features keeps path-dependent SHAP
            self.spec_ = {**spec, "attribution": {"method": "owen_families_vs_reference", "reference": reference}}
            self.scorer_ = Scorer(self.booster_text_, self.calibrator_, self.spec_)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "scorer_"):
            raise NotFittedError("This RestrictionModel is not fitted yet; call fit(...) first.")

    def _check(self, X: pd.DataFrame) -> None:
        self._check_fitted()
        if not isinstance(X, pd.DataFrame):
            raise TypeError("X must be a pandas DataFrame with the spec's feature columns")
        missing = [c for c in self.feature_names_in_ if c not in X.columns]
        if missing:
            raise ValueError(f"X has {self.n_features_in_ - len(missing)} of the model's {self.n_features_in_} "
                             f"features; missing: {', '.join(missing[:10])}")

    @property
    def booster_(self) -> lgb.Booster:
        self._check_fitted()
        return self.scorer_.booster

    def raw_score(self, X: pd.DataFrame) -> np.ndarray:
        """Uncalibrated log-odds from the booster."""
        self._check(X)
        return self.scorer_.raw_score(X)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Calibrated [P(no restriction), P(restriction)] per row."""
        self._check(X)
        p = apply_calibrator(self.scorer_.raw_score(X), self.calibrator_)
        return np.column_stack([1.0 - p, p])

    def score(self, X: pd.DataFrame, reasons: bool = True) -> pd.DataFrame:
        """probability, band and top-3 reason families: exactly what the served model returns."""
        self._check(X)
        return self.scorer_.score(X, reasons=reasons)

    def contributions(self, X: pd.DataFrame) -> pd.DataFrame:
        """Per-feature SHAP contributions (log-odds) plus the `bias` column."""
        self._check(X)
        contrib = self.scorer_.booster.predict(prepare_features(X, self.spec_), pred_contrib=True)
        return pd.DataFrame(contrib, columns=[*self.feature_names_in_, "bias"], index=X.index)

    def gain_importance(self) -> pd.Series:
        """Total split gain per feature."""
        self._check_fitted()
        return pd.Series(self.scorer_.booster.feature_importance("gain"), index=self.feature_names_in_)


def attribution_reference(X: pd.DataFrame, raw: np.ndarray, spec: dict[str, Any], params: TrainParams
                          ) -> dict[str, float]:
    """The reasons' reference profile: per directional feature, the value the lowest-risk
    `reference_low_risk_share_up` of the rows `X` (model input) stay at or under with probability
    `reference_quantile_up` (risk-raising features), or that the lowest-risk `reference_low_risk_share`
    reach with probability 1 - `reference_quantile_down` (risk-lowering ones); where those rows never
    have a value, the best one seen."""
    out = {}
    low_risk = {share: raw <= np.quantile(raw, share)
                for share in (params.reference_low_risk_share_up, params.reference_low_risk_share)}
    for f in spec["features"]:
        direction = f.get("direction", 0)
        if direction == 0 or isinstance(X[f["name"]].dtype, pd.CategoricalDtype):
            continue
        share, q = ((params.reference_low_risk_share_up, params.reference_quantile_up) if direction > 0
                    else (params.reference_low_risk_share, params.reference_quantile_down))
        column = X[f["name"]].to_numpy(dtype=np.float64, na_value=np.nan)
        values = column[low_risk[share] & ~np.isnan(column)]
        if len(values):
            out[f["name"]] = float(np.quantile(values, q))
        elif (~np.isnan(column)).any():  # the low-risk rows never have it: the best value seen
            out[f["name"]] = float(np.nanmin(column) if direction > 0 else np.nanmax(column))
    return out


def train_model(X_train: pd.DataFrame, y_train, X_valid: pd.DataFrame, y_valid,
                params: TrainParams | None = None, spec: dict[str, Any] | None = None) -> RestrictionModel:
    """Fit a calibrated LightGBM RestrictionModel (early stopping and calibration on the validation part)."""
    return RestrictionModel(params, spec).fit(X_train, y_train, X_valid, y_valid)


# ---------------------------------------------------------------------------- baseline & references

def train_baseline(X_train: pd.DataFrame, y_train, C: float = 1.0, seed: int = 42) -> Pipeline:
    """Scorecard-style baseline: median-impute + standardise numerics, one-hot categoricals, logistic regression."""
    numeric = [c for c in X_train.columns if not _is_categorical(X_train[c])]
    categorical = [c for c in X_train.columns if _is_categorical(X_train[c])]
    transformers = [("num", make_pipeline(SimpleImputer(strategy="median", keep_empty_features=True),
                                          StandardScaler()), numeric)]
    if categorical:
        transformers.append(("cat", make_pipeline(
            SimpleImputer(strategy="constant", fill_value="missing"),
            OneHotEncoder(handle_unknown="ignore", min_frequency=20)), categorical))
    pipe = Pipeline([("prep", ColumnTransformer(transformers)),
                     ("lr", LogisticRegression(C=C, max_iter=2000, random_state=seed))])
    X = X_train.copy()
    for c in categorical:
        X[c] = X[c].astype("object").where(X[c].notna(), np.nan)
    return pipe.fit(X, np.asarray(y_train))


def baseline_proba(baseline: Pipeline, X: pd.DataFrame) -> np.ndarray:
    """P(restriction) from the baseline pipeline."""
    X = X.copy()
    for c in X.columns:
        if _is_categorical(X[c]):
            X[c] = X[c].astype("object").where(X[c].notna(), np.nan)
    return baseline.predict_proba(X)[:, 1]


def oracle_scores(test: pd.DataFrame, truth: pd.DataFrame, column: str = "oracle_prob") -> pd.Series:
    """The truth's `column` (default `oracle_prob`) for test rows, joined on (user_id, as_of); NaN where the
    truth has no row."""
    rows = test.reset_index() if "user_id" not in test.columns and "user_id" in (test.index.names or []) else test
    keys = rows[["user_id", "as_of"]].assign(as_of=lambda d: utc_naive(d["as_of"]))
    right = truth[["user_id", "as_of", column]].assign(as_of=lambda d: utc_naive(d["as_of"]))
    merged = keys.merge(right, on=["user_id", "as_of"], how="left", validate="many_to_one")
    return pd.Series(merged[column].to_numpy(), index=test.index, name=column)


def reference_distributions(X: pd.DataFrame, scores: np.ndarray, spec: dict[str, Any],
                            n_bins: int = 10) -> dict[str, Any]:
    """Training reference for PSI drift: per-feature quantile bin edges and counts, and the same for scores.

    Edges are interior quantiles (bins are (-inf, e1], (e1, e2], ..., (ek, inf)); missing
    values have their own count. Categoricals keep category counts.
    """
    def numeric_bins(values: np.ndarray) -> dict[str, Any]:
        values = np.asarray(values, dtype=np.float64)
        finite = values[~np.isnan(values)]
        qs = np.linspace(0, 1, n_bins + 1)[1:-1]
        edges = np.unique(np.quantile(finite, qs)) if len(finite) else np.array([])
        counts = np.bincount(np.searchsorted(edges, finite, side="left"), minlength=len(edges) + 1)
        return {"edges": edges.tolist(), "counts": counts.tolist(), "missing": int(np.isnan(values).sum()),
                "n": int(len(values))}

    Xp = prepare_features(X, spec)
    features = {}
    for f in spec["features"]:
        col = Xp[f["name"]]
        if isinstance(col.dtype, pd.CategoricalDtype):
            vc = col.value_counts(dropna=False)
            features[f["name"]] = {"categories": {str(k): int(v) for k, v in vc.items()}, "n": int(len(col))}
        else:
            features[f["name"]] = numeric_bins(col.to_numpy())
    return {"n_bins": n_bins, "features": features, "score": numeric_bins(scores)}
