"""Scoring a model package: booster + calibrator + spec -> probability, band and reason families.

Self-contained on purpose: it is shipped inside the registered MLflow model together with
features/valuefmt.py and models/treeshap.py, as a minimal `linerisk` package (code_paths), so a
process without this repository can score. Training (`RestrictionModel`), batch scoring (`linerisk score`), the served model and
`linerisk explain` all score through `Scorer`, so they give the same probabilities and reasons.

Reasons: the three families whose SHAP sum (log-odds) pushes risk up most. Each has a stable
code `<family>:<feature>`, the family's feature with the largest positive SHAP value for that
user (e.g. `overdue:max_dpd_90d`), and that feature's spec text in English and Chinese filled
with the user's own value. SHAP comes from the exact TreeSHAP kernel (models/treeshap.py, numba)
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
    from linerisk.models.treeshap import explainer_for
except ImportError:  # no numba here: LightGBM's pred_contrib gives the same values, slower
    explainer_for = None

logger = logging.getLogger(__name__)

# Upper probability edges of the bands; above the last edge is "very_high".
DEFAULT_BAND_EDGES = (0.05, 0.15, 0.35)
BAND_NAMES = ("low", "medium", "high", "very_high")
N_REASONS = 3
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


def prepare_features(frame: pd.DataFrame, spec: dict[str, Any]) -> pd.DataFrame:
    """The model's input frame: spec columns in spec order, numeric as float32/float64, categoricals fixed.

    Extra columns (user_id, as_of, ...) are ignored; a missing column raises naming it.
    """
    names = [f["name"] for f in spec["features"]]
    missing = [n for n in names if n not in frame.columns]
    if missing:
        raise ValueError(f"input has {sum(n in frame.columns for n in names)} of the model's {len(names)} "
                         f"features; missing column(s): {', '.join(missing[:10])}"
                         + (" ..." if len(missing) > 10 else ""))
    categories = spec.get("categories", {})
    out = {}
    for name in names:
        col = frame[name]
        if name in categories:
            out[name] = pd.Categorical(col.astype("object").where(col.notna(), None), categories=categories[name])
        else:
            try:
                num = pd.to_numeric(col, errors="raise")
                out[name] = (num.to_numpy() if num.dtype == np.float32  # float32 panels stay small
                             else num.to_numpy(dtype=np.float64, na_value=np.nan))
            except (TypeError, ValueError):
                raise ValueError(f"column {name}: expected numbers, got {col.dtype}") from None
    return pd.DataFrame(out, index=frame.index)


def family_contributions(contrib: np.ndarray, spec: dict[str, Any]) -> pd.DataFrame:
    """Per-feature values (n, features [+ bias]) summed per spec family: SHAP log-odds, or any other
    per-feature quantity such as split gain. Columns beyond the spec's features (the bias) are dropped."""
    families = [f["family"] for f in spec["features"]]
    values = pd.DataFrame(contrib[:, : len(families)], columns=families)
    return values.T.groupby(level=0, sort=True).sum().T


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


