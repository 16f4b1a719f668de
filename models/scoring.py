"""Scoring a model package: booster + calibrator + spec -> probability, band and reason families.

Self-contained on purpose: it is shipped inside the registered MLflow model together with
features/valuefmt.py and models/treeshap.py, as a minimal `linerisk` package (code_paths), so a
process without this repository can score. Training (`RestrictionModel`), batch scoring (`linerisk score`), the served model and
`linerisk explain` all score through `Scorer`, so they give the same probabilities and reasons.

Reasons: the three families whose attribution (log-odds) pushes risk up most. A package whose spec
carries an `attribution` reference explains each user against an achievable, ordinary-good version of
themselves (every risk feature moved no further than the reference's value in its less risky
direction, e.g. no more inquiries than most lower-risk users have; everything else as it is) with
Owen values, families as players: exact, they add up to f(x) - f(reference) and a family's total is
its Shapley value in the game of families. Older packages fall back to path-dependent SHAP (against
the average user). Each reason has a stable code `<family>:<feature>`, the family's feature with the
largest value for that user (e.g. `overdue:max_dpd_90d`), and that feature's spec text in English
and Chinese filled with the user's own value. SHAP comes from the exact TreeSHAP kernel (models/treeshap.py, numba)
and falls back to LightGBM's `pred_contrib` (same values to ~1e-15) where numba is missing.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from linerisk.features import valuefmt

try:
    import numba

    from linerisk.models.treeshap import explainer_for
except ImportError:  # no numba here: LightGBM's pred_contrib gives the same values, slower
    numba, explainer_for = None, None

logger = logging.getLogger(__name__)

# Upper probability edges of the bands; above the last edge is "very_high".
DEFAULT_BAND_EDGES = (0.05, 0.15, 0.35)
BAND_NAMES = ("low", "medium", "high", "very_high")
N_REASONS = 3
STRING = pd.StringDtype()  # the contract's text dtype, built once (resolving the name "string" costs per call)
# Smallest family SHAP sum (log-odds) that counts as a reason; 0.01 is a 1% change in the odds.
MIN_CONTRIBUTION = 0.01


def apply_calibrator(raw: np.ndarray, calibrator: dict[str, Any]) -> np.ndarray:
    """Map raw log-odds to calibrated probabilities with plain-JSON calibrator parameters.

    isotonic: piecewise-linear through (x, y), clipped at the ends (what IsotonicRegression does);
    sigmoid: 1 / (1 + exp(-(a * raw + b))); none: the booster's own sigmoid.
    """
    raw = np.asarray(raw, dtype=np.float64)
    method = calibrator.get("method")
    if method == "isotonic":
        return np.clip(np.interp(raw, np.asarray(calibrator["x"]), np.asarray(calibrator["y"])), 0.0, 1.0)
    if method == "sigmoid":
        return 1.0 / (1.0 + np.exp(-(calibrator["a"] * raw + calibrator["b"])))
    if method == "none":
        return 1.0 / (1.0 + np.exp(-raw))
    raise ValueError(f"unknown calibration method {method!r} (expected isotonic, sigmoid or none)")


def assign_bands(probability: np.ndarray, edges: tuple[float, ...] = DEFAULT_BAND_EDGES) -> np.ndarray:
    """Risk band per probability: low / medium / high / very_high by fixed edges."""
    idx = np.searchsorted(np.asarray(edges), np.asarray(probability), side="right")
    return np.asarray(BAND_NAMES, dtype=object)[idx]


class Layout:
    """What a spec fixes for scoring, worked out once per model package (not per request): feature
    names, categorical columns and their categories, families and which features form each, and
    the reason-text templates."""

    def __init__(self, spec: dict[str, Any]):
        features = spec["features"]
        self.names = [f["name"] for f in features]
        self.name_array = np.asarray(self.names, dtype=object)
        categories = spec.get("categories", {})
        self.categories = {j: pd.Index(categories[n], dtype=object) for j, n in enumerate(self.names) if n in categories}
        family = [f["family"] for f in features]
        self.families = np.asarray(sorted(set(family)), dtype=object)
        self.feature_family = np.searchsorted(self.families, np.asarray(family, dtype=object))
        self.members = [np.flatnonzero(self.feature_family == g) for g in range(len(self.families))]
        self.texts = [{lang: (f.get(f"text_{lang}") or f"{f['name']} = {{value}}", f.get(f"none_{lang}", ""))
                       for lang in ("en", "zh")} for f in features]
        self.units = [f.get("unit", "") for f in features]

    def _check(self, frame: pd.DataFrame) -> None:
        missing = [n for n in self.names if n not in frame.columns]
        if missing:
            raise ValueError(f"input has {len(self.names) - len(missing)} of the model's {len(self.names)} "
                             f"features; missing column(s): {', '.join(missing[:10])}"
                             + (" ..." if len(missing) > 10 else ""))

    def numeric(self, name: str, col: Any) -> np.ndarray:
        """One numeric input column as numbers (float32 stays float32, the rest float64); raises naming it."""
        if isinstance(col, np.ndarray) and col.dtype.kind in "fiub":
            return col if col.dtype in (np.float32, np.float64) else col.astype(np.float64)
        try:
            num = pd.to_numeric(col if isinstance(col, pd.Series) else pd.Series(col), errors="raise")
            return (num.to_numpy() if num.dtype == np.float32  # float32 panels stay small
                    else num.to_numpy(dtype=np.float64, na_value=np.nan))
        except (TypeError, ValueError):
            raise ValueError(f"column {name}: expected numbers, got {getattr(col, 'dtype', type(col).__name__)}") from None

    def codes(self, j: int, col: Any) -> np.ndarray:
        """A categorical input column as its category codes (float; unknown or missing -> NaN), as LightGBM reads them."""
        values = np.asarray(col, dtype=object)
        codes = self.categories[j].get_indexer(values).astype(np.float64)
        codes[codes < 0] = np.nan
        return codes

    def matrix(self, frame: pd.DataFrame) -> np.ndarray:
        """The model input as one (rows, features) float64 matrix in spec order; categoricals as codes.

        A frame of numeric columns is converted in one block; extra columns are ignored."""
        self._check(frame)
        if not self.categories:
            sub = frame if list(frame.columns) == self.names else frame[self.names]
            if all(getattr(dt, "kind", "O") in "fiub" for dt in sub.dtypes):
                return np.ascontiguousarray(sub.to_numpy(dtype=np.float64, na_value=np.nan))
        out = np.empty((len(frame), len(self.names)), dtype=np.float64)
        for j, name in enumerate(self.names):
            col = frame[name]
            out[:, j] = self.codes(j, col) if j in self.categories else self.numeric(name, col)
        return out

    def display(self, X: np.ndarray, j: int) -> np.ndarray:
        """Column j of a model-input matrix as shown in reason texts (categories for codes)."""
        if j not in self.categories:
            return X[:, j]
        cats = np.append(self.categories[j].to_numpy(dtype=object), np.nan)
        codes = X[:, j]
        return cats[np.where(np.isnan(codes), -1, codes).astype(np.int64)]


def layout_of(spec: dict[str, Any] | Layout) -> Layout:
    return spec if isinstance(spec, Layout) else Layout(spec)


def prepare_features(frame: pd.DataFrame, spec: dict[str, Any] | Layout) -> pd.DataFrame:
    """The model's input frame: spec columns in spec order, numeric as float32/float64, categoricals fixed.

    Extra columns (user_id, as_of, ...) are ignored; a missing column raises naming it. Scoring
    itself uses `Layout.matrix` (the same column rules, no frame built)."""
    layout = layout_of(spec)
    layout._check(frame)
    out = {}
    for j, name in enumerate(layout.names):
        col = frame[name]
        if j in layout.categories:
            out[name] = pd.Categorical(col.astype("object").where(col.notna(), None), categories=layout.categories[j])
        else:
            out[name] = layout.numeric(name, col)
    return pd.DataFrame(out, index=frame.index)


def _family_sums(contrib: np.ndarray, layout: Layout) -> np.ndarray:
    """(rows, families) SHAP sums, families in sorted order, bias column dropped."""
    out = np.zeros((contrib.shape[0], len(layout.families)))
    for g, cols in enumerate(layout.members):
        out[:, g] = contrib[:, cols].sum(axis=1)
    return out


def family_contributions(contrib: np.ndarray, spec: dict[str, Any] | Layout) -> pd.DataFrame:
    """Per-feature values (n, features [+ bias]) summed per spec family: SHAP log-odds, or any other
    per-feature quantity such as split gain. Columns beyond the spec's features (the bias) are dropped."""
    layout = layout_of(spec)
    return pd.DataFrame(_family_sums(np.asarray(contrib), layout), columns=list(layout.families))


