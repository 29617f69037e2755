"""`freight run --follow`: on a PostgreSQL store with live workers, the job is handed to them and followed here.

The run is the same command with the same ending - the progress display, the report, the exit code - but the loop runs
in the workers (`freight worker`), not in this process: the job is created (and sampled, when `run` would sample it)
here under its lease, then queued as `freight submit` queues it, and followed by reading the store
(`runner/follow.py`). Ctrl-C detaches: the job keeps running on the workers, and the same command follows it again.

Where no worker could run the job, `--follow` runs it here in the foreground, as `freight run` without it, and says
why first: a SQLite store (one machine, no workers), the embedded model (it lives in this process), or no live worker
on the store. The job gets done either way, which is what the command is for; a user who wants it queued and nothing
else has `freight submit`.
"""

from __future__ import annotations

import typer

from freight import api
from freight.cli.common import fail, open_store
from freight.cli.drive import notice, show_report
from freight.cli.progress import display_for
from freight.domain import ExitCode, JobState
from freight.runner.accuracy import Labels
from freight.runner.follow import Ended, follow
from freight.runner.job import RunOptions
from freight.runner.report import sample_spend
from freight.store import Store

_FOREGROUND = "--follow: {why}; running the job here in the foreground, as `freight run` without --follow"


def _shared(db: str | None) -> bool:
    return db is not None and db.startswith(("postgresql://", "postgres://"))


def workers_can_take(opts: RunOptions, db: str | None, webhook_listen: str | None) -> bool:
    """Whether `--follow` hands this run to workers; when it cannot, says why (the run then goes on here)."""
    if not _shared(db):
        notice(_FOREGROUND.format(why="a SQLite store has no workers (`freight worker` needs PostgreSQL)"))
        return False
    if opts.engine:
        notice(_FOREGROUND.format(why="the embedded model runs inside this process, where no worker can reach it"))
        return False
    with open_store(db, create=True) as store:
        live = [w for w in store.list_workers() if w.state == "working"]
    if not live:
        notice(_FOREGROUND.format(why="no live worker on this store (start one: freight worker --db ...)"))
        return False
    if webhook_listen is not None:
        fail(
            "--webhook-listen with --follow: the workers poll the job's batches, so a listener here would hear "
            "nothing it could act on. Drop --webhook-listen, or --follow to run the job here",
            ExitCode.USAGE,
        )
    return True


def on_the_queue(db: str | None, job_id: str) -> bool:
    """The job is the workers' already - queued and open, held by one of them or about to be (the same command again
    after a Ctrl-C, or a job `freight submit` queued): follow it and take nothing, not even its lease for a moment."""
    with open_store(db) as store:
        return any(q["job_id"] == job_id for q in store.queued_jobs(open_only=True))


def ready_for_workers(store: Store, job_id: str) -> None:
    """Under the job's lease: a job sampled (or stopped, then run again) becomes `running`, which workers take."""
    job = store.get_job(job_id)
    assert job is not None
    if job.state in (JobState.SAMPLING, JobState.STOPPED):
        store.set_job_state(job_id, JobState.RUNNING)


def follow_on_workers(
    db: str | None, job_id: str, opts: RunOptions, as_json: bool, labels: Labels | None, poll: float
) -> None:
    """Queue the job for the workers (once this process holds nothing of it) and follow it to its end."""
    with open_store(db) as store:
        state = store.get_job(job_id).state  # type: ignore[union-attr]
        if not state.terminal:
            store.enqueue_job(job_id)
        try:
            ended, job = _follow(store, job_id, opts, as_json, poll)
        except KeyboardInterrupt:
            typer.echo(
                f"\ninterrupted: stopped following {job_id}; it keeps running on the workers (freight workers shows "
                f"them). Follow it again with the same command, or see it with: freight status {job_id}",
                err=True,
            )
            raise typer.Exit(ExitCode.INTERRUPTED) from None
        if ended.state is JobState.STOPPED:
            if ended.exit_code == ExitCode.FAILED:  # the cost cap: its message says how to go on
                fail(ended.message, ended.exit_code)
            fail(f"{ended.message}\nthe job is saved: fix the cause and run `freight resume {job_id}`", ended.exit_code)
        show_report(job, job.report(), as_json, labels)


def _follow(store: Store, job_id: str, opts: RunOptions, as_json: bool, poll: float) -> tuple[Ended, api.Job]:
    live = len([w for w in store.list_workers() if w.state == "working"])
    notice(f"following {job_id} on the workers of this store ({live} live); Ctrl-C detaches, they go on")
    job = api.Job(store, job_id, opts, resumed=True, on_notice=notice)
    display = display_for(as_json)
    display.priced = lambda: job.priced
    display.spent_before = sample_spend(store, job_id)
    told = [False]

    def idle() -> None:  # the pool can empty while we follow: say so once, and keep waiting for a new worker
        if told[0] or store.job_holder(job_id) is not None or store.list_workers():
            return
        told[0] = True
        display.note(f"no live worker holds {job_id} now: it waits for one (freight worker --db ...)")

    with display:
        return follow(store, job_id, display, interval=max(0.05, min(poll, 1.0)), on_idle=idle), job
