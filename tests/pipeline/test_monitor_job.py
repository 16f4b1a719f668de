"""PSI (models/drift.py) and `linerisk monitor`: table, HTML page, --fail-on-drift."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from linerisk.models import drift
from linerisk.pipeline.cli import main
from linerisk.pipeline.score_job import drift_path_for
from tests.pipeline.scoring_world import AS_OF


@pytest.fixture
def scored(store, small_world, tmp_path):
    out = tmp_path / "scores.parquet"
    assert main(["score", "--events", str(small_world / "events.parquet"), "--as-of", AS_OF, "--out", str(out)]) == 0
    return out


def test_psi_is_zero_for_the_same_shares_finite_for_empty_bins_and_banded():
    assert drift.psi([10, 20, 30], [1, 2, 3]) == pytest.approx(0.0)
    assert np.isfinite(drift.psi([50, 50, 0], [0, 50, 50]))
    assert drift.psi([50, 50, 0], [0, 50, 50]) > drift.SIGNIFICANT
    e, a = np.array([25, 25, 25, 25]), np.array([20, 25, 25, 30])
    p = np.array([.25, .25, .25, .25]), np.array([.2, .25, .25, .3])
    assert drift.psi(e, a) == pytest.approx(float(np.sum((p[1] - p[0]) * np.log(p[1] / p[0]))))
    assert [drift.psi_band(v) for v in (0.05, 0.1, 0.25, 0.3, float("nan"))] == \
        ["stable", "moderate", "moderate", "significant", "n/a"]


def test_counts_of_chunks_merge_to_the_counts_of_the_whole():
    rng = np.random.default_rng(0)
    values = rng.normal(size=1000)
    values[::17] = np.nan
    reference = {"score": {"edges": [-1.0, 0.0, 1.0], "counts": [1, 1, 1, 1], "missing": 0, "n": 4},
                 "features": {"x": {"edges": [0.0], "counts": [5, 5], "missing": 1, "n": 11}}}
    whole = drift.batch_counts(pd.DataFrame({"x": values}), values, reference)
    parts = None
    for chunk in np.array_split(values, 3):
        parts = drift.merge_counts(parts, drift.batch_counts(pd.DataFrame({"x": chunk}), chunk, reference))
    assert parts == whole
    assert sum(whole["score"]["counts"]) + whole["score"]["missing"] == 1000


def test_monitor_prints_the_table_writes_the_page_and_passes_without_drift(scored, tmp_path, capsys):
    capsys.readouterr()
    page = tmp_path / "drift.html"
    assert main(["monitor", "--scores", str(scored), "--out", str(page), "--fail-on-drift"]) == 0
    text = capsys.readouterr().out
    assert "score" in text and "psi" in text and "max PSI" in text and "model linerisk v1" in text
    html = page.read_text()
    assert html.count("data:image/png;base64,") == 2 and "late_days_sum_90d" in html
    counts = json.loads(drift_path_for(scored).read_text())
    scores = pd.read_parquet(scored)  # the drift counts are the restriction model's: the active lines
    assert counts["users_scored"] == int((scores["line_state"] == "active").sum()) and len(counts["features"]) > 50


def test_fail_on_drift_exits_1_for_a_shifted_batch(scored, tmp_path, capsys):
    shifted = tmp_path / "shifted.parquet"
    scores = pd.read_parquet(scored)
    scores["probability"] = np.minimum(scores["probability"] * 5 + 0.3, 1.0)
    scores.to_parquet(shifted)
    counts = json.loads(drift_path_for(scored).read_text())
    drift_path_for(shifted).write_text(json.dumps(counts))
    page = tmp_path / "drift.html"
    assert main(["monitor", "--scores", str(shifted), "--out", str(page)]) == 0  # reported, not failed
    assert main(["monitor", "--scores", str(shifted), "--out", str(page), "--fail-on-drift"]) == 1
    assert "significant" in capsys.readouterr().out


def test_monitor_refuses_scores_without_a_probability(store, tmp_path, capsys):
    bad = tmp_path / "bad.parquet"
    pd.DataFrame({"user_id": [1]}).to_parquet(bad)
    assert main(["monitor", "--scores", str(bad)]) == 2
    assert "no probability column" in capsys.readouterr().err