def reference_rows(A: np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """The reference row of each row of the model-input matrix `A`: every feature of
    spec['attribution']['reference'] moved to its reference value where the row is riskier by the
    feature's direction; missing values and every other feature stay as they are."""
    R = np.array(A, dtype=np.float64, copy=True)
    ref = spec.get("attribution", {}).get("reference", {})
    for j, f in enumerate(spec["features"]):
        if f["name"] not in ref or f.get("direction", 0) == 0:
            continue
        x, b = R[:, j], float(ref[f["name"]])
        R[:, j] = np.where(np.isnan(x), x, np.minimum(x, b) if f["direction"] > 0 else np.maximum(x, b))
    return R


def family_ids(spec: dict[str, Any]) -> np.ndarray:
    """Each feature's family as an integer (families sorted by name, as in family_contributions)."""
    return layout_of(spec).feature_family


def _rank(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per row, the columns of the k largest values: (column index, value, value > 0), each (n, k).

    Ties keep column order (stable sort); columns beyond the matrix width are marked not up, and so is a
    value under MIN_CONTRIBUTION: a family near the population average is noise, not a reason."""
    n, width = values.shape
    order = np.argsort(-values, axis=1, kind="stable")[:, :k]
    idx = np.zeros((n, k), dtype=np.int64)
    idx[:, : order.shape[1]] = order
    val = np.full((n, k), np.nan)
    val[:, : order.shape[1]] = np.take_along_axis(values, order, axis=1)
    up = val >= MIN_CONTRIBUTION
    return idx, val, up


REASON_FIELDS = ("family", "code", "text_en", "text_zh", "contribution")


def reason_columns(k: int = N_REASONS) -> list[str]:
    """`reason_1_family, reason_1_code, reason_1_text_en, reason_1_text_zh, reason_1_contribution, reason_2_...`."""
    return [f"reason_{j}_{field}" for j in range(1, k + 1) for field in REASON_FIELDS]


def _texts(X: pd.DataFrame | np.ndarray, feature: np.ndarray, spec: dict[str, Any] | Layout) -> tuple[np.ndarray, np.ndarray]:
    """English and Chinese reason texts for (row, feature index) pairs; -1 = no reason (None).

    `X`: the model-input frame, or the model-input matrix of `Layout.matrix`. One format call per
    distinct (feature, value), not per row: values repeat a lot."""
    layout = layout_of(spec)
    en = np.full(feature.shape, None, dtype=object)
    zh = np.full(feature.shape, None, dtype=object)
    for f in np.unique(feature[feature >= 0]):
        at = feature == f
        rows, _ = np.nonzero(at)  # row-major, the order in which out[at] is filled
        column = X.iloc[:, f].to_numpy() if isinstance(X, pd.DataFrame) else layout.display(X, f)
        codes, uniques = pd.factorize(column[rows], use_na_sentinel=False)
        for lang, out in (("en", en), ("zh", zh)):
            template, none = layout.texts[f][lang]
            texts = np.asarray([valuefmt.fill_template(template, layout.units[f], v, lang, none) for v in uniques],
                               dtype=object)
            out[at] = texts[codes]
    return en, zh


def reason_arrays(contrib: np.ndarray, X: pd.DataFrame | np.ndarray, spec: dict[str, Any] | Layout,
                  k: int = N_REASONS) -> dict[str, Any]:
    """The contract's reason columns (name -> array) from per-feature SHAP values (bias last) and the model input.

    family: the k families with the largest positive SHAP sum; code `<family>:<feature>` and the
    texts name the family's feature with the largest SHAP value; null where fewer than k families push up."""
    layout = layout_of(spec)
    values = _family_sums(contrib, layout)
    n = len(values)
    # driver[:, g]: the feature of family g with the largest SHAP value, per row
    driver = np.empty((n, len(layout.families)), dtype=np.int64)
    for g, cols in enumerate(layout.members):
        driver[:, g] = cols[np.argmax(contrib[:, cols], axis=1)]
    idx, val, up = _rank(values, k)
    feature = np.where(up, np.take_along_axis(driver, idx, axis=1), -1)
    en, zh = _texts(X, feature, layout)
    out = {}
    for j in range(k):
        fam = np.where(up[:, j], layout.families[idx[:, j]], None)
        code = np.full(n, None, dtype=object)
        code[up[:, j]] = fam[up[:, j]] + ":" + layout.name_array[feature[up[:, j], j]]
        out[f"reason_{j + 1}_family"] = pd.array(fam, dtype=STRING)
        out[f"reason_{j + 1}_code"] = pd.array(code, dtype=STRING)
        out[f"reason_{j + 1}_text_en"] = pd.array(en[:, j], dtype=STRING)
        out[f"reason_{j + 1}_text_zh"] = pd.array(zh[:, j], dtype=STRING)
        out[f"reason_{j + 1}_contribution"] = np.where(up[:, j], val[:, j], np.nan)
    return out


def reasons_frame(contrib: np.ndarray, X: pd.DataFrame | np.ndarray, spec: dict[str, Any] | Layout,
                  k: int = N_REASONS) -> pd.DataFrame:
    """`reason_arrays` as a frame, indexed like `X` when it is one."""
    index = X.index if isinstance(X, pd.DataFrame) else None
    return pd.DataFrame(reason_arrays(contrib, X, spec, k), index=index)


# Requests of up to this many rows are scored on the calling thread: a thread team costs more than it
# saves on a handful of rows, and a server's workers already keep every core busy.
SMALL_BATCH = 64


def helping_frame(contrib: np.ndarray, X: pd.DataFrame | np.ndarray, spec: dict[str, Any] | Layout,
                  k: int = N_REASONS) -> pd.DataFrame:
    """The k families pulling risk down most ("what is helping you"): `help_j_family/code/text_en/text_zh/contribution`.

    The contract's reason columns computed on -SHAP, so code and texts name the feature that lowers risk most."""
    down = reasons_frame(-contrib, X, spec, k)
    for j in range(1, k + 1):
        down[f"reason_{j}_contribution"] = -down[f"reason_{j}_contribution"]
    return down.rename(columns=lambda c: "help_" + c.removeprefix("reason_"))


@dataclass
class Explanation:
    """What `Scorer.explain` computed for a frame of feature rows (all indexed like the input)."""

    scores: pd.DataFrame         # probability, raw_score, band, reason_j_*, help_j_*
    contributions: pd.DataFrame  # per-feature attribution + `bias` (the reference's score; rows sum to raw_score)
    by_family: pd.DataFrame      # per-family attribution


class Scorer:
    """A loaded model package: the booster, its calibrator and its spec, ready to score frames.

    `score` and `explain` share one computation: probability and band from the booster, reasons
    (and what helps) from one attribution pass, so a batch score and an explanation always agree.
    Everything the package fixes (feature order, categories, families, templates, the SHAP tables)
    is worked out here once, so a one-row request only pays for its own row."""

    def __init__(self, booster_text: str, calibrator: dict[str, Any], spec: dict[str, Any]):
        self.booster = lgb.Booster(model_str=booster_text)
        self.calibrator = calibrator
        self.spec = spec
        self.layout = Layout(spec)
        if self.booster.feature_name() != self.layout.names:
            expected = self.layout.names
            raise ValueError(f"booster has {self.booster.num_feature()} features that do not match "
                             f"the spec's {len(expected)} (first: {self.booster.feature_name()[:3]} vs {expected[:3]})")
        self.band_edges = tuple(spec.get("band_edges", DEFAULT_BAND_EDGES))
        if explainer_for is not None:
            explainer_for(self.booster)  # parse the trees and build the SHAP tables now, not on the first request

    def _predict_raw(self, X: np.ndarray) -> np.ndarray:
        threads = {"num_threads": 1} if len(X) <= SMALL_BATCH else {}
        return self.booster.predict(X, raw_score=True, **threads)

    def raw_score(self, frame: pd.DataFrame) -> np.ndarray:
        return self._predict_raw(self.layout.matrix(frame))

    def probability(self, frame: pd.DataFrame) -> np.ndarray:
        return apply_calibrator(self.raw_score(frame), self.calibrator)

    def _kernel(self, rows: int, run):
        """Run a TreeSHAP kernel call; small batches on this thread only (numba's setting is per thread)."""
        if rows <= SMALL_BATCH:
            threads = numba.get_num_threads()
            numba.set_num_threads(1)
            try:
                return run(explainer_for(self.booster))
            finally:
                numba.set_num_threads(threads)
        return run(explainer_for(self.booster))

    def shap_values(self, X: pd.DataFrame | np.ndarray) -> np.ndarray:
        """Exact SHAP (log-odds) per feature plus the bias column, for a model-input frame or matrix."""
        if explainer_for is None:
            if not getattr(Scorer, "_warned", False):
                logger.warning("scoring: numba TreeSHAP unavailable; using LightGBM pred_contrib (same values, slower)")
                Scorer._warned = True
            return np.asarray(self.booster.predict(X, pred_contrib=True))
        return self._kernel(len(X), lambda e: e.shap_values(X))

    def attributions(self, X: np.ndarray) -> np.ndarray:
        """The reasons' attribution per feature plus a last column (rows add up to the raw score), for a
        model-input matrix: Owen values against the user's best-achievable self when the spec has an
        `attribution` reference, else path-dependent SHAP (bias last)."""
        if "attribution" not in self.spec:
            return self.shap_values(X)
        if explainer_for is None:
            raise RuntimeError("this model's reasons need the numba TreeSHAP kernel (pip install numba)")
        A = np.ascontiguousarray(X, dtype=np.float64)
        return self._kernel(len(A), lambda e: e.baseline_values(A, reference_rows(A, self.spec), self.layout.feature_family))

    def family_contributions(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Attributions summed per spec family (log-odds; all families, last column dropped), indexed like `frame`."""
        out = family_contributions(self.attributions(self.layout.matrix(frame)), self.layout)
        out.index = frame.index
        return out

    def _columns(self, X: np.ndarray, up: np.ndarray | None, k: int) -> dict[str, Any]:
        """probability, raw_score, band, then (with `up`, the attributions) reason_j_*, for a model-input matrix."""
        raw = self._predict_raw(X)
        p = apply_calibrator(raw, self.calibrator)
        out = {"probability": p, "raw_score": raw, "band": pd.array(assign_bands(p, self.band_edges), dtype=STRING)}
        if up is not None:
            out.update(reason_arrays(up, X, self.layout, k))
        return out

    def score(self, frame: pd.DataFrame, reasons: bool = True) -> pd.DataFrame:
        """`user_id`/`as_of` (when in `frame`), probability, band and (if `reasons`) the contract's
        reason columns: family, code, texts (en, zh) and attribution for k = 1..3."""
        X = self.layout.matrix(frame)
        out: dict[str, Any] = {c: frame[c].array for c in ("user_id", "as_of") if c in frame.columns}
        out.update(self._columns(X, self.attributions(X) if reasons else None, N_REASONS))
        del out["raw_score"]
        return pd.DataFrame(out, index=frame.index)

    def explain(self, frame: pd.DataFrame, k: int = N_REASONS) -> Explanation:
        """Probability, raw score, band, the top-k families pushing risk up (reasons, `attributions`) and
        down (helping: against one's best-achievable self nothing pulls down, so against the average
        user, path SHAP), and the per-feature and per-family attributions behind the reasons."""
        X = self.layout.matrix(frame)
        values = self.attributions(X)
        down = values if "attribution" not in self.spec else self.shap_values(X)
        helping = helping_frame(down, X, self.layout, k)
        helping.index = frame.index
        scores = pd.concat([pd.DataFrame(self._columns(X, values, k), index=frame.index), helping], axis=1)
        contrib = pd.DataFrame(values, columns=[*self.layout.names, "bias"], index=frame.index)
        by_family = family_contributions(values, self.layout)
        by_family.index = frame.index
        return Explanation(scores, contrib, by_family)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_verified(paths: dict[str, str], manifest: dict[str, Any]) -> dict[str, bytes]:
    """Read each artifact file and check its sha256 against the manifest; raise on any mismatch."""
    expected = manifest.get("sha256", {})
    contents = {}
    for key, path in paths.items():
        if key == "manifest":
            continue
        if key not in expected:
            raise ValueError(f"artifact {key!r} is not listed in the model manifest; refusing to load")
        with open(path, "rb") as fh:
            data = fh.read()
        actual = sha256_bytes(data)
        if actual != expected[key]:
            raise ValueError(f"artifact {key!r} sha256 {actual[:12]}... does not match the manifest's "
                             f"{expected[key][:12]}...; refusing to load a tampered model")
        contents[key] = data
    absent = sorted(set(expected) - set(contents))
    if absent:
        raise ValueError(f"model artifact(s) listed in the manifest are missing: {', '.join(absent)}")
    return contents


def load_files(paths: dict[str, str]) -> tuple[Scorer, dict[str, bytes]]:
    """Verify the artifact files named in `paths` (booster, calibrator, spec, manifest, ...) against
    the manifest's sha256; return the scorer and every verified file's bytes."""
    with open(paths["manifest"], encoding="utf-8") as fh:
        manifest = json.load(fh)
    contents = read_verified(paths, manifest)
    spec = json.loads(contents["spec"])
    cls = Scorer
    if spec.get("target") == "restore":  # a restoration package: its curve and red line (shipped beside this)
        from linerisk.models.restore_scoring import RestoreScorer as cls
    scorer = cls(contents["booster"].decode("utf-8"), json.loads(contents["calibrator"]), spec)
    return scorer, contents


def scorer_from_files(paths: dict[str, str]) -> Scorer:
    """The scorer of a verified package (see load_files)."""
    return load_files(paths)[0]
