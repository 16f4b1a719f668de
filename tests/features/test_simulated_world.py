"""End to end on simulated worlds: the features job over the simulator's own files."""
from __future__ import annotations

import pandas as pd

from linerisk.features.spec import feature_names
from linerisk.pipeline.cli import main


def test_features_job_builds_a_labelled_panel_from_a_simulated_world(small_world, tmp_path, capsys):
    out = tmp_path / "panel.parquet"
    assert main(["features", "--events", str(small_world / "events.parquet"), "--as-of", "auto", "--labels",
                 "--out", str(out)]) == 0
    panel = pd.read_parquet(out)
    assert panel["as_of"].nunique() >= 1
    assert 0.01 < panel["label"].mean() < 0.5
    assert not [c for c in feature_names() if panel[c].isna().all()]
    # the seeds' strongest mechanism shows in the features: recent overdue, higher restriction rate
    overdue = panel["late_days_sum_90d"] > 0
    assert panel.loc[overdue, "label"].mean() > panel.loc[~overdue, "label"].mean()


def test_features_job_quarantines_every_corrupted_row(corrupt_world, tmp_path, capsys):
    out = tmp_path / "features.parquet"
    assert main(["features", "--events", str(corrupt_world / "events.parquet"), "--as-of", "2024-05-01",
                 "--out", str(out)]) == 0
    err = capsys.readouterr().err
    quarantine = pd.read_parquet(tmp_path / "features.quarantine.parquet")
    n_read = len(pd.read_parquet(corrupt_world / "events.parquet"))
    assert f"rows read {n_read:,} = used " in err and f"+ quarantined {len(quarantine):,}," in err
    truth = corrupt_world / "truth_corruption.parquet"
    if truth.exists():
        assert len(quarantine) == len(pd.read_parquet(truth))
    assert len(quarantine) > 0 and quarantine["rule"].notna().all()
