"""`linerisk explain`: one user's probability, band, reasons, help and path back, as text or JSON; exit 2 on bad input."""
from __future__ import annotations

import json

import pytest

from linerisk.pipeline.cli import main
from tests.pipeline.scoring_world import AS_OF


@pytest.fixture(scope="module")
def states(small_world):
    from linerisk.features.labels import line_state
    from linerisk.pipeline.io import read_events, read_users

    users = read_users(small_world / "users.parquet")
    return line_state(read_events(small_world / "events.parquet", users).good, AS_OF, users)["state"]


def explain(world, user, *extra):
    return main(["explain", "--model", "linerisk@champion", "--events", str(world / "events.parquet"),
                 "--as-of", AS_OF, "--user", str(user), *extra])


def test_json_view_matches_the_batch_score_and_carries_reasons_help_and_the_path_back(store, small_world, states,
                                                                                      capsys):
    from linerisk.features.compute import build_features
    from linerisk.models import registry
    from linerisk.pipeline.io import read_events, read_users

    user = int(states[states == "active"].index[0])
    assert explain(small_world, user, "--json") == 0
    view = json.loads(capsys.readouterr().out)
    assert view["user_id"] == user and view["line_state"] == "active" and view["model"]["name"] == "linerisk"
    users = read_users(small_world / "users.parquet")
    features = build_features(read_events(small_world / "events.parquet", users).good, AS_OF, users).loc[[user]]
    scorer = registry.load_model("linerisk@champion").unwrap_python_model().scorer
    assert view["probability"] == pytest.approx(float(scorer.probability(features)[0]), abs=1e-9)
    assert view["band"] in ("low", "medium", "high", "very_high")
    for r in view["reasons"] + view["helping"]:
        assert set(r) == {"rank", "family", "code", "text_en", "text_zh", "contribution"}
    assert all(r["contribution"] > 0 for r in view["reasons"]) and all(h["contribution"] < 0 for h in view["helping"])
    curve = [c["probability"] for c in view["recovery"]["curve"]]
    assert len(curve) == 53 and all(b <= a + 1e-12 for a, b in zip(curve, curve[1:]))
    assert view["plan"]["final_probability"] <= view["probability"] + 1e-12


def test_text_view_of_a_restricted_user_shows_the_recovery_view(store, small_world, states, capsys):
    user = int(states[states == "restricted"].index[0])
    assert explain(small_world, user) == 0
    out = capsys.readouterr().out
    assert f"user {user} at {AS_OF}" in out and "restricted since" in out and "recovery view" in out
    assert "Why (families pushing risk up" in out and "What is helping you" in out
    assert "Path back" in out and "weekly for a year:" in out and any(ch in out for ch in "▁▂▃▄▅▆▇█")


def test_unknown_user_and_unknown_model_exit_2_with_one_line(store, small_world, capsys):
    assert explain(small_world, 987654321) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "987654321" in err[0] and "not in the users table" in err[0]
    assert main(["explain", "--model", "nosuchmodel@champion", "--events", str(small_world / "events.parquet"),
                 "--as-of", AS_OF, "--user", "1"]) == 2
    assert "nosuchmodel" in capsys.readouterr().err


def test_a_model_built_on_another_feature_spec_is_refused(mlflow_store, synth_split, trained_model, small_world,
                                                          capsys):
    from linerisk.models import registry

    reg = registry.register_model(trained_model, params={}, metrics={}, reference={}, test_frame=synth_split.test)
    capsys.readouterr()
    assert main(["explain", "--model", f"linerisk/{reg.version}", "--events", str(small_world / "events.parquet"),
                 "--as-of", AS_OF, "--user", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "feature spec" in err[0]
