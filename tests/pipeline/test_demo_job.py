"""End to end: `linerisk demo` simulates, trains, registers, promotes, scores and explains."""
from __future__ import annotations

import pandas as pd

from linerisk.pipeline.demo_job import main


def test_demo_runs_every_stage_and_says_where_the_results_are(mlflow_store, tmp_path, capsys):
    assert main(["--users", "1500", "--months", "15", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    demo = tmp_path / "linerisk_home" / "demo"
    for stage in ("simulate", "train", "registry promote", "score", "explain"):
        assert f"$ linerisk {stage}" in out
    assert (demo / "report.html").stat().st_size > 10_000 and (demo / "restore_report.html").stat().st_size > 10_000
    assert "$ linerisk train --target restore" in out and "linerisk-restore v1" in out
    scores = pd.read_parquet(demo / "scores.parquet")
    active, restricted = scores["line_state"] == "active", scores["line_state"] == "restricted"
    assert len(scores) > 500 and scores.loc[active, "probability"].between(0, 1).all()
    assert restricted.any() and scores.loc[restricted, "restore_probability"].between(0, 1).all()
    assert (scores["model_version"].astype(str) == "1").all() and (scores["restore_model_version"] == "1").all()
    assert "Why it was most likely restricted" in out  # the restricted user's explain view
    assert "Where the results are" in out and str(demo / "scores.parquet") in out

    # a second run reuses both worlds (same parameters, same files) and registers version 2
    assert main(["--users", "1500", "--months", "15", "--seed", "3"]) == 0
    assert capsys.readouterr().out.count("reusing") == 2
