"""`linerisk train`: panel -> out-of-time split -> calibrated LightGBM + baseline (+ oracle) -> report -> MLflow.

Argument parsing, reading the inputs and printing only: the run is `linerisk.train` and
`linerisk.register` (models/experiment.py, models/registry.py).
"""
from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Any

import click
import pandas as pd

from linerisk import api
from linerisk.data.schema import InputError
from linerisk.models.experiment import (TRUTH_FILE, FidelityWorld, TrainResult,
                                        snapshot_dates, training_panel, world_panel)
from linerisk.models.report import CARD_FILE, markdown_table
from linerisk.models.train import TrainParams, registry_spec
from linerisk.pipeline.cluster import runner_for, scheduler_option
from linerisk.pipeline.config import build, load_toml, timezone_option
from linerisk.pipeline.io import linerisk_home, read_events, read_table, read_users, world_dir, write_text
from linerisk.pipeline.location import LOCATION


def load_params(config: str | Path | None, overrides: dict[str, Any]) -> TrainParams:
    """Defaults, then the `[train]` table of the embedded defaults and of `--config FILE`, then flags (None = not given)."""
    section = load_toml(config).get("train", {})
    try:
        return build(TrainParams, section, **overrides)
    except (ValueError, TypeError) as exc:
        raise InputError(f"training parameters: {exc}") from None


def load_world_panel(data_dir: Path, horizon_days: int, tz: str = "UTC", target: str = "restrict"
                     ) -> tuple[pd.DataFrame, dict[str, Any], pd.DataFrame | None]:
    """Panel, spec and truth snapshots of `target` from a `linerisk simulate` directory, every event row
    accounted for; naive times and day windows in `tz`."""
    data_dir = world_dir(data_dir)
    users = read_users(data_dir / "users.parquet")
    validated = read_events(data_dir / "events.parquet", users, tz)
    truth_path = data_dir / TRUTH_FILE[target]
    truth = read_table(truth_path, "truth snapshots") if truth_path.exists() else None
    snapshots = snapshot_dates(validated.good, truth, horizon_days, tz)
    panel = world_panel(validated.good, users, snapshots, horizon_days, what=str(data_dir), tz=tz, read=validated,
                        target=target)
    return panel, registry_spec(target, horizon_days), truth


