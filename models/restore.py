"""The restoration model: P(a restricted line is restored within 90 days), its curve to a year, the red line.

A calibrated LightGBM classifier like the restriction model (same training code, the spec's
restore directions as monotone constraints), trained on restricted lines at every snapshot.
As a discrete-time hazard with 90-day periods it also gives the curve (models/restore_scoring.py).
Evaluation adds what a survival answer needs: the curve's calibration at 90/180/365 days, its
IPCW concordance (scikit-survival) and, as the measurement behind the curve, the same figures for
the simplest alternative, a constant hazard carried on from the first period. Pure; no I/O.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from linerisk.models.evaluate import expected_calibration_error
from linerisk.models.restore_scoring import CURVE_DAYS, RestoreScorer
from linerisk.models.scoring import prepare_features
from linerisk.models.train import RestrictionModel, TrainParams, fit_calibrator, oracle_scores, registry_spec

CURVE_CHECKS = (90, 180, 365)  # days at which the curve's calibration is measured


class RestorationModel(RestrictionModel):
    """Calibrated LightGBM: P(restored within the period); `predict_proba` carries the red-line cap."""

    scorer_class = RestoreScorer

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """[1 - p, p] with p = P(restored within 90 days), at most the red-line cap where the red line holds."""
        self._check(X)
        p = self.scorer_.score(X, reasons=False)["restore_probability"].to_numpy()
        return np.column_stack([1.0 - p, p])

    def curve(self, X: pd.DataFrame, days: list[int] | tuple[int, ...] = CURVE_CHECKS) -> np.ndarray:
        """(n, len(days)) P(restored within d days) from the chained periods (red line capped)."""
        self._check(X)
        Xp = prepare_features(X, self.spec_)
        return self.scorer_.cumulative(self.scorer_.hazards(Xp), days, self.scorer_.red_line(Xp))


    def fit_periods(self, panel: pd.DataFrame, min_rows: int = 200) -> "RestorationModel":
        """Calibrate each later period of the curve on `panel` rows still restricted at its start and followed
        to its end (label: restored within it); a period with too few such rows keeps the one before."""
        self._check(panel)
        time, restored = outcomes(panel)
        follow = panel["followup_days"].to_numpy()
        raw = self.scorer_.period_raw(prepare_features(panel, self.spec_))
        period, periods = self.scorer_.period_days, []
        for k in range(1, raw.shape[1]):
            lo, hi = k * period, (k + 1) * period
            at_risk = ~(restored & (time < lo))
            y = restored & (time >= lo) & (time < hi)
            known = at_risk & (follow >= hi)
            if known.sum() < min_rows or y[known].all() or not y[known].any():
                break
            periods.append(fit_calibrator(raw[known, k], y[known].astype(int), "sigmoid"))
        self.calibrator_ = {**self.calibrator_, "periods": periods}
        self.scorer_ = self.scorer_class(self.booster_text_, self.calibrator_, self.spec_)
        return self


def train_restoration_model(X_train: pd.DataFrame, y_train, X_valid: pd.DataFrame, y_valid,
                            params: TrainParams | None = None, spec: dict[str, Any] | None = None,
                            curve_panel: pd.DataFrame | None = None) -> RestorationModel:
    """Fit the calibrated restoration model on the registry's restore view (monotone in its restore directions);
    with `curve_panel` (training rows with restore_days / followup_days) also the curve's later periods."""
    model = RestorationModel(params, spec or registry_spec("restore")).fit(X_train, y_train, X_valid, y_valid)
    return model if curve_panel is None else model.fit_periods(curve_panel)


# ---------------------------------------------------------------------------- survival view

