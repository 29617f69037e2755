"""`freight resume`, `status`, `results`, `cancel`: a job already made, from the command line (`freight run` makes
one: cli/run.py). A thin skin over `freight.api`, like `run`.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

import typer

from freight import api
from freight.cli.common import (
    DbOption,
    fail,
    fail_with,
    open_store,
    print_json,
)
from freight.cli.drive import drive, hold_job, notice
from freight.domain import ExitCode, FreightError, JobState
from freight.runner.job import RunOptions
from freight.runner.report import build_report, item_results, money, priced, render_report, sample_spend


def resume(
    job_id: str = typer.Argument(...),
    poll_interval: float = typer.Option(5.0),
    db: str | None = DbOption,
    as_json: bool = typer.Option(False, "--json"),
    wait: bool = typer.Option(False, "--wait", help="If another runner holds the job, wait for it instead of exit 3."),
    resubmit_unacknowledged: bool = typer.Option(
        False,
        "--resubmit-unacknowledged",
        help="Submit again a batch an earlier run sent without hearing back, when the provider cannot tell whether "
        "it got it (check its console first: its requests may be billed twice).",
    ),
    notify_secret: str | None = typer.Option(
        None, envvar=api.NOTIFY_SECRET_ENV, help="The secret the job's --notify events are signed with."
    ),
    webhook_listen: str | None = typer.Option(None, help="HOST:PORT: poll a batch as soon as its webhook arrives."),
    webhook_secret: str | None = typer.Option(None, envvar=api.WEBHOOK_SECRET_ENV, help="Those webhooks' secret."),
    max_cost: float | None = typer.Option(
        None, "--max-cost", min=0.0, help="Set (or raise) the job's cost cap, US dollars, before carrying on."
    ),
) -> None:
    """Carry on a job where it stopped, where it ran: submitted batches are polled, never submitted again."""
    with open_store(db) as store, hold_job(store, job_id, wait) as lease:
        api.deliver_pending(store, job_id, notify_secret, on_notice=notice)  # even for a job that has ended
        try:
            job = api.Job.find(job_id, store=store, on_notice=notice, lease=lease, notify_secret=notify_secret)
            wake = api.listener_for(job.opts.provider, webhook_listen, webhook_secret)
            if max_cost is not None:
                job.set_max_cost(max_cost)
        except FreightError as exc:
            fail_with(exc)
        counts = ", ".join(f"{v:,} {k}" for k, v in sorted(store.item_counts(job_id).items()))
        notice(f"resuming {job_id} on {job.opts.endpoint} ({counts})")
        drive(job, poll_interval, as_json, resubmit_unacknowledged=resubmit_unacknowledged, wake=wake)


def status(
    job_id: str = typer.Argument(...), db: str | None = DbOption, as_json: bool = typer.Option(False, "--json")
) -> None:
    """A job's state, its documents and batches, and what it has cost so far."""
    with open_store(db) as store:
        job = store.get_job(job_id)
        if job is None:
            fail(f"no job {job_id!r}: `freight jobs` lists them")
        data: dict[str, Any] = {
            "job": job.model_dump(mode="json", exclude={"config"}),
            "items": store.item_counts(job_id),
            "batches": [
                {k: row[k] for k in ("provider_batch_id", "state", "n_requests", "counts", "submitted_at", "ended_at")}
                | _step_claim(row)
                for row in store.batches(job_id)
            ],
            "endpoint": RunOptions.from_config(job.config).endpoint,
            "totals": store.totals(job_id),
            "held_by": store.job_holder(job_id),  # the worker (or `freight run`) holding the job and its batches
        }
        # The sample's spend is the job's too; a model with no price makes the whole cost unknown, never $0.
        spent = data["totals"]["cost_usd"] + sample_spend(store, job_id)
        data["cost_usd"] = round(spent, 6) if priced(store, job_id) else None
    if as_json:
        print_json(data)
        return
    typer.echo(f"{job_id}: {job.state.value}  provider {job.provider}  endpoint {data['endpoint']}  model {job.model}")
    typer.echo("documents: " + ", ".join(f"{k} {v}" for k, v in sorted(data["items"].items())))
    if (held := data["held_by"]) is not None:
        who = f"worker {held['worker']}, " if held["worker"] else "freight run, "
        typer.echo(f"held by {who}pid {held['pid']} on {held['host']} (heartbeat {held['heartbeat_at']:%H:%M:%S} UTC)")
    for b in data["batches"]:
        who = f", held by worker {b['held_by']}" if b["held_by"] else ""
        who += f", ingested by worker {b['ingested_by']}" if b["ingested_by"] else ""
        typer.echo(f"  batch {b['provider_batch_id'] or '(preparing)'}: {b['state']}, {b['n_requests']} requests{who}")
    typer.echo(f"cost so far: {money(data['cost_usd'])}")


def _step_claim(row: dict[str, Any]) -> dict[str, Any]:
    """Which worker slot holds the batch now (a live step claim, store/step_claims.py) and which one ingested it."""
    until = row.get("claim_expires_at")
    live = row.get("claimed_by") is not None and until is not None and until.timestamp() > time.time()
    return {"held_by": row["claimed_by"] if live else None, "ingested_by": row.get("ingested_by")}


def results(
    job_id: str = typer.Argument(...),
    db: str | None = DbOption,
    out: Path | None = typer.Option(None, "--out", "-o", help="Write results.jsonl, failures.jsonl, report.json here."),
) -> None:
    """Print a job's results (one JSON line per document), or write them to --out."""
    with open_store(db) as store:
        if store.get_job(job_id) is None:
            fail(f"no job {job_id!r}: `freight jobs` lists them")
        if out is not None:
            typer.echo(render_report(build_report(store, job_id, write_to=out)))
            return
        for line in item_results(store, job_id):
            typer.echo(json.dumps(line, ensure_ascii=False))


def cancel(
    job_id: str = typer.Argument(...),
    db: str | None = DbOption,
    wait: bool = typer.Option(
        False, "--wait", help="When a runner holds the job, ask it to stop and wait for it instead of exit 3."
    ),
) -> None:
    """Cancel a job: its batches are canceled at the provider, and unfinished documents end canceled."""

    def ask_runner_to_stop() -> None:  # the holder sees `canceling` at its next pass, stops and releases the job
        with contextlib.suppress(FreightError):
            store.set_job_state(job_id, JobState.CANCELING)

    with open_store(db) as store:
        found = store.get_job(job_id)
        if found is not None and found.state in (JobState.COMPLETED, JobState.CANCELED):
            fail(
                f"job {job_id} already {found.state.value}: there is nothing left to cancel. Its results: "
                f"`freight results {job_id}`",
                ExitCode.USAGE,
            )
        with hold_job(store, job_id, wait, then=ask_runner_to_stop) as lease:
            try:
                report = api.Job.find(job_id, store=store, on_notice=notice, lease=lease).cancel()
            except FreightError as exc:
                fail(str(exc), exc.exit_code)
        typer.echo(report.render())


def register(app: typer.Typer) -> None:
    for fn in (resume, status, results, cancel):
        app.command(fn.__name__)(fn)
