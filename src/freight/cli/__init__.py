"""The `freight` command: thin wrappers that parse, call the library, and render.

Typer (over click) because the commands' options come straight from type hints, the help is generated from them, and
`typer.testing.CliRunner` drives the real command in tests. Each command group lives in its own module and registers
itself on the one app here.
"""

from __future__ import annotations

import typer

from freight import __version__
from freight.cli import plan, run, sample, serve, store_cmds

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


for _module in (run, sample, store_cmds, plan, serve):
    _module.register(app)


def main() -> None:
    app()
