"""Drift: population stability index (PSI) of the score and every feature, batch vs the training reference.

The reference is stored with the model (models/train.py `reference_distributions`): per feature
the interior quantile edges of the training data, the count per bin (bins (-inf, e1], (e1, e2],
..., (ek, inf)) and the count of missing values; the same for the calibrated score. A batch is
counted into the same bins (`batch_counts`, mergeable across chunks with `merge_counts`), then

    PSI = sum over bins (a - e) * ln(a / e)

with e, a the reference and batch shares per bin (missing values are one more bin) and empty
bins smoothed to EPS so the log stays finite. Bands: below 0.1 stable, 0.1 to 0.25 moderate
shift, above 0.25 significant drift. Pure functions; the plots return figures, no I/O.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

EPS = 1e-4
MODERATE, SIGNIFICANT = 0.1, 0.25
SCORE = "score"  # the row name of the score in drift tables


def psi_band(value: float) -> str:
    """stable (< 0.1), moderate (0.1 to 0.25) or significant (> 0.25); n/a when not computable."""
    if value is None or not np.isfinite(value):
        return "n/a"
    return "stable" if value < MODERATE else ("moderate" if value <= SIGNIFICANT else "significant")


def psi(expected: np.ndarray, actual: np.ndarray, eps: float = EPS) -> float:
    """PSI between two count vectors over the same bins; empty bins count as share `eps`."""
    e = np.asarray(expected, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    if e.shape != a.shape:
        raise ValueError(f"PSI needs the same bins on both sides ({e.shape} vs {a.shape})")
    if e.sum() <= 0 or a.sum() <= 0:
        return float("nan")
    e = np.maximum(e / e.sum(), eps)
    a = np.maximum(a / a.sum(), eps)
    return float(np.sum((a - e) * np.log(a / e)))


def bin_counts(values: Any, entry: Mapping[str, Any]) -> dict[str, Any]:
    """Count `values` into the bins of one reference entry (numeric edges, or categories)."""
    if "categories" in entry:
        col = pd.Series(values, dtype="object")
        vc = col.where(col.notna(), "nan").astype(str).value_counts()
        return {"categories": {str(k): int(v) for k, v in vc.items()}, "n": int(len(col))}
    x = np.asarray(values, dtype=np.float64)
    missing = np.isnan(x)
    edges = np.asarray(entry["edges"], dtype=np.float64)
    counts = np.bincount(np.searchsorted(edges, x[~missing], side="left"), minlength=len(edges) + 1)
    return {"counts": counts.tolist(), "missing": int(missing.sum()), "n": int(len(x))}


def batch_counts(features: pd.DataFrame | None, probability: Any, reference: Mapping[str, Any]) -> dict[str, Any]:
    """The batch counted into the reference's bins: `score` from `probability`, and each reference
    feature found in `features` (raw model-input values, as prepare_features gives them)."""
    out: dict[str, Any] = {"features": {}}
    if probability is not None and "score" in reference:
        out["score"] = bin_counts(probability, reference["score"])
    if features is not None:
        for name, entry in reference.get("features", {}).items():
            if name in features.columns:
                out["features"][name] = bin_counts(features[name].to_numpy(), entry)
    return out


def _merge_entry(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    if "categories" in a:
        cats = dict(a["categories"])
        for k, v in b["categories"].items():
            cats[k] = cats.get(k, 0) + v
        return {"categories": cats, "n": a["n"] + b["n"]}
    return {"counts": (np.asarray(a["counts"]) + np.asarray(b["counts"])).tolist(),
            "missing": a["missing"] + b["missing"], "n": a["n"] + b["n"]}


def merge_counts(a: Mapping[str, Any] | None, b: Mapping[str, Any]) -> dict[str, Any]:
    """Sum two `batch_counts` results (chunks of one batch)."""
    if a is None:
        return dict(b)
    out: dict[str, Any] = {"features": dict(a.get("features", {}))}
    for name, entry in b.get("features", {}).items():
        out["features"][name] = _merge_entry(out["features"][name], entry) if name in out["features"] else entry
    if "score" in a or "score" in b:
        out["score"] = _merge_entry(a["score"], b["score"]) if "score" in a and "score" in b else (a.get("score") or b["score"])
    return out


def _vectors(ref: Mapping[str, Any], batch: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Reference and batch counts over the same bins (+ a missing bin when either side has one), with labels."""
    if "categories" in ref:
        keys = sorted(set(ref["categories"]) | set(batch.get("categories", {})))
        return (np.array([ref["categories"].get(k, 0) for k in keys]),
                np.array([batch.get("categories", {}).get(k, 0) for k in keys]), keys)
    edges = [f"{e:.4g}" for e in ref["edges"]]
    labels = [f"<= {edges[0]}"] if edges else ["all"]
    labels += [f"({lo}, {hi}]" for lo, hi in zip(edges[:-1], edges[1:])] + ([f"> {edges[-1]}"] if edges else [])
    e, a = list(ref["counts"]), list(batch["counts"])
    if ref.get("missing", 0) or batch.get("missing", 0):
        e, a, labels = e + [ref.get("missing", 0)], a + [batch.get("missing", 0)], labels + ["missing"]
    return np.asarray(e), np.asarray(a), labels


