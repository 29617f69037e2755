"""`freight estimate` and `freight run --dry-run`: what a run would cost, counted by the model's own counter, with
nothing sent for inference and no job made. The same options as `freight run`; the library's `freight.estimate`."""

from __future__ import annotations

import functools
from typing import Any

import typer

from freight import dryrun
from freight.cli import run as run_cmd
from freight.cli.common import fail_with, open_store, print_json
from freight.domain import FreightError, UsageError
from freight.runner.checks import check_store_url
from freight.runner.estimate import render_estimate
from freight.runner.job import RunOptions


def _exists(db: str) -> bool:
    try:
        check_store_url(db, explicit=True, must_exist=True)
    except UsageError:
        return False
    return True


def dry_run(opts: RunOptions, db: str | None, as_json: bool) -> None:
    """Count and price the run `opts` describes, and print the forecast."""
    try:
        if db is None:
            forecast = dryrun.estimate_for(opts)
        elif _exists(db):
            with open_store(db) as store:
                forecast = dryrun.estimate_for(opts, store=store)
        else:  # a dry run makes no store: with none there, there is no stored sample either
            forecast = dryrun.estimate_for(opts, samples=False)
    except FreightError as exc:
        fail_with(exc)
    if as_json:
        print_json(forecast)
    else:
        render_estimate(forecast, typer.echo)


@functools.wraps(run_cmd.run)
def estimate(*args: Any, **kwargs: Any) -> None:
    kwargs["dry_run"] = True
    run_cmd.run(*args, **kwargs)


estimate.__doc__ = (
    "What `freight run` with these options would cost - input tokens counted by the model's own counter, output "
    "bounded by --max-tokens and a stored sample - batch vs sync, documents over the window, batches. Sends nothing "
    "for inference (= freight run --dry-run)."
)


def register(app: typer.Typer) -> None:
    app.command("estimate")(estimate)