def load_external(path: Path, label: str, time_col: str | None, drop: tuple[str, ...] = (),
                  id_col: str | None = None, allow: tuple[str, ...] = ()) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A feature table from Parquet/CSV as a training panel and its spec (see experiment.training_panel)."""
    return training_panel(read_table(path, "features"), label, time_col, drop, id_col, allow, what=f"features {path}")


def load_fidelity_world(data_dir: Path, horizon_days: int, tz: str = "UTC", target: str = "restrict"
                        ) -> FidelityWorld:
    """Panel at the world's snapshot dates plus the target's truth snapshots and truth_restrictions (both required)."""
    data_dir = world_dir(data_dir)
    for name in (TRUTH_FILE[target], "truth_restrictions.parquet"):
        if not (data_dir / name).exists():
            raise InputError(f"--fidelity-data {data_dir}: no {name} (a directory written by `linerisk simulate`)")
    panel, _, truth = load_world_panel(data_dir, horizon_days, tz, target)
    world = FidelityWorld(panel, truth, read_table(data_dir / "truth_restrictions.parquet", "truth restrictions"),
                          str(data_dir))
    if target == "restore":
        world.users = read_users(data_dir / "users.parquet")
        world.events = read_events(data_dir / "events.parquet", world.users, tz).good
    return world


def _print_summary(result: TrainResult) -> None:
    click.echo(markdown_table(result.metrics))
    if result.run_id:
        click.echo(f"\nMLflow run id: {result.run_id}")
        click.echo(f"registered model: {result.name} version {result.version} (alias @challenger)")
    if result.report_path:
        click.echo(f"report: {result.report_path}")
        click.echo(f"model card: {result.report_path.with_name(CARD_FILE)}")


@click.command("train")
@click.option("--data", "data_dir", type=LOCATION,
              help="Directory written by `linerisk simulate` (a path or an fsspec URL).")
@click.option("--features", "features_path", type=LOCATION,
              help="External feature table (Parquet file, dataset directory or CSV; a path or an fsspec URL).")
@click.option("--label", default=None, help="Label column of the external table (0/1).")
@click.option("--time-col", default=None, help="Snapshot-time column of the external table (else random split).")
@click.option("--drop", multiple=True, help="External-table columns that are not features (repeatable).")
@click.option("--id-col", default=None, help="Id column of the external table, never a feature; a random split "
              "keeps each id on one side [default: user_id when present].")
@click.option("--allow", multiple=True, help="Keep a column flagged as identifying rows or leaking the label (repeatable).")
@click.option("--config", type=click.Path(path_type=Path), help="TOML file with a [train] table.")
@timezone_option
@click.option("--learning-rate", type=float)
@click.option("--num-leaves", type=int)
@click.option("--max-depth", type=int)
@click.option("--n-estimators", type=int)
@click.option("--early-stopping-rounds", type=int)
@click.option("--min-child-samples", type=int)
@click.option("--seed", type=int)
@click.option("--calibration", type=click.Choice(["auto", "isotonic", "sigmoid"]))
@click.option("--valid-snapshots", type=int)
@click.option("--test-snapshots", type=int)
@click.option("--horizon-days", type=int)
@click.option("--num-threads", type=int, help="LightGBM threads (fixed for determinism) [default: 2].")
@click.option("--log-every", type=int, help="Print validation loss every N boosting rounds (0 = quiet).")
@click.option("--target", type=click.Choice(tuple(TRUTH_FILE)), default="restrict", show_default=True,
              help="restrict: P(an active line is restricted within the horizon); restore: P(a restricted line is "
                   "restored within it) and the curve to a year (needs --data).")
@click.option("--name", default=None, help="Registered model name [default: linerisk, or linerisk-restore].")
@click.option("--restriction-model", default=None,
              help="With --target restore and --fidelity-data: the registered restriction model whose reasons on the "
                   "day of each restriction are scored against the unseen world's true causes.")
@click.option("--out", type=LOCATION,
              help="Report path or fsspec URL (default $LINERISK_HOME/reports/<run_id>/report.html).")
@click.option("--no-register", is_flag=True, help="Train and report only; log nothing to MLflow.")
@click.option("--keep-user-ids", is_flag=True,
              help="Store raw user ids in the run's test part [default: keyed pseudonyms].")
@click.option("--fidelity-data", "fidelity_dir", type=LOCATION,
              help="A second `linerisk simulate` world (another seed): measure reason-code fidelity on it.")
@click.option("--chunk-users", default=100_000, show_default=True, type=click.IntRange(min=1),
              help="With --scheduler: users per partition of the panel.")
@click.option("--sample-rows", default=200_000, show_default=True, type=click.IntRange(min=1),
              help="With --scheduler: training rows sampled to choose the boosting rounds (early stopping) "
                   "and to fit the baseline.")
@scheduler_option
def command(data_dir, features_path, label, time_col, drop, id_col, allow, config, tz, target, name, restriction_model,
            out, no_register, fidelity_dir, keep_user_ids, chunk_users, sample_rows, scheduler, **flags) -> TrainResult:
    """Train the calibrated LightGBM model, evaluate it against a baseline (and the oracle), register it."""
    if bool(data_dir) == bool(features_path):
        raise click.UsageError("give exactly one of --data DIR or --features PATH")
    if features_path and not label:
        raise click.UsageError("--features needs --label COL")
    params = load_params(config, flags)
    import matplotlib
    matplotlib.use("Agg")  # the report is drawn off-screen, also where a display exists
    if target == "restore" and not data_dir:
        raise click.UsageError("--target restore needs --data (the restoration features come from the spec)")
    if fidelity_dir and not data_dir:
        raise click.UsageError("--fidelity-data needs --data (reason families come from the feature spec)")
    if scheduler and not data_dir:
        raise click.UsageError("--scheduler trains on a `linerisk simulate` directory (--data)")
    if scheduler and target == "restore":
        raise click.UsageError("--scheduler trains the restriction model only (--target restrict)")
    if data_dir and scheduler:
        from linerisk.pipeline.train_cluster import train_on_cluster

        fidelity = load_fidelity_world(fidelity_dir, params.horizon_days, tz) if fidelity_dir else None
        with runner_for(scheduler) as runner:
            result = train_on_cluster(data_dir, params, runner, chunk_users, sample_rows, fidelity, tz)
    elif data_dir:
        panel, _, truth = load_world_panel(data_dir, params.horizon_days, tz, target)
        fidelity = load_fidelity_world(fidelity_dir, params.horizon_days, tz, target) if fidelity_dir else None
        result = api.train(panel, truth=truth, fidelity=fidelity, params=params, source=str(data_dir), target=target,
                           restriction_model=restriction_model)
    else:
        result = api.train(read_table(features_path, "features"), params=params, label=label, time_col=time_col,
                           drop=tuple(drop), id_col=id_col, allow=tuple(allow), source=str(features_path))
    if not no_register:
        from linerisk.models import registry  # imports mlflow: only when registering

        click.echo(f"[{dt.datetime.now():%H:%M:%S}] logging to MLflow at {registry.tracking_uri()}", err=True)
        api.register(result, name, keep_user_ids=keep_user_ids)
    stamp = result.run_id or f"local-{dt.datetime.now():%Y%m%d-%H%M%S}"
    result.report_path = write_text(result.report_html, out or linerisk_home() / "reports" / stamp / "report.html")
    write_text(result.model_card(), result.report_path.with_name(CARD_FILE))  # the report links to it
    _print_summary(result)
    return result


def main(argv: list[str] | None = None) -> int:
    """Run `linerisk train` in-process; the exit status (tests call this)."""
    from linerisk.pipeline.cli import main as cli_main
    return cli_main(["train", *(argv if argv is not None else sys.argv[1:])])
