"""Metrics: known values on tiny inputs, and the report renders."""
from __future__ import annotations

import numpy as np
import pytest

from linerisk.models.evaluate import (evaluate, expected_calibration_error, figure_png, ks_statistic, lift_table,
                             plot_calibration, plot_roc, metric_table)
from linerisk.models.report import render_report


def test_perfect_ranking_gives_auc_and_ks_of_one():
    y = np.array([0, 0, 1, 1])
    m = evaluate(y, np.array([0.1, 0.2, 0.8, 0.9]))
    assert m["auc"] == 1.0 and m["ks"] == 1.0 and m["pr_auc"] == 1.0
    assert m["brier"] == pytest.approx((0.01 + 0.04 + 0.04 + 0.01) / 4)


def test_ece_is_zero_when_each_bin_matches_its_rate_and_large_when_it_does_not():
    y = np.array([0, 0, 0, 1] * 250)
    assert expected_calibration_error(y, np.full(1000, 0.25)) == pytest.approx(0.0)
    assert expected_calibration_error(y, np.full(1000, 0.75)) == pytest.approx(0.5)


def test_ks_matches_the_largest_cdf_gap():
    y = np.array([0, 1, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.3, 0.4, 0.5])
    assert ks_statistic(y, p) == pytest.approx(2 / 3)


def test_lift_table_covers_every_row_and_captures_all_positives():
    rng = np.random.default_rng(0)
    p = rng.random(1000)
    y = (rng.random(1000) < p).astype(int)
    lift = lift_table(y, p)
    assert lift["rows"].sum() == 1000 and lift["positives"].sum() == y.sum()
    assert lift["cum_capture"].iloc[-1] == pytest.approx(1.0)
    assert lift["lift"].iloc[0] > 1.5 > lift["lift"].iloc[-1]


def test_mismatched_lengths_are_refused():
    with pytest.raises(ValueError, match="3 rows but probabilities have 2"):
        evaluate([0, 1, 0], [0.1, 0.2])


def test_report_embeds_plots_and_tables():
    rng = np.random.default_rng(1)
    p = rng.random(200)
    y = (rng.random(200) < p).astype(int)
    curves = {"model": (y, p)}
    html = render_report("t", metric_table({"model": evaluate(y, p)}), lift_table(y, p),
                         {"ROC": figure_png(plot_roc(curves)), "Cal": figure_png(plot_calibration(curves))},
                         {"k": "v"})
    assert html.count("data:image/png;base64,") == 2 and "auc" in html and "cum_capture" in html


def test_reports_print_counts_as_integers_rates_with_four_decimals_and_wide_tables_scroll():
    import pandas as pd
    from linerisk.models.report import markdown_table, render_drift

    rng = np.random.default_rng(2)
    p = rng.random(1200)
    y = (rng.random(1200) < p).astype(int)
    metrics = metric_table({"model": evaluate(y, p)})
    html = render_report("t", metrics, lift_table(y, p), {}, {"rows train/valid/test": "1/2/3", "best_iteration": 42.0})
    auc = metrics.loc["model", "auc"]
    assert "<td>1,200</td>" in html and f"<td>{int(y.sum()):,}</td>" in html and f"<td>{auc:.4f}</td>" in html
    assert "1200.0000" not in html and "<td>42</td>" in html
    assert html.count('<div class="scroll">') >= 3  # metrics, lift, run details
    assert "| 1,200 |" in markdown_table(metrics)

    wide = pd.DataFrame({"name": ["score", "f1"], "family": ["", "overdue"], "psi": [0.0123456, 0.3],
                         "band": ["stable", "significant"], "n_reference": [50_000, 50_000], "n_batch": [1234, 1234]})
    page = render_drift("d", wide, {}, {"scored users": 1234}, {"moderate": 0.1, "significant": 0.25, "eps": 1e-4})
    assert "<td>0.0123</td>" in page and "<td>50,000</td>" in page and "<td>1,234</td>" in page
    assert '<div class="scroll">' in page and "<td>&lt;" not in page
