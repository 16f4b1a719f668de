"""`linerisk registry list | show REF | promote VERSION | resolve REF`: the model registry from the terminal.

REF is `name@alias`, `name/version` or `models:/...` of either.
"""
from __future__ import annotations

import json
import sys

import click

from linerisk.data.schema import InputError
from linerisk.models.evaluate import markdown_table


def _registry():
    from linerisk.models import registry  # imports mlflow: only when a subcommand runs
    return registry


def _lookup(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except (LookupError, ValueError) as exc:
        raise InputError(str(exc).strip("'\"")) from None


@click.group("registry")
def command() -> None:
    """Registered linerisk models: list versions, show one, promote to @champion, resolve a reference."""


@command.command("list")
@click.option("--name", default="linerisk", show_default=True)
def list_cmd(name: str) -> None:
    """Versions with aliases, test AUC and promotion decisions."""
    table = _lookup(_registry().list_versions, name)
    click.echo(markdown_table(table.set_index("version")) if len(table) else f"{name}: no versions")


@command.command("show")
@click.argument("ref")
def show_cmd(ref: str) -> None:
    """Everything about one version (JSON)."""
    click.echo(json.dumps(_lookup(_registry().show, ref), indent=2, sort_keys=True, default=str))


@command.command("resolve")
@click.argument("ref")
def resolve_cmd(ref: str) -> None:
    """Print `name version models:/name/version` for a reference."""
    name, version, uri = _lookup(_registry().resolve, ref)
    click.echo(f"{name} {version} {uri}")


@command.command("promote")
@click.argument("version")
@click.option("--name", default="linerisk", show_default=True)
@click.option("--force", is_flag=True, help="Promote even if the challenger's test AUC is worse.")
def promote_cmd(version: str, name: str, force: bool) -> None:
    """Move @champion to VERSION if its test AUC is not worse than the champion's on VERSION's test data."""
    ref_name, ver, _ = _lookup(_registry().resolve, version if not version.isdigit() else f"{name}/{version}")
    decision = _lookup(_registry().promote, ref_name, ver, force)
    click.echo(decision.summary())
    if not decision.promoted:
        raise click.exceptions.Exit(1)


def main(argv: list[str] | None = None) -> int:
    """Run `linerisk registry ...` in-process; the exit status (1 when a promotion is refused)."""
    from linerisk.pipeline.cli import main as cli_main
    return cli_main(["registry", *(argv if argv is not None else sys.argv[1:])])
