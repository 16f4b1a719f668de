"""`linerisk demo`: the whole path on the embedded defaults, then where every result is.

Simulates a training world and a second world with the next seed (which the model never sees),
trains and registers the restriction model (with explanation fidelity measured on the second
world) and the restoration model (curve, red line and "why it was restricted" measured there),
promotes both to @champion, scores the second world at its end date (both populations) and
explains its riskiest active user and a restricted one. Each step is the same `linerisk` subcommand a user would type; this module only wires them.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shlex
import shutil
import sys
from pathlib import Path

import click
import pandas as pd

from linerisk.data.simulate import WorldParams
from linerisk.models.report import CARD_FILE
from linerisk.pipeline.config import build, load_toml
from linerisk.pipeline.io import linerisk_home, world_parameters


def _run(argv: list[str]) -> None:
    """Run one `linerisk` subcommand in-process; stop the demo if it fails."""
    from linerisk.pipeline.cli import main as cli_main

    click.secho(f"\n$ linerisk {' '.join(argv)}", bold=True)
    status = cli_main(argv)
    if status != 0:
        raise click.ClickException(f"`linerisk {argv[0]}` exited with status {status}")


def _world(out: Path, p: WorldParams, config_path: str | None) -> None:
    """Simulate into `out` unless a world with the same parameters is already there (same parameters, same files)."""
    if world_parameters(out) == json.loads(json.dumps(dataclasses.asdict(p))):
        click.echo(f"\nreusing {out} (same parameters give the same files)")
        return
    _run(["simulate", "--users", str(p.users), "--months", str(p.months), "--seed", str(p.seed), "--out", str(out)]
         + (["--config", str(config_path)] if config_path else []))


def _end_date(world: Path) -> str:
    """The day after the world's last event: scoring then sees its whole history."""
    events = pd.read_parquet(world / "events.parquet", columns=["event_time"])
    return (events["event_time"].max().normalize() + pd.Timedelta(days=1)).strftime("%Y-%m-%d")


@click.command("demo")
@click.option("--users", type=click.IntRange(min=100), help="Users per world [config: simulate.users].")
@click.option("--months", type=click.IntRange(min=12), help="Months per world [config: simulate.months].")
@click.option("--seed", type=int, help="Seed of the training world; the second world uses seed + 1.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML file overriding the defaults.")
def command(users, months, seed, config_path) -> None:
    """Simulate, train, register, promote, score and explain on the embedded defaults."""
    p = build(WorldParams, load_toml(config_path)["simulate"], "simulate", users=users, months=months, seed=seed)
    demo = linerisk_home() / "demo"
    train_world, new_world = demo / f"world_seed{p.seed}", demo / f"world_seed{p.seed + 1}"
    _world(train_world, p, config_path)
    _world(new_world, dataclasses.replace(p, seed=p.seed + 1), config_path)

    report = demo / "report.html"
    train_args = ["train", "--data", str(train_world), "--fidelity-data", str(new_world), "--out", str(report)]
    if config_path:
        train_args += ["--config", str(config_path)]
    _run(train_args)

    from linerisk.models import registry

    name, version, _ = registry.resolve("linerisk@challenger")
    _run(["registry", "promote", version, "--name", name, "--force"])

    # its own directory: each report keeps its model card (model_card.md beside it, which the report links to)
    restore_report = demo / "restoration" / "report.html"
    _run(["train", "--target", "restore", "--data", str(train_world), "--fidelity-data", str(new_world),
          "--restriction-model", f"{name}@champion", "--out", str(restore_report)]
         + (["--config", str(config_path)] if config_path else []))
    restore_name, restore_version, _ = registry.resolve("linerisk-restore@challenger")
    _run(["registry", "promote", restore_version, "--name", restore_name, "--force"])

    as_of = _end_date(new_world)
    scores = demo / "scores.parquet"
    events = str(new_world / "events.parquet")
    _run(["score", "--model", f"{name}@champion", "--restore-model", f"{restore_name}@champion", "--events", events,
          "--as-of", as_of, "--out", str(scores)])
    scored = pd.read_parquet(scores, columns=["user_id", "line_state", "probability", "restore_probability",
                                              "red_line"])
    riskiest = scored.nlargest(1, "probability")
    # a restricted line with a way back: the median restoration chance among those not past the red line
    hopeful = scored[(scored["line_state"] == "restricted") & ~scored["red_line"]].sort_values("restore_probability")
    for user in (riskiest["user_id"].iloc[0], *hopeful["user_id"].iloc[[len(hopeful) // 2]][: len(hopeful)]):
        _run(["explain", "--model", f"{name}@champion", "--restore-model", f"{restore_name}@champion",
              "--events", events, "--as-of", as_of, "--user", str(user)])

    click.secho("\nWhere the results are", bold=True)
    for what, where in (("training world", train_world), ("unseen world (seed + 1)", new_world),
                        ("training report", report), ("model card", report.with_name(CARD_FILE)),
                        ("restoration report", restore_report),
                        ("restoration model card", restore_report.with_name(CARD_FILE)), ("scores", scores),
                        ("MLflow store", registry.tracking_uri()),
                        ("registered model", f"models:/{name}@champion (version {version})"),
                        ("restoration model", f"models:/{restore_name}@champion (version {restore_version})")):
        click.echo(f"  {what:<24} {where}")
    click.echo(f"\nbrowse runs: mlflow ui --backend-store-uri {registry.tracking_uri()}")
    click.echo(f"serve:       {serve_command(name)}")


def serve_command(name: str) -> str:
    """The shell line that serves the demo's champion, runnable as printed from here: this
    environment's `linerisk` (no activated virtualenv needed) on the demo's store."""
    from linerisk.models import registry

    exe = Path(sys.executable).parent / "linerisk"
    if not exe.exists():
        exe = Path(shutil.which("linerisk") or "linerisk")
    shown = os.path.relpath(exe)
    if shown.startswith(".."):
        shown = str(exe)
    elif os.sep not in shown:
        shown = os.path.join(".", shown)  # a bare name would be looked up on PATH
    return (f"MLFLOW_TRACKING_URI={shlex.quote(registry.tracking_uri())} {shlex.quote(shown)} serve "
            f"--model {name}@champion --port 5001")


def main(argv: list[str] | None = None) -> int:
    """Run `linerisk demo` in-process; the exit status."""
    from linerisk.pipeline.cli import main as cli_main
    return cli_main(["demo", *(argv if argv is not None else sys.argv[1:])])
