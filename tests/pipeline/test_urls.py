"""Input and output as fsspec URLs (issue 14): `memory://` stands in for an object store (no atomic rename:
parts in place and a `_SUCCESS` marker last), `file://` for a URL on the local disk; every run equals the
plain-path run row for row, in one process and on a Dask cluster."""
from __future__ import annotations

import importlib.util
import json
import uuid
from pathlib import Path

import fsspec
import pandas as pd
import pyarrow.parquet as pq
import pytest

from linerisk.data.errors import InputError
from linerisk.data.simulate import WorldParams
from linerisk.features.compute import to_utc_timestamp
from linerisk.pipeline.cli import main
from linerisk.pipeline.cluster import DaskRunner, staged
from linerisk.pipeline.io import EventSource, quarantine_path_for, read_table, write_table
from linerisk.pipeline.location import SUCCESS, Url, location, open_read
from linerisk.pipeline.score_job import drift_path_for, score_events
from linerisk.pipeline.simulate_job import write_world

AS_OF = "2024-09-27"
MEMORY = fsspec.filesystem("memory")


@pytest.fixture
def bucket():
    """A fresh `memory://` prefix, removed afterwards."""
    root = f"memory://test-{uuid.uuid4().hex[:8]}"
    yield root
    MEMORY.rm(Url(root).path, recursive=True) if MEMORY.exists(Url(root).path) else None


