"""`freight schedule WORKFLOWS.yaml`: submit what arrived in each workflow's input at the plan's cadence, hedged.

Thin: read the file, build the library's `Scheduler` (runner/schedule.py), print what each tick did. `--once` runs
one tick (for cron); without it, a tick every `--interval` seconds until Ctrl-C. The state is in the store.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from freight.cli.common import DbOption, fail, fail_with, open_store
from freight.domain import ExitCode, FreightError
from freight.plan import PlanFileError, load_workflows
from freight.runner.schedule import Scheduler, TickReport
from freight.store import freight_home


def register(app: typer.Typer) -> None:
    app.command("schedule")(schedule)


def schedule(
    workflows: Annotated[Path, typer.Argument(help="A workflows YAML file: the one `freight plan` reads.")],
    once: Annotated[bool, typer.Option("--once", help="One tick, then exit (run it from cron).")] = False,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between ticks without --once.")] = 60.0,
    state_dir: Annotated[
        Path | None, typer.Option(help="Where the documents each job took are kept (default $FREIGHT_HOME/schedule).")
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Each job's outputs go to OUT/JOB.")] = Path("freight-out"),
    db: str | None = DbOption,
) -> None:
    """Submit what arrived in each workflow's input at the cadence `freight plan` computes; deadline = arrival + SLA."""
    try:
        file = load_workflows(workflows)
    except PlanFileError as exc:
        fail(str(exc), ExitCode.USAGE)
    with open_store(db, create=True) as store:
        try:
            scheduler = Scheduler(
                store,
                file,
                workflows.resolve().parent,
                state_dir=state_dir or freight_home() / "schedule",
                out_root=out,
            )
        except FreightError as exc:
            fail_with(exc)
        for line in scheduler.skipped:
            typer.echo(line)
        try:
            if once:
                _show(scheduler.tick())
                return
            scheduler.run_forever(interval, _show, time.sleep)
        except KeyboardInterrupt:
            typer.echo("interrupted: the schedule's state is in the store; run the same command to carry on", err=True)
            raise typer.Exit(ExitCode.INTERRUPTED) from None
        except FreightError as exc:
            fail_with(exc)


def _show(report: TickReport) -> None:
    for line in report.lines:
        typer.echo(line)
