"""Commands that read the store: `freight jobs`.

A listing's ids are what users copy into the next command (`freight status JOB`), so they are never cut: the id
column does not wrap or shrink, and the other columns fold instead. Piped, the table is as wide as it needs to be,
whatever the terminal's width.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from freight.cli.common import DbOption, open_store, print_json
from freight.runner.job import RunOptions


def listing_console() -> Console:
    """The terminal's width on a terminal; unbounded when piped (a pipe has no width, and a cut id is useless)."""
    if sys.stdout.isatty():
        return Console()
    return Console(width=100_000, no_color=True)


@dataclass(frozen=True)
class Column:
    header: str
    values: list[str]
    keep: bool = False  # an id (or the state): never cut, never dropped
    right: bool = False

    @property
    def width(self) -> int:
        return max([len(self.header), *map(len, self.values)])


def print_listing(columns: list[Column], console: Console | None = None) -> None:
    """A table whose `keep` columns are printed whole. When the terminal is too narrow for everything, the other
    columns fold (down to 8 characters) and, narrower still, the last of them are left out - saying so - rather
    than crushed to nothing."""
    console = console or listing_console()
    shown = list(columns)
    dropped: list[str] = []

    def needed(cols: list[Column]) -> int:
        return sum((c.width if c.keep else min(c.width, 8)) + 2 for c in cols)

    while needed(shown) > console.width and any(not c.keep for c in shown):
        gone = next(c for c in reversed(shown) if not c.keep)
        shown.remove(gone)
        dropped.append(gone.header)
    table = Table(box=None, pad_edge=False, header_style="bold")
    for c in shown:
        if c.keep:
            table.add_column(c.header, no_wrap=True, min_width=c.width)
        else:
            table.add_column(
                c.header, overflow="fold", justify="right" if c.right else "left", min_width=min(c.width, 8)
            )
    for i in range(len(columns[0].values)):
        table.add_row(*(c.values[i] for c in shown))
    with console.capture() as capture:
        console.print(table)
    # rich pads every line to the table's width; trailing blanks only get in the way of copy and grep
    text = "\n".join(line.rstrip() for line in capture.get().splitlines())
    typer.echo(text)
    if dropped:
        typer.echo(f"(not shown at this width: {', '.join(reversed(dropped))}; --json shows everything)", err=True)


def jobs(
    db: str | None = DbOption,
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """List the jobs in the store, newest first, with their item counts."""
    if db is not None and "://" not in db and not Path(db).expanduser().exists():
        # No store there: it has no jobs, which is the answer - but say so, since a mistyped path looks the same,
        # and create nothing (a listing must not leave an empty store behind).
        typer.echo(f"note: no store at {db}: nothing has run with this --db yet (check the path)", err=True)
        rows = []
    else:
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
    print_listing(
        [
            Column("job", [job.job_id for job, _ in rows], keep=True),
            Column("state", [job.state.value for job, _ in rows], keep=True),
            Column("items", [str(sum(c.values())) for _, c in rows], right=True),
            Column("succeeded", [str(c.get("succeeded", 0)) for _, c in rows], right=True),
            Column("failed", [str(c.get("failed", 0)) for _, c in rows], right=True),
            Column("provider", [job.provider for job, _ in rows]),
            # where it ran: the same command against another endpoint is another job
            Column("endpoint", [RunOptions.from_config(job.config).endpoint for job, _ in rows]),
            Column("model", [job.model for job, _ in rows]),
            Column("created", [job.created_at.strftime("%Y-%m-%d %H:%M") if job.created_at else "" for job, _ in rows]),
            Column("name", [job.name for job, _ in rows]),
        ]
    )


def register(app: typer.Typer) -> None:
    app.command("jobs")(jobs)
