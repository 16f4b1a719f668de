"""`linerisk train --scheduler`: the labelled panel built per partition of users on Dask workers,
LightGBM grown there through lightgbm.dask, evaluated and registered like a local run.

The panel of each partition is `features_frame(..., labels=True)` on the partition's events (the
features job's function); the out-of-time split is decided once from the snapshot dates
(`split_out_of_time` on the dates alone) and applied per partition. The training part stays on
the workers; the validation and test parts (a snapshot each) and a sample of the training part
come to this process for choosing the rounds, calibration, the baseline and the report.
"""
from __future__ import annotations

import logging
from operator import itemgetter

import numpy as np
import pandas as pd

from linerisk.data.schema import InputError, RowCount
from linerisk.features import spec as feature_spec
from linerisk.models.experiment import TrainResult, run_training
from linerisk.models.train import Split, TrainParams, registry_spec, split_out_of_time, utc_naive
from linerisk.models.train_dask import choose_rounds, fit_on_cluster
from linerisk.pipeline.cluster import DaskRunner
from linerisk.pipeline.features_job import features_frame
from linerisk.pipeline.io import EventSource, read_table, read_users, world_dir
from linerisk.pipeline.location import Location
from linerisk.pipeline.partitions import Candidates, Partition, global_candidates, partitions, read_partition


log = logging.getLogger(__name__)


def panel_partition(part: Partition, source: EventSource, snapshots: list[pd.Timestamp], horizon_days: int,
                    tz: str = "UTC") -> tuple[pd.DataFrame, RowCount]:
    """The labelled panel of one partition's users and where its event rows went (on a worker)."""
    events, checked = read_partition(part, source, tz)
    panel, consumed = features_frame(events, part.users, snapshots, True, horizon_days, tz)
    return panel.reset_index(), checked.account(*consumed)


def row_count(candidates: Candidates, parts: list[RowCount]) -> RowCount:
    """Every event row read, over the global duplicate candidates and the partitions; stops the run when a row
    is unaccounted for (a candidate row is read globally, used by its user's partition)."""
    total = sum(parts, start=candidates.rows())
    log.info(total.summary())
    return total.check()


def rows_at(panel: pd.DataFrame, snapshots: list[pd.Timestamp]) -> pd.DataFrame:
    """The panel's rows at the given snapshot dates."""
    return panel.loc[utc_naive(panel["as_of"]).isin(utc_naive(pd.Series(snapshots))).to_numpy()]


def sample_rows(panel: pd.DataFrame, fraction: float, seed: int, index: int) -> pd.DataFrame:
    """A reproducible random `fraction` of a partition's rows (its own stream per partition)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))
    return panel.loc[rng.random(len(panel)) < fraction]


def split_dates(snapshots: list[pd.Timestamp], params: TrainParams) -> Split:
    """The out-of-time split of the snapshot dates alone (each part: a frame of its as_of dates)."""
    try:
        return split_out_of_time(pd.DataFrame({"as_of": snapshots}), params.valid_snapshots, params.test_snapshots,
                                 params.horizon_days)
    except ValueError as exc:
        raise InputError(str(exc)) from None


def train_on_cluster(data_dir: Location, params: TrainParams, runner: DaskRunner, chunk_users: int, sample_size: int,
                     fidelity=None, tz: str = "UTC") -> TrainResult:
    """Panel per partition on the workers, the split applied per partition, rounds chosen on a sample,
    lightgbm.dask on the whole training part; then `run_training`'s evaluation and report."""
    import dask.dataframe as dd

    data_dir = world_dir(data_dir)
    client = runner.client
    truth_path = data_dir / "truth_snapshots.parquet"
    if not truth_path.exists():
        raise InputError(f"{data_dir}: training on a cluster takes its snapshot dates from truth_snapshots.parquet")
    truth = read_table(truth_path, "truth snapshots")
    snapshots = [pd.Timestamp(t) for t in sorted(pd.to_datetime(truth["as_of"], utc=True).unique())]
    dates = split_dates(snapshots, params)
    train_dates, valid_dates, test_dates = (list(part["as_of"]) for part in dates)
    users = read_users(data_dir / "users.parquet").sort_values("user_id", kind="stable", ignore_index=True)
    source = EventSource(data_dir / "events.parquet")
    candidates = global_candidates(source, users, runner, tz)
    parts = list(partitions(users, chunk_users, candidates))
    used = sorted({*train_dates, *valid_dates, *test_dates})
    built = client.map(panel_partition, parts, source=source, snapshots=used, horizon_days=params.horizon_days,
                       tz=tz, pure=False)
    row_count(candidates, client.gather(client.map(itemgetter(1), built, pure=False)))
    panels = client.map(itemgetter(0), built, pure=False)
    del built
    train = client.map(rows_at, panels, snapshots=train_dates, pure=False)
    valid = pd.concat(client.gather(client.map(rows_at, panels, snapshots=valid_dates, pure=False)), ignore_index=True)
    test = pd.concat(client.gather(client.map(rows_at, panels, snapshots=test_dates, pure=False)), ignore_index=True)
    del panels
    n_train = sum(client.gather(client.map(len, train, pure=False)))
    fraction = min(1.0, sample_size / max(n_train, 1))
    sample = pd.concat(client.gather(client.map(sample_rows, train, [fraction] * len(train), [params.seed] * len(train),
                                                range(len(train)), pure=False)), ignore_index=True)
    spec = registry_spec("restrict")
    rounds = choose_rounds(sample, valid, params, spec)
    train_frame = dd.from_delayed(train, meta=valid.iloc[:0], verify_meta=False)

    def fit(split: Split):
        return fit_on_cluster(client, train_frame, split.valid, rounds, params, spec)

    result = run_training(None, spec, params, truth, source=f"{data_dir} (Dask, {n_train:,} training rows, "
                          f"{rounds} rounds chosen on a {len(sample):,}-row sample)",
                          fidelity=fidelity, split=Split(sample, valid, test), fit=fit)
    return result
