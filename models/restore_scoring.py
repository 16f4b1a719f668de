"""Scoring a restoration package: P(restored within 90 days), the curve to a year, the red line, what holds it back.

Shipped inside the registered `linerisk-restore` model beside scoring.py (MLflow code_paths), so
it imports only numpy, pandas, lightgbm and the shipped modules: batch scoring, `linerisk explain`
and the served model give the same answer.

The curve is a discrete-time hazard with 90-day periods: the calibrated model is P(restored within
the next period | features at its start), trained on every restricted line at every snapshot, so a
line still shut after a period is simply the next period's row. The curve chains the periods with
the line's clock advanced (days restricted + 90 k; a pending appeal has been reviewed without a
lift by the next period) and behaviour as now, with a constant daily hazard inside a period.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from linerisk.features import valuefmt
from linerisk.models.scoring import Scorer, apply_calibrator, prepare_features, reasons_frame

CURVE_DAYS = 365


def red_line_mask(X: pd.DataFrame, rules: list[dict[str, Any]]) -> np.ndarray:
    """True where a red-line rule holds: its feature at or above `at_least` (features/spec.py RED_LINE)."""
    hit = np.zeros(len(X), dtype=bool)
    for rule in rules:
        hit |= np.nan_to_num(pd.to_numeric(X[rule["feature"]]).to_numpy(dtype=np.float64)) >= rule["at_least"]
    return hit


class RestoreScorer(Scorer):
    """A loaded restoration package: booster, calibrator and a spec with `period_days` and `red_line`."""

    def __init__(self, booster_text: str, calibrator: dict[str, Any], spec: dict[str, Any]):
        super().__init__(booster_text, calibrator, spec)
        self.period_days = int(spec.get("period_days", 90))
        self.red_line_rules = spec.get("red_line", {}).get("rules", [])
        self.red_line_cap = float(spec.get("red_line", {}).get("cap", 0.01))
        self.n_periods = math.ceil(CURVE_DAYS / self.period_days)

    # ------------------------------------------------------------------ the red line

    def red_line(self, X: pd.DataFrame) -> np.ndarray:
        """True where the events show the red line (the spec's rules)."""
        return red_line_mask(X, self.red_line_rules)

    def red_line_evidence(self, row: pd.Series, as_of: pd.Timestamp | None = None) -> dict[str, str] | None:
        """The first red-line rule a feature row meets, as texts (en, zh) with its value and date; None if none."""
        for rule in self.red_line_rules:
            value = float(np.nan_to_num(row[rule["feature"]]))
            if value < rule["at_least"]:
                continue
            days = row.get(rule["dated_by"], np.nan)
            if pd.isna(days):
                date_en, date_zh = "date unknown", "日期不详"
            elif as_of is None:
                date_en, date_zh = f"{days:.0f} days ago", f"{days:.0f}天前"
            else:
                date_en = date_zh = (as_of - pd.Timedelta(days=float(days))).strftime("%Y-%m-%d")
            unit = rule.get("unit", "count")
            return {"feature": rule["feature"], "value": value, "date": date_en,
                    "text_en": rule["text_en"].format(value=valuefmt.format_value(unit, value, "en"), date=date_en),
                    "text_zh": rule["text_zh"].format(value=valuefmt.format_value(unit, value, "zh"), date=date_zh)}
        return None

    # ------------------------------------------------------------------ the curve

    def period_frames(self, X: pd.DataFrame) -> list[pd.DataFrame]:
        """Model input at the start of each period: the clock advanced, pending appeals reviewed, behaviour held."""
        feats = self.spec["features"]
        clocks = [f["name"] for f in feats if f.get("aggregation") == "days_restricted"]
        pending = {(f.get("source"), f.get("anchor")): f["name"] for f in feats
                   if f.get("aggregation") == "count" and f.get("source") == "pl_appeal" and f.get("window")}
        reviewed = [(pending[(f.get("source"), f.get("anchor"))], f["name"]) for f in feats
                    if f.get("aggregation") == "count_older" and (f.get("source"), f.get("anchor")) in pending]
        out = [X]
        for k in range(1, self.n_periods):
            frame = X.copy()
            for name in clocks:
                frame[name] = X[name] + k * self.period_days
            for new, old in reviewed:
                frame[old] = X[old] + X[new].fillna(0)
                frame[new] = np.where(X[new].isna(), np.nan, 0.0)
            out.append(frame)
        return out

    def period_raw(self, X: pd.DataFrame) -> np.ndarray:
        """(n, periods) raw log-odds of the booster on each period's frame."""
        frames = self.period_frames(X)
        return self.booster.predict(pd.concat(frames, ignore_index=True), raw_score=True).reshape(len(frames), len(X)).T

    def hazards(self, X: pd.DataFrame, offset: int = 0) -> np.ndarray:
        """(n, periods) calibrated P(restored within each period | still restricted at its start): period 0 by
        the model's calibrator, later ones by their own (`calibrator["periods"]`, fitted on lines followed that
        long; the last one fitted carries on). `offset`: X stands `offset` periods after today (a plan's line
        once its action is done), so its period k is calibrated as period k + offset."""
        raw = self.period_raw(X)
        later = self.calibrator.get("periods", [])

        def calibrator(k: int) -> dict[str, Any]:
            return self.calibrator if k == 0 or not later else later[min(k, len(later)) - 1]
        h = np.column_stack([apply_calibrator(raw[:, k], calibrator(k + offset)) for k in range(raw.shape[1])])
        return np.clip(h, 0.0, 1.0 - 1e-9)

    def cumulative(self, h: np.ndarray, days: np.ndarray | list[int], red_line: np.ndarray | None = None) -> np.ndarray:
        """(n, len(days)) P(restored within d days): the chained periods, constant daily hazard within each."""
        days = np.asarray(days, dtype=np.float64)
        log_s = np.log1p(-h)  # per-period log survival
        start = np.concatenate([np.zeros((len(h), 1)), np.cumsum(log_s, axis=1)], axis=1)
        k = np.minimum((days // self.period_days).astype(np.int64), h.shape[1] - 1)
        frac = (days - k * self.period_days) / self.period_days
        out = np.maximum(-np.expm1(start[:, k] + log_s[:, k] * frac[None, :]), 0.0)
        if red_line is not None:
            out[red_line] = np.minimum(out[red_line], self.red_line_cap)
        return out

    def median_days(self, h: np.ndarray, red_line: np.ndarray | None = None) -> np.ndarray:
        """Days until the curve reaches one half (NaN when not within CURVE_DAYS or past the red line)."""
        log_s = np.log1p(-h)
        start = np.concatenate([np.zeros((len(h), 1)), np.cumsum(log_s, axis=1)], axis=1)
        half = np.log(0.5)
        out = np.full(len(h), np.nan)
        for k in range(h.shape[1]):  # periods, not rows: a handful of vector steps
            todo = np.isnan(out) & (start[:, k + 1] <= half)
            with np.errstate(divide="ignore", invalid="ignore"):
                t = k * self.period_days + self.period_days * (half - start[:, k]) / log_s[:, k]
            out[todo] = np.ceil(t[todo])
        out[out > CURVE_DAYS] = np.nan
        if red_line is not None:
            out[red_line] = np.nan
        return out

    # ------------------------------------------------------------------ scores

    def score(self, frame: pd.DataFrame, reasons: bool = True) -> pd.DataFrame:
        """restore_probability (P restored within one period, capped on the red line), restore_probability_365d,
        restore_expected_days (the curve's median; NaN: not within a year), restore_expected (a date, when
        `frame` has as_of), red_line, and the reasons holding restoration back (SHAP log-odds, negative)."""
        X = prepare_features(frame, self.spec)
        red = self.red_line(X)
        h = self.hazards(X)
        cum = self.cumulative(h, [self.period_days, CURVE_DAYS], red)
        out = pd.DataFrame({"restore_probability": cum[:, 0], "restore_probability_365d": cum[:, 1],
                            "restore_expected_days": self.median_days(h, red)}, index=frame.index)
        if "as_of" in frame.columns:
            as_of = pd.to_datetime(frame["as_of"], utc=True)  # a local midnight where --timezone is set
            out["restore_expected"] = as_of + pd.to_timedelta(out["restore_expected_days"], unit="D")
        out["red_line"] = red
        if reasons:
            out = pd.concat([out, holding_back(self.shap_values(X), X, self.spec)], axis=1)
        passthrough = [c for c in ("user_id", "as_of") if c in frame.columns]
        return pd.concat([frame[passthrough], out], axis=1) if passthrough else out


def holding_back(contrib: np.ndarray, X: pd.DataFrame, spec: dict[str, Any]) -> pd.DataFrame:
    """The contract's reason columns for a restricted line: the families pulling P(restored) down most,
    their contribution the (negative) SHAP sum on the restoration log-odds."""
    out = reasons_frame(-contrib, X, spec)
    for c in [c for c in out.columns if c.endswith("_contribution")]:
        out[c] = -out[c]
    return out
