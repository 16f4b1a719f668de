"""Scoring a model package: booster + calibrator + spec -> probability, band and reason families.

Self-contained on purpose (imports only numpy, pandas, lightgbm, json, hashlib): it is
shipped inside the registered MLflow model, so a process without this repository can
score. `RestrictionModel` (training) and the pyfunc model (serving) both use it, so
training and serving cannot drift apart.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd

# Upper probability edges of the bands; above the last edge is "very_high".
DEFAULT_BAND_EDGES = (0.05, 0.15, 0.35)
BAND_NAMES = ("low", "medium", "high", "very_high")
N_REASONS = 3


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
    """SHAP contributions (log-odds, bias column dropped) summed per spec family."""
    families = [f["family"] for f in spec["features"]]
    values = pd.DataFrame(contrib[:, : len(families)], columns=families)
    return values.T.groupby(level=0, sort=True).sum().T


def top_reasons(by_family: pd.DataFrame, k: int = N_REASONS) -> pd.DataFrame:
    """The k families pushing risk up most per row; null where fewer than k push it up."""
    values = by_family.to_numpy(dtype=np.float64)
    names = np.asarray(by_family.columns, dtype=object)
    order = np.argsort(-values, axis=1, kind="stable")
    out = {}
    for j in range(k):
        if j < values.shape[1]:
            idx = order[:, j]
            val = values[np.arange(len(values)), idx]
            up = val > 0
            out[f"reason_{j + 1}_family"] = pd.array(np.where(up, names[idx], None), dtype="string")
            out[f"reason_{j + 1}_contribution"] = np.where(up, val, np.nan)
        else:
            out[f"reason_{j + 1}_family"] = pd.array([None] * len(values), dtype="string")
            out[f"reason_{j + 1}_contribution"] = np.full(len(values), np.nan)
    return pd.DataFrame(out, index=by_family.index)


class Scorer:
    """A loaded model package: the booster, its calibrator and its spec, ready to score frames."""

    def __init__(self, booster_text: str, calibrator: dict[str, Any], spec: dict[str, Any]):
        self.booster = lgb.Booster(model_str=booster_text)
        self.calibrator = calibrator
        self.spec = spec
        expected = [f["name"] for f in spec["features"]]
        if self.booster.feature_name() != expected:
            raise ValueError(f"booster has {self.booster.num_feature()} features that do not match "
                             f"the spec's {len(expected)} (first: {self.booster.feature_name()[:3]} vs {expected[:3]})")

    def raw_score(self, frame: pd.DataFrame) -> np.ndarray:
        return self.booster.predict(prepare_features(frame, self.spec), raw_score=True)

    def probability(self, frame: pd.DataFrame) -> np.ndarray:
        return apply_calibrator(self.raw_score(frame), self.calibrator)

    def score(self, frame: pd.DataFrame, reasons: bool = True) -> pd.DataFrame:
        """probability, band and (if `reasons`) the top-3 reason families with SHAP contributions."""
        X = prepare_features(frame, self.spec)
        raw = self.booster.predict(X, raw_score=True)
        p = apply_calibrator(raw, self.calibrator)
        out = pd.DataFrame({"probability": p}, index=frame.index)
        out["band"] = pd.array(assign_bands(p, tuple(self.spec.get("band_edges", DEFAULT_BAND_EDGES))), dtype="string")
        if reasons:
            contrib = self.booster.predict(X, pred_contrib=True)
            by_family = family_contributions(np.asarray(contrib), self.spec)
            by_family.index = frame.index
            out = pd.concat([out, top_reasons(by_family)], axis=1)
        passthrough = [c for c in ("user_id", "as_of") if c in frame.columns]
        return pd.concat([frame[passthrough], out], axis=1) if passthrough else out


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


def scorer_from_files(paths: dict[str, str]) -> Scorer:
    """Verify the artifact files named in `paths` (booster, calibrator, spec, manifest, ...) and load them."""
    with open(paths["manifest"], encoding="utf-8") as fh:
        manifest = json.load(fh)
    contents = read_verified(paths, manifest)
    return Scorer(contents["booster"].decode("utf-8"), json.loads(contents["calibrator"]), json.loads(contents["spec"]))
