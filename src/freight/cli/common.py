"""What every command shares: the --db option (checked before it is opened), option files, error rendering, JSON
output."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import typer

from freight.domain import ExitCode, FreightError, UsageError
from freight.runner.checks import check_store_url
from freight.store import Store

DbOption = typer.Option(None, "--db", envvar="FREIGHT_DB", help="Store: a SQLite path or a postgresql:// URL.")


def open_store(db: str | None, *, create: bool = False) -> Store:
    """The store behind --db. `create` is for the commands that start work (run, sample): they may create a new
    store file, and say so; the others refuse a --db that names nothing (a typo would otherwise read an empty
    store and report "no jobs")."""
    if db is not None:
        try:
            note = check_store_url(db, explicit=True, must_exist=not create)
        except UsageError as exc:
            fail_with(exc)
        if note:
            typer.echo(note, err=True)
    try:
        return Store(db)
    except Exception as exc:  # noqa: BLE001 - a store that cannot be opened is a user-facing error, not a traceback
        fail(f"cannot open the store {db or '(default)'}: {type(exc).__name__}: {str(exc).splitlines()[0]}")


def fail(message: str, code: int = ExitCode.FAILED) -> NoReturn:
    typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    raise typer.Exit(code)


def fail_with(exc: FreightError) -> NoReturn:
    """A library error for the user: its message, and the exit code its kind carries (2 for a usage mistake)."""
    fail(str(exc), exc.exit_code)


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def read_option_file(path: Path | None, flag: str) -> str | None:
    """The text of a file given to `flag` (--prompt, --system ...), or a clear error naming both."""
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"{flag} {path}: {exc.strerror}", ExitCode.USAGE)


def read_schema(path: Path | None) -> dict[str, Any] | None:
    text = read_option_file(path, "--schema")
    if text is None:
        return None
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{path}:{exc.lineno}: the schema is not valid JSON ({exc.msg})", ExitCode.USAGE)
    if not isinstance(schema, dict):
        fail(f"{path}: a JSON Schema must be an object", ExitCode.USAGE)
    return schema