def _texts(X: pd.DataFrame, feature: np.ndarray, spec: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """English and Chinese reason texts for (row, feature index) pairs; -1 = no reason (None).

    One format call per distinct (feature, value), not per row: values repeat a lot."""
    en = np.full(feature.shape, None, dtype=object)
    zh = np.full(feature.shape, None, dtype=object)
    for f in np.unique(feature[feature >= 0]):
        entry = spec["features"][f]
        unit = entry.get("unit", "")
        fallback = f"{entry['name']} = {{value}}"
        at = feature == f
        rows, _ = np.nonzero(at)  # row-major, the order in which out[at] is filled
        codes, uniques = pd.factorize(X.iloc[:, f].to_numpy()[rows], use_na_sentinel=False)
        for lang, out in (("en", en), ("zh", zh)):
            template, none = entry.get(f"text_{lang}") or fallback, entry.get(f"none_{lang}", "")
            texts = np.asarray([valuefmt.fill_template(template, unit, v, lang, none) for v in uniques], dtype=object)
            out[at] = texts[codes]
    return en, zh


def reasons_frame(contrib: np.ndarray, X: pd.DataFrame, spec: dict[str, Any], k: int = N_REASONS) -> pd.DataFrame:
    """The contract's reason columns from per-feature SHAP values (bias last) and the model-input frame `X`.

    family: the k families with the largest positive SHAP sum; code `<family>:<feature>` and the
    texts name the family's feature with the largest SHAP value; null where fewer than k families push up."""
    by_family = family_contributions(contrib, spec)
    families = np.asarray(by_family.columns, dtype=object)
    feature_family = np.searchsorted(families, [f["family"] for f in spec["features"]])
    values = by_family.to_numpy(dtype=np.float64)
    n = len(values)
    # driver[:, g]: the feature of family g with the largest SHAP value, per row
    driver = np.empty((n, len(families)), dtype=np.int64)
    for g in range(len(families)):
        cols = np.flatnonzero(feature_family == g)
        driver[:, g] = cols[np.argmax(contrib[:, cols], axis=1)]
    idx, val, up = _rank(values, k)
    feature = np.where(up, np.take_along_axis(driver, idx, axis=1), -1)
    en, zh = _texts(X, feature, spec)
    names = np.asarray([f["name"] for f in spec["features"]], dtype=object)
    out = {}
    for j in range(k):
        fam = np.where(up[:, j], families[idx[:, j]], None)
        code = np.where(up[:, j], np.char.add(np.char.add(fam.astype(str), ":"), names[feature[:, j]].astype(str))
                        .astype(object), None)
        out[f"reason_{j + 1}_family"] = pd.array(fam, dtype="string")
        out[f"reason_{j + 1}_code"] = pd.array(code, dtype="string")
        out[f"reason_{j + 1}_text_en"] = pd.array(en[:, j], dtype="string")
        out[f"reason_{j + 1}_text_zh"] = pd.array(zh[:, j], dtype="string")
        out[f"reason_{j + 1}_contribution"] = np.where(up[:, j], val[:, j], np.nan)
    return pd.DataFrame(out, index=X.index)


def helping_frame(contrib: np.ndarray, X: pd.DataFrame, spec: dict[str, Any], k: int = N_REASONS) -> pd.DataFrame:
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
    contributions: pd.DataFrame  # per-feature SHAP + bias (log-odds; rows sum to raw_score)
    by_family: pd.DataFrame      # per-family SHAP


class Scorer:
    """A loaded model package: the booster, its calibrator and its spec, ready to score frames.

    `score` and `explain` share one computation: probability and band from the booster, reasons
    (and what helps) from one SHAP pass, so a batch score and an explanation always agree."""

    def __init__(self, booster_text: str, calibrator: dict[str, Any], spec: dict[str, Any]):
        self.booster = lgb.Booster(model_str=booster_text)
        self.calibrator = calibrator
        self.spec = spec
        expected = [f["name"] for f in spec["features"]]
        if self.booster.feature_name() != expected:
            raise ValueError(f"booster has {self.booster.num_feature()} features that do not match "
                             f"the spec's {len(expected)} (first: {self.booster.feature_name()[:3]} vs {expected[:3]})")
        self.band_edges = tuple(spec.get("band_edges", DEFAULT_BAND_EDGES))

    def raw_score(self, frame: pd.DataFrame) -> np.ndarray:
        return self.booster.predict(prepare_features(frame, self.spec), raw_score=True)

    def probability(self, frame: pd.DataFrame) -> np.ndarray:
        return apply_calibrator(self.raw_score(frame), self.calibrator)

    def shap_values(self, X: pd.DataFrame) -> np.ndarray:
        """Exact SHAP (log-odds) per feature plus the bias column, for a frame already through prepare_features."""
        if explainer_for is None:
            if not getattr(Scorer, "_warned", False):
                logger.warning("scoring: numba TreeSHAP unavailable; using LightGBM pred_contrib (same values, slower)")
                Scorer._warned = True
            return np.asarray(self.booster.predict(X, pred_contrib=True))
        return explainer_for(self.booster).shap_values(X)

    def family_contributions(self, frame: pd.DataFrame) -> pd.DataFrame:
        """SHAP summed per spec family (log-odds; all families, bias dropped), indexed like `frame`."""
        out = family_contributions(self.shap_values(prepare_features(frame, self.spec)), self.spec)
        out.index = frame.index
        return out

    def _scores(self, X: pd.DataFrame, index: pd.Index, shap: np.ndarray | None, k: int,
                helping: bool) -> pd.DataFrame:
        """probability, raw_score, band, then (with `shap`) reason_j_* and (with `helping`) help_j_*."""
        raw = self.booster.predict(X, raw_score=True)
        p = apply_calibrator(raw, self.calibrator)
        out = pd.DataFrame({"probability": p, "raw_score": raw}, index=index)
        out["band"] = pd.array(assign_bands(p, self.band_edges), dtype="string")
        if shap is None:
            return out
        parts = [out, reasons_frame(shap, X, self.spec, k)]
        if helping:
            parts.append(helping_frame(shap, X, self.spec, k))
        return pd.concat(parts, axis=1)

    def score(self, frame: pd.DataFrame, reasons: bool = True) -> pd.DataFrame:
        """`user_id`/`as_of` (when in `frame`), probability, band and (if `reasons`) the contract's
        reason columns: family, code, texts (en, zh) and SHAP contribution for k = 1..3."""
        X = prepare_features(frame, self.spec)
        out = self._scores(X, frame.index, self.shap_values(X) if reasons else None, N_REASONS, helping=False)
        out = out.drop(columns="raw_score")
        passthrough = [c for c in ("user_id", "as_of") if c in frame.columns]
        return pd.concat([frame[passthrough], out], axis=1) if passthrough else out

    def explain(self, frame: pd.DataFrame, k: int = N_REASONS) -> Explanation:
        """Probability, raw score, band, the top-k families pushing risk up (reasons) and down (helping),
        and the per-feature and per-family SHAP behind them, from one SHAP pass."""
        X = prepare_features(frame, self.spec)
        values = self.shap_values(X)
        contrib = pd.DataFrame(values, columns=[*X.columns, "bias"], index=frame.index)
        by_family = family_contributions(values, self.spec)
        by_family.index = frame.index
        return Explanation(self._scores(X, frame.index, values, k, helping=True), contrib, by_family)


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
    scorer = Scorer(contents["booster"].decode("utf-8"), json.loads(contents["calibrator"]), json.loads(contents["spec"]))
    return scorer, contents


def scorer_from_files(paths: dict[str, str]) -> Scorer:
    """The scorer of a verified package (see load_files)."""
    return load_files(paths)[0]