def outcomes(panel: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(time in days, restored?) per row: days to the restoration, or the log's follow-up when none came."""
    restored = panel["restore_days"].notna().to_numpy()
    time = np.where(restored, panel["restore_days"].to_numpy(dtype=np.float64),
                    panel["followup_days"].to_numpy(dtype=np.float64))
    return np.maximum(time, 0.5), restored  # a restoration on day 0 still takes time


def constant_hazard_curve(p_first: np.ndarray, days: list[int] | tuple[int, ...], period: int = 90) -> np.ndarray:
    """The alternative curve: the first period's probability carried on at a constant daily hazard."""
    log_s = np.log1p(-np.clip(p_first, 0.0, 1 - 1e-9))[:, None]
    return -np.expm1(log_s * np.asarray(days, dtype=np.float64)[None, :] / period)


def curve_calibration(curve: np.ndarray, panel: pd.DataFrame, days: tuple[int, ...] = CURVE_CHECKS) -> pd.DataFrame:
    """Per horizon d: rows followed for at least d days (so the outcome by d is known whatever it is), mean
    predicted P(restored within d), the observed share and the ECE (10 equal-frequency bins)."""
    time, restored = outcomes(panel)
    rows = []
    for j, d in enumerate(days):
        known = panel["followup_days"].to_numpy() >= d  # followed d days: censoring cannot bias the share
        y = (restored & (time < d))[known].astype(int)
        p = curve[known, j]
        rows.append({"days": d, "rows": int(known.sum()),
                     "predicted": float(p.mean()) if known.any() else np.nan,
                     "observed": float(y.mean()) if known.any() else np.nan,
                     "ece": expected_calibration_error(y, p) if known.any() else np.nan})
    return pd.DataFrame(rows).set_index("days")


def concordance_ipcw(train: pd.DataFrame, test: pd.DataFrame, risk: np.ndarray, tau: float = CURVE_DAYS) -> float:
    """Uno's IPCW C-index (scikit-survival) of `risk` (higher = restored sooner) up to `tau` days; censoring
    estimated on `train`."""
    from sksurv.metrics import concordance_index_ipcw
    from sksurv.util import Surv

    t_train, e_train = outcomes(train)
    t_test, e_test = outcomes(test)
    tau = min(tau, float(t_train.max()) - 1e-6, float(t_test.max()))
    keep = t_test < t_train.max()  # IPCW weights need test times inside the censoring estimate's support
    return float(concordance_index_ipcw(Surv.from_arrays(e_train, t_train), Surv.from_arrays(e_test[keep], t_test[keep]),
                                        np.asarray(risk)[keep], tau=tau)[0])


def evaluate_curve(model: RestorationModel, panel: pd.DataFrame, train: pd.DataFrame, what: str
                   ) -> tuple[dict[str, float], pd.DataFrame]:
    """Curve calibration at 90/180/365 days and the IPCW C-index, for the chained curve and the constant-hazard
    alternative, on `panel` (censoring weights from `train`). Returns (flat metrics, table)."""
    names = [f["name"] for f in model.spec_["features"]]
    chained = model.curve(panel[names], CURVE_CHECKS)
    constant = constant_hazard_curve(model.predict_proba(panel[names])[:, 1], CURVE_CHECKS)
    flat, parts = {}, []
    for name, curve in (("chained", chained), ("constant_hazard", constant)):
        table = curve_calibration(curve, panel)
        cindex = concordance_ipcw(train, panel, curve[:, -1])
        parts.append(table.assign(curve=name, cindex_ipcw=cindex).reset_index())
        for d, row in table.iterrows():
            flat[f"{what}_{name}_curve_ece_{d}d"] = row["ece"]
            flat[f"{what}_{name}_curve_gap_{d}d"] = row["predicted"] - row["observed"]
        flat[f"{what}_{name}_cindex_ipcw"] = cindex
    table = pd.concat(parts).set_index(["curve", "days"])
    return flat, table


def red_line_check(model: RestorationModel, panel: pd.DataFrame, truth: pd.DataFrame | None = None
                   ) -> dict[str, float]:
    """Red-line rows (by the events; and by the truth's `red_line` where given): how many, their largest
    P(restored within 90 days) and within a year, and how many the truth marks that the events do not show."""
    names = [f["name"] for f in model.spec_["features"]]
    Xp = prepare_features(panel[names], model.spec_)
    red = model.scorer_.red_line(Xp)
    p90 = model.predict_proba(panel[names])[:, 1]
    p365 = model.curve(panel[names], (CURVE_DAYS,))[:, 0]
    out = {"red_line_rows": float(red.sum()),
           "red_line_max_p90": float(p90[red].max()) if red.any() else np.nan,
           "red_line_max_p365": float(p365[red].max()) if red.any() else np.nan,
           "red_line_restored": float(panel["label"].to_numpy()[red].sum())}
    if truth is not None and "red_line" in truth.columns:
        marked = oracle_scores(panel, truth, "red_line").fillna(False).to_numpy(dtype=bool)
        out["truth_red_line_rows"] = float(marked.sum())
        out["truth_red_line_max_p90"] = float(p90[marked].max()) if marked.any() else np.nan
        out["truth_red_line_missed"] = float((marked & ~red).sum())
    return out

