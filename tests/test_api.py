"""`import linerisk`: the notebook API on a small world gives what the CLI gives, cheaply imported, strict on bad input."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import linerisk
from linerisk import InputError
from linerisk.pipeline.cli import main
from tests.pipeline.scoring_world import AS_OF

FAST = dict(num_threads=1, log_every=0, min_child_samples=20, n_estimators=120, early_stopping_rounds=20,
            learning_rate=0.15, max_depth=4)
HEAVY = ("pandas", "numpy", "pyarrow", "mlflow", "lightgbm", "sklearn", "shap", "numba", "matplotlib")


@pytest.fixture(scope="module")
def world(small_world):
    """The small world's files as the in-memory World that linerisk.simulate returns."""
    from linerisk.data.simulate import World

    return World(*(pd.read_parquet(small_world / f"{name}.parquet")
                   for name in ("events", "users", "truth_restrictions", "truth_snapshots", "truth_restorations",
                                "truth_recovery_snapshots")))


@pytest.fixture(scope="module")
def restore_result(world):
    """One restoration-model run on the small world's restricted lines at its truth dates (random split)."""
    panel = linerisk.build_panel(world.events, world.users, truth=world.truth_recovery_snapshots, target="restore")
    return linerisk.train(panel, truth=world.truth_recovery_snapshots, target="restore", time_col=None, **FAST)


@pytest.fixture(scope="module")
def result(world):
    """One training run on the small world's panel at its truth dates (random split: the oracle joins)."""
    panel = linerisk.build_panel(world.events, world.users, truth=world.truth_snapshots)
    return linerisk.train(panel, truth=world.truth_snapshots, time_col=None, **FAST)


def _plain(frame: pd.DataFrame) -> pd.DataFrame:
    """Values as objects with None for missing, so frames read from Parquet and built in memory compare."""
    return frame.astype(object).where(frame.notna(), None).reset_index(drop=True)


# ---------------------------------------------------------------------------- cheap start

