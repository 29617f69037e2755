"""Commands that read the store: `freight jobs`."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from freight.cli.common import DbOption, open_store, print_json
from freight.runner.job import RunOptions


def jobs(
    db: str | None = DbOption,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """List the jobs in the store, newest first, with their item counts."""
    with open_store(db) as store:
        rows = [(job, store.item_counts(job.job_id)) for job in store.list_jobs()]
    if as_json:
        print_json(
            [
                {
                    **job.model_dump(mode="json"),
                    "endpoint": RunOptions.from_config(job.config).endpoint,
                    "items": counts,
                }
                for job, counts in rows
            ]
        )
        return
    if not rows:
        typer.echo("no jobs yet: `freight run` starts one")
        return
    table = Table("job", "state", "provider", "endpoint", "model", "items", "succeeded", "failed", "created")
    for job, counts in rows:
        table.add_row(
            job.job_id,
            job.state.value,
            job.provider,
            RunOptions.from_config(job.config).endpoint,  # where it ran: another endpoint is another job
            job.model,
            str(sum(counts.values())),
            str(counts.get("succeeded", 0)),
            str(counts.get("failed", 0)),
            job.created_at.strftime("%Y-%m-%d %H:%M") if job.created_at else "",
        )
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("jobs")(jobs)
