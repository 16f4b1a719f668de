"""End to end: `linerisk demo` simulates, trains, registers, promotes, scores and explains."""
from __future__ import annotations

import os
import re

import pandas as pd

from linerisk.pipeline.demo_job import main
from tests.pipeline.http_server import bare_env, free_port, post, start, stop, wait_for


def test_demo_runs_every_stage_and_says_where_the_results_are(mlflow_store, tmp_path, capsys):
    assert main(["--users", "1500", "--months", "15", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    demo = tmp_path / "linerisk_home" / "demo"
    for stage in ("simulate", "train", "registry promote", "score", "explain"):
        assert f"$ linerisk {stage}" in out
    restore = demo / "restoration"
    assert (demo / "report.html").stat().st_size > 10_000 and (restore / "report.html").stat().st_size > 10_000
    assert "Reason fidelity by family (unseen world)" in (demo / "report.html").read_text()  # measured and drawn
    # each model keeps its own card, beside the report that links to it, and both paths are printed
    card, restore_card = (demo / "model_card.md").read_text(), (restore / "model_card.md").read_text()
    assert "linerisk-restore" not in card.splitlines()[0] and "linerisk-restore" in restore_card.splitlines()[0]
    assert re.search(rf"^  model card +{re.escape(str(demo / 'model_card.md'))}$", out, re.M)
    assert re.search(rf"^  restoration model card +{re.escape(str(restore / 'model_card.md'))}$", out, re.M)
    assert "$ linerisk train --target restore" in out and "linerisk-restore v1" in out
    scores = pd.read_parquet(demo / "scores.parquet")
    active, restricted = scores["line_state"] == "active", scores["line_state"] == "restricted"
    assert len(scores) > 500 and scores.loc[active, "probability"].between(0, 1).all()
    assert restricted.any() and scores.loc[restricted, "restore_probability"].between(0, 1).all()
    assert (scores["model_version"].astype(str) == "1").all() and (scores["restore_model_version"] == "1").all()
    assert "Why it was most likely restricted" in out  # the restricted user's explain view
    assert "Where the results are" in out and str(demo / "scores.parquet") in out

    # the printed serve line, run by a shell without this virtualenv on PATH, starts a server that answers
    line = re.search(r"^serve: +(.+)$", out, re.M).group(1)
    assert " --port 5001" in line
    port = free_port()
    server = start(line.replace("--port 5001", f"--port {port}") + " --workers 1",
                   bare_env({"LINERISK_HOME": os.environ["LINERISK_HOME"]}), tmp_path / "serve.log")
    try:
        wait_for(port, server, tmp_path / "serve.log")
        example = tmp_path / "linerisk_home" / "serving" / "linerisk-v1" / "serving_input_example.json"
        status, answer = post(f"http://127.0.0.1:{port}/invocations", example.read_bytes())
        assert status == 200 and pd.DataFrame(answer["predictions"])["probability"].between(0, 1).all()
    finally:
        stop(server)

    # a second run reuses both worlds (same parameters, same files) and registers version 2
    assert main(["--users", "1500", "--months", "15", "--seed", "3"]) == 0
    assert capsys.readouterr().out.count("reusing") == 2
