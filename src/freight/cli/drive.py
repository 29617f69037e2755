"""Driving a job in the foreground, for `freight run` and `freight resume`: its lease, its progress display, Ctrl-C
(detach: the job is saved and says how to resume), and the report and outputs at the end.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import typer

from freight import api
from freight.cli.common import (
    fail,
    fail_with,
    print_json,
)
from freight.cli.progress import display_for
from freight.domain import ExitCode, FreightError, JobState
from freight.runner.accuracy import Labels, render_accuracy, score
from freight.runner.budget import CostCapReached
from freight.runner.report import item_results, sample_spend
from freight.store import Holder, JobLease, Store


def notice(message: str) -> None:
    typer.echo(message, err=True)


def hold_job(store: Store, job_id: str, wait: bool, then: Callable[[], None] | None = None) -> JobLease:
    """The job's lease, taken before anything reads or writes the job (exit 3 when another runner holds it).
    `then`: what to do once, when the job turns out to be held and we wait for it."""

    def waiting(holder: Holder) -> None:
        notice(f"waiting for {holder.describe()} to finish with {job_id}")
        if then is not None:
            then()

    try:
        return api.hold(store, job_id, wait=wait, on_wait=waiting)
    except FreightError as exc:
        fail_with(exc)


def drive(
    job: api.Job,
    poll: float,
    as_json: bool,
    labels: Labels | None = None,
    resubmit_unacknowledged: bool = False,
    wake: api.WebhookListener | None = None,
) -> None:
    display = display_for(as_json)
    display.priced = lambda: job.priced
    # The sample's spend is the job's too: the display's cost ends where the report's does.
    display.spent_before = sample_spend(job.store, job.job_id)
    if wake is not None:
        notice(f"listening for batch webhooks at {wake.url}")
    try:
        with wake or contextlib.nullcontext(), display:
            report = job.run(
                on_progress=display, poll_interval=poll, resubmit_unacknowledged=resubmit_unacknowledged, wake=wake
            )
    except KeyboardInterrupt:
        detached(job)
    except CostCapReached as exc:  # its message already says how to go on
        fail(str(exc), exc.exit_code)
    except FreightError as exc:
        fail(f"{exc}\nthe job is saved: fix the cause and run `freight resume {job.job_id}`", exc.exit_code)
    show_report(job, report, as_json, labels)


def show_report(job: api.Job, report: api.Report, as_json: bool, labels: Labels | None = None) -> None:
    """The end of a run, in the foreground or followed on workers: the report, its accuracy, where the outputs are."""
    accuracy = _accuracy(job, labels)
    if as_json:
        print_json({**report.data, "accuracy": accuracy} if accuracy else report.data)
    else:
        typer.echo(report.render())
        if accuracy:
            typer.echo(render_accuracy(accuracy))
        vectors = (
            ", embeddings.npy, embeddings.ids.txt"
            if report.out and (report.out / "embeddings.ids.txt").exists()
            else ""
        )
        typer.echo(f"outputs: {report.out}/results.jsonl, failures.jsonl, report.json{vectors}")


def _accuracy(job: api.Job, labels: Labels | None) -> dict[str, Any] | None:
    """Succeeded means valid; against --expected, how many fields are also right."""
    if labels is None:
        return None
    return score(((r["id"], r["output"]) for r in item_results(job.store, job.job_id)), labels)


def detached(job: api.Job) -> None:
    """Ctrl-C: the job is saved; its state says it is not running any more, and the message says where its batches
    are - at the provider they go on; on the embedded server they wait for the next run, since it stops with us."""
    if job.state in (JobState.RUNNING, JobState.SAMPLING):
        job.store.set_job_state(job.job_id, JobState.STOPPED)
    job.store.log(job.job_id, "job.detached", reason="interrupted (Ctrl-C)")
    if job.opts.engine:
        where = "the embedded server stops with freight, so its batches wait (kept in $FREIGHT_HOME) until you resume"
    else:
        where = f"batches already submitted keep running at {job.opts.endpoint}; resuming collects their results"
    typer.echo(
        f"\ninterrupted: detached from {job.job_id}, which is saved and stopped; {where}. "
        f"Resume with: freight resume {job.job_id}",
        err=True,
    )
    raise typer.Exit(ExitCode.INTERRUPTED)
