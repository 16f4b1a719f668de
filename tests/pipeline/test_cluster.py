"""The pipeline on a Dask cluster gives what one process gives (issue 14): a LocalCluster of 2 workers."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import pandas as pd
import pytest

from linerisk.pipeline.cluster import DaskRunner, parse_local
from linerisk.pipeline.score_job import drift_path_for, score_events
from linerisk.features.compute import to_utc_timestamp
from linerisk.pipeline.io import quarantine_path_for

AS_OF = to_utc_timestamp("2024-06-01")


def _duplicated_across_partitions(world: Path, path: Path) -> Path:
    """The corrupt world's events plus an event id of the first user copied onto the last user's rows:
    a duplicate only a global check can see."""
    events = pd.read_parquet(world / "events.parquet")
    ids = pd.read_parquet(world / "users.parquet")["user_id"]
    first = events.index[events["user_id"] == ids.min()][:2]
    last = events.index[events["user_id"] == ids.max()][-2:]
    events.loc[last, "event_id"] = events.loc[first, "event_id"].to_numpy()
    events.to_parquet(path, row_group_size=3_000)  # several row groups: several hashing pieces
    return path


def _score(events: Path, world: Path, out: Path, runner=None, **kw):
    return score_events(events, world / "users.parquet", AS_OF, "linerisk@champion", out, chunk_users=150,
                        progress=False, runner=runner, **kw)


def test_cluster_scores_quarantine_and_drift_equal_one_process(store, corrupt_world, dask_client, tmp_path):
    events = _duplicated_across_partitions(corrupt_world, tmp_path / "events.parquet")
    one = _score(events, corrupt_world, tmp_path / "one.parquet")
    many = _score(events, corrupt_world, tmp_path / "many.parquet", DaskRunner(dask_client))
    parts = sorted(p.name for p in (tmp_path / "many.parquet").iterdir())
    assert many.partitions == one.partitions > 2 and parts == [f"part-{i:05d}.parquet" for i in range(many.partitions)]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "many.parquet"), pd.read_parquet(tmp_path / "one.parquet"))
    q_one, q_many = (pd.read_parquet(quarantine_path_for(tmp_path / n)) for n in ("one.parquet", "many.parquet"))
    pd.testing.assert_frame_equal(q_many, q_one)
    last_user = pd.read_parquet(corrupt_world / "users.parquet")["user_id"].max()
    assert (q_one.loc[q_one["rule"] == "duplicate_event_id", "user_id"] == last_user).sum() == 2
    drift = [json.loads(drift_path_for(tmp_path / n).read_text()) for n in ("one.parquet", "many.parquet")]
    assert drift[0] == drift[1]
    assert (many.rows, many.users_scored, many.bands, many.score_psi) == (one.rows, one.users_scored, one.bands,
                                                                           one.score_psi)
    assert many.rows.read == len(pd.read_parquet(events, columns=["event_id"])) and many.rows.n_quarantined > 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_single_file_on_the_cluster_is_byte_identical_to_one_process(store, small_world, dask_client, tmp_path):
    events = small_world / "events.parquet"
    _score(events, small_world, tmp_path / "one.parquet")
    _score(events, small_world, tmp_path / "many.parquet", DaskRunner(dask_client), single_file=True)
    assert (tmp_path / "many.parquet").read_bytes() == (tmp_path / "one.parquet").read_bytes()
    _score(events, small_world, tmp_path / "one.csv", fmt="csv")
    _score(events, small_world, tmp_path / "many.csv", DaskRunner(dask_client), fmt="csv", single_file=True)
    assert (tmp_path / "many.csv").read_bytes() == (tmp_path / "one.csv").read_bytes()


def test_a_worker_killed_mid_run_still_gives_the_whole_identical_output(store, small_world, dask_client, tmp_path):
    events = small_world / "events.parquet"
    _score(events, small_world, tmp_path / "one.parquet")
    killed: list[str] = []

    def kill_a_busy_worker() -> None:
        while not killed:
            busy = [w for w, tasks in dask_client.processing().items() if tasks]
            if busy:
                killed.append(busy[0])
                dask_client.restart_workers([busy[0]])  # its nanny brings up a fresh, empty process
            threading.Event().wait(0.05)

    killer = threading.Thread(target=kill_a_busy_worker, daemon=True)
    killer.start()
    run = _score(events, small_world, tmp_path / "many.parquet", DaskRunner(dask_client), pause_after_chunk=0.25)
    killer.join(timeout=30)
    assert killed and run.partitions > 4
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "many.parquet"), pd.read_parquet(tmp_path / "one.parquet"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["one.parquet", "one.quarantine.parquet", "one.drift.json", "many.parquet", "many.quarantine.parquet",
         "many.drift.json"])
    assert not [p for p in (tmp_path / "many.parquet").iterdir() if not p.name.startswith("part-")]


@pytest.mark.parametrize("address, workers", [("local", None), ("local:3", 3), ("tcp://10.0.0.1:8786", None)])
def test_local_addresses_name_a_number_of_workers(address, workers):
    got = parse_local(address)
    assert got == workers if address != "local" else got >= 1


@pytest.mark.parametrize("labels", [False, True])
def test_cluster_features_and_quarantine_equal_one_process(corrupt_world, dask_client, tmp_path, labels):
    from linerisk.pipeline.cli import main

    events = _duplicated_across_partitions(corrupt_world, tmp_path / "events.parquet")
    common = ["features", "--events", str(events), "--users", str(corrupt_world / "users.parquet"),
              "--as-of", "2024-03-01", "--as-of", "2024-04-01", *(["--labels", "--horizon-days", "30"] if labels else [])]
    assert main([*common, "--out", str(tmp_path / "one.parquet")]) == 0
    assert main([*common, "--out", str(tmp_path / "many.parquet"), "--chunk-users", "300",
                 "--scheduler", dask_client.scheduler.address]) == 0
    assert len(list((tmp_path / "many.parquet").glob("part-*.parquet"))) == 4

    def rows(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
        return frame.sort_values(keys, kind="stable", ignore_index=True)

    one, many = pd.read_parquet(tmp_path / "one.parquet"), pd.read_parquet(tmp_path / "many.parquet")
    assert len(one) > 1000 and (not labels or 0 < one["label"].sum())
    pd.testing.assert_frame_equal(rows(many, ["user_id", "as_of"]), rows(one, ["user_id", "as_of"]))
    q_one, q_many = (pd.read_parquet(quarantine_path_for(tmp_path / n)) for n in ("one.parquet", "many.parquet"))
    assert len(q_one) > 0
    pd.testing.assert_frame_equal(rows(q_many, ["event_id", "rule"]), rows(q_one, ["event_id", "rule"]))


def test_cluster_simulates_the_same_world_as_one_process(dask_client, tmp_path, monkeypatch):
    import linerisk.data.simulate as sim
    from linerisk.data.simulate import WorldParams
    from linerisk.pipeline.simulate_job import FILES, write_world

    monkeypatch.setattr(sim, "CHUNK_USERS", 150)  # chunks are cut where the run is driven, so 3 blocks here
    p = WorldParams(users=400, months=6, seed=9, oracle_users=40)
    one = write_world(p, tmp_path / "one", corrupt_rate=0.01, jobs=1, progress=False)
    many = write_world(p, tmp_path / "many", corrupt_rate=0.01, progress=False, runner=DaskRunner(dask_client))
    for name in (*FILES, "truth_corruption"):
        whole = pd.read_parquet(tmp_path / "one" / f"{name}.parquet")
        if name != "truth_corruption":
            assert len(list((tmp_path / "many" / f"{name}.parquet").glob("part-*.parquet"))) == 3
        pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "many" / f"{name}.parquet"), whole, check_dtype=True)
    assert many["rows"] == one["rows"] and many["restrictions_by_cause"] == one["restrictions_by_cause"]
    assert one["rows"]["truth_corruption"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["many", "one"]


def test_a_model_trained_on_the_cluster_scores_like_a_local_one_and_is_registered(mlflow_store, population_world,
                                                                                   dask_client):
    # the population world: a test part of ~14k rows, where AUC is measured to better than 0.005
    from sklearn.metrics import roc_auc_score

    from linerisk.models import registry
    from linerisk.models.train import TrainParams, split_out_of_time, train_model
    from linerisk.pipeline.cli import main
    from linerisk.pipeline.train_job import load_world_panel
    from tests.conftest import FAST

    panel, spec, _ = load_world_panel(population_world, 90)
    split = split_out_of_time(panel)
    names = [f["name"] for f in spec["features"]]
    model = train_model(split.train[names], split.train["label"], split.valid[names], split.valid["label"],
                        TrainParams(**FAST), spec)
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in FAST.items()]
    assert main(["train", "--data", str(population_world), *flags, "--chunk-users", "5000",
                 "--scheduler", dask_client.scheduler.address]) == 0
    package = registry.load_package("linerisk/1")
    test = split.test
    assert len(test) > 10_000 and 0 < test["label"].sum()
    auc_local = roc_auc_score(test["label"], model.predict_proba(test)[:, 1])
    auc_cluster = roc_auc_score(test["label"], package.scorer.probability(test))
    assert auc_local > 0.7 and abs(auc_cluster - auc_local) < 0.005
    assert package.spec_hash == spec["spec_hash"]


def test_an_interrupted_staged_run_keeps_the_old_output_and_a_commit_keeps_exactly_the_parts(tmp_path):
    from linerisk.pipeline.cluster import staged

    target = tmp_path / "scores.parquet"
    target.mkdir()
    (target / "part-00000.parquet").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with staged(target) as staging:
            (staging.path / "part-00000.parquet").write_text("new")
            raise KeyboardInterrupt
    assert [p.name for p in tmp_path.iterdir()] == ["scores.parquet"]
    assert (target / "part-00000.parquet").read_text() == "old"
    with staged(target) as staging:
        (staging.path / "part-00000.parquet").write_text("new")
        (staging.path / ".part-00001.parquet.x1y2.tmp").write_text("half")  # a killed attempt's temporary file
        with pytest.raises(RuntimeError, match="missing"):
            staging.commit(["part-00000.parquet", "part-00001.parquet"])
        staging.commit(["part-00000.parquet"])
    assert [p.name for p in tmp_path.iterdir()] == ["scores.parquet"]
    assert [(p.name, p.read_text()) for p in target.iterdir()] == [("part-00000.parquet", "new")]


def test_training_partitions_account_for_every_row_of_a_corrupt_world_as_one_process_does(corrupt_world, tmp_path):
    from linerisk.pipeline.io import EventSource, read_events, read_users
    from linerisk.pipeline.partitions import global_candidates, partitions
    from linerisk.pipeline.train_cluster import panel_partition, row_count

    events = _duplicated_across_partitions(corrupt_world, tmp_path / "events.parquet")
    users = read_users(corrupt_world / "users.parquet").sort_values("user_id", ignore_index=True)
    snapshots = [pd.Timestamp("2024-03-01", tz="UTC"), pd.Timestamp("2024-04-01", tz="UTC")]
    source = EventSource(events)
    candidates = global_candidates(source, users)
    built = [panel_partition(p, source, snapshots, 30) for p in partitions(users, 300, candidates)]
    total = row_count(candidates, [count for _, count in built])
    local = read_events(events, users)
    assert total.read == len(pd.read_parquet(events)) and total.n_quarantined == len(local.quarantined) > 0
    assert total.quarantined == local.account(0, 0).quarantined
    assert sum(len(panel) for panel, _ in built) > 1000
