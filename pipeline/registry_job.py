"""`linerisk registry list | show REF | promote VERSION | resolve REF`: the model registry from the terminal.

REF is `name@alias`, `name/version` or `models:/...` of either.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from linerisk.data.schema import InputError
from linerisk.models.report import markdown_table
from linerisk.pipeline.io import read_table


def _registry():
    from linerisk.models import registry  # imports mlflow: only when a subcommand runs
    return registry


def _lookup(fn, *args, **kwargs):
    """Run a registry function; a missing model, bad reference or unreachable registry is one line, exit 2."""
    try:
        return fn(*args, **kwargs)
    except (LookupError, ValueError, _registry().RegistryError) as exc:
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
@click.option("--force", is_flag=True, help="Promote even if the challenger's AUC is worse (tagged `forced`).")
@click.option("--data", "data_path", type=click.Path(path_type=Path),
              help="Labelled feature table (Parquet/CSV with the models' columns and `label`) to compare on "
                   "[default: the newer of the two versions' test parts].")
def promote_cmd(version: str, name: str, force: bool, data_path: Path | None) -> None:
    """Move @champion to VERSION if its AUC is not worse than the champion's on data neither trained on."""
    ref_name, ver, _ = _lookup(_registry().resolve, version if not version.isdigit() else f"{name}/{version}")
    data = read_table(data_path, "--data") if data_path else None
    decision = _lookup(_registry().promote, ref_name, ver, force, data, str(data_path or ""))
    click.echo(decision.summary())
    if not decision.promoted:
        raise click.exceptions.Exit(1)


def main(argv: list[str] | None = None) -> int:
    """Run `linerisk registry ...` in-process; the exit status (1 when a promotion is refused)."""
    from linerisk.pipeline.cli import main as cli_main
    return cli_main(["registry", *(argv if argv is not None else sys.argv[1:])])
