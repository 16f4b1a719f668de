"""`linerisk validate-plans`: a simulated world's plans checked against its truth (models/plan_check.py).

Reads the world's manifest (its recorded parameters and seed), its users and events, loads the models
(sha256-checked), and writes the per-user figures and the summary as one JSON file and the plan-validity
figure beside it (the same name, .png), atomically.
"""
from __future__ import annotations

import sys
from pathlib import Path

import click
from tqdm import tqdm

from linerisk import api
from linerisk.data.errors import InputError
from linerisk.data.schema import describe_quarantine
from linerisk.data.simulate import WorldParams
from linerisk.pipeline.config import build
from linerisk.pipeline.io import (load_model_package, read_events, read_users, world_parameters, write_bytes,
                                  write_json)


def world_params(world: Path) -> WorldParams:
    """The parameters a world directory was simulated with (its manifest); InputError if it is not a simulated world."""
    recorded = world_parameters(world)
    if recorded is None:
        raise InputError(f"--data {world}: not a simulated world (no manifest.json from `linerisk simulate`); "
                         "plans can only be checked where the simulator knows the truth")
    return build(WorldParams, recorded, "manifest.parameters")


@click.command("validate-plans")
@click.option("--data", "world", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="A world directory written by `linerisk simulate`.")
@click.option("--model", "model_ref", default="linerisk@champion", show_default=True, help="Restriction model.")
@click.option("--restore-model", "restore_ref", default="linerisk-restore@champion", show_default=True,
              help="Restoration model (its plans for restricted lines); 'none' to check restriction plans only.")
@click.option("--as-of", "as_of", required=True, help="Date (midnight UTC) inside the world.")
@click.option("--users", "n_users", type=click.IntRange(min=1), default=500, show_default=True,
              help="Users sampled per kind of plan.")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling and common-random-number seed.")
@click.option("--futures", type=click.IntRange(min=1), default=16, show_default=True,
              help="Simulated futures per user and arm.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="JSON file to write.")
def command(world, model_ref, restore_ref, as_of, n_users, seed, futures, out) -> None:
    """Check plans against the true world: projected and true risk with and without each plan."""
    from linerisk.features.compute import to_utc_timestamp
    import matplotlib
    matplotlib.use("Agg")
    from linerisk.models.evaluate import figure_bytes
    from linerisk.models.plan_check import plot_plans, summary_table, world_day

    try:
        ts = to_utc_timestamp(as_of)
    except ValueError as exc:
        raise InputError(f"--as-of: {exc}") from None
    p = world_params(world)
    world_day(p, ts)  # before any model or data is read
    package = load_model_package(model_ref, expect="restrict")
    restore = None if restore_ref.lower() == "none" else load_model_package(restore_ref, expect="restore")
    users = read_users(world / "users.parquet")
    events = read_events(world / "events.parquet", users)
    if len(events.quarantined):
        click.echo(f"left out {describe_quarantine(events.quarantined)}", err=True)
    with tqdm(unit="day", desc="simulate", disable=None) as bar:
        result = api.validate_plans(events, users, p, ts, package, restore_model=restore, n_users=n_users, seed=seed,
                                    futures=futures, on_day=lambda _: bar.update())
    result["world"] = str(world)
    result["model"] = {"name": package.name, "version": package.version}
    if restore is not None:
        result["restore_model"] = {"name": restore.name, "version": restore.version}
    write_json(result, out)
    figure = write_bytes(figure_bytes(plot_plans(result)), out.with_suffix(".png"))
    click.echo(summary_table(result))
    s = result["summary"]
    red = s["projected_vs_true_reduction"]
    click.echo(f"{s['n_plans']} restriction plans: {100 * s['share_lowering_true_risk']:.0f}% lower the true risk, "
               f"{100 * s['share_under_threshold']:.0f}% end under the threshold; projected/true reduction "
               f"{red['ratio'] if red['ratio'] is None else round(red['ratio'], 2)} -> {out} (figure: {figure})")


def main(argv: list[str] | None = None) -> int:
    """Run `linerisk validate-plans` in-process; the exit status."""
    from linerisk.pipeline.cli import main as cli_main
    return cli_main(["validate-plans", *(argv if argv is not None else sys.argv[1:])])
