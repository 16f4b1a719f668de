"""The `linerisk` command: a click group whose subcommands live in their own job modules.

Bad input never shows a traceback: an `InputError` prints one line and exits with status 2.
`linerisk --help` imports no job module (each is imported when its subcommand runs), so it
stays fast: the listing's one-line summaries live here.
"""
from __future__ import annotations

import datetime as dt
import importlib
import logging
import sys

import click

from linerisk.data.errors import InputError

# subcommand name -> (module in pipeline/ that defines `command`, a click command; summary in `linerisk --help`).
COMMANDS = {
    "simulate": ("linerisk.pipeline.simulate_job", "Simulate the behaviour-log world: events, users, truth."),
    "features": ("linerisk.pipeline.features_job", "Point-in-time features (optionally a labelled panel)."),
    "train": ("linerisk.pipeline.train_job", "Train, evaluate and register the calibrated model."),
    "registry": ("linerisk.pipeline.registry_job", "Registered models: list, show, promote, resolve."),
    "demo": ("linerisk.pipeline.demo_job", "Simulate, train, register, promote, score and explain."),
    "score": ("linerisk.pipeline.score_job", "Score every active line: probability, band, reasons."),
    "monitor": ("linerisk.pipeline.monitor_job", "Drift (PSI) of a scored batch vs the training reference."),
    "explain": ("linerisk.pipeline.explain_job", "One user: risk, reasons, what helps, the path back."),
    "serve": ("linerisk.pipeline.serve_job", "Serve the registered models over HTTP (MLflow's scoring server)."),
    "validate-plans": ("linerisk.pipeline.validate_plans_job",
                       "Check plans against a simulated world's truth (with and without)."),
}


class _Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        return importlib.import_module(COMMANDS[name][0]).command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The listing from COMMANDS alone: no job module (and none of its libraries) is imported for it."""
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name][1]) for name in self.list_commands(ctx)])

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except InputError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)


class _Progress(logging.Handler):
    """The library's progress (the `linerisk` logger) on stderr as `[HH:MM:SS] message`, written
    through click at the time of each message (so a redirected or captured stderr gets it)."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"[{dt.datetime.fromtimestamp(record.created):%H:%M:%S}] {record.getMessage()}", err=True)


def _show_progress() -> None:
    logger = logging.getLogger("linerisk")
    if not any(isinstance(h, _Progress) for h in logger.handlers):
        logger.addHandler(_Progress())
    logger.setLevel(logging.INFO)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """linerisk: predict personal credit-line restrictions, explain them, show the way back."""
    _show_progress()


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
