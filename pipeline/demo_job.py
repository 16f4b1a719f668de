"""`linerisk demo`: the whole path on the embedded defaults, then where every result is.

Simulates a training world and a second world with the next seed (which the model never sees),
trains and registers the model (with explanation fidelity measured on the second world),
promotes it to @champion, scores the second world at its end date and explains its riskiest
user. Each step is the same `linerisk` subcommand a user would type; this module only wires them.
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
from linerisk.pipeline.config import build, load_toml
from linerisk.pipeline.io import linerisk_home


def _run(argv: list[str]) -> None:
    """Run one `linerisk` subcommand in-process; stop the demo if it fails."""
    from linerisk.pipeline.cli import main as cli_main

    click.secho(f"\n$ linerisk {' '.join(argv)}", bold=True)
    status = cli_main(argv)
    if status != 0:
        raise click.ClickException(f"`linerisk {argv[0]}` exited with status {status}")


def _world(out: Path, p: WorldParams, config_path: str | None) -> None:
    """Simulate into `out` unless a world with the same parameters is already there (same parameters, same files)."""
    manifest = out / "manifest.json"
    if manifest.exists():
        recorded = json.loads(manifest.read_text("utf-8")).get("parameters")
        if recorded == json.loads(json.dumps(dataclasses.asdict(p))):
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

    as_of = _end_date(new_world)
    scores = demo / "scores.parquet"
    _run(["score", "--model", f"{name}@champion", "--events", str(new_world / "events.parquet"),
          "--as-of", as_of, "--out", str(scores)])
    riskiest = pd.read_parquet(scores, columns=["user_id", "probability"]).nlargest(1, "probability")
    user = str(riskiest["user_id"].iloc[0])
    _run(["explain", "--model", f"{name}@champion", "--events", str(new_world / "events.parquet"),
          "--as-of", as_of, "--user", user])

    click.secho("\nWhere the results are", bold=True)
    for what, where in (("training world", train_world), ("unseen world (seed + 1)", new_world),
                        ("training report", report), ("scores", scores),
                        ("MLflow store", registry.tracking_uri()),
                        ("registered model", f"models:/{name}@champion (version {version})")):
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