def entry_psi(ref: Mapping[str, Any], batch: Mapping[str, Any]) -> float:
    """PSI of one reference entry against the batch's counts for it."""
    e, a, _ = _vectors(ref, batch)
    return psi(e, a)


def drift_table(reference: Mapping[str, Any], batch: Mapping[str, Any],
                families: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One row for the score and one per feature the batch counted: name, family, psi, band, rows;
    score first, then features by PSI, largest first."""
    rows = []
    if "score" in batch and "score" in reference:
        rows.append({"name": SCORE, "family": "", "psi": entry_psi(reference["score"], batch["score"]),
                     "n_reference": reference["score"]["n"], "n_batch": batch["score"]["n"]})
    feats = []
    for name, counts in batch.get("features", {}).items():
        ref = reference.get("features", {}).get(name)
        if ref is not None:
            feats.append({"name": name, "family": (families or {}).get(name, ""), "psi": entry_psi(ref, counts),
                          "n_reference": ref["n"], "n_batch": counts["n"]})
    feats.sort(key=lambda r: -np.nan_to_num(r["psi"], nan=-1.0))
    table = pd.DataFrame(rows + feats, columns=["name", "family", "psi", "n_reference", "n_batch"])
    table.insert(3, "band", [psi_band(v) for v in table["psi"]])
    return table


def compare(reference: Mapping[str, Any], probability: Any, feature_counts: Mapping[str, Any],
            spec: Mapping[str, Any]) -> tuple[dict[str, Any], pd.DataFrame]:
    """A scored batch against a model's training reference: the batch's counts (the score from
    `probability`, the features as already counted) and its drift table (families from `spec`)."""
    batch = batch_counts(None, np.asarray(probability, dtype=float), reference)
    batch["features"] = dict(feature_counts)
    families = {f["name"]: f["family"] for f in spec["features"]}
    return batch, drift_table(reference, batch, families)


# ---------------------------------------------------------------------------- plots

def plot_psi(table: pd.DataFrame, max_display: int = 40) -> Figure:
    """Horizontal bars of PSI per row of a drift table, coloured by band, with the 0.1 and 0.25 lines."""
    shown = table.head(max_display).iloc[::-1]
    colours = {"stable": "#4c9f70", "moderate": "#e0a030", "significant": "#c0392b", "n/a": "#999999"}
    fig = Figure(figsize=(8, 0.25 * len(shown) + 1.5))
    ax = fig.add_subplot()
    ax.barh(shown["name"], np.nan_to_num(shown["psi"].to_numpy(dtype=float)),
            color=[colours[b] for b in shown["band"]])
    for x in (MODERATE, SIGNIFICANT):
        ax.axvline(x, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("PSI (batch vs training reference)")
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    return fig


def plot_distributions(reference: Mapping[str, Any], batch: Mapping[str, Any], names: list[str]) -> Figure:
    """Reference vs batch share per bin, one panel per name (`score` or a feature)."""
    fig = Figure(figsize=(10, 2.6 * ((len(names) + 1) // 2) + 0.5))
    for i, name in enumerate(names):
        ref = reference["score"] if name == SCORE else reference["features"][name]
        got = batch["score"] if name == SCORE else batch["features"][name]
        e, a, labels = _vectors(ref, got)
        ax = fig.add_subplot((len(names) + 1) // 2, 2, i + 1)
        x = np.arange(len(labels))
        ax.bar(x - 0.2, e / max(e.sum(), 1), width=0.4, label="training reference")
        ax.bar(x + 0.2, a / max(a.sum(), 1), width=0.4, label="batch")
        ax.set_xticks(x, labels, rotation=45, ha="right", fontsize=6)
        ax.set_title(f"{name}: PSI {psi(e, a):.3f}", fontsize=9)
        if i == 0:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
