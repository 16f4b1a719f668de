"""Evaluation: metrics on held-out data and plots.

Pure: metrics return dicts/DataFrames, plots return matplotlib figures (models/report.py
renders them into the HTML report; pipeline/train_job.py writes it).
"""
from __future__ import annotations

import base64
import io
from typing import Any, Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score, roc_curve

from linerisk.models.scoring import family_contributions

ECE_BINS = 10


def _check(y, p) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.int64)
    p = np.asarray(p, dtype=np.float64)
    if y.shape != p.shape:
        raise ValueError(f"labels have {len(y)} rows but probabilities have {len(p)}")
    if np.isnan(p).any():
        raise ValueError(f"probabilities contain {int(np.isnan(p).sum())} NaN value(s)")
    return y, p


def ks_statistic(y, p) -> float:
    """Kolmogorov-Smirnov: the largest gap between the score CDFs of positives and negatives (= max TPR - FPR)."""
    y, p = _check(y, p)
    fpr, tpr, _ = roc_curve(y, p)
    return float(np.max(tpr - fpr))


def expected_calibration_error(y, p, n_bins: int = ECE_BINS) -> float:
    """ECE over equal-frequency bins of p: sum over bins of (bin share) * |mean p - observed rate|.

    Equal-frequency bins, because at a 5-10% base rate equal-width bins above 0.3 are nearly empty.
    """
    y, p = _check(y, p)
    order = np.argsort(p, kind="stable")
    bins = np.array_split(order, min(n_bins, len(p)))
    return float(sum(len(b) / len(p) * abs(p[b].mean() - y[b].mean()) for b in bins if len(b)))


def lift_table(y, p, n_bins: int = 10) -> pd.DataFrame:
    """Decile table, highest scores first: rows, positives, rate, lift over the base rate, cumulative capture."""
    y, p = _check(y, p)
    order = np.argsort(-p, kind="stable")
    rows = []
    base = y.mean() if len(y) else np.nan
    captured = 0
    for i, idx in enumerate(np.array_split(order, n_bins), start=1):
        pos = int(y[idx].sum())
        captured += pos
        rate = pos / len(idx) if len(idx) else np.nan
        rows.append({"decile": i, "rows": len(idx), "min_score": float(p[idx].min()) if len(idx) else np.nan,
                     "mean_score": float(p[idx].mean()) if len(idx) else np.nan, "positives": pos, "rate": rate,
                     "lift": rate / base if base else np.nan,
                     "cum_capture": captured / y.sum() if y.sum() else np.nan})
    return pd.DataFrame(rows)


def evaluate(y, p) -> dict[str, float]:
    """AUC, KS, PR-AUC, Brier, log loss, ECE (10 equal-frequency bins), rows, positives and base rate."""
    y, p = _check(y, p)
    both = 0 < y.sum() < len(y)
    clipped = np.clip(p, 1e-15, 1 - 1e-15)
    return {
        "auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "ks": ks_statistic(y, p) if both else float("nan"),
        "pr_auc": float(average_precision_score(y, p)) if both else float("nan"),
        "brier": float(brier_score_loss(y, p)),
        "log_loss": float(log_loss(y, clipped, labels=[0, 1])),
        "ece": expected_calibration_error(y, p),
        "rows": float(len(y)),
        "positives": float(y.sum()),
        "base_rate": float(y.mean()) if len(y) else float("nan"),
    }


def metric_table(results: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """Models as rows, metrics as columns (e.g. model vs baseline vs oracle)."""
    cols = ["auc", "ks", "pr_auc", "brier", "log_loss", "ece", "rows", "positives"]
    return pd.DataFrame({name: {c: m.get(c, np.nan) for c in cols} for name, m in results.items()}).T


# ---------------------------------------------------------------------------- plots

def plot_roc(curves: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> Figure:
    """ROC curves, one per (y, p) pair."""
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    for name, (y, p) in curves.items():
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(y, p):.3f})")
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return fig


