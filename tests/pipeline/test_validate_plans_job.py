"""`linerisk validate-plans`: plans of a small simulated world checked against its truth."""
from __future__ import annotations

import json
import shutil

from linerisk.pipeline.validate_plans_job import main
from tests.pipeline.scoring_world import AS_OF


def test_validate_plans_writes_the_users_and_the_summary(store, small_world, tmp_path, capsys):
    out = tmp_path / "plans.json"
    assert main(["--data", str(small_world), "--as-of", AS_OF, "--users", "40", "--futures", "2",
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    s = result["summary"]
    assert s["n_plans"] == len(result["users"]) > 0
    for key in ("share_lowering_true_risk", "share_under_threshold"):
        assert 0.0 <= s[key] <= 1.0
    assert {"mean_projected", "mean_true", "ratio", "by_lever"} <= set(s["projected_vs_true_reduction"])
    row = result["users"][0]
    assert row["levers"] and row["effective_date"] >= AS_OF
    assert row["projected_with"] <= row["projected_without"] + 1e-12
    assert {"n_plans", "days_to_restoration", "share_raising_true_restoration"} <= set(s["restoration"])
    assert len(result["restoration_users"]) == s["restoration"]["n_plans"]
    figure = tmp_path / "plans.png"  # the plan-validity figure, beside the JSON, named where it was written
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and str(figure) in capsys.readouterr().out
    assert not list(tmp_path.glob("*.tmp*"))


def test_data_that_is_not_a_simulated_world_is_one_line_exit_2(store, small_world, tmp_path, capsys):
    plain = tmp_path / "plain"
    plain.mkdir()
    shutil.copy(small_world / "events.parquet", plain / "events.parquet")
    shutil.copy(small_world / "users.parquet", plain / "users.parquet")
    assert main(["--data", str(plain), "--as-of", AS_OF, "--out", str(tmp_path / "x.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a simulated world" in err[0]
    assert not (tmp_path / "x.json").exists() and not (tmp_path / "x.png").exists()


def test_an_as_of_outside_the_world_is_one_line_exit_2(store, small_world, tmp_path, capsys):
    for as_of in ("2030-01-01", "2023-06-01"):
        assert main(["--data", str(small_world), "--as-of", as_of, "--out", str(tmp_path / "x.json")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "inside the world" in err[0]
