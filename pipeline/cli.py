"""The `linerisk` command: a click group whose subcommands live in their own job modules.

Bad input never shows a traceback: an `InputError` prints one line and exits with status 2.
"""
from __future__ import annotations

import importlib
import sys

import click

from linerisk.data.schema import InputError

# subcommand name -> module in pipeline/ that defines `command` (a click command).
COMMANDS = {
    "simulate": "linerisk.pipeline.simulate_job",
    "features": "linerisk.pipeline.features_job",
    "train": "linerisk.pipeline.train_job",
    "registry": "linerisk.pipeline.registry_job",
    "demo": "linerisk.pipeline.demo_job",
    "score": "linerisk.pipeline.score_job",
    "monitor": "linerisk.pipeline.monitor_job",
    "explain": "linerisk.pipeline.explain_job",
    "serve": "linerisk.pipeline.serve_job",
}


class _Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        return importlib.import_module(COMMANDS[name]).command

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except InputError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """linerisk: predict personal credit-line restrictions, explain them, show the way back."""


def main(argv: list[str] | None = None) -> int:
    """Run the CLI in-process and return its exit status (what tests call)."""
    try:
        # non-standalone click returns ctx.exit()'s status instead of raising (e.g. InputError -> 2)
        status = cli.main(args=argv, prog_name="linerisk", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except InputError as exc:
        click.echo(f"error: {exc}", err=True)
        return 2
    return status if isinstance(status, int) and not isinstance(status, bool) else 0


if __name__ == "__main__":
    sys.exit(main())