def test_import_linerisk_and_linerisk_help_load_no_heavy_library():
    code = ("import sys, linerisk\nlinerisk.score, linerisk.train\nfrom linerisk.pipeline.cli import main\n"
            f"status = main(['--help'])\nprint(status, sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "Commands:" in out and "score" in out
    assert out.strip().splitlines()[-1] == "0 []"


def test_every_api_name_is_a_documented_function():
    for name in linerisk.API:
        obj = getattr(linerisk, name)
        assert (obj.__doc__ or "").strip(), name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        linerisk.nope  # noqa: B018


# ---------------------------------------------------------------------------- data and features

def test_simulate_gives_in_memory_the_tables_linerisk_simulate_writes(small_world):
    world = linerisk.simulate(users=2_000, months=12, seed=11, oracle_users=500)
    for name in ("events", "users", "truth_restrictions", "truth_snapshots", "truth_restorations",
                 "truth_recovery_snapshots"):
        pd.testing.assert_frame_equal(getattr(world, name), pd.read_parquet(small_world / f"{name}.parquet"),
                                      obj=name)
    assert world.truth_corruption is None
    from linerisk.pipeline.validate_plans_job import world_params

    assert world.params == world_params(small_world)  # what re-simulates it (validate_plans)


def test_simulate_names_a_bad_parameter():
    with pytest.raises(InputError, match="users: must be a whole number of at least 1"):
        linerisk.simulate(users=0)
    with pytest.raises(InputError, match="corrupt_rate"):
        linerisk.simulate(users=10, corrupt_rate=0.9)
    with pytest.raises(InputError, match="unknown parameter.*speed"):
        linerisk.simulate(users=10, speed=3)


def test_build_features_and_panel_equal_what_linerisk_features_writes(small_world, world, tmp_path):
    out = tmp_path / "features.parquet"
    assert main(["features", "--events", str(small_world / "events.parquet"), "--as-of", AS_OF, "--out", str(out)]) == 0
    features = linerisk.build_features(world.events, world.users, AS_OF)
    assert features.index.name == "user_id" and len(features) == len(world.users)
    pd.testing.assert_frame_equal(features.reset_index(), pd.read_parquet(out), check_dtype=False)

    out = tmp_path / "panel.parquet"
    assert main(["features", "--events", str(small_world / "events.parquet"), "--as-of", "auto", "--labels",
                 "--out", str(out)]) == 0
    panel = linerisk.build_panel(world.events, world.users)
    pd.testing.assert_frame_equal(panel.reset_index(drop=True), pd.read_parquet(out), check_dtype=False)
    assert set(panel["label"]) == {0, 1} and not panel.duplicated(["user_id", "as_of"]).any()


def test_build_features_in_a_time_zone_equal_linerisk_features_there(small_world, world, tmp_path):
    out = tmp_path / "features.parquet"
    assert main(["features", "--events", str(small_world / "events.parquet"), "--as-of", AS_OF,
                 "--timezone", "Asia/Shanghai", "--out", str(out)]) == 0
    features = linerisk.build_features(world.events, world.users, AS_OF, tz="Asia/Shanghai")
    assert (features["as_of"] == pd.Timestamp(AS_OF, tz="Asia/Shanghai")).all()
    pd.testing.assert_frame_equal(features.reset_index(), pd.read_parquet(out), check_dtype=False)
    with pytest.raises(InputError, match="tz: unknown time zone 'Mars/Olympus'"):
        linerisk.build_features(world.events, world.users, AS_OF, tz="Mars/Olympus")


def test_build_panel_defaults_to_the_simulators_snapshot_dates_given_its_truth(world):
    panel = linerisk.build_panel(world.events, world.users, truth=world.truth_snapshots)
    dates = pd.to_datetime(world.truth_snapshots["as_of"], utc=True).unique()
    assert sorted(panel["as_of"].unique()) == sorted(dates)
    one = linerisk.build_panel(world.events, world.users, pd.Timestamp("2024-08-01"))
    assert set(one["as_of"]) == {pd.Timestamp("2024-08-01", tz="UTC")}


def test_a_row_breaking_the_contract_raises_naming_rule_and_column_unless_dropped(world):
    events = world.events.copy()
    row = events.index[events["amount"] > 0][0]
    events.loc[row, "amount"] = -5.0
    with pytest.raises(InputError, match=r"rule negative_amount on column amount.*bad_rows='drop'"):
        linerisk.build_features(events, world.users, AS_OF)
    with pytest.warns(UserWarning, match="left out 1 event row"):
        features = linerisk.build_features(events, world.users, AS_OF, bad_rows="drop")
    assert len(features) == len(world.users)

    events = world.events.copy()
    events["event_time"] = events["event_time"].astype(object)
    events.loc[events.index[3], "event_time"] = None
    with pytest.raises(InputError, match="rule missing_required on column event_time"):
        linerisk.build_features(events, world.users, AS_OF)
    with pytest.raises(InputError, match="missing column.*credit_score"):
        linerisk.build_features(world.events.drop(columns="credit_score"), world.users, AS_OF)
    with pytest.raises(InputError, match="as_of: 'someday' is not a time"):
        linerisk.build_features(world.events, world.users, "someday")
    with pytest.raises(InputError, match="segment"):
        linerisk.build_features(world.events, world.users.assign(segment="alien"), AS_OF)


# ---------------------------------------------------------------------------- training and the registry

def test_train_returns_metrics_against_baseline_and_oracle_the_model_and_the_report(result):
    from sklearn.metrics import roc_auc_score

    assert {"model", "baseline_logreg", "oracle"} <= set(result.metrics.index)
    test = result.split.test
    auc = roc_auc_score(test["label"], result.model.predict_proba(test)[:, 1])
    assert result.flat_metrics["test_auc"] == pytest.approx(auc, abs=1e-12) and auc > 0.65
    assert result.report_html.count("data:image/png;base64,") == 5
    assert set(result.curves) >= {"model", "baseline", "oracle"}
    from linerisk.features.spec import spec_hash

    assert result.spec["spec_hash"] == spec_hash()  # a world panel trains on the feature registry's spec


def test_train_names_an_unknown_parameter_and_a_missing_label(world, result):
    panel = result.split.train
    with pytest.raises(InputError, match="max_dept"):
        linerisk.train(panel, max_dept=3)
    with pytest.raises(InputError, match="no column 'label'"):
        linerisk.train(panel.drop(columns="label"))
    with pytest.raises(InputError, match="oracle_prob are not in the feature spec"):
        linerisk.train(panel.assign(oracle_prob=0.5))


def test_register_promote_and_load_model_by_every_reference_form(mlflow_store, result):
    reg = linerisk.register(result)
    assert (reg.name, reg.version) == ("linerisk", "1") and result.run_id == reg.run_id
    decision = linerisk.promote("linerisk@challenger")
    assert decision.promoted and decision.version == "1"
    X = result.split.test
    for ref in ("linerisk@champion", "models:/linerisk@champion", "linerisk/1", "models:/linerisk/1", "linerisk"):
        package = linerisk.load_model(ref)
        assert (package.name, package.version) == ("linerisk", "1"), ref
    np.testing.assert_allclose(package.scorer.probability(X), result.model.predict_proba(X)[:, 1], atol=1e-12)
    assert package.reference["score"]["n"] == len(result.split.train)
    with pytest.raises(InputError, match="nosuch"):
        linerisk.load_model("nosuch@champion")
    with pytest.raises(InputError, match="linerisk"):
        linerisk.promote(9)


def test_the_callers_tracking_uri_is_used_as_is_and_mlflow_state_is_left_as_found(mlflow_template_db, result,
                                                                                   tmp_path, monkeypatch):
    import mlflow
    from mlflow.tracking import MlflowClient
    from mlflow.tracking._tracking_service import utils

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    home, theirs = tmp_path / "home", tmp_path / "theirs.db"
    home.mkdir()
    shutil.copy(mlflow_template_db, home / "mlflow.db")
    shutil.copy(mlflow_template_db, theirs)
    monkeypatch.setenv("LINERISK_HOME", str(home))
    assert not utils.is_tracking_uri_set()
    linerisk.register(result)  # nothing set: $LINERISK_HOME/mlflow.db, for the call only
    assert not utils.is_tracking_uri_set()
    ours = MlflowClient(tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    assert [str(v.version) for v in ours.search_model_versions("name='linerisk'")] == ["1"]

    mlflow.set_tracking_uri(f"sqlite:///{theirs}")
    try:
        assert linerisk.register(result).version == "1"  # a fresh store: the caller's
        assert mlflow.get_tracking_uri() == f"sqlite:///{theirs}"
    finally:
        mlflow.set_tracking_uri(None)
    assert len(ours.search_model_versions("name='linerisk'")) == 1
    assert len(MlflowClient(tracking_uri=f"sqlite:///{theirs}").search_model_versions("name='linerisk'")) == 1


# ---------------------------------------------------------------------------- scoring and explaining

def test_score_gives_the_rows_linerisk_score_writes(store, small_world, world, tmp_path):
    out = tmp_path / "scores.parquet"
    assert main(["score", "--events", str(small_world / "events.parquet"), "--as-of", AS_OF, "--out", str(out)]) == 0
    scores = linerisk.score(world.events, world.users, AS_OF, restore_model="linerisk-restore@champion")
    active = scores["line_state"] == "active"
    assert active.sum() > 1000 and scores.loc[active, "band"].notna().all() and (~active).any()
    written = pd.read_parquet(out)  # restore_expected is a calendar date (date32) in the file
    written["restore_expected"] = pd.to_datetime(written["restore_expected"])
    scores["restore_expected"] = pd.to_datetime(scores["restore_expected"])
    pd.testing.assert_frame_equal(_plain(scores), _plain(written))


def test_score_refuses_a_model_of_another_feature_spec_and_a_restoration_model(mlflow_store, synth_split,
                                                                                trained_model, world):
    from linerisk.models import registry

    registry.register_model(trained_model, params={}, metrics={}, reference={}, test_frame=synth_split.test)
    with pytest.raises(InputError, match="feature spec"):
        linerisk.score(world.events, world.users, AS_OF, "linerisk/1")
    with pytest.raises(InputError, match="linerisk-restore@champion"):  # not registered here
        linerisk.score(world.events, world.users, AS_OF, "linerisk/1", restore_model="linerisk-restore@champion")


def test_explain_returns_what_explain_json_prints(store, small_world, world, capsys):
    scores = linerisk.score(world.events, world.users, AS_OF)
    user = int(scores.loc[scores["probability"].idxmax(), "user_id"])
    capsys.readouterr()
    assert main(["explain", "--events", str(small_world / "events.parquet"), "--as-of", AS_OF,
                 "--user", str(user), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    view = linerisk.explain(world.events, world.users, AS_OF, user)
    assert json.loads(json.dumps(view, ensure_ascii=False)) == printed
    assert view["probability"] == pytest.approx(scores["probability"].max(), abs=1e-12)
    assert view["reasons"][0]["family"] == scores.loc[scores["probability"].idxmax(), "reason_1_family"]
    with pytest.raises(InputError, match="user_id: 987654321 is not in the users table"):
        linerisk.explain(world.events, world.users, AS_OF, 987654321)


def test_explain_of_a_restricted_line_returns_what_json_prints_and_agrees_with_score(store, small_world, world,
                                                                                      capsys):
    restore = "linerisk-restore@champion"
    scores = linerisk.score(world.events, world.users, AS_OF, restore_model=restore).set_index("user_id")
    restricted = scores[(scores["line_state"] == "restricted") & ~scores["red_line"]]
    user = int(restricted["restore_probability"].idxmax())  # one with a way back worth showing
    capsys.readouterr()
    assert main(["explain", "--events", str(small_world / "events.parquet"), "--as-of", AS_OF,
                 "--user", str(user), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    view = linerisk.explain(world.events, world.users, AS_OF, user, restore_model=restore)
    assert json.loads(json.dumps(view, ensure_ascii=False)) == printed
    row = scores.loc[user]
    assert view["line_state"] == "restricted" and view["restore_model"]["name"] == "linerisk-restore"
    assert view["restore"]["probability_90d"] == pytest.approx(row["restore_probability"], abs=1e-12)
    assert view["restore"]["expected"] == (None if pd.isna(row["restore_expected"])
                                           else pd.Timestamp(row["restore_expected"]).strftime("%Y-%m-%d"))
    assert view["red_line"]["holds"] == bool(row["red_line"]) is False
    assert [r["code"] for r in view["holding_back"]] == [row[f"reason_{k}_code"] for k in (1, 2, 3)
                                                         if pd.notna(row[f"reason_{k}_code"])]
    assert all(max(a["probability_90d"] - row["restore_probability"],
                   a["probability_365d"] - row["restore_probability_365d"]) >= 0.005 - 1e-12 for a in view["actions"])
    # without the restoration model a restricted line is one clear line, not the active view
    with pytest.raises(InputError, match=f"user_id: {user}'s line is restricted since .*pass restore_model"):
        linerisk.explain(world.events, world.users, AS_OF, user)
    # an active line does not need (or load) the restoration model
    active = int(scores.index[scores["line_state"] == "active"][0])
    assert linerisk.explain(world.events, world.users, AS_OF, active, restore_model="nowhere@champion")["band"]


def test_the_restoration_model_trains_and_registers_under_its_own_name(mlflow_store, world, restore_result):
    from linerisk.features.labels import line_state

    result = restore_result
    assert result.spec["target"] == "restore" and {"model", "baseline_logreg", "oracle"} <= set(result.metrics.index)
    rows = pd.concat(result.split)
    for as_of, users in rows.groupby("as_of")["user_id"]:  # every row a line restricted at its snapshot
        state = line_state(world.events, as_of, world.users)["state"]
        assert (state.reindex(users) == "restricted").all(), as_of
    curve = result.model.curve(result.split.test, (90, 180, 365))
    assert (np.diff(curve, axis=1) >= -1e-12).all()
    assert np.allclose(curve[:, 0], result.model.predict_proba(result.split.test)[:, 1], atol=1e-12)
    reg = linerisk.register(result)
    assert (reg.name, reg.version) == ("linerisk-restore", "1")
    package = linerisk.load_model("linerisk-restore/1")
    X = result.split.test
    np.testing.assert_allclose(package.scorer.score(X, reasons=False)["restore_probability"],
                               result.model.predict_proba(X)[:, 1], atol=1e-12)


def test_train_for_restoration_refuses_a_restriction_panel_and_an_unknown_target(world, result, restore_result):
    with pytest.raises(InputError, match='build_panel\\(..., target="restore"\\)'):
        linerisk.train(result.split.train, target="restore")
    with pytest.raises(InputError, match="target: must be one of restrict, restore"):
        linerisk.build_panel(world.events, world.users, target="restored")
    with pytest.raises(InputError, match="label, drop, id_col and allow keep their defaults"):
        linerisk.train(restore_result.split.train, target="restore", drop=("late_repayment_count_90d",))
    with pytest.raises(InputError, match="only with target"):
        linerisk.train(result.split.train, restriction_model="linerisk@champion")


def test_validate_plans_returns_what_linerisk_validate_plans_writes(store, small_world, world, tmp_path):
    from linerisk.pipeline.validate_plans_job import main, world_params

    params = world_params(small_world)
    out = tmp_path / "plans.json"
    assert main(["--data", str(small_world), "--as-of", AS_OF, "--users", "30", "--futures", "2",
                 "--restore-model", "none", "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    result = linerisk.validate_plans(world.events, world.users, params, AS_OF, n_users=30, futures=2)
    assert json.loads(json.dumps(result)) == {k: v for k, v in written.items() if k not in ("world", "model")}
    assert result["summary"]["n_plans"] == len(result["users"]) > 0 and "restoration" not in result["summary"]
    with pytest.raises(InputError, match="params: the WorldParams that simulated the world"):
        linerisk.validate_plans(world.events, world.users, world.params, AS_OF)  # a World read from files has none
    with pytest.raises(InputError, match="futures: must be a whole number"):
        linerisk.validate_plans(world.events, world.users, params, AS_OF, futures=0)


def test_plan_covers_every_active_line_and_its_actions_get_below_the_threshold_from_scratch(store, world):
    from linerisk.features.labels import line_state
    from linerisk.models.recover import apply_plan

    users = world.users.head(200)
    events = world.events[world.events["user_id"].isin(users["user_id"])]
    way = linerisk.plan(events, users, AS_OF)
    state = line_state(events, AS_OF, users)["state"]
    assert sorted(way.actions.summary.index) == sorted(state.index[state == "active"])
    curve = way.time.curve.pivot(index="days", columns="user_id", values="probability")
    assert (curve.diff().dropna() <= 1e-12).all().all()

    scorer = linerisk.load_model().scorer
    features = linerisk.build_features(events, users, AS_OF)
    acted = way.actions.summary[way.actions.summary["n_steps"] > 0]
    assert len(acted) and acted["reached"].any()
    for user, row in acted[acted["reached"]].iterrows():
        codes = list(way.actions.steps.loc[way.actions.steps["user_id"] == user, "code"])
        after = apply_plan(features.loc[[user]], codes, scorer.spec)
        assert scorer.probability(after)[0] < row["threshold"]
    with pytest.raises(InputError, match="user_ids"):
        linerisk.plan(events, users, AS_OF, user_ids=[987654321])
    with pytest.raises(InputError, match="no users to plan for"):
        linerisk.plan(events, users, AS_OF, user_ids=[])
