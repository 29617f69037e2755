"""What every command shares: the --db option, error rendering, JSON output."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import typer

from freight.domain import ExitCode
from freight.store import Store

DbOption = typer.Option(None, "--db", envvar="FREIGHT_DB", help="Store: a SQLite path or a postgresql:// URL.")


def open_store(db: str | None) -> Store:
    try:
        return Store(db)
    except Exception as exc:  # noqa: BLE001 - a store that cannot be opened is a user-facing error, not a traceback
        fail(f"cannot open the store {db or '(default)'}: {exc}")


def fail(message: str, code: int = ExitCode.FAILED) -> NoReturn:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
