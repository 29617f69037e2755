"""What every command shares: the --db option (checked before it is opened), option files, error rendering, JSON
output."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, NoReturn

import typer

from freight.domain import ExitCode, FreightError, UsageError
from freight.providers import provider_names
from freight.runner.accuracy import Labels, load_labels
from freight.runner.checks import check_prompt, check_schema, check_store_url, read_text
from freight.store import Store

# From the registry, so a plugin's provider is listed too; `local` is the embedded model, not an adapter.
PROVIDER_HELP = f"{' | '.join(provider_names())} | local (the embedded model)"

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
    """The --schema file, parsed and valid as a JSON Schema by its declared draft (exit 2 naming the line if not)."""
    if path is None:
        return None
    try:
        return check_schema(path)
    except UsageError as exc:
        fail_with(exc)


def read_prompt(path: Path | None, text: str | None, flag: str = "--prompt") -> str | None:
    """The prompt from a file (-p/--prompt) or inline (--prompt-text), checked for its {document} placeholder."""
    if path is not None and text is not None:
        fail(f"{flag} and --prompt-text both give a prompt: keep one", ExitCode.USAGE)
    try:
        if path is not None:
            prompt = read_text(path, flag)
            check_prompt(prompt, str(path))
            return prompt
        if text is not None:
            check_prompt(text, "--prompt-text")
            return text
    except UsageError as exc:
        fail_with(exc)
    return None


def read_labels(path: Path | None, min_accuracy: float | None) -> Labels | None:
    """--expected, parsed (each mistake with its line); --min-accuracy needs it."""
    if path is None:
        if min_accuracy is not None:
            fail("--min-accuracy needs --expected FILE (the labelled outputs to measure against)", ExitCode.USAGE)
        return None
    try:
        return load_labels(str(path), read_text(path, "--expected"))
    except UsageError as exc:
        fail_with(exc)