def _put_world(world: Path, url: str, parts: int = 1) -> str:
    """The world's users and events under `url`; events as a dataset directory of `parts` part files
    (with its `_SUCCESS`) when parts > 1."""
    root = Url(url)
    MEMORY.put_file(str(world / "users.parquet"), (root / "users.parquet").path)
    if parts == 1:
        MEMORY.put_file(str(world / "events.parquet"), (root / "events.parquet").path)
        return url
    events = pq.read_table(world / "events.parquet")
    step = -(-events.num_rows // parts)
    for i in range(parts):
        with MEMORY.open((root / f"events.parquet/part-{i:05d}.parquet").path, "wb") as fh:
            pq.write_table(events.slice(i * step, step), fh)
    MEMORY.pipe_file((root / f"events.parquet/{SUCCESS}").path, b"")
    return url


def _score(events, users, out, runner=None, **kw):
    return score_events(location(events), location(users), to_utc_timestamp(AS_OF), "linerisk@champion",
                        location(out), chunk_users=700, progress=False, runner=runner, **kw)


def _same_outputs(url_out, plain_out: Path) -> None:
    pd.testing.assert_frame_equal(read_table(url_out, "scores"), pd.read_parquet(plain_out))
    pd.testing.assert_frame_equal(read_table(quarantine_path_for(url_out), "quarantine"),
                                  pd.read_parquet(quarantine_path_for(plain_out)))
    with open_read(drift_path_for(location(url_out))) as fh:
        assert json.load(fh) == json.loads(drift_path_for(plain_out).read_text())


def test_scores_read_from_and_written_to_memory_urls_equal_the_plain_path_run(store, small_world, tmp_path, bucket):
    plain = _score(small_world / "events.parquet", small_world / "users.parquet", tmp_path / "plain.parquet")
    _put_world(small_world, f"{bucket}/world", parts=3)
    run = _score(f"{bucket}/world/events.parquet", f"{bucket}/world/users.parquet", f"{bucket}/scores.parquet")
    assert (run.rows, run.users_scored, run.bands) == (plain.rows, plain.users_scored, plain.bands)
    _same_outputs(f"{bucket}/scores.parquet", tmp_path / "plain.parquet")
    # a glob over the part files reads the same rows (the users table: beside the globbed files by default)
    MEMORY.put_file(str(small_world / "users.parquet"), Url(f"{bucket}/world/events.parquet/users.parquet").path)
    glob = _score(f"{bucket}/world/events.parquet/part-*.parquet", f"{bucket}/world/users.parquet",
                  f"{bucket}/glob.parquet")
    assert glob.rows == plain.rows
    pd.testing.assert_frame_equal(read_table(f"{bucket}/glob.parquet"), pd.read_parquet(tmp_path / "plain.parquet"))


def test_the_cli_scores_file_urls_as_it_scores_plain_paths(store, small_world, tmp_path):
    args = ["score", "--as-of", AS_OF, "--chunk-users", "700"]
    assert main([*args, "--events", str(small_world / "events.parquet"), "--out", str(tmp_path / "plain.parquet")]) == 0
    assert main([*args, "--events", f"file://{small_world}/events.parquet",
                 "--out", f"file://{tmp_path}/url.parquet"]) == 0
    assert (tmp_path / "url.parquet").read_bytes() == (tmp_path / "plain.parquet").read_bytes()


def test_a_world_simulated_to_a_memory_url_has_the_plain_worlds_files_and_trains_from_it(tmp_path, bucket):
    params = WorldParams(users=300, months=6, seed=3, oracle_users=50)
    plain = write_world(params, tmp_path / "world", jobs=1, progress=False)
    remote = write_world(params, Url(f"{bucket}/world"), jobs=1, progress=False)
    assert remote["sha256"] == plain["sha256"] and remote["rows"] == plain["rows"]
    assert MEMORY.exists(Url(f"{bucket}/world/{SUCCESS}").path)
    for name in plain["sha256"]:
        assert MEMORY.cat_file(Url(f"{bucket}/world/{name}").path) == (tmp_path / "world" / name).read_bytes()
    # features from the remote world equal the plain world's, and land at a URL
    assert main(["features", "--events", f"{bucket}/world/events.parquet", "--as-of", "2024-05-01",
                 "--out", f"{bucket}/features.parquet"]) == 0
    assert main(["features", "--events", str(tmp_path / "world" / "events.parquet"), "--as-of", "2024-05-01",
                 "--out", str(tmp_path / "features.parquet")]) == 0
    pd.testing.assert_frame_equal(read_table(f"{bucket}/features.parquet"), pd.read_parquet(tmp_path / "features.parquet"))


def test_train_reads_a_remote_world_as_it_reads_the_plain_one(store, small_world, bucket):
    from linerisk.pipeline.train_job import load_world_panel
    from tests.conftest import FAST

    for f in small_world.iterdir():
        MEMORY.put_file(str(f), Url(f"{bucket}/world/{f.name}").path)
    MEMORY.pipe_file(Url(f"{bucket}/world/{SUCCESS}").path, b"")
    remote, plain = load_world_panel(location(f"{bucket}/world"), 90), load_world_panel(small_world, 90)
    pd.testing.assert_frame_equal(remote[0], plain[0])
    # an external feature table at a URL trains too (random split: this small panel has two snapshots)
    write_table(plain[0].reset_index(drop=True), Url(f"{bucket}/panel.parquet"))
    flags = ["--no-register", *(f"--{k.replace('_', '-')}={v}" for k, v in FAST.items())]
    assert main(["train", "--features", f"{bucket}/panel.parquet", "--label", "label", "--drop", "as_of",
                 "--id-col", "user_id", *flags, "--out", f"{bucket}/report.html"]) == 0
    assert b"<html" in MEMORY.cat_file(Url(f"{bucket}/report.html").path).lower()
    MEMORY.rm_file(Url(f"{bucket}/world/{SUCCESS}").path)
    with pytest.raises(InputError, match="_SUCCESS"):  # an unfinished world is refused
        load_world_panel(location(f"{bucket}/world"), 90)


def test_a_remote_dataset_without_its_success_marker_is_refused(small_world, bucket):
    _put_world(small_world, f"{bucket}/world", parts=2)
    assert EventSource(f"{bucket}/world/events.parquet").n_rows == pq.read_metadata(small_world / "events.parquet").num_rows
    MEMORY.rm_file(Url(f"{bucket}/world/events.parquet/{SUCCESS}").path)
    with pytest.raises(InputError, match="_SUCCESS"):
        EventSource(f"{bucket}/world/events.parquet")


def test_an_interrupted_remote_dataset_write_leaves_no_readable_dataset(bucket):
    target = Url(f"{bucket}/out.parquet")
    frame = pd.DataFrame({"user_id": [1, 2], "x": [0.5, 1.5]})
    with staged(target) as staging:
        write_table(frame, staging.path / "part-00000.parquet")
        staging.commit(["part-00000.parquet"])
    pd.testing.assert_frame_equal(read_table(target), frame)
    with pytest.raises(RuntimeError), staged(target) as staging:  # a re-run dies after its first part
        write_table(frame.iloc[:1], staging.path / "part-00000.parquet")
        assert not (target / SUCCESS).exists()  # the old marker went first, before anything was rewritten
        raise RuntimeError("killed")
    assert not target.exists()  # nothing half-written is left to read


@pytest.mark.skipif(importlib.util.find_spec("s3fs") is not None, reason="s3fs is installed here")
def test_an_s3_url_without_s3fs_is_one_clear_line(capsys):
    code = main(["score", "--events", "s3://bucket/events.parquet", "--as-of", AS_OF, "--out", "scores.parquet"])
    err = capsys.readouterr().err
    assert code == 2 and "s3fs" in err and "Traceback" not in err


def test_cluster_scores_at_file_urls_equal_the_plain_path_run(store, small_world, dask_client, tmp_path):
    _score(small_world / "events.parquet", small_world / "users.parquet", tmp_path / "plain.parquet")
    run = _score(f"file://{small_world}/events.parquet", f"file://{small_world}/users.parquet",
                 f"file://{tmp_path}/many.parquet", DaskRunner(dask_client))
    assert run.partitions > 1 and (tmp_path / "many.parquet").is_dir()
    _same_outputs(tmp_path / "many.parquet", tmp_path / "plain.parquet")


def test_cluster_parts_at_an_object_store_url_get_their_marker_last_and_equal_the_plain_run(store, small_world,
                                                                                            tmp_path, bucket):
    """Dask workers as threads of this process share its `memory://`: the object-store path on a cluster."""
    from dask.distributed import Client, LocalCluster

    _score(small_world / "events.parquet", small_world / "users.parquet", tmp_path / "plain.parquet")
    _put_world(small_world, f"{bucket}/world", parts=2)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0") as cluster, \
            Client(cluster) as client:
        run = _score(f"{bucket}/world/events.parquet", f"{bucket}/world/users.parquet", f"{bucket}/many.parquet",
                     DaskRunner(client))
    names = sorted(p.rsplit("/", 1)[1] for p in MEMORY.find(Url(f"{bucket}/many.parquet").path))
    assert names == sorted([SUCCESS, *(f"part-{i:05d}.parquet" for i in range(run.partitions))])
    _same_outputs(f"{bucket}/many.parquet", tmp_path / "plain.parquet")
