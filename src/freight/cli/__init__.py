"""The `freight` command: thin wrappers that parse, call the library, and render.

Typer (over click) because the commands' options come straight from type hints, the help is generated from them, and
`typer.testing.CliRunner` drives the real command in tests. Each command group lives in its own module and registers
itself on the one app here.
"""

from __future__ import annotations

import os
import sys

import typer

from freight import __version__
from freight.cli import estimate, job_cmds, plan, prices, run, sample, schedule, serve, store_cmds, ui, worker
from freight.domain import ExitCode

app = typer.Typer(
    name="freight",
    help="Process large volumes of LLM requests through providers' batch APIs - and know when not to.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"freight {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """freight: route, submit, poll, correlate, fix, resume."""


for _module in (run, job_cmds, estimate, sample, store_cmds, plan, prices, serve, schedule, ui, worker):
    _module.register(app)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:  # Ctrl-C before a command could take it (parsing, opening the store)
        sys.stderr.write("\ninterrupted: nothing was started\n")
        _leave(ExitCode.INTERRUPTED)
    except SystemExit as exc:
        if exc.code == ExitCode.INTERRUPTED:
            _leave(ExitCode.INTERRUPTED)
        raise


def _leave(code: int) -> None:
    """Exit at once after Ctrl-C: everything is committed to the store, and the interpreter's teardown (over a
    second on a loaded machine) is what a user pressing Ctrl-C would wait for."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