def calibration_points(y, p, n_bins: int = ECE_BINS) -> pd.DataFrame:
    """Mean predicted vs observed rate per equal-frequency bin."""
    y, p = _check(y, p)
    order = np.argsort(p, kind="stable")
    return pd.DataFrame([{"mean_p": p[b].mean(), "rate": y[b].mean(), "rows": len(b)}
                         for b in np.array_split(order, min(n_bins, len(p))) if len(b)])


def plot_calibration(curves: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> Figure:
    """Reliability diagram (equal-frequency bins), one line per model."""
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    hi = 0.0
    for name, (y, p) in curves.items():
        pts = calibration_points(y, p)
        hi = max(hi, pts["mean_p"].max(), pts["rate"].max())
        ax.plot(pts["mean_p"], pts["rate"], "o-", ms=3, label=name)
    ax.plot([0, hi], [0, hi], "k:", lw=1)
    ax.set(xlabel="mean predicted probability", ylabel="observed restriction rate", title="Calibration (test)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig


def plot_score_distribution(y, p) -> Figure:
    """Histogram of calibrated probability by label."""
    y, p = _check(y, p)
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    bins = np.linspace(0, max(p.max(), 1e-6), 41)
    ax.hist(p[y == 0], bins=bins, alpha=0.6, density=True, label="not restricted")
    ax.hist(p[y == 1], bins=bins, alpha=0.6, density=True, label="restricted")
    ax.set(xlabel="probability", ylabel="density", title="Score distribution by label (test)")
    ax.legend()
    fig.tight_layout()
    return fig


def plot_shap_summary(contrib: pd.DataFrame, X: pd.DataFrame, max_display: int = 20) -> Figure:
    """SHAP beeswarm summary from per-feature contributions (the `bias` column is ignored)."""
    import matplotlib.pyplot as plt  # shap draws on pyplot's current figure
    import shap  # slow import; only the report needs it

    values = contrib.drop(columns=["bias"], errors="ignore")
    Xn = X[values.columns].apply(lambda c: c if pd.api.types.is_numeric_dtype(c)
                                 else c.astype("category").cat.codes.where(c.notna()))
    plt.figure(figsize=(7, 0.3 * min(max_display, values.shape[1]) + 1.5))
    shap.summary_plot(values.to_numpy(), Xn.astype("float64"), max_display=max_display, show=False)
    fig = plt.gcf()
    fig.suptitle("SHAP summary (test sample, log-odds)")
    fig.tight_layout()
    return fig


def family_importance(contrib: pd.DataFrame, gain: pd.Series, spec: dict[str, Any]) -> pd.DataFrame:
    """Per spec family: mean |SHAP| (of the family sum per row) and share of total gain."""
    names = [f["name"] for f in spec["features"]]
    by_family = family_contributions(contrib[names].to_numpy(), spec)
    gain_by_family = family_contributions(gain.reindex(names).to_numpy()[None, :], spec).iloc[0]
    out = pd.DataFrame({"mean_abs_shap": by_family.abs().mean(),
                        "gain_share": gain_by_family / max(gain_by_family.sum(), 1e-12)}).fillna(0.0)
    return out.sort_values("mean_abs_shap", ascending=False)


def plot_family_importance(importance: pd.DataFrame) -> Figure:
    """Two bar charts: mean |SHAP| and gain share per family."""
    imp = importance.iloc[::-1]
    fig = Figure(figsize=(10, 0.35 * len(imp) + 1.5))
    axes = fig.subplots(1, 2, sharey=True)
    axes[0].barh(imp.index, imp["mean_abs_shap"])
    axes[0].set(title="mean |SHAP| by family (log-odds)")
    axes[1].barh(imp.index, imp["gain_share"], color="tab:orange")
    axes[1].set(title="share of split gain by family")
    fig.tight_layout()
    return fig


def figure_bytes(fig: Figure) -> bytes:
    """A figure as PNG bytes (and closed, so long runs do not leak figures)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    if fig.canvas.manager is not None:  # a pyplot figure (the SHAP summary): release it
        import matplotlib.pyplot as plt
        plt.close(fig)
    return buf.getvalue()


def figure_png(fig: Figure) -> str:
    """A figure as a base64 PNG, for an HTML page."""
    return base64.b64encode(figure_bytes(fig)).decode("ascii")
